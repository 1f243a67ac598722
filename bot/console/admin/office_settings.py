"""Office settings, the on-call rota and the approved templates.

The form shows every key :mod:`bot.office.settings` declares (a key added there
appears here without a change), each with its value in the syntax its parser reads;
what the admin changes goes through that module's validation (``parse_assignment``)
and ``update_settings``, which audits it. Errors come back in Italian, per field,
with nothing stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required, office
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.labels import setting_error, setting_group, setting_label
from bot.exceptions import InvalidInput, InvalidSetting, NotFound, OnCallExists
from bot.office import oncall, settings
from bot.office.readiness import missing_for_live
from bot.services import services
from storage.models import OnCallPerson

MAX_VALUE = 4000
# Shown in their own section (a list the admin edits line by line).
OWN_SECTIONS = ("approved_templates",)


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    hint: str
    group: str
    boolean: bool
    value: str
    multiline: bool = False
    error: str | None = None


def _is_boolean(parser: Any) -> bool:
    try:
        return parser("true") is True and parser("false") is False
    except (InvalidSetting, ValueError):
        return False


def _stored(effective: dict[str, Any], key: str) -> Any:
    group, _, name = key.partition(".")
    if name:
        return (effective.get(group) or {}).get(name)
    return effective.get(key)


def as_text(value: Any) -> str:
    """A stored value in the syntax its parser reads back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if all(isinstance(v, dict) and "content_sid" in v for v in value):
            return "\n".join(f"{v['name']} | {v['content_sid']}" for v in value)
        if all(isinstance(v, list | tuple) for v in value):
            return ",".join("-".join(span) for span in value) or ""
        return ",".join(str(v) for v in value)
    return str(value)


def fields(effective: dict[str, Any], errors: dict[str, str], given: dict[str, str]) -> list[Field]:
    out = []
    for key, parser in settings.PARSERS.items():
        label, hint = setting_label(key)
        out.append(
            Field(
                key=key,
                label=label,
                hint=hint,
                group=setting_group(key),
                boolean=_is_boolean(parser),
                value=given.get(key, as_text(_stored(effective, key))),
                multiline=key in OWN_SECTIONS,
                error=errors.get(key),
            )
        )
    return out


def _grouped(all_fields: list[Field]) -> dict[str, list[Field]]:
    groups: dict[str, list[Field]] = {}
    for field in all_fields:
        groups.setdefault(field.group, []).append(field)
    return groups


def _render(errors: dict[str, str] | None = None, given: dict[str, str] | None = None) -> str:
    svc = services()
    with svc.db.read() as db:
        tenant = office(db)
        effective = settings.effective_settings(tenant)
        people = oncall.rota(db, tenant.id)
        missing = missing_for_live(tenant.settings)
    return render_template(
        "console/admin/settings.html",
        groups=_grouped(fields(effective, errors or {}, given or {})),
        people=people,
        missing=missing,
        masked=oncall.masked,
    )


@bp.get("/admin/settings")
@admin_required
def admin_settings() -> str:
    return _render()


def changes_from(
    form: dict[str, str], effective: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The validated changes a submitted form asks for, and the errors per key."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, parser in settings.PARSERS.items():
        if key not in form:
            continue
        raw = form[key][:MAX_VALUE].replace("\r\n", "\n")
        current = as_text(_stored(effective, key))
        if _is_boolean(parser):
            raw = "true" if raw == "true" else "false"
        if raw.strip() == current.strip():
            continue
        if not raw.strip() and key in ("emergency.call_from",):
            continue  # empty: the office's own number, as before
        try:
            name, value = settings.parse_assignment(f"{key}={raw}")
        except InvalidSetting as error:
            errors[key] = setting_error(str(error))
        else:
            changes[name] = value
    return changes, errors


@bp.post("/admin/settings")
@admin_required
def admin_settings_save() -> Response | tuple[str, int]:
    svc, who = services(), actor()
    with svc.db.read() as db:
        effective = settings.effective_settings(office(db))
    form = {key: request.form.get(key, "") for key in request.form}
    changes, errors = changes_from(form, effective)
    if errors:
        flash("Alcuni valori non sono validi: nulla è stato salvato.", "error")
        return _render(errors, form), 400
    if changes:
        settings.update_settings(svc, who.tenant_id, changes, actor=f"user:{who.user_id}")
        flash(f"Impostazioni salvate ({len(changes)} modificate).", "ok")
    else:
        flash("Nessuna modifica.", "ok")
    return redirect(url_for("console.admin_settings"))


# -- on-call rota ---------------------------------------------------------------------


@bp.post("/admin/oncall")
@admin_required
def admin_oncall_add() -> Response:
    who = actor()
    try:
        oncall.add_oncall(
            services(),
            who.tenant_id,
            request.form.get("name", ""),
            request.form.get("phone", ""),
            actor=f"user:{who.user_id}",
        )
    except InvalidInput as error:
        exists = isinstance(error, OnCallExists)
        flash(
            "Questo numero è già tra i reperibili."
            if exists
            else "Indica il nome e un numero di telefono valido (ad es. +393331234567).",
            "error",
        )
    else:
        flash("Reperibile aggiunto in fondo al turno.", "ok")
    return redirect(url_for("console.admin_settings") + "#reperibili")


@bp.post("/admin/oncall/<id:person_id>/remove")
@admin_required
def admin_oncall_remove(person_id: int) -> Response:
    svc, who = services(), actor()
    with svc.db.read() as db:
        person = db.get(OnCallPerson, person_id)
        if person is None or person.tenant_id != who.tenant_id:
            raise NotFound(person_id)
        phone = person.phone
    try:
        oncall.remove_oncall(svc, who.tenant_id, phone, actor=f"user:{who.user_id}")
    except NotFound:
        pass  # removed meanwhile: the same outcome
    flash("Reperibile tolto dal turno.", "ok")
    return redirect(url_for("console.admin_settings") + "#reperibili")
