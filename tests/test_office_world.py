"""The office's own world: buildings, residents and suppliers, tickets as work items,
work orders to suppliers, building notices, questions about the office.

Through the real CLI, webhook, worker, gate, API and fake Twilio, on SQLite and
PostgreSQL where the issue asks; the answer readers as plain functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import RESIDENT, drain, send_inbound
from sqlalchemy import select

from bot.office.buildings import Choice, match_building
from bot.office.tokens import create_token
from bot.services import Services
from storage.models import Building, BuildingLink, Contact, Tenant, Ticket, TicketEvent

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

BUILDINGS_CSV = """code,name,address,ascensore,gas
AUR,Condominio Aurora,via Roma 12 Milano,800 111 222,800 900 999
GIR,Condominio Girasole,viale Monza 40 Milano,,
"""
SUPPLIER = "+393351110001"
SUPPLIER_2 = "+393351110002"
NEIGHBOUR = "+393339876543"
OTHER_BUILDING = "+393339876544"
HEADER = "phone,kind,legal_basis,consent_at,consent_method,name,building,scala,interno,role,trade"
SIGNED = "consent,2025-03-01T10:15:00+01:00,modulo firmato"
CONTACTS_CSV = f"""{HEADER}
{RESIDENT},condomino,{SIGNED},Anna Bianchi,AUR,B,7,proprietario,
{NEIGHBOUR},condomino,{SIGNED},,AUR,A,2,inquilino,
{OTHER_BUILDING},condomino,{SIGNED},,GIR,,,inquilino,
{SUPPLIER},fornitore,contract,,,Idraulica Rossi,,,,fornitore,idraulico
{SUPPLIER_2},fornitore,contract,,,Elettro Verdi,,,,fornitore,elettricista
+393339876545,condomino,contract,,,,XYZ,,,inquilino,
+393339876546,condomino,contract,,,,,B,,,
+393339876547,condomino,contract,,,,AUR,,,custode,
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def import_office(runner: FlaskCliRunner, tenant: Tenant, tmp_path: Path) -> list[str]:
    buildings = _write(tmp_path, "condomini.csv", BUILDINGS_CSV)
    contacts = _write(tmp_path, "contatti.csv", CONTACTS_CSV)
    first = runner.invoke(args=["buildings", "import", "--tenant", tenant.slug, str(buildings)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(args=["contacts", "import", "--tenant", tenant.slug, str(contacts)])
    assert second.exit_code == 0, second.output
    return first.output.splitlines() + second.output.splitlines()


def bearer(svc: Services, tenant: Tenant) -> dict[str, str]:
    with svc.db.session() as session:
        return {"Authorization": f"Bearer {create_token(session, tenant, 'crm')}"}


def say(
    client: FlaskClient, svc: Services, text: str, sender: str = RESIDENT, **extra: Any
) -> dict[str, str]:
    params = send_inbound(client, text, sender=sender, **extra)
    drain(svc)
    return params


def replies_to(twilio: Any, phone: str) -> list[str]:
    return [m.get("Body", "") for m in twilio.messages if m["To"] == f"whatsapp:{phone}"]


# -- 1. buildings and people ------------------------------------------------------------


@BOTH
def test_buildings_import_reports_each_row_and_keeps_the_emergency_numbers(
    runner, svc, tenant, tmp_path
):
    path = _write(tmp_path, "b.csv", BUILDINGS_CSV + ",senza codice,via X\nAUR,Doppio,via Y\n")

    result = runner.invoke(args=["buildings", "import", "--tenant", tenant.slug, str(path)])

    lines = result.output.splitlines()
    assert "riga 2: AUR imported" in lines
    assert "riga 3: GIR imported" in lines
    assert any(line.startswith("riga 4:") and "codice" in line for line in lines)
    assert any(line.startswith("riga 5:") and "ripetuto" in line for line in lines)
    assert lines[-1] == "2 imported or updated, 2 refused"
    with svc.db.read() as session:
        aurora = session.scalar(select(Building).where(Building.code == "AUR"))
    assert aurora is not None and aurora.address == "via Roma 12 Milano"
    assert aurora.emergency_numbers == {"ascensore": "800 111 222", "gas": "800 900 999"}


@BOTH
def test_contacts_import_links_people_to_buildings_with_role_unit_name_and_trade(
    runner, svc, tenant, tmp_path
):
    lines = import_office(runner, tenant, tmp_path)

    assert f"riga 2: {RESIDENT} imported" in lines
    assert any(
        line.startswith("riga 7:") and "condominio sconosciuto: XYZ" in line for line in lines
    )
    assert any(line.startswith("riga 8:") and "senza condominio" in line for line in lines)
    assert any(line.startswith("riga 9:") and "ruolo sconosciuto" in line for line in lines)
    assert lines[-1] == "5 imported or updated, 3 refused"
    with svc.db.read() as session:
        anna = session.scalar(select(Contact).where(Contact.phone == RESIDENT))
        assert anna is not None and anna.name == "Anna Bianchi"
        (link,) = session.scalars(select(BuildingLink).where(BuildingLink.contact_id == anna.id))
        assert (link.building.code, link.role, link.unit.scala, link.unit.interno) == (
            "AUR",
            "proprietario",
            "B",
            "7",
        )
        plumber = session.scalar(select(Contact).where(Contact.phone == SUPPLIER))
        assert plumber is not None
        assert (plumber.kind, plumber.trade, plumber.name) == (
            "fornitore",
            "idraulico",
            "Idraulica Rossi",
        )


@BOTH
def test_the_api_lists_buildings_and_contacts_with_name_buildings_and_role(
    runner, client, svc, tenant, tmp_path
):
    import_office(runner, tenant, tmp_path)
    headers = bearer(svc, tenant)

    buildings = client.get("/api/v1/buildings", headers=headers).get_json()
    contacts = client.post("/api/v1/contacts/lookup", json={"phone": RESIDENT}, headers=headers)

    assert [{k: b[k] for k in ("code", "name", "address")} for b in buildings["buildings"]] == [
        {"code": "AUR", "name": "Condominio Aurora", "address": "via Roma 12 Milano"},
        {"code": "GIR", "name": "Condominio Girasole", "address": "viale Monza 40 Milano"},
    ]
    assert all(isinstance(b["id"], int) for b in buildings["buildings"])
    (anna,) = contacts.get_json()["contacts"]
    assert (anna["name"], anna["buildings"], anna["role"]) == (
        "Anna Bianchi",
        ["AUR"],
        "proprietario",
    )
    assert anna["places"] == [
        {"building": "AUR", "role": "proprietario", "scala": "B", "interno": "7"}
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("2", "GIR"),
        ("via Roma 12", "AUR"),
        ("Condominio Aurora", "AUR"),
        ("viale monza", "GIR"),
        ("gir", "GIR"),
        ("3", None),
        ("Milano", None),  # both are in Milano: ambiguous
        ("non so", None),
    ],
)
def test_an_answer_naming_a_building_is_read_by_number_code_name_or_address(answer, expected):
    aurora = Choice(1, "AUR", "Condominio Aurora", "via Roma 12 Milano")
    girasole = Choice(2, "GIR", "Condominio Girasole", "viale Monza 40 Milano")

    found = match_building(answer, [aurora, girasole], [aurora, girasole])

    assert (found.code if found else None) == expected


# -- 2. tickets as the office's work items ---------------------------------------------------

FAULT = "Il citofono non funziona da ieri"


def only_ticket(svc: Services) -> Ticket:
    with svc.db.read() as session:
        (ticket,) = session.scalars(select(Ticket)).all()
        assert ticket.building is None or ticket.building.code  # loaded while the session is open
        return ticket


def timeline(svc: Services, ticket_id: int) -> list[str]:
    with svc.db.read() as session:
        rows = session.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)
        )
        return [row.kind for row in rows]


