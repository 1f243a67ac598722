"""Data and logs: the office's export and its art. 30 register to download, the
audit trail's chain check and CSV, the bot log's CSV, and the retention preview."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from typing import Any

from flask import render_template, request, send_file
from werkzeug.wrappers import Response

from bot.console.admin.access import (
    admin_required,
    csv_download,
    filters_for_audit,
    json_download,
    office,
)
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.labels import AUDIT_ACTION, TARGET_TYPE, bot_action, label, local_time
from bot.console.logs import audit_query, bot_log_query, parse_filter, tenant_users
from bot.office.actor import Actor
from bot.privacy.audit import record_actor_audit, verify_chain
from bot.privacy.register import export_register
from bot.privacy.retention import preview_purge, terms_for
from bot.privacy.rights import write_export
from bot.services import Services, services
from storage.models import Tenant, iso_utc, utcnow

CSV_LIMIT = 100_000  # rows per CSV; a wider range is cut, and the page says so


@bp.get("/admin/data")
@admin_required
def admin_data() -> str:
    return render_template("console/admin/data.html")


Build = Callable[[Services, Tenant, Actor], dict[str, Any]]


def _office_download(kind: str, build: Build) -> Response:
    """A download of the whole office's data (``build`` audits it, with who and where)."""
    svc, who = services(), actor()
    with svc.db.read() as db:
        tenant = office(db)
    stamp = utcnow().strftime("%Y%m%d")
    return json_download(f"portineria-{tenant.slug}-{kind}-{stamp}.json", build(svc, tenant, who))


def _by(who: Actor) -> dict[str, Any]:
    return {"actor": who.audit_name, "user_id": who.user_id, "ip": who.ip}


@bp.get("/admin/data/export.jsonl")
@admin_required
def admin_export() -> Response:
    """The whole office's export, JSON Lines as the CLI writes it: written to an
    owner-only temporary file a batch at a time, then sent from there, so the web
    process never holds the office's data in memory."""
    svc, who = services(), actor()
    with svc.db.read() as db:
        tenant = office(db)
    spool = tempfile.TemporaryFile(mode="w+b")
    try:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="\n")
        write_export(svc, tenant, None, text, **_by(who))
        text.flush()
        text.detach()
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    stamp = utcnow().strftime("%Y%m%d")
    return send_file(
        spool,
        mimetype="application/x-ndjson",
        as_attachment=True,
        download_name=f"portineria-{tenant.slug}-esportazione-{stamp}.jsonl",
    )


@bp.get("/admin/data/register.json")
@admin_required
def admin_register() -> Response:
    return _office_download(
        "registro-trattamenti",
        lambda svc, tenant, who: export_register(svc, tenant, utcnow(), **_by(who)),
    )


@bp.post("/admin/audit/verify")
@admin_required
def admin_audit_verify() -> str:
    svc, who = services(), actor()
    with svc.db.session() as db:
        report = verify_chain(db, who.tenant_id)
        found = len(report.problems) + report.more_problems
        record_actor_audit(
            db,
            who,
            "audit.verify",
            "tenant",
            who.tenant_id,
            detail={"problems": found, "checked": report.checked},
        )
    return render_template(
        "console/admin/audit_verify.html", problems=report.problems, report=report, found=found
    )


@bp.get("/admin/audit.csv")
@admin_required
def admin_audit_csv() -> Response:
    svc, who, wanted = services(), actor(), parse_filter(request.args)
    with svc.db.session() as db:
        users = tenant_users(db, who.tenant_id)
        events = db.scalars(audit_query(who.tenant_id, wanted).limit(CSV_LIMIT)).all()
        record_actor_audit(db, who, "audit_log.export", detail={"filters": filters_for_audit()})
    rows = (
        [
            e.id,
            iso_utc(e.at),
            local_time(e.at),
            users.get(e.user_id or 0) or e.actor,
            label(AUDIT_ACTION, e.action),
            e.action,
            label(TARGET_TYPE, e.target_type),
            e.target_id,
            e.ip,
            e.detail,
            e.hash,
        ]
        for e in events
    )
    header = [
        "n",
        "utc",
        "ora italiana",
        "chi",
        "azione",
        "codice azione",
        "oggetto",
        "id oggetto",
        "ip",
        "dettagli",
        "hash",
    ]
    return csv_download("registro-accessi.csv", header, rows)


@bp.get("/admin/bot-log.csv")
@admin_required
def admin_bot_log_csv() -> Response:
    svc, who, wanted = services(), actor(), parse_filter(request.args)
    with svc.db.session() as db:
        entries = db.execute(bot_log_query(who.tenant_id, wanted).limit(CSV_LIMIT)).all()
        record_actor_audit(db, who, "bot_log.export", detail={"filters": filters_for_audit()})
    rows = (
        [
            iso_utc(entry.at),
            local_time(entry.at),
            entry.message_id,
            conversation_id,
            entry.intent,
            entry.confidence,
            bot_action(entry.action),
            entry.action,
            entry.safety_rule,
            entry.model_version,
            entry.duration_ms,
        ]
        for entry, conversation_id in entries
    )
    header = [
        "utc",
        "ora italiana",
        "messaggio",
        "conversazione",
        "intento",
        "confidenza",
        "azione",
        "codice azione",
        "regola di sicurezza",
        "modello",
        "ms",
    ]
    return csv_download("registro-bot.csv", header, rows)


@bp.get("/admin/retention")
@admin_required
def admin_retention() -> str:
    svc, who = services(), actor()
    with svc.db.read() as db:
        tenant = office(db)
    report = preview_purge(svc, tenant, utcnow())
    with svc.db.session() as db:
        record_actor_audit(db, who, "retention.preview", "tenant", tenant.id, detail=report.removed)
    return render_template(
        "console/admin/retention.html", removed=report.removed, terms=terms_for(tenant)
    )
