"""Probes: liveness, and readiness with the backlog operators alert on, from the
database (what must be answered) and from Redis (what waits for a relay or a worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import add_message, make_contact, make_conversation, send_inbound
from sqlalchemy import event, select, text, update

from bot.web.health import readiness
from storage.delivery import stale_sends, stuck_outbound
from storage.inbound import inbound_backlog, pending_outbound, unprocessed_for_sweep
from storage.models import PENDING_OUT, SENDING_OUT, UNPROCESSED_IN, Message, utcnow

pytestmark = pytest.mark.usefixtures("tenant")


def age_inbound(svc, seconds: float) -> None:
    """Make every stored inbound message look ``seconds`` old."""
    with svc.db.session() as session:
        session.execute(
            update(Message)
            .where(Message.direction == "in")
            .values(created_at=utcnow() - timedelta(seconds=seconds))
        )


def test_ready_reports_the_backlog_from_the_database_and_from_redis(client, svc):
    send_inbound(client, "Buongiorno")
    send_inbound(client, "Il cancello non si apre")
    svc.jobs.relay(batch=1)

    answer = client.get("/readyz")

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["checks"] == {"database": "ok", "backlog": "ok", "redis": "ok"}
    backlog = body["backlog"]
    assert {k: backlog[k] for k in ("unprocessed", "given_up", "handed_off", "queued")} == {
        "unprocessed": 2,
        "given_up": 0,
        "handed_off": 1,
        "queued": 1,
    }
    assert 0 <= backlog["oldest_unprocessed_seconds"] < 60
    assert (backlog["outbound_stuck"], backlog["oldest_outbound_stuck_seconds"]) == (0, 0)


def test_ready_without_redis_still_counts_the_stored_backlog(client, redis_server):
    redis_server.stop()
    try:
        send_inbound(client, "Buongiorno")  # stored, not handed off
        answer = client.get("/readyz")
    finally:
        redis_server.start()

    assert answer.status_code == 200
    assert answer.get_json()["checks"]["redis"] == "unavailable"
    backlog = answer.get_json()["backlog"]
    assert backlog["unprocessed"] == 1
    assert "handed_off" not in backlog


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_message_waiting_past_the_threshold_makes_readyz_answer_503(client, svc):
    send_inbound(client, "Buongiorno")
    age_inbound(svc, 300)  # no worker has touched it for five minutes

    answer = client.get("/readyz")

    assert answer.status_code == 503
    body = answer.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["backlog"] == "behind"
    assert body["backlog"]["unprocessed"] == 1
    assert 300 <= body["backlog"]["oldest_unprocessed_seconds"] < 360


@pytest.mark.parametrize("app_config_extra", [{"READY_MAX_BACKLOG_SECONDS": 600}], indirect=True)
def test_the_backlog_threshold_is_configurable(client, svc):
    send_inbound(client, "Buongiorno")
    age_inbound(svc, 300)

    assert client.get("/readyz").status_code == 200


def test_a_message_every_attempt_failed_on_is_reported_not_waited_for(client, svc):
    send_inbound(client, "Buongiorno")
    age_inbound(svc, 3600)
    with svc.db.session() as session:
        session.execute(update(Message).values(attempts=5, status="failed"))

    answer = client.get("/readyz")

    assert answer.status_code == 200
    backlog = answer.get_json()["backlog"]
    assert (backlog["unprocessed"], backlog["given_up"]) == (0, 1)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_replies_stuck_pending_or_sending_past_their_grace_are_counted(svc, tenant):
    conversation = make_conversation(svc, tenant, make_contact(svc, tenant))
    now = utcnow()
    for key, status, age in (
        ("a", "pending", 600),
        ("b", "sending", 900),
        ("c", "sending", 10),  # still within its grace
        ("d", "sent", 3600),
    ):
        add_message(
            svc,
            conversation,
            "risposta",
            direction="out",
            status=status,
            idempotency_key=key,
            created_at=now - timedelta(seconds=age),
        )

    state = readiness(svc, now)

    assert state.ready
    assert state.backlog["outbound_stuck"] == 2
    assert state.backlog["oldest_outbound_stuck_seconds"] == 900


def captured_statements(svc, run) -> list[tuple[str, object]]:
    """The SQL (and parameters) ``run`` sends to the database."""
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(svc.db.engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", capture)
    return seen


def plan(svc, statement: str, parameters: object) -> str:
    with svc.db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return " ".join(str(row[-1]) for row in rows)
        # A table this small is cheaper to scan: ask whether the index *can* serve.
        connection.execute(text("SET enable_seqscan = off"))
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return " ".join(str(row[0]) for row in rows)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("query", "indexes"),
    [
        (lambda svc: inbound_backlog(svc.db), ["ix_messages_unprocessed"]),
        (
            lambda svc: stuck_outbound(svc.db, utcnow()),
            ["ix_messages_pending_out", "ix_messages_sending_out"],
        ),
        (lambda svc: stale_sends(svc.db, utcnow()), ["ix_messages_sending_out"]),
        (lambda svc: unprocessed_for_sweep(svc.db, utcnow(), 5), ["ix_messages_unprocessed"]),
        (lambda svc: pending_outbound(svc.db, utcnow()), ["ix_messages_pending_out"]),
    ],
    ids=["inbound_backlog", "stuck_outbound", "stale_sends", "sweep", "pending_outbound"],
)
def test_backlog_queries_read_the_partial_indexes_not_the_table(svc, query, indexes):
    statements = captured_statements(svc, lambda: query(svc))

    plans = [plan(svc, statement, parameters) for statement, parameters in statements]

    assert len(plans) == len(indexes)
    for found, index in zip(plans, indexes, strict=True):
        assert index in found, found


def test_health_is_always_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_the_migrations_build_the_partial_indexes_on_the_predicates_the_queries_use(svc):
    with svc.db.engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            pytest.skip("sqlite's catalogue")
        sql = connection.execute(
            select(text("sql")).select_from(text("sqlite_master")).where(text("type = 'index'"))
        ).scalars()
        indexes = " ".join(s for s in sql if s)
    for predicate in (UNPROCESSED_IN, PENDING_OUT, SENDING_OUT):
        assert predicate in indexes