@BOTH
def test_a_resident_known_in_a_building_files_a_fault_under_it_with_the_number_in_the_reply(
    runner, client, svc, tenant, twilio, tmp_path
):
    import_office(runner, tenant, tmp_path)

    say(client, svc, FAULT)

    ticket = only_ticket(svc)
    assert ticket.building is not None and ticket.building.code == "AUR"
    assert svc.cipher.decrypt(ticket.description) == FAULT
    (reply,) = replies_to(twilio, RESIDENT)
    assert f"segnalazione n. {ticket.id} per Condominio Aurora" in reply
    assert "Le faremo sapere" not in reply
    assert timeline(svc, ticket.id) == ["opened", "building_set"]
    answer = client.get("/api/v1/tickets", headers=bearer(svc, tenant)).get_json()["tickets"][0]
    assert (answer["building"], answer["description"], answer["scala"]) == ("AUR", FAULT, "B")
    assert (answer["priority"], answer["work_orders"]) == ("normal", [])


@BOTH
def test_an_unknown_resident_is_asked_the_building_and_the_answer_files_and_is_remembered(
    runner, client, svc, tenant, twilio, tmp_path
):
    import_office(runner, tenant, tmp_path)
    stranger = "+393401234567"
    say(client, svc, "buongiorno", sender=stranger)
    say(client, svc, "accetto", sender=stranger)

    say(client, svc, FAULT, sender=stranger)
    ticket = only_ticket(svc)
    asked = replies_to(twilio, stranger)[-1]
    say(client, svc, "via Roma 12", sender=stranger)

    assert ticket.building is None
    assert f"segnalazione n. {ticket.id}" in asked and "indirizzo" in asked
    filed = only_ticket(svc)
    assert filed.building is not None and filed.building.code == "AUR"
    assert f"n. {ticket.id} è registrata per Condominio Aurora" in replies_to(twilio, stranger)[-1]
    with svc.db.read() as session:
        person = session.scalar(select(Contact).where(Contact.phone == stranger))
        assert person is not None
        (link,) = session.scalars(select(BuildingLink).where(BuildingLink.contact_id == person.id))
        assert (link.building_id, link.role, link.source) == (
            filed.building_id,
            None,
            "whatsapp_inbound",
        )


