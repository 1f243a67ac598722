"""Tickets: list with filters, detail (timeline, notes, attachments, work orders),
creation and edits by hand, internal notes, status changes, sending a work order."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.paging import id_cursor, page_links
from bot.console.tickets import (
    TICKET_STATUSES,
    TicketFilter,
    add_note,
    change_ticket_status,
    create_ticket,
    find_supplier,
    form_choices,
    list_tickets,
    ticket_page,
    update_ticket,
)
from bot.exceptions import Refused
from bot.office.work_orders import send_work_order
from bot.privacy.audit import record_actor_audit
from bot.services import services
from storage.models import Tenant, utcnow

AGES = (1, 3, 7, 30)


@bp.get("/tickets")
def tickets() -> str:
    who = actor()
    wanted = TicketFilter.from_args(request.args)
    before = id_cursor(request.args.get("prima"))
    with services().db.read() as db:
        rows, older = list_tickets(db, who.tenant_id, wanted, now=utcnow(), before=before)
        choices = form_choices(db, who.tenant_id)
    return render_template(
        "console/tickets.html",
        tickets=rows,
        status=wanted.status,
        wanted=wanted,
        statuses=TICKET_STATUSES,
        choices=choices,
        ages=AGES,
        **page_links(older),
    )


@bp.route("/tickets/new", methods=["GET", "POST"])
def ticket_new() -> Response | str:
    who = actor()
    svc = services()
    if request.method == "POST":
        try:
            with svc.db.session() as db:
                created = create_ticket(db, who, request.form, svc.cipher, utcnow())
        except Refused as refusal:
            flash(refusal.message, "error")
        else:
            flash(f"Ticket n. {created.id} aperto.", "ok")
            return redirect(url_for("console.ticket", ticket_id=created.id))
    with svc.db.read() as db:
        choices = form_choices(db, who.tenant_id)
    return render_template("console/ticket_new.html", choices=choices, form=request.form)


@bp.get("/tickets/<id:ticket_id>")
def ticket(ticket_id: int) -> str:
    who = actor()
    svc = services()
    with svc.db.session() as db:
        page = ticket_page(db, who.tenant_id, ticket_id, svc.cipher)
        record_actor_audit(db, who, "ticket.view", "ticket", ticket_id)
    return render_template(
        "console/ticket.html", ticket=page.ticket, page=page, statuses=TICKET_STATUSES
    )


def _back(ticket_id: int) -> Response:
    return redirect(url_for("console.ticket", ticket_id=ticket_id))


@bp.post("/tickets/<id:ticket_id>/status")
def ticket_status(ticket_id: int) -> Response:
    try:
        with services().db.session() as db:
            change_ticket_status(db, actor(), ticket_id, request.form.get("status", ""), utcnow())
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Stato del ticket aggiornato.", "ok")
    return _back(ticket_id)


@bp.post("/tickets/<id:ticket_id>/edit")
def ticket_edit(ticket_id: int) -> Response:
    svc = services()
    try:
        with svc.db.session() as db:
            changed = update_ticket(db, actor(), ticket_id, request.form, svc.cipher, utcnow())
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Ticket aggiornato." if changed else "Nessuna modifica.", "ok")
    return _back(ticket_id)


@bp.post("/tickets/<id:ticket_id>/notes")
def ticket_note(ticket_id: int) -> Response:
    svc = services()
    try:
        with svc.db.session() as db:
            add_note(db, actor(), ticket_id, request.form.get("note", ""), svc.cipher, utcnow())
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Nota aggiunta.", "ok")
    return _back(ticket_id)


@bp.post("/tickets/<id:ticket_id>/work-orders")
def ticket_work_order(ticket_id: int) -> Response:
    who = actor()
    svc = services()
    with svc.db.read() as db:
        try:
            supplier = find_supplier(db, who.tenant_id, request.form.get("supplier", ""))
        except Refused as refusal:
            flash(refusal.message, "error")
            return _back(ticket_id)
        tenant = db.get(Tenant, who.tenant_id)
    if supplier is None or not supplier.phone:
        flash("Fornitore non valido: sceglilo dall'elenco.", "error")
        return _back(ticket_id)
    assert tenant is not None
    try:
        order = send_work_order(
            svc,
            tenant,
            ticket_id,
            supplier.phone,
            request.form.get("note", ""),
            actor=who.audit_name,
            user_id=who.user_id,
            ip=who.ip,
        )
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash(f"Ordine di lavoro n. {order.id} inviato.", "ok")
    return _back(ticket_id)
