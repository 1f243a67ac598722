"""Seed an office with two years of history, fast, for ``bench/scale_bench.py``.

The big tables are filled by the database itself (``INSERT … SELECT`` over a recursive
CTE on SQLite, over ``generate_series`` on PostgreSQL); the two that need Python are the
consent ledger (its keyed hash of each person) and the audit trail (a valid hash chain,
computed with the product's own digest). Every message body is one real Fernet token of
the running keys, so pages and exports decrypt for real. Rows are deterministic
functions of their number: the same size gives the same office.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, insert, select, text

from bot.privacy.audit import GENESIS, _digest
from bot.services import Services
from intents.prediction import INTENTS
from storage.models import AuditEvent, ConsentEvent

SPAN = timedelta(days=730)
FULL = {
    "contacts": 100_000,
    "messages": 2_000_000,
    "bot_log": 200_000,
    "audit": 500_000,
    "tickets": 50_000,
}
BIG_CONVERSATION = 5_000
BOT_ACTIONS = ("ticket", "reply", "handoff", "clarification", "welcome", "event", "none")
TICKET_KINDS = ("guasto", "preventivo", "amministrazione", "documenti", "assemblea", "intervento")
# (action, share in a thousand, target type): what an office's trail is made of.
AUDIT_MIX = (
    ("conversation.view", 600, "conversation"),
    ("ticket.view", 100, "ticket"),
    ("conversation.reply", 90, "conversation"),
    ("conversation.takeover", 50, "conversation"),
    ("conversation.release", 40, "conversation"),
    ("login", 50, None),
    ("login.failed", 20, None),
    ("ticket.status", 30, "ticket"),
    ("bot_log.view", 10, None),
    ("audit_log.view", 6, None),
    ("export", 2, "contact"),
    ("erasure", 2, "contact"),
)
BATCH = 20_000


@dataclass(frozen=True)
class Size:
    contacts: int
    messages: int
    bot_log: int
    audit: int
    tickets: int
    big_conversation: int

    @classmethod
    def scaled(cls, factor: float) -> Size:
        counts = {name: max(int(count * factor), 20) for name, count in FULL.items()}
        big = min(BIG_CONVERSATION, counts["messages"] // 4)
        return cls(big_conversation=big, **counts)

    @property
    def ledger(self) -> int:
        return 2 * self.contacts + self.erased_ledger

    @property
    def erased_ledger(self) -> int:
        return max(self.contacts // 50, 2)


@dataclass(frozen=True)
class Seeded:
    size: Size
    tenant_id: int
    users: tuple[int, ...]  # admin first, then the operators
    start: datetime
    end: datetime
    seconds: dict[str, float]
    offsets: Offsets

    @property
    def big_conversation(self) -> int:
        """The id of the conversation of 5,000 messages (its contact has the same number)."""
        return self.offsets.conversations + 1


class Dialect:
    """The few expressions SQLite and PostgreSQL spell differently."""

    def __init__(self, name: str) -> None:
        self.name = name

    def series(self) -> tuple[str, str]:
        """(prefix, FROM clause) producing ``n`` from 1 to ``:count``."""
        if self.name == "sqlite":
            return (
                "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
                "WHERE n < :count) ",
                "seq",
            )
        return "", "generate_series(CAST(1 AS bigint), :count) AS seq(n)"

    def moment(self, seconds: str) -> str:
        """``:start`` plus an integer expression of seconds, as the column type stores it."""
        if self.name == "sqlite":
            return (
                f"(strftime('%Y-%m-%d %H:%M:%S', :start, '+' || CAST(({seconds}) AS INTEGER) "
                "|| ' seconds') || '.000000')"
            )
        return (
            f"((CAST(:start AS timestamp) AT TIME ZONE 'UTC') + make_interval(secs => ({seconds})))"
        )

    def padded(self, number: str, width: int) -> str:
        if self.name == "sqlite":
            return f"printf('%0{width}d', {number})"
        return f"lpad(CAST({number} AS text), {width}, '0')"

    def json(self, literal: str) -> str:
        return f"'{literal}'" if self.name == "sqlite" else f"CAST('{literal}' AS json)"

    def boolean(self, condition: str) -> str:
        return f"({condition})"


@dataclass(frozen=True)
class Filler:
    """What every bulk fill shares: the transaction, the dialect, the size, the span of
    seconds the history covers, the tables' id offsets and the common parameters."""

    connection: Connection
    dialect: Dialect
    size: Size
    span: int
    o: Offsets
    base: dict[str, Any]

    def fill(self, table: str, columns: dict[str, str], count: int, **params: Any) -> None:
        prefix, source = self.dialect.series()
        # Only our own table, column names and expressions: nothing from outside is spliced.
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) {prefix}"  # noqa: S608
            f"SELECT {', '.join(columns.values())} FROM {source}"
        )
        self.connection.execute(text(statement), {"count": count, **self.base, **params})