def test_a_resident_of_two_buildings_picks_one_by_number(
    runner, client, svc, tenant, twilio, tmp_path
):
    import_office(runner, tenant, tmp_path)
    both = _write(
        tmp_path,
        "due.csv",
        "phone,kind,legal_basis,consent_at,consent_method,building,role\n"
        f"{RESIDENT},condomino,consent,2025-03-01T10:15:00+01:00,modulo,GIR,proprietario\n",
    )
    runner.invoke(args=["contacts", "import", "--tenant", tenant.slug, str(both)])

    say(client, svc, FAULT)
    asked = replies_to(twilio, RESIDENT)[-1]
    say(client, svc, "2")

    assert "1. Condominio Aurora, via Roma 12 Milano" in asked
    assert "2. Condominio Girasole, viale Monza 40 Milano" in asked
    filed = only_ticket(svc)
    assert filed.building is not None and filed.building.code == "GIR"


# -- 3. work orders to suppliers ------------------------------------------------------------

WORK_ORDER_SID = "HX" + "a1" * 16
TICKET_UPDATE_SID = "HX" + "b2" * 16


@pytest.fixture
def office(runner, svc, tenant, tmp_path) -> Tenant:
    from bot.office.settings import update_settings

    import_office(runner, tenant, tmp_path)
    update_settings(
        svc,
        tenant.id,
        {"templates.work_order": WORK_ORDER_SID, "templates.ticket_update": TICKET_UPDATE_SID},
        actor="test",
    )
    with svc.db.read() as session:
        fresh = session.get(Tenant, tenant.id)
        assert fresh is not None
        return fresh


