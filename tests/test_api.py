"""The JSON API: paging every list with a cursor, strict numbers, the phone lookup by
POST, the shapes of the contract, and no full number in the logs of a send."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_twilio import FakeTwilio
from flask.testing import FlaskClient
from helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OFFICE_NUMBER,
    RESIDENT,
    add_message,
    make_contact,
    make_conversation,
    make_tenant,
)
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bot.office.lifecycle import terminate_tenant
from bot.office.tokens import create_token
from bot.runtime.logs import configure_logging
from bot.services import Services
from bot.web.numbers import ID_MAX
from notify.whatsapp import OutboundRequest, TwilioTransport
from storage.models import BotLogEntry, ConsentEvent, Contact, Tenant, Ticket, utcnow

OTHER_NUMBER = "+390698765432"
HUGE = "99999999999999999999"
ROWS = 7  # per list and office: with a limit of 3, pages of 3, 3 and 1


def token_for(svc: Services, tenant: Tenant) -> str:
    with svc.db.session() as session:
        return create_token(session, tenant, "crm")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- two offices with something in every list ------------------------------------------


@dataclass
class Office:
    tenant: Tenant
    token: str
    contact: Contact
    conversation_id: int
    ids: dict[str, list[int]]  # per list, our ids in creation order


def _phone(office: int, n: int) -> str:
    return f"+39333{office}{n:06d}"


def _seed(svc: Services, tenant: Tenant, office: int) -> Office:
    contacts = [make_contact(svc, tenant, _phone(office, n)) for n in range(ROWS)]
    first = contacts[0]
    conversations = [make_conversation(svc, tenant, first) for _ in range(ROWS)]
    thread = conversations[0]
    messages = [add_message(svc, thread, f"messaggio {n}") for n in range(ROWS)]
    add_message(svc, conversations[1], "altra conversazione")  # never in thread's list
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with svc.db.session() as session:
        tickets = [
            Ticket(
                tenant_id=tenant.id,
                conversation_id=thread.id,
                kind="guasto",
                intent="guasto",
                status="open",
                created_at=start + timedelta(days=n),
            )
            for n in range(ROWS)
        ]
        entries = [
            BotLogEntry(
                tenant_id=tenant.id, intent="guasto", confidence=0.9, action="ticket", at=start
            )
            for _ in range(ROWS)
        ]
        events = [
            ConsentEvent(
                tenant_id=tenant.id,
                contact_id=contact.id,
                subject_ref=svc.cipher.pseudonym(contact.wa_id),
                event="granted",
                channel="whatsapp",
                actor="contact",
            )
            for contact in (first, contacts[1])
            for n in range(ROWS)
        ]
        session.add_all([*tickets, *entries, *events])
    return Office(
        tenant=tenant,
        token=token_for(svc, tenant),
        contact=first,
        conversation_id=thread.id,
        ids={
            "contacts": [c.id for c in contacts],
            "events": [e.id for e in events if e.contact_id == first.id],
            "conversations": [c.id for c in conversations],
            "messages": [m.id for m in messages],
            "tickets": [t.id for t in tickets],
            "entries": [e.id for e in entries],
        },
    )


@pytest.fixture
def token(svc: Services, tenant: Tenant) -> str:
    """A token of an office with nothing in it, for what needs no rows."""
    return token_for(svc, tenant)


@pytest.fixture
def ours(svc: Services, tenant: Tenant) -> Office:
    return _seed(svc, tenant, 1)


@pytest.fixture
def theirs(svc: Services, ours: Office) -> Office:
    return _seed(svc, make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER), 2)


@dataclass(frozen=True)
class Listing:
    key: str
    path: Callable[[Office], str]
    newest_first: bool = False


LISTS = {
    "contacts": Listing("contacts", lambda o: "/api/v1/contacts"),
    "events": Listing("events", lambda o: f"/api/v1/contacts/{o.contact.id}/consent-events"),
    "conversations": Listing("conversations", lambda o: "/api/v1/conversations", True),
    "messages": Listing(
        "messages", lambda o: f"/api/v1/conversations/{o.conversation_id}/messages"
    ),
    "tickets": Listing("tickets", lambda o: "/api/v1/tickets"),
    "entries": Listing("entries", lambda o: "/api/v1/bot-logs"),
}


def walk(
    client: FlaskClient, token: str, path: str, key: str, limit: int, **params: str
) -> Iterator[list[dict[str, Any]]]:
    """Every page of a list, following ``next_cursor`` to the end (bounded)."""
    cursor: str | None = None
    for _ in range(100):
        query = {**params, "limit": str(limit), **({"after": cursor} if cursor else {})}
        answer = client.get(path, query_string=query, headers=bearer(token))
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert len(body[key]) <= limit
        yield body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return
    raise AssertionError("the walk did not end")


# -- paging -----------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_list_walks_to_its_end_with_nothing_missing_repeated_or_foreign(
    client, ours, theirs, name
):
    listing = LISTS[name]

    pages = list(walk(client, ours.token, listing.path(ours), listing.key, limit=3))

    assert [len(page) for page in pages] == [3, 3, 1]
    seen = [item["id"] for page in pages for item in page]
    expected = ours.ids[name][::-1] if listing.newest_first else ours.ids[name]
    assert seen == expected  # in order, each once, and none of the other office's


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_page_exactly_as_long_as_the_list_is_the_last(client, ours, name):
    listing = LISTS[name]

    pages = list(walk(client, ours.token, listing.path(ours), listing.key, limit=ROWS))

    assert [len(page) for page in pages] == [ROWS]


def test_the_default_page_is_100_and_the_largest_500(client, svc, tenant):
    token = token_for(svc, tenant)
    with svc.db.session() as session:
        session.add_all(
            BotLogEntry(tenant_id=tenant.id, action="ticket", at=utcnow()) for _ in range(501)
        )

    default = client.get("/api/v1/bot-logs", headers=bearer(token)).get_json()
    largest = client.get("/api/v1/bot-logs?limit=500", headers=bearer(token)).get_json()

    assert len(default["entries"]) == 100 and default["next_cursor"] is not None
    assert len(largest["entries"]) == 500
    rest = client.get(
        f"/api/v1/bot-logs?limit=500&after={largest['next_cursor']}", headers=bearer(token)
    ).get_json()
    assert len(rest["entries"]) == 1 and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=-1", "limit=abc", "limit=²", "limit=1.5", f"limit={HUGE}"]
    + ["after=0", "after=²", "after=x", f"after={HUGE}", f"after={ID_MAX + 1}"],
)
def test_a_limit_or_cursor_out_of_range_answers_400(client, token, query):
    answer = client.get(f"/api/v1/tickets?{query}", headers=bearer(token))

    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"


def test_every_list_refuses_a_limit_or_cursor_out_of_range(client, ours):
    for listing in LISTS.values():
        for query in ("limit=501", "after=²"):
            answer = client.get(f"{listing.path(ours)}?{query}", headers=bearer(ours.token))
            assert answer.status_code == 400, (listing.key, query)


def test_since_keeps_filtering_while_paging(client, ours):
    pages = walk(
        client, ours.token, "/api/v1/tickets", "tickets", limit=2, since="2026-01-04T00:00:00Z"
    )

    seen = [ticket["id"] for page in pages for ticket in page]

    assert seen == ours.ids["tickets"][3:]


def test_a_filtered_list_pages_within_its_filter(client, ours, theirs):
    contact = ours.contact.id

    pages = walk(
        client, ours.token, "/api/v1/conversations", "conversations", 2, contact_id=str(contact)
    )

    assert [c["id"] for page in pages for c in page] == ours.ids["conversations"][::-1]


# -- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("value", ["²", "٣", "-1", "0", "x", HUGE, str(ID_MAX + 1)])
def test_a_contact_id_filter_that_is_not_a_bounded_ascii_id_answers_400(client, token, value):
    answer = client.get(
        "/api/v1/conversations", query_string={"contact_id": value}, headers=bearer(token)
    )

    assert answer.status_code == 400
    assert "contact_id" in answer.get_json()["message"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_largest_id_is_a_valid_filter_that_finds_nothing(client, token):
    answer = client.get(f"/api/v1/conversations?contact_id={ID_MAX}", headers=bearer(token))

    assert answer.status_code == 200
    assert answer.get_json() == {"conversations": [], "next_cursor": None}


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/contacts/{HUGE}/consent-events",
        f"/api/v1/contacts/{ID_MAX + 1}/consent-events",
        f"/api/v1/contacts/{ID_MAX}/consent-events",
        "/api/v1/contacts/²/consent-events",
        "/api/v1/contacts/١/consent-events",
        f"/api/v1/conversations/{'1' * 25}/messages",
        "/api/v1/conversations/١/messages",
    ],
)
def test_a_path_id_that_is_not_an_id_of_ours_answers_404_json(client, token, path):
    answer = client.get(path, headers=bearer(token))

    assert answer.status_code == 404
    assert answer.get_json()["error"] == "not_found"


def test_another_offices_parent_ids_answer_404(client, ours, theirs):
    for path in (LISTS["events"].path(theirs), LISTS["messages"].path(theirs)):
        assert client.get(path, headers=bearer(ours.token)).status_code == 404


# -- the phone lookup by POST -----------------------------------------------------------


def test_the_post_lookup_answers_as_the_get_with_the_number_out_of_the_url(client, ours, theirs):
    phone = _phone(1, 3)

    posted = client.post(
        "/api/v1/contacts/lookup", json={"phone": phone}, headers=bearer(ours.token)
    )
    got = client.get("/api/v1/contacts", query_string={"phone": phone}, headers=bearer(ours.token))

    assert posted.status_code == 200
    assert posted.get_json() == got.get_json()
    assert [c["phone"] for c in posted.get_json()["contacts"]] == [phone]
    assert posted.get_json()["next_cursor"] is None
    assert "Deprecation" not in posted.headers


def test_the_lookup_accepts_a_national_number_and_is_scoped_to_the_office(client, ours, theirs):
    mine = client.post(
        "/api/v1/contacts/lookup", json={"phone": "333 1000000"}, headers=bearer(ours.token)
    )
    foreign = client.post(
        "/api/v1/contacts/lookup", json={"phone": _phone(2, 0)}, headers=bearer(ours.token)
    )

    assert [c["id"] for c in mine.get_json()["contacts"]] == [ours.contact.id]
    assert foreign.get_json()["contacts"] == []


@pytest.mark.parametrize(
    "body", [None, [], {}, {"phone": 393331234567}, {"phone": "non un numero"}, {"phone": ""}]
)
def test_a_malformed_lookup_answers_400_json(client, token, body):
    answer = client.post("/api/v1/contacts/lookup", json=body, headers=bearer(token))

    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"


def test_the_lookup_needs_a_token(client):
    answer = client.post("/api/v1/contacts/lookup", json={"phone": RESIDENT})

    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"


def test_a_terminated_office_may_still_look_a_contact_up(client, svc, ours):
    terminate_tenant(svc, ours.tenant.id, utcnow(), actor="test")

    answer = client.post(
        "/api/v1/contacts/lookup", json={"phone": _phone(1, 0)}, headers=bearer(ours.token)
    )

    assert answer.status_code == 200
    assert [c["id"] for c in answer.get_json()["contacts"]] == [ours.contact.id]


def test_an_oversized_lookup_answers_413_json(client, token):
    answer = client.post(
        "/api/v1/contacts/lookup", json={"phone": "3" * 70_000}, headers=bearer(token)
    )

    assert answer.status_code == 413
    assert answer.get_json()["error"] == "request_entity_too_large"


def test_the_lookup_is_post_only_and_says_so_in_json(client, token):
    answer = client.get("/api/v1/contacts/lookup", headers=bearer(token))

    assert answer.status_code == 405
    assert answer.get_json()["error"] == "method_not_allowed"


def test_the_get_by_phone_still_works_and_says_it_is_deprecated(client, ours):
    answer = client.get(f"/api/v1/contacts?phone={_phone(1, 0)}", headers=bearer(ours.token))

    assert [c["id"] for c in answer.get_json()["contacts"]] == [ours.contact.id]
    assert answer.headers["Deprecation"].startswith("@")
    assert "/api/v1/contacts/lookup" in answer.headers["Link"]


# -- the shapes of the contract ---------------------------------------------------------

CONTRACT = {
    "contacts": {"id", "phone", "kind", "legal_basis", "consent", "last_contact_at", "source"}
    | {"name", "trade", "buildings", "role", "places"},
    "events": {"event", "at", "channel", "evidence", "notice_version", "notice_sha256", "actor"}
    | {"id"},
    "conversations": {"id", "contact_id", "mode", "priority", "needs_attention"}
    | {"last_message_at", "status"},
    "messages": {"id", "provider_sid", "direction", "body", "status", "intent", "at"}
    | {"sensitive"},
    "tickets": {"id", "kind", "intent", "status", "conversation_id", "entities", "created_at"}
    | {"updated_at", "hazard", "acknowledged_at"}
    | {"contact_id", "building", "scala", "interno", "description", "priority", "assignee"}
    | {"supplier", "due_at", "work_orders"},
    "entries": {"at", "message_id", "intent", "confidence", "action", "model_version"}
    | {"safety_rule", "duration_ms", "id"},
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_list_keeps_the_fields_of_its_contract(client, ours, name):
    listing = LISTS[name]

    body = client.get(listing.path(ours), headers=bearer(ours.token)).get_json()

    assert set(body) == {listing.key, "next_cursor"}
    assert set(body[listing.key][0]) == CONTRACT[name]


def test_message_bodies_and_evidence_are_decrypted_for_the_client(client, svc, ours):
    messages = client.get(LISTS["messages"].path(ours), headers=bearer(ours.token)).get_json()

    assert [m["body"] for m in messages["messages"]] == [f"messaggio {n}" for n in range(ROWS)]
    assert messages["messages"][0]["at"].endswith("Z")


# -- no full number in the logs ---------------------------------------------------------


@pytest.fixture
def entry_point_logging() -> Iterator[None]:
    """The logging ``portineria`` and ``wsgi.py`` configure, undone after the test."""
    root = logging.getLogger()
    names = ("alembic", "twilio.http_client")
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in names})
    configure_logging()
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def _send_and_list(twilio: FakeTwilio) -> None:
    """A send as the product makes it, and a Messages list filtered by the resident."""
    transport = TwilioTransport(ACCOUNT_SID, AUTH_TOKEN, twilio.base_url, retry_delays=())
    transport.send(OutboundRequest(f"whatsapp:{OFFICE_NUMBER}", f"whatsapp:{RESIDENT}", "Ciao"))
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=TwilioHttpClient(timeout=5))
    client.api.base_url = twilio.base_url
    client.messages.list(to=f"whatsapp:{RESIDENT}", limit=5)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def test_the_sdk_would_log_the_number_at_info_without_the_entry_points_logging(twilio, caplog):
    caplog.set_level(logging.INFO)

    _send_and_list(twilio)

    # The probe sees the SDK's request lines, so the next test's silence means something.
    assert RESIDENT.lstrip("+") in _logged(caplog)


@pytest.mark.usefixtures("entry_point_logging")
def test_a_send_through_the_real_sdk_logs_no_full_number_at_info(twilio, caplog):
    caplog.set_level(logging.INFO)

    _send_and_list(twilio)

    assert len(twilio.messages) == 1
    assert RESIDENT.lstrip("+")[2:] not in _logged(caplog)
