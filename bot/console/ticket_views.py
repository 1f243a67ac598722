"""Tickets: list (by status), detail with its conversation, status changes."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.paging import id_cursor
from bot.console.tickets import TICKET_STATUSES, change_ticket_status, list_tickets, load_ticket
from bot.exceptions import Refused
from bot.privacy.audit import record_actor_audit
from bot.services import services
from storage.models import utcnow


@bp.get("/tickets")
def tickets() -> str:
    who = actor()
    status = request.args.get("stato")
    status = status if status in TICKET_STATUSES else None
    before = id_cursor(request.args.get("prima"))
    with services().db.read() as db:
        rows, older = list_tickets(db, who.tenant_id, status, before=before)
    return render_template(
        "console/tickets.html",
        tickets=rows,
        status=status,
        statuses=TICKET_STATUSES,
        older=older,
        paged=before is not None,
    )


@bp.get("/tickets/<id:ticket_id>")
def ticket(ticket_id: int) -> str:
    who = actor()
    with services().db.session() as db:
        found = load_ticket(db, who.tenant_id, ticket_id)
        record_actor_audit(db, who, "ticket.view", "ticket", ticket_id)
    return render_template("console/ticket.html", ticket=found, statuses=TICKET_STATUSES)


@bp.post("/tickets/<id:ticket_id>/status")
def ticket_status(ticket_id: int) -> Response:
    try:
        with services().db.session() as db:
            change_ticket_status(db, actor(), ticket_id, request.form.get("status", ""), utcnow())
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Stato del ticket aggiornato.", "ok")
    return redirect(url_for("console.ticket", ticket_id=ticket_id))