def send_order(
    client: FlaskClient, svc: Services, tenant: Tenant, ticket_id: int
) -> dict[str, Any]:
    answer = client.post(
        f"/api/v1/tickets/{ticket_id}/work-orders",
        json={"supplier": SUPPLIER, "note": "citofono scala B"},
        headers=bearer(svc, tenant),
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    drain(svc)
    return dict(answer.get_json())


def order_state(
    client: FlaskClient, svc: Services, tenant: Tenant, order_id: int
) -> dict[str, Any]:
    answer = client.get(f"/api/v1/work-orders/{order_id}", headers=bearer(svc, tenant))
    assert answer.status_code == 200
    return dict(answer.get_json())


@BOTH
def test_a_work_order_goes_as_a_template_the_supplier_accepts_by_button_and_closes_in_words(
    client, svc, office, twilio
):
    say(client, svc, FAULT)
    ticket = only_ticket(svc)

    created = send_order(client, svc, office, ticket.id)
    (sent,) = [m for m in twilio.messages if m["To"] == f"whatsapp:{SUPPLIER}"]
    say(
        client,
        svc,
        "Accetta",
        sender=SUPPLIER,
        ButtonPayload="accept",
        ButtonText="Accetta",
        OriginalRepliedMessageSid=sent["sid"],
    )
    accepted = order_state(client, svc, office, created["id"])
    say(client, svc, "ho finito", sender=SUPPLIER)
    done = order_state(client, svc, office, created["id"])

    assert created["status"] == "sent"
    assert sent["ContentSid"] == WORK_ORDER_SID
    assert "Body" not in sent or not sent["Body"]
    assert accepted["status"] == "accepted"
    assert (done["status"], done["ticket_id"], done["supplier"]) == ("done", ticket.id, SUPPLIER)
    steps = [e["status"] for e in done["events"] if e["kind"] == "work_order"]
    assert steps == ["sent", "accepted", "done"]
    told = [e["status"] for e in done["events"] if e["kind"] == "resident_told"]
    assert told == ["accepted", "done"]
    assert only_ticket(svc).status == "done"
    told = replies_to(twilio, RESIDENT)
    assert any(f"segnalazione n. {ticket.id}: il tecnico ha preso in carico" in t for t in told)
    assert any(f"segnalazione n. {ticket.id}: l'intervento è stato completato" in t for t in told)
    say(client, svc, "Risolto, grazie!")
    assert f"segnalazione n. {ticket.id} è chiusa" in replies_to(twilio, RESIDENT)[-1]
    kinds = timeline(svc, ticket.id)
    assert kinds[-1] == "confirmed_solved"
    assert kinds.count("work_order") == 3 and "closed" in kinds and "resident_told" in kinds
    from helpers import audit_actions

    actions = audit_actions(svc, office)
    assert {"work_order.sent", "work_order.accepted", "work_order.done"} <= set(actions)


def test_a_button_reply_is_never_read_as_a_consent_keyword(client, svc, office, twilio):
    say(client, svc, FAULT)
    created = send_order(client, svc, office, only_ticket(svc).id)
    (sent,) = [m for m in twilio.messages if m["To"] == f"whatsapp:{SUPPLIER}"]

    say(
        client,
        svc,
        "Accetto",
        sender=SUPPLIER,
        ButtonPayload="decline",
        OriginalRepliedMessageSid=sent["sid"],
    )

    assert order_state(client, svc, office, created["id"])["status"] == "declined"
    with svc.db.read() as session:
        supplier = session.scalar(select(Contact).where(Contact.phone == SUPPLIER))
        assert supplier is not None and supplier.consent == "none"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("ho finito", "done"),
        ("Lavoro completato, tutto a posto", "done"),
        ("ho fatto il sopralluogo, serve un pezzo", None),
        ("non posso prima di lunedì", "decline"),
        ("domani alle 9:30", "propose"),
        ("ok", "accept"),
        ("buongiorno", None),
    ],
)
def test_a_suppliers_words_are_read_as_an_answer_to_a_work_order(words, expected):
    from bot.office.work_orders import read_answer
    from storage.models import utcnow

    read = read_answer(words, None, None, utcnow())

    assert (read[0] if read else None) == expected


@pytest.mark.parametrize(
    ("words", "status"),
    [
        ("va bene giovedì alle 10", "proposed"),
        ("non posso, sono fuori città", "declined"),
        ("ok", "accepted"),
    ],
)
def test_a_typed_answer_to_a_work_order_is_understood(client, svc, office, twilio, words, status):
    say(client, svc, FAULT)
    created = send_order(client, svc, office, only_ticket(svc).id)

    say(client, svc, words, sender=SUPPLIER)

    state = order_state(client, svc, office, created["id"])
    assert state["status"] == status
    if status == "proposed":
        assert state["proposed_at"] is not None
        assert "giovedì" in replies_to(twilio, SUPPLIER)[-1]


def test_a_work_order_without_the_office_template_is_refused(client, svc, tenant, runner, tmp_path):
    import_office(runner, tenant, tmp_path)
    say(client, svc, FAULT)

    answer = client.post(
        f"/api/v1/tickets/{only_ticket(svc).id}/work-orders",
        json={"supplier": SUPPLIER},
        headers=bearer(svc, tenant),
    )

    assert answer.status_code == 422
    assert answer.get_json()["error"] == "no_work_order_template"


def test_the_resident_outside_the_window_is_told_by_the_ticket_update_template(
    client, svc, office, twilio
):
    from datetime import timedelta

    from storage.models import utcnow

    say(client, svc, FAULT)
    ticket = only_ticket(svc)
    created = send_order(client, svc, office, ticket.id)
    with svc.db.session() as session:
        resident = session.scalar(select(Contact).where(Contact.phone == RESIDENT))
        assert resident is not None
        resident.last_inbound_at = utcnow() - timedelta(hours=30)

    say(client, svc, "ok", sender=SUPPLIER)

    assert order_state(client, svc, office, created["id"])["status"] == "accepted"
    update = [m for m in twilio.messages if m["To"] == f"whatsapp:{RESIDENT}"][-1]
    assert update["ContentSid"] == TICKET_UPDATE_SID