def _pick(number: str, names: tuple[str, ...]) -> str:
    """The name at ``number`` modulo their count: a spread of values for a column."""
    cases = " ".join(f"WHEN {i} THEN '{name}'" for i, name in enumerate(names))
    return f"CASE ({number}) % {len(names)} {cases} END"


def _conversation_of(size: Size, message: str) -> str:
    """The number of the conversation (and of its contact) of message number ``message``."""
    big, others = size.big_conversation, size.contacts - 1
    return f"(CASE WHEN {message} <= {big} THEN 1 ELSE 2 + ({message} - {big} - 1) % {others} END)"


@dataclass(frozen=True)
class Offsets:
    """Each table's highest id before seeding: row number n gets id offset + n."""

    contacts: int
    conversations: int
    messages: int
    bot_log: int
    tickets: int

    @classmethod
    def read(cls, connection: Connection) -> Offsets:
        def top(table: str) -> int:
            return int(connection.exec_driver_sql(f"SELECT MAX(id) FROM {table}").scalar() or 0)  # noqa: S608

        return cls(
            *(
                top(table)
                for table in ("contacts", "conversations", "messages", "bot_log", "tickets")
            )
        )


def seed_office(
    svc: Services, tenant_id: int, users: tuple[int, ...], size: Size, end: datetime
) -> Seeded:
    dialect = Dialect(svc.db.engine.dialect.name)
    start = end - SPAN
    span = int(SPAN.total_seconds())
    stamp = start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    token = svc.cipher.encrypt(
        "Buongiorno, nel condominio di via Roma 12 la luce delle scale non funziona da ieri sera."
    )
    seconds: dict[str, float] = {}
    base = {"start": stamp, "tenant": tenant_id}
    admin, *operators = users
    with svc.db.begin() as connection:
        if dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA cache_size=-200000")
        o = Offsets.read(connection)
        began = time.perf_counter()
        filler = Filler(connection, dialect, size, span, o, base)
        _seed_contacts(filler)
        _seed_conversations(filler, operators)
        seconds["contacts+conversations"] = time.perf_counter() - began
        began = time.perf_counter()
        _seed_messages(filler, operators, token)
        seconds["messages"] = time.perf_counter() - began
        began = time.perf_counter()
        _seed_bot_log(filler)
        _seed_tickets(filler)
        seconds["bot_log+tickets"] = time.perf_counter() - began
        began = time.perf_counter()
        _seed_ledger(connection, svc, tenant_id, size, start, span, o)
        seconds["ledger"] = time.perf_counter() - began
        began = time.perf_counter()
        _seed_audit(connection, tenant_id, users, size, start, span)
        seconds["audit"] = time.perf_counter() - began
        if dialect.name == "postgresql":
            for table in ("contacts", "conversations", "messages", "bot_log", "tickets"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT max(id) FROM {table}))"
                )
    return Seeded(size, tenant_id, users, start, end, seconds, o)


def _seed_contacts(f: Filler) -> None:
    dialect, size, span, o = f.dialect, f.size, f.span, f.o
    created = f"n * {span // 2} / {size.contacts}"
    f.fill(
        "contacts",
        {
            "id": f"{o.contacts} + n",
            "tenant_id": ":tenant",
            "wa_id": f"'39333' || {dialect.padded(f'{o.contacts} + n', 7)}",
            "phone": f"'+39333' || {dialect.padded(f'{o.contacts} + n', 7)}",
            "kind": "CASE WHEN n % 10 = 0 THEN 'fornitore' ELSE 'condomino' END",
            "legal_basis": "CASE WHEN n % 10 = 0 THEN 'contract' ELSE 'consent' END",
            "source": "'whatsapp_inbound'",
            "consent": "CASE WHEN n % 97 = 0 THEN 'withdrawn' ELSE 'granted' END",
            "created_at": dialect.moment(created),
            "last_contact_at": dialect.moment(f"{created} + (n * 7919) % ({span} - {created})"),
            "last_inbound_at": dialect.moment(f"{created} + (n * 7919) % ({span} - {created})"),
        },
        size.contacts,
    )


