"""Data-subject requests: the queue (from chat and entered by hand) with due dates,
the export to download, erasure after a confirmation, closing with the outcome."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required, download
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.labels import OFFICE_ZONE
from bot.exceptions import InvalidPhoneNumber, NotFound, Refused
from bot.office.phone import e164
from bot.privacy import data_requests as queue
from bot.services import services
from storage.models import utcnow
from storage.vocabulary import RequestKind, RequestStatus

ERASE_WORD = "CANCELLA"


@bp.get("/admin/requests")
@admin_required
def admin_requests() -> str:
    svc, who = services(), actor()
    queue.sync_chat_requests(svc, who.tenant_id)
    with svc.db.read() as db:
        rows = queue.request_rows(db, who.tenant_id)
    return render_template(
        "console/admin/requests.html", rows=rows, today=utcnow().astimezone(OFFICE_ZONE).date()
    )


def _received_at(raw: str) -> datetime:
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError as error:
        raise Refused("La data di ricezione non è valida (AAAA-MM-GG).") from error
    if day == utcnow().astimezone(OFFICE_ZONE).date():
        return utcnow()
    return datetime.combine(day, time(12), OFFICE_ZONE).astimezone(UTC)


@bp.post("/admin/requests")
@admin_required
def admin_request_open() -> Response:
    kind = request.form.get("kind", "")
    try:
        if kind not in set(RequestKind):
            raise Refused("Scegli il tipo di richiesta.")
        phone = e164(request.form.get("phone", ""))
        request_id = queue.open_request(
            services(),
            actor(),
            phone,
            RequestKind(kind),
            request.form.get("received_via", ""),
            _received_at(request.form.get("received_on", "")),
        )
    except InvalidPhoneNumber:
        flash("Numero di telefono non valido.", "error")
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Richiesta registrata: va evasa entro 30 giorni dalla ricezione.", "ok")
        return redirect(url_for("console.admin_request", request_id=request_id))
    return redirect(url_for("console.admin_requests"))


def _request_page(template: str, request_id: int) -> str:
    with services().db.read() as db:
        row = queue.request_row(db, actor().tenant_id, request_id)
    return render_template(template, row=row, erase_word=ERASE_WORD)


@bp.get("/admin/requests/<id:request_id>")
@admin_required
def admin_request(request_id: int) -> str:
    return _request_page("console/admin/request.html", request_id)


def _back(request_id: int) -> Response:
    return redirect(url_for("console.admin_request", request_id=request_id))


@bp.post("/admin/requests/<id:request_id>/export")
@admin_required
def admin_request_prepare(request_id: int) -> Response:
    try:
        queue.prepare_export(services(), actor(), request_id)
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Esportazione pronta: scaricala e consegnala all'interessato.", "ok")
    return _back(request_id)


@bp.get("/admin/requests/<id:request_id>/export")
@admin_required
def admin_request_download(request_id: int) -> Response:
    try:
        name, body = queue.read_export(services(), actor(), request_id)
    except NotFound:
        flash("Nessuna esportazione per questa richiesta: preparala.", "error")
        return _back(request_id)
    return download(name, body, "application/json")


@bp.get("/admin/requests/<id:request_id>/erase")
@admin_required
def admin_request_erase_confirm(request_id: int) -> str:
    return _request_page("console/admin/request_erase.html", request_id)


@bp.post("/admin/requests/<id:request_id>/erase")
@admin_required
def admin_request_erase(request_id: int) -> Response:
    if request.form.get("confirm", "").strip().upper() != ERASE_WORD:
        flash(f"Per confermare scrivi {ERASE_WORD}: nulla è stato cancellato.", "error")
        return redirect(url_for("console.admin_request_erase_confirm", request_id=request_id))
    try:
        queue.erase_for_request(services(), actor(), request_id)
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Dati cancellati e richiesta chiusa come evasa.", "ok")
    return _back(request_id)


@bp.post("/admin/requests/<id:request_id>/close")
@admin_required
def admin_request_close(request_id: int) -> Response:
    status = request.form.get("status", "")
    try:
        if status not in (RequestStatus.DONE, RequestStatus.REFUSED):
            raise Refused("Scegli l'esito: evasa o respinta.")
        queue.close_request(
            services(), actor(), request_id, RequestStatus(status), request.form.get("outcome", "")
        )
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Richiesta chiusa.", "ok")
    return _back(request_id)