# -- 4. building notices ----------------------------------------------------------------------

NOTICE_SID = "HX" + "c3" * 16


def notice(client: FlaskClient, svc: Services, tenant: Tenant, **fields: Any) -> Any:
    body = {
        "building": "AUR",
        "category": "avvisi",
        "template": {"content_sid": NOTICE_SID, "variables": {"1": "acqua sospesa giovedì"}},
        **fields,
    }
    return client.post("/api/v1/notices", json=body, headers=bearer(svc, tenant))


@BOTH
def test_a_notice_reaches_exactly_the_consented_opted_in_residents_of_the_building(
    runner, client, svc, tenant, twilio, tmp_path
):
    import_office(runner, tenant, tmp_path)
    say(client, svc, "AVVISI SI")  # Anna, AUR: in
    say(client, svc, "avvisi sì", sender=OTHER_BUILDING)  # GIR: another building
    say(client, svc, "avvisi si", sender=NEIGHBOUR)
    say(client, svc, "stop", sender=NEIGHBOUR)  # AUR but withdrawn
    opted = replies_to(twilio, RESIDENT)[-1]
    before = len(twilio.messages)

    answer = notice(client, svc, tenant)
    drain(svc)

    assert "AVVISI NO" in opted
    assert answer.status_code == 202
    assert answer.get_json()["recipients"] == 1
    sent = twilio.messages[before:]
    assert [(m["To"], m["ContentSid"]) for m in sent] == [(f"whatsapp:{RESIDENT}", NOTICE_SID)]
    state = client.get(f"/api/v1/notices/{answer.get_json()['id']}", headers=bearer(svc, tenant))
    assert state.get_json()["recipients"] == 1
    assert sum(state.get_json()["counts"].values()) == 1


def test_avvisi_no_takes_a_resident_out_of_the_notices(runner, client, svc, tenant, tmp_path):
    import_office(runner, tenant, tmp_path)
    say(client, svc, "AVVISI SI")
    say(client, svc, "AVVISI NO")

    assert notice(client, svc, tenant).get_json()["recipients"] == 0


def test_a_notice_to_one_staircase_skips_the_others(runner, client, svc, tenant, tmp_path):
    import_office(runner, tenant, tmp_path)
    say(client, svc, "AVVISI SI")  # scala B
    say(client, svc, "AVVISI SI", sender=NEIGHBOUR)  # scala A

    assert notice(client, svc, tenant, scala="A").get_json()["recipients"] == 1


@BOTH
def test_a_convocation_of_the_assembly_is_refused(runner, client, svc, tenant, tmp_path):
    import_office(runner, tenant, tmp_path)

    answer = notice(client, svc, tenant, category="convocazione_assemblea")

    assert answer.status_code == 422
    assert answer.get_json()["error"] == "not_a_valid_convocation_channel"


def test_the_bot_says_an_assembly_is_not_convened_on_whatsapp(client, svc, tenant, twilio):
    say(client, svc, "buongiorno")
    say(client, svc, "accetto")

    say(client, svc, "quando è la prossima assemblea?")

    assert "art. 66" in replies_to(twilio, RESIDENT)[-1]


def test_a_notice_keeps_to_the_offices_send_rate(runner, client, svc, tenant, twilio, tmp_path):
    import time

    from bot.office.settings import update_settings

    import_office(runner, tenant, tmp_path)
    for phone in (RESIDENT, NEIGHBOUR):
        say(client, svc, "AVVISI SI", sender=phone)
    update_settings(svc, tenant.id, {"send_rate_per_second": 1}, actor="test")
    before = len(twilio.messages)

    assert notice(client, svc, tenant).get_json()["recipients"] == 2
    started = time.monotonic()
    drain(svc)

    # One a second: the second copy waited for the next second's budget, and went.
    assert len(twilio.messages[before:]) == 2
    assert time.monotonic() - started < 30


def test_a_notice_over_the_daily_cap_of_recipients_is_refused(
    runner, client, svc, tenant, tmp_path
):
    from bot.office.settings import update_settings

    import_office(runner, tenant, tmp_path)
    say(client, svc, "AVVISI SI")
    say(client, svc, "AVVISI SI", sender=NEIGHBOUR)
    update_settings(svc, tenant.id, {"notices_daily_cap": 1}, actor="test")

    answer = notice(client, svc, tenant)

    assert answer.status_code == 429
    assert answer.get_json()["error"] == "daily_cap_exceeded"