def _seed_conversations(f: Filler, operators: list[int]) -> None:
    dialect, size, span, o = f.dialect, f.size, f.span, f.o
    created = f"n * {span // 2} / {size.contacts}"
    last = f"{created} + (n * 7919) % ({span} - {created})"
    # One conversation in five is open; of the open ones one in ten is with an operator,
    # one in a hundred needs attention; the first is the long one, held by an operator.
    human = "(n = 1 OR n % 50 = 0)"
    holder = (
        f"CASE WHEN {human} AND n % 100 <> 0 THEN "
        f"CASE WHEN n % 2 = 0 THEN {operators[0]} ELSE {operators[1]} END END"
    )
    f.fill(
        "conversations",
        {
            "id": f"{o.conversations} + n",
            "tenant_id": ":tenant",
            "contact_id": f"{o.contacts} + n",
            "mode": f"CASE WHEN {human} THEN 'human' ELSE 'bot' END",
            "priority": "CASE WHEN n % 2500 = 0 THEN 'urgent' ELSE 'normal' END",
            "needs_attention": dialect.boolean("n % 500 = 0"),
            "status": "CASE WHEN n = 1 OR n % 5 = 0 THEN 'open' ELSE 'closed' END",
            "assigned_user_id": holder,
            "clarifications": "0",
            "created_at": dialect.moment(created),
            "last_message_at": dialect.moment(f"CASE WHEN n = 1 THEN {span} ELSE {last} END"),
            "human_since": f"CASE WHEN {human} THEN {dialect.moment(last)} END",
        },
        size.contacts,
    )


def _seed_messages(f: Filler, operators: list[int], token: bytes) -> None:
    dialect, size, span, o = f.dialect, f.size, f.span, f.o
    at = dialect.moment(f"n * {span} / {size.messages}")
    thread = _conversation_of(size, "n")
    outbound = "n % 2 = 0"
    operator_reply = "n % 40 = 0"
    f.fill(
        "messages",
        {
            "id": f"{o.messages} + n",
            "tenant_id": ":tenant",
            "conversation_id": f"{o.conversations} + {thread}",
            "contact_id": f"{o.contacts} + {thread}",
            "direction": f"CASE WHEN {outbound} THEN 'out' ELSE 'in' END",
            "provider_sid": f"'SM' || {dialect.padded(f'{o.messages} + n', 32)}",
            "idempotency_key": f"CASE WHEN {outbound} THEN 'reply:' || ({o.messages} + n) END",
            "body": ":body",
            "status": f"CASE WHEN {outbound} THEN 'delivered' ELSE 'processed' END",
            "status_rank": f"CASE WHEN {outbound} THEN 4 ELSE 0 END",
            "intent": f"CASE WHEN {outbound} THEN NULL ELSE {_pick('n / 2', INTENTS)} END",
            "confidence": f"CASE WHEN {outbound} THEN NULL ELSE 0.4 + (n % 60) / 100.0 END",
            "sensitive_kinds": dialect.json("[]"),
            "redacted": dialect.boolean("1 = 0"),
            "purpose": (
                f"CASE WHEN {operator_reply} THEN 'operator' WHEN {outbound} THEN 'reply' END"
            ),
            "sender_user_id": f"CASE WHEN {operator_reply} THEN {operators[0]} END",
            "created_at": at,
            "status_at": f"CASE WHEN {outbound} THEN {at} END",
            "processed_at": f"CASE WHEN {outbound} THEN NULL ELSE {at} END",
            "attempts": f"CASE WHEN {outbound} THEN 0 ELSE 1 END",
            "sweeps": "0",
        },
        size.messages,
        body=token,
    )


def _seed_bot_log(f: Filler) -> None:
    dialect, size, span, o = f.dialect, f.size, f.span, f.o
    # Entry n is about inbound message 2n - 1 while there are messages, then about none.
    message = "(2 * n - 1)"
    f.fill(
        "bot_log",
        {
            "id": f"{o.bot_log} + n",
            "tenant_id": ":tenant",
            "message_id": (
                f"CASE WHEN {message} <= {size.messages} THEN {o.messages} + {message} END"
            ),
            "at": dialect.moment(f"n * {span} / {size.bot_log}"),
            "intent": _pick("n", INTENTS),
            "confidence": "0.4 + (n % 60) / 100.0",
            "action": _pick("n", BOT_ACTIONS),
            "model_version": "'bench'",
            "safety_rule": "CASE WHEN n % 11 = 1 THEN 'flooding' END",
            "duration_ms": "1.5 + (n % 40) / 10.0",
            "detail": dialect.json("{}"),
        },
        size.bot_log,
    )