# -- 5. questions about the office ------------------------------------------------------------


@pytest.fixture
def answering(runner, client, svc, tenant, tmp_path) -> Tenant:
    from bot.office.settings import update_settings

    import_office(runner, tenant, tmp_path)
    update_settings(
        svc,
        tenant.id,
        {
            "hours.fri": [["09:00", "13:00"]],
            "office.address": "via Dante 3, Milano",
            "office.pec": "studio.rossi@pec.it",
            "office.gas_emergency": "800 000 111",
        },
        actor="test",
    )
    return tenant


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("A che ora chiude il vostro ufficio il venerdì?", "venerdì 09:00-13:00"),
        ("Dove si trova il vostro studio?", "via Dante 3, Milano"),
        ("Qual è la vostra PEC?", "studio.rossi@pec.it"),
        # The building's own number wins over the office's.
        ("Qual è il numero di emergenza dell'ascensore?", "800 111 222"),
        ("Mi date il numero del pronto intervento gas?", "800 900 999"),
    ],
)
@BOTH
def test_questions_about_the_office_are_answered_from_its_settings(
    client, svc, answering, twilio, question, expected
):
    say(client, svc, question)

    answer = replies_to(twilio, RESIDENT)[-1]
    assert expected in answer
    assert "appuntamento" not in answer
    with svc.db.read() as session:
        assert session.scalars(select(Ticket)).all() == []


def test_a_gas_smell_with_a_question_stays_an_emergency(client, svc, answering, twilio):
    say(client, svc, "C'è odore di gas in cantina, qual è il numero del pronto intervento gas?")

    assert only_ticket(svc).kind == "emergency"


# -- 6. minimisation stays --------------------------------------------------------------------


def test_erasure_removes_a_residents_building_links_tickets_and_notice_copies(
    runner, client, svc, tenant, tmp_path
):
    from bot.privacy.rights import erase_contact
    from storage.models import NoticeDelivery

    import_office(runner, tenant, tmp_path)
    say(client, svc, "AVVISI SI")
    say(client, svc, FAULT)
    assert notice(client, svc, tenant).status_code == 202
    with svc.db.read() as session:
        anna = session.scalar(select(Contact).where(Contact.phone == RESIDENT))
        assert anna is not None

    erase_contact(svc, tenant, RESIDENT, actor="test")

    with svc.db.read() as session:
        assert (
            session.scalars(select(BuildingLink).where(BuildingLink.contact_id == anna.id)).all()
            == []
        )
        assert session.scalars(select(Ticket)).all() == []
        assert session.scalars(select(NoticeDelivery)).all() == []


def test_the_purge_removes_old_finished_work_orders_notes_and_notices(client, svc, office, twilio):
    from datetime import timedelta

    from bot.privacy.retention import purge
    from storage.models import BuildingNotice, TicketNote, WorkOrder, utcnow

    say(client, svc, FAULT)
    ticket = only_ticket(svc)
    created = send_order(client, svc, office, ticket.id)
    say(client, svc, "ho finito", sender=SUPPLIER)
    assert notice(client, svc, office).status_code == 202
    with svc.db.session() as session:
        session.add(
            TicketNote(tenant_id=office.id, ticket_id=ticket.id, body=svc.cipher.encrypt("x"))
        )

    (report,) = purge(svc, utcnow() + timedelta(days=800))

    assert report.removed["work_orders"] == 1
    assert report.removed["ticket_notes"] == 1
    assert report.removed["notices"] == 1
    with svc.db.read() as session:
        assert session.get(WorkOrder, created["id"]) is None
        assert session.scalars(select(BuildingNotice)).all() == []


def test_the_register_lists_suppliers_work_orders_and_notices(svc, tenant):
    from bot.privacy.register import processing_register
    from storage.models import utcnow

    register = processing_register(svc, tenant, utcnow())

    text = str(register)
    assert "Ordini di lavoro" in text
    assert "Avvisi di condominio" in text
    assert "Fornitori: nome, mestiere" in text


# -- the console: tickets by hand, filters, notes, work orders ---------------------------------


def test_an_operator_opens_edits_and_notes_a_ticket_by_hand_and_every_change_is_on_its_timeline(
    runner, signed_in, svc, tenant, operator, tmp_path
):
    from helpers import audit_actions, post_form

    import_office(runner, tenant, tmp_path)
    new = "/console/tickets/new"
    opened = post_form(
        signed_in,
        new,
        {
            "kind": "guasto",
            "description": "Perdita in cantina, IBAN IT60X0542811101000000123456",
            "building": "GIR",
            "priority": "urgent",
            "due": "2026-12-20",
        },
        page=new,
    )
    ticket = only_ticket(svc)
    page = f"/console/tickets/{ticket.id}"
    post_form(
        signed_in,
        f"{page}/edit",
        {
            "building": "AUR",
            "assignee": str(operator.id),
            "priority": "urgent",
            "supplier": "",
            "due": "2026-12-20",
            "description": svc.cipher.decrypt(ticket.description),
        },
        page=page,
    )
    noted = post_form(signed_in, f"{page}/notes", {"note": "Richiamare la signora"}, page=page)

    assert f"Ticket n. {ticket.id} aperto." in opened.get_data(as_text=True)
    assert "IT60X0542811101000000123456" not in svc.cipher.decrypt(ticket.description)
    text = noted.get_data(as_text=True)
    assert "Condominio Aurora" in text and "Richiamare la signora" in text
    fresh = only_ticket(svc)
    assert (fresh.building.code, fresh.priority, fresh.assignee_user_id) == (
        "AUR",
        "urgent",
        operator.id,
    )
    assert timeline(svc, ticket.id) == ["opened", "updated", "updated", "note_added"]
    assert {"ticket.create", "ticket.update", "ticket.note"} <= set(audit_actions(svc, tenant))
    listing = signed_in.get(f"/console/tickets?condominio=AUR&assegnato={operator.id}").get_data(
        as_text=True
    )
    assert f"#{ticket.id}</a>" in listing
    other = signed_in.get("/console/tickets?condominio=GIR").get_data(as_text=True)
    assert f"#{ticket.id}</a>" not in other


def test_an_operator_sends_a_work_order_from_the_ticket_page(
    signed_in, client, svc, office, twilio
):
    from helpers import post_form

    send_inbound(client, FAULT)
    drain(svc)
    ticket = only_ticket(svc)
    with svc.db.read() as session:
        plumber = session.scalar(select(Contact).where(Contact.phone == SUPPLIER))
        assert plumber is not None
    page = f"/console/tickets/{ticket.id}"

    sent = post_form(
        signed_in,
        f"{page}/work-orders",
        {"supplier": str(plumber.id), "note": "urgente"},
        page=page,
    )
    drain(svc)

    assert "Ordine di lavoro n." in sent.get_data(as_text=True)
    assert [m["ContentSid"] for m in twilio.messages if m["To"] == f"whatsapp:{SUPPLIER}"] == [
        WORK_ORDER_SID
    ]
    assert "inviato" in signed_in.get(page).get_data(as_text=True)


def test_an_office_with_too_many_suppliers_for_a_list_types_the_supplier(
    signed_in, client, svc, office, twilio, monkeypatch
):
    from helpers import post_form

    from bot.console import tickets

    monkeypatch.setattr(tickets, "SUPPLIER_CHOICES", 1)  # the office has two
    send_inbound(client, FAULT)
    drain(svc)
    ticket = only_ticket(svc)
    page = f"/console/tickets/{ticket.id}"
    html = signed_in.get(page).get_data(as_text=True)
    assert (
        'name="supplier" value="" maxlength="80"' in html
        and "<option" not in html.split('id="work-order-form"')[1].split("</form>")[0]
    )

    several = post_form(signed_in, f"{page}/work-orders", {"supplier": "o", "note": ""}, page=page)
    nobody = post_form(signed_in, f"{page}/work-orders", {"supplier": "Gasisti"}, page=page)
    sent = post_form(signed_in, f"{page}/work-orders", {"supplier": "idraulico"}, page=page)
    drain(svc)

    assert "Più fornitori corrispondono a «o»: Elettro Verdi (elettricista) · n." in (
        several.get_data(as_text=True)
    )
    assert "Nessun fornitore corrisponde a «Gasisti»." in nobody.get_data(as_text=True)
    assert "Ordine di lavoro n." in sent.get_data(as_text=True)
    assert [m["To"] for m in twilio.messages if m.get("ContentSid") == WORK_ORDER_SID] == [
        f"whatsapp:{SUPPLIER}"
    ]