def _seed_tickets(f: Filler) -> None:
    dialect, size, span, o = f.dialect, f.size, f.span, f.o
    step = max(size.messages // (2 * size.tickets), 1)
    message = f"(2 * n * {step} - 1)"
    at = dialect.moment(f"{message} * {span} / {size.messages}")
    f.fill(
        "tickets",
        {
            "id": f"{o.tickets} + n",
            "tenant_id": ":tenant",
            "conversation_id": f"{o.conversations} + {_conversation_of(size, message)}",
            "source_message_id": f"{o.messages} + {message}",
            "kind": _pick("n", TICKET_KINDS),
            "intent": "'guasto'",
            "status": "CASE n % 10 WHEN 0 THEN 'open' WHEN 1 THEN 'in_progress' ELSE 'done' END",
            "entities": dialect.json("[]"),
            "created_at": at,
            "updated_at": at,
        },
        min(size.tickets, size.messages // 2),
    )


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _seed_ledger(
    connection: Connection,
    svc: Services,
    tenant_id: int,
    size: Size,
    start: datetime,
    span: int,
    o: Offsets,
) -> None:
    """Notice sent and consent granted for every contact, plus the rows of erased people."""
    accepted = svc.cipher.encrypt("accetto")
    notice = hashlib.sha256(b"notice").hexdigest()
    evidence = hashlib.sha256(b"accetto").hexdigest()

    def rows() -> Iterator[dict[str, Any]]:
        for n in range(1, size.contacts + size.erased_ledger // 2 + 1):
            erased = n > size.contacts
            wa_id = f"39333{o.contacts + n:07d}" if not erased else f"39444{o.contacts + n:07d}"
            created = start + timedelta(seconds=n * (span // 2) // size.contacts)
            common = {
                "tenant_id": tenant_id,
                "contact_id": o.contacts + n,
                "subject_ref": svc.cipher.pseudonym(wa_id),
                "channel": "whatsapp",
                "notice_version": "1",
                "notice_sha256": notice,
                "actor": "contact",
            }
            yield {**common, "event": "notice_sent", "at": created}
            yield {
                **common,
                "event": "granted",
                "at": created + timedelta(minutes=2),
                "evidence_text": accepted,
                "evidence_message_sid": f"SMledger{n:026d}",
                "evidence_sha256": evidence,
            }

    for batch in _batches(rows()):
        for row in batch:
            row.setdefault("evidence_text", None)
            row.setdefault("evidence_message_sid", None)
            row.setdefault("evidence_sha256", None)
        connection.execute(insert(ConsentEvent), batch)


def _seed_audit(
    connection: Connection,
    tenant_id: int,
    users: tuple[int, ...],
    size: Size,
    start: datetime,
    span: int,
) -> None:
    """A valid hash chain continuing the office's trail, hashed with the product's digest."""
    previous = connection.scalar(
        select(AuditEvent.hash)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    mix = [(action, target) for action, share, target in AUDIT_MIX for _ in range(share)]
    state = {"prev": previous or GENESIS}

    def rows() -> Iterator[dict[str, Any]]:
        for n in range(1, size.audit + 1):
            action, target = mix[(n * 7919) % len(mix)]
            user = users[n % len(users)]
            event = SimpleNamespace(
                tenant_id=tenant_id,
                at=start + timedelta(microseconds=n * (span * 1_000_000 // size.audit)),
                user_id=None if action == "login.failed" else user,
                actor="user:bench" if action != "login.failed" else "anonymous",
                action=action,
                target_type=target,
                target_id=str(1 + n % size.contacts) if target else None,
                ip=f"10.0.{n % 250}.{n % 199}",
                detail={"reason": "bad_password"} if action == "login.failed" else {},
                prev_hash=state["prev"],
            )
            digest = _digest(event)  # type: ignore[arg-type]
            state["prev"] = digest
            yield {**vars(event), "hash": digest}

    for batch in _batches(rows()):
        connection.execute(insert(AuditEvent), batch)