def test_the_ticket_list_filters_by_a_typed_supplier(signed_in, client, svc, office, monkeypatch):
    from helpers import post_form

    from bot.console import tickets

    monkeypatch.setattr(tickets, "SUPPLIER_CHOICES", 1)
    send_inbound(client, FAULT)
    drain(svc)
    ticket = only_ticket(svc)
    page = f"/console/tickets/{ticket.id}"
    post_form(signed_in, f"{page}/work-orders", {"supplier": "Idraulica Rossi"}, page=page)

    mine = signed_in.get("/console/tickets?fornitore=idraul").get_data(as_text=True)
    theirs = signed_in.get("/console/tickets?fornitore=Verdi").get_data(as_text=True)

    assert f"#{ticket.id}</a>" in mine and 'value="idraul"' in mine
    assert f"#{ticket.id}</a>" not in theirs


# -- 7. the demo office ---------------------------------------------------------------------------


def test_the_demo_office_has_two_buildings_residents_and_two_suppliers_once(svc, tenant):
    from bot.office.demo import seed_demo_world

    assert seed_demo_world(svc, tenant) is True
    assert seed_demo_world(svc, tenant) is False

    with svc.db.read() as session:
        codes = [b.code for b in session.scalars(select(Building).order_by(Building.code))]
        people = session.scalars(select(Contact)).all()
    assert codes == ["AUR", "GIR"]
    assert sum(p.kind == "fornitore" for p in people) == 2
    assert sum(p.kind == "condomino" for p in people) == 3


def test_in_the_demo_office_a_fault_walks_through_a_work_order(client, svc, tenant, twilio):
    from bot.office.demo import seed_demo_world

    seed_demo_world(svc, tenant)
    with svc.db.read() as session:
        fresh = session.get(Tenant, tenant.id)
        assert fresh is not None
    say(client, svc, FAULT, sender="+393331112201")
    ticket = only_ticket(svc)
    created = send_order(client, svc, fresh, ticket.id)
    say(client, svc, "ok", sender=SUPPLIER)
    say(client, svc, "ho finito", sender=SUPPLIER)

    assert ticket.building is not None and ticket.building.code == "AUR"
    assert order_state(client, svc, fresh, created["id"])["status"] == "done"


def test_an_operator_sends_a_building_notice_from_the_console(
    runner, client, signed_in, svc, tenant, twilio, tmp_path
):
    from helpers import post_form

    from bot.office.settings import update_settings

    import_office(runner, tenant, tmp_path)
    from bot.office.settings import parse_assignment

    update_settings(
        svc,
        tenant.id,
        dict([parse_assignment(f"approved_templates=Avviso|{NOTICE_SID}")]),
        actor="test",
    )
    say(client, svc, "AVVISI SI")
    before = len(twilio.messages)

    sent = post_form(
        signed_in,
        "/console/notices",
        {
            "building": "AUR",
            "category": "avvisi",
            "content_sid": NOTICE_SID,
            "text": "ascensore fermo",
        },
        page="/console/notices",
    )
    refused = post_form(
        signed_in,
        "/console/notices",
        {"building": "AUR", "category": "convocazione_assemblea", "content_sid": NOTICE_SID},
        page="/console/notices",
    )
    drain(svc)

    assert "in invio a 1 condòmini" in sent.get_data(as_text=True)
    assert "art. 66" in refused.get_data(as_text=True)
    assert [m["To"] for m in twilio.messages[before:]] == [f"whatsapp:{RESIDENT}"]


# -- the inbox knows the office's world ----------------------------------------------------


@pytest.mark.parametrize("typed", ["Girasole", "GIR", "viale Monza"])
def test_the_inbox_finds_a_residents_conversation_by_the_building_they_live_in(
    client, svc, tenant, runner, tmp_path, typed
):
    from helpers import make_user

    from bot.console.inbox import inbox

    import_office(runner, tenant, tmp_path)
    for phone in (RESIDENT, OTHER_BUILDING):
        send_inbound(client, "Buongiorno", sender=phone)
    drain(svc)
    user = make_user(svc, tenant, "giulia@studio-rossi.it")
    with svc.db.read() as session:
        found = inbox(session, svc.cipher, tenant.id, user.id, search=typed).rows
        by_name = inbox(session, svc.cipher, tenant.id, user.id, search="anna bianchi").rows
    assert [row.contact.split(" ")[0] for row in found] == [OTHER_BUILDING]
    assert [row.contact.split(" ")[0] for row in by_name] == [RESIDENT]
