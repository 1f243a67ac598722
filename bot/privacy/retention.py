"""Retention: each office's terms per data category, applied by a scheduled purge.

The purge runs on its own schedule (the worker's retention thread, once a day, or
``portineria purge``), not when new messages happen to arrive; it deletes media
files as well as rows, and records what it removed in the audit trail. The consent
ledger is not purged: it proves consent for as long as anything of the person is
kept, and it holds no message bodies. The audit log is not purged either, so its
hash chain stays verifiable from the first row; it goes with the office at the end
of its contract.

Built for the catch-up case (a shortened term, weeks without a worker, years of
imported history), where millions of rows are due at once:

* Every category is deleted in batches the database picks, walked in (time, id) order
  from where the last batch ended: a batch is named by its two end keys on PostgreSQL,
  and as ``id IN (SELECT id … ORDER BY created_at, id LIMIT :n)`` after the last key
  on SQLite (see :meth:`_Due.batch`). No id list travels through Python, no statement
  carries more than a handful of bound parameters, and memory stays flat however much
  is due.
* Each batch is its own short write transaction, sized to last about
  ``TARGET_BATCH_SECONDS`` and followed by a pause of a fifth of its length: on
  SQLite the write lock is free between batches, so webhooks wait for one batch at
  most, never for the whole purge. The report gives the longest one.
* Media files go after the rows that name them. Their paths are journaled
  (``file_deletions``) in the transaction that deletes the rows and unlinked once it
  commits. A crash anywhere leaves each batch done or not done: rows still there with
  their files, or rows gone with their paths journaled, which the next purge unlinks
  first. A file whose row is gone and that no journal names never exists.
* Contacts due for erasure are selected a page at a time and each is erased in a
  transaction of its own, with the erasure of :mod:`bot.privacy.rights`.
* ``dry_run`` counts with ``COUNT(*)`` on the read path: no lock, nothing loaded.

The daily run (:func:`purge_if_due`) marks its day done only when every office's
purge succeeded; an office that failed is logged, shown in ``/readyz``
(:func:`retention_status`) and tried again on the worker's next round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, cast

from redis.exceptions import LockError, RedisError
from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    any_,
    delete,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import Session

from bot.crm import events_past_term, purge_events
from bot.office.lifecycle import count_tenant_rows, delete_tenant, expired_tenants
from bot.privacy.audit import record_audit
from bot.privacy.rights import contact_messages, erase_in_session
from bot.services import Services
from storage.db import rows_affected
from storage.models import (
    BotLogEntry,
    BuildingNotice,
    Contact,
    FileDeletion,
    MediaItem,
    Message,
    NoticeDelivery,
    Tenant,
    TicketNote,
    WorkOrder,
    iso_utc,
    utcnow,
)
from storage.vocabulary import OPEN_WORK_ORDERS, Consent, Direction

log = logging.getLogger(__name__)

# Days; an office overrides any of them in ``settings["retention"]``.
DEFAULT_TERMS: dict[str, int] = {
    "messages_days": 365,
    "media_days": 180,
    "bot_log_days": 365,
    # Wrote once, never accepted, no other legal basis: nothing justifies keeping them.
    "never_consented_days": 30,
    "inactive_contact_days": 730,
    # Events for the office's CRM and their delivery log (bot.crm).
    "webhook_days": 30,
    # The office's world: finished work orders, ticket notes, building notices.
    "work_orders_days": 730,
    "ticket_notes_days": 730,
    "notices_days": 365,
}
# What a report counts, in the order it prints them.
KINDS = (
    "media",
    "messages",
    "bot_log",
    "never_consented_contacts",
    "inactive_contacts",
    "webhook_events",
    "work_orders",
    "ticket_notes",
    "notices",
)

PURGE_EVERY = timedelta(days=1)
# Longer than any purge should take; if its worker dies the lease lapses and another
# worker takes the day over.
LEASE_SECONDS = 3600
_LEASE_KEY = "portineria:retention:running"
_DONE_KEY = "portineria:retention:done:"  # + the UTC date
_STATUS_KEY = "portineria:retention:offices"  # slug -> JSON outcome of its last purge

# Batches: grown while a transaction takes under half the target, halved above it.
TARGET_BATCH_SECONDS = 0.05
FIRST_BATCH, MIN_BATCH, MAX_BATCH = 500, 50, 5000
# A breath after each batch, a share of its length, so that writers queued on the lock
# (webhooks) get it: a woken process may wait for a core for several milliseconds,
# and the purge would otherwise take the lock again first.
PAUSE_SHARE, MIN_PAUSE_SECONDS = 0.2, 0.002
# Bounds every loop: past this many batches of one category the rest waits for the
# next run (200,000 batches of at least 50 rows: ten million rows, in a day's purge).
MAX_BATCHES = 200_000
CONTACT_PAGE = 200
FILE_PAGE = 100


@dataclass
class PurgeReport:
    tenant: str
    removed: dict[str, int] = field(default_factory=dict)
    batches: int = 0  # write transactions
    longest_write_ms: float = 0.0  # the longest of them, lock held to lock released
    seconds: float = 0.0
    error: str | None = None
    # Each write transaction's length: an outlier (a process descheduled on a busy
    # machine) tells apart from a batch that is too big.
    write_ms: list[float] = field(default_factory=list, repr=False)

    def wrote(self, seconds: float) -> None:
        self.batches += 1
        self.longest_write_ms = max(self.longest_write_ms, seconds * 1000)
        self.write_ms.append(seconds * 1000)


def terms_for(tenant: Tenant) -> dict[str, int]:
    overrides = tenant.settings.get("retention") or {}
    return {key: int(overrides.get(key, days)) for key, days in DEFAULT_TERMS.items()}


def purge(
    svc: Services, now: datetime, *, dry_run: bool = False, skip: Collection[str] = ()
) -> list[PurgeReport]:
    """Apply every office's terms (but those in ``skip``), and delete the offices whose
    export window closed; with ``dry_run`` count what would go and keep it.

    An office whose purge fails is reported with its ``error`` (and logged) and the
    others go on. A terminated office's own terms no longer apply: everything is kept,
    unchanged, for it to export until its window closes.
    """
    with svc.db.read() as session:
        tenants = session.scalars(
            select(Tenant).where(Tenant.terminated_at.is_(None)).order_by(Tenant.id)
        ).all()
    if not dry_run:
        # What a crashed run left. A file that will not go is logged; the offices'
        # own batches meet it again and report it.
        with suppress(OSError):
            unlink_journaled_files(svc, PurgeReport("*"))
    reports = [
        _purge_office(svc, tenant, now, dry_run) for tenant in tenants if tenant.slug not in skip
    ]
    reports += [
        _delete_office(svc, tenant_id, slug, now, dry_run)
        for tenant_id, slug in expired_tenants(svc, now).items()
    ]
    return reports


def preview_purge(svc: Services, tenant: Tenant, now: datetime) -> PurgeReport:
    """What the next purge would delete of this office, counted; nothing is deleted."""
    return _purge_office(svc, tenant, now, dry_run=True)


def _delete_office(
    svc: Services, tenant_id: int, slug: str, now: datetime, dry_run: bool
) -> PurgeReport:
    """Delete an office whose export window closed: its messages, media and bot log in
    batches, as any purge, then the rest and the office in one transaction."""
    report = PurgeReport(slug, {"office": 1})
    started = time.perf_counter()
    try:
        if dry_run:
            report.removed.update(count_tenant_rows(svc, tenant_id))
        else:
            # Past every row's time: the office goes whole, unprocessed messages too.
            ever = now + timedelta(days=36_500)
            walked = _delete_in_batches(
                svc,
                report,
                _old_bot_log(tenant_id, ever),
                _old_media(tenant_id, ever),
                _old_messages(tenant_id, ever, unprocessed=True),
            )
            removed = delete_tenant(svc, tenant_id)
            for kind, table in (
                ("bot_log", "bot_log"),
                ("media", "media_items"),
                ("messages", "messages"),
            ):
                removed[table] = removed.get(table, 0) + walked[kind]
            report.removed.update(removed)
    except Exception as error:  # reported, so the day stays open and it is tried again
        log.exception("deleting terminated office %d failed", tenant_id)
        report.error = type(error).__name__
    report.seconds = time.perf_counter() - started
    return report


def _purge_office(svc: Services, tenant: Tenant, now: datetime, dry_run: bool) -> PurgeReport:
    report = PurgeReport(tenant.slug, dict.fromkeys(KINDS, 0))
    started = time.perf_counter()
    try:
        cutoffs = {term: now - timedelta(days=days) for term, days in terms_for(tenant).items()}
        if dry_run:
            report.removed = _count_due(svc, tenant.id, cutoffs)
        else:
            _delete_due(svc, tenant, cutoffs, report)
    except Exception as error:  # reported, kept for /readyz, and retried: not forgotten
        log.exception("retention purge of %s failed", tenant.slug)
        report.error = type(error).__name__
    report.seconds = time.perf_counter() - started
    if not dry_run:
        _record_outcome(svc, report, now)
    return report


def _delete_due(
    svc: Services, tenant: Tenant, cutoffs: dict[str, datetime], report: PurgeReport
) -> None:
    tenant_id = tenant.id
    report.removed |= _delete_in_batches(
        svc,
        report,
        _old_bot_log(tenant_id, cutoffs["bot_log_days"]),
        _old_media(tenant_id, cutoffs["media_days"]),
        _old_messages(tenant_id, cutoffs["messages_days"]),
    )
    with _write(svc, report) as session:
        # The office's world is small beside its messages: one statement each, before
        # expired contacts take their own tickets (and these with them) and are counted.
        for kind, (model, condition) in _office_records_due(tenant_id, cutoffs).items():
            if kind == "notices":
                notices = select(BuildingNotice.id).where(condition)
                _delete_where(session, NoticeDelivery, NoticeDelivery.notice_id.in_(notices))
            report.removed[kind] = _delete_where(session, model, condition)
    never, inactive = _expired_contacts(tenant_id, cutoffs)
    report.removed["never_consented_contacts"] = _erase_contacts(svc, tenant, never, report)
    report.removed["inactive_contacts"] = _erase_contacts(svc, tenant, inactive, report)
    with _write(svc, report) as session:
        # The CRM's outbox stays small (a month of events by default): one statement.
        report.removed["webhook_events"] = purge_events(session, tenant_id, cutoffs)
        record_audit(
            session,
            tenant_id,
            "retention.purge",
            actor="system",
            target_type="tenant",
            target_id=tenant_id,
            detail=report.removed,
        )
    if any(report.removed.values()):
        log.info("retention purge of %s removed %s", tenant.slug, report.removed)


def _delete_in_batches(
    svc: Services, report: PurgeReport, bot_log: _Due, media: _Due, messages: _Due
) -> dict[str, int]:
    """Delete what is due of the three large categories; returns how many of each."""
    # The bot log first: its rows would otherwise be updated (message_id set to NULL)
    # as their messages go, only to be deleted afterwards.
    logged = _walk(svc, report, bot_log, _delete_bot_log)
    photos = _walk(svc, report, media, _delete_media)
    sent = _walk(svc, report, messages, _delete_messages)
    return {"bot_log": logged.rows, "media": photos.rows + sent.media, "messages": sent.rows}


# -- what is due, per category ---------------------------------------------------------


Key = tuple[datetime, int]  # (time, id): where a row stands in the walk


@dataclass(frozen=True)
class _Due:
    """One category's rows past their term, walked in (time, id) order: the order of an
    index, so each batch is a short range scan that starts where the last one ended."""

    model: Any
    when: Any  # the row's time column, indexed as (tenant_id, when, id)
    cutoff: datetime
    scope: ColumnElement[bool]  # the office, and what else a row must be to go

    @property
    def condition(self) -> ColumnElement[bool]:
        return and_(self.scope, self.when < self.cutoff)

    def between(self, after: Key | None, end: Key | None) -> ColumnElement[bool]:
        """The rows after ``after`` up to ``end`` included (to the cutoff if None).

        The times are also given as plain bounds: SQLite's planner bounds an index range
        by the first column of a row value only, and would pick the cutoff as the upper
        bound, reading every row left at each batch.
        """
        key = tuple_(self.when, self.model.id)
        bounds = [self.scope]
        if after is not None:
            bounds += [self.when >= after[0], key > self._row(after)]
        if end is None:
            bounds.append(self.when < self.cutoff)
        else:
            bounds += [self.when <= end[0], key <= self._row(end)]
        return and_(*bounds)

    def batch(
        self, session: Session, after: Key | None, end: Key | None, size: int
    ) -> ColumnElement[bool]:
        """The batch after ``after`` that ends at ``end`` (its ``size``-th row).

        PostgreSQL bounds the index scan by both keys. SQLite bounds it by the time
        only, so among rows of the same time (an import, say) it would read on to the
        last of them at every statement; there the batch is named as its first
        ``size`` rows instead, a scan that stops where the batch does. (SQLite's
        writers are serialised, so each statement of the batch finds the same rows.)
        """
        if session.get_bind().dialect.name != "sqlite":
            return self.between(after, end)
        first = (
            select(self.model.id)
            .where(self.between(after, None))
            .order_by(self.when, self.model.id)
            .limit(size)
        )
        return self.model.id.in_(first.correlate(None))

    def _row(self, key: Key) -> Any:
        return tuple_(literal(key[0], self.when.type), literal(key[1]))


def _old_bot_log(tenant_id: int, cutoff: datetime) -> _Due:
    return _Due(BotLogEntry, BotLogEntry.at, cutoff, and_(BotLogEntry.tenant_id == tenant_id))


def _old_media(tenant_id: int, cutoff: datetime) -> _Due:
    return _Due(MediaItem, MediaItem.created_at, cutoff, and_(MediaItem.tenant_id == tenant_id))


def _old_messages(tenant_id: int, cutoff: datetime, *, unprocessed: bool = False) -> _Due:
    # Unprocessed inbound messages are kept whatever their age, nothing is lost before
    # it has been handled; but for an office that is deleted whole (``unprocessed``).
    scope = and_(Message.tenant_id == tenant_id)
    if not unprocessed:
        handled = or_(Message.direction == Direction.OUT, Message.processed_at.is_not(None))
        scope = and_(scope, handled)
    return _Due(Message, Message.created_at, cutoff, scope)


def _expired_contacts(
    tenant_id: int, cutoffs: dict[str, datetime]
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Never consented (and no other basis) past their term; and, of the others, those
    not heard from within theirs."""
    never = and_(
        Contact.tenant_id == tenant_id,
        Contact.consent.in_((Consent.NONE, Consent.PENDING)),
        Contact.legal_basis.is_(None),
        Contact.created_at < cutoffs["never_consented_days"],
    )
    inactive = and_(
        Contact.tenant_id == tenant_id,
        Contact.last_contact_at < cutoffs["inactive_contact_days"],
        not_(never),
    )
    return never, inactive


def _count_due(svc: Services, tenant_id: int, cutoffs: dict[str, datetime]) -> dict[str, int]:
    """What :func:`_delete_due` would remove, counted by the database."""
    messages = _old_messages(tenant_id, cutoffs["messages_days"]).condition
    never, inactive = _expired_contacts(tenant_id, cutoffs)
    media = or_(
        _old_media(tenant_id, cutoffs["media_days"]).condition,
        and_(
            MediaItem.tenant_id == tenant_id,
            MediaItem.message_id.in_(select(Message.id).where(messages)),
        ),
    )
    queries: dict[str, tuple[Any, Any]] = {
        "media": (MediaItem, media),
        "messages": (Message, messages),
        "bot_log": (BotLogEntry, _old_bot_log(tenant_id, cutoffs["bot_log_days"]).condition),
        "never_consented_contacts": (Contact, never),
        "inactive_contacts": (Contact, inactive),
        "webhook_events": events_past_term(tenant_id, cutoffs),
        **_office_records_due(tenant_id, cutoffs),
    }
    with svc.db.read() as session:
        return {
            kind: int(session.scalar(select(func.count()).select_from(model).where(where)) or 0)
            for kind, (model, where) in queries.items()
        }


def _office_records_due(
    tenant_id: int, cutoffs: dict[str, datetime]
) -> dict[str, tuple[Any, ColumnElement[bool]]]:
    """Finished work orders, ticket notes and building notices past their terms."""
    return {
        "work_orders": (
            WorkOrder,
            and_(
                WorkOrder.tenant_id == tenant_id,
                WorkOrder.status.not_in(OPEN_WORK_ORDERS),
                WorkOrder.updated_at < cutoffs["work_orders_days"],
            ),
        ),
        "ticket_notes": (
            TicketNote,
            and_(
                TicketNote.tenant_id == tenant_id,
                TicketNote.created_at < cutoffs["ticket_notes_days"],
            ),
        ),
        "notices": (
            BuildingNotice,
            and_(
                BuildingNotice.tenant_id == tenant_id,
                BuildingNotice.created_at < cutoffs["notices_days"],
            ),
        ),
    }


# -- one batch ---------------------------------------------------------------------------


class Removed(NamedTuple):
    rows: int = 0
    media: int = 0  # media rows that went with them
    files: int = 0  # files journaled for unlinking

    def __add__(self, other: object) -> Removed:
        assert isinstance(other, Removed)
        return Removed(*(mine + theirs for mine, theirs in zip(self, other, strict=True)))


def _delete_bot_log(session: Session, batch: ColumnElement[bool]) -> Removed:
    return Removed(_delete_where(session, BotLogEntry, batch))


def _delete_media(session: Session, batch: ColumnElement[bool]) -> Removed:
    files = journal_files(session, batch)
    return Removed(_delete_where(session, MediaItem, batch), files=files)


def _delete_messages(session: Session, batch: ColumnElement[bool]) -> Removed:
    theirs = _among(session, MediaItem.message_id, select(Message.id).where(batch))
    files = media = 0
    # Media usually went first, on their shorter term: look before journaling.
    if session.scalar(select(MediaItem.id).where(theirs).limit(1)) is not None:
        files = journal_files(session, theirs)
        media = _delete_where(session, MediaItem, theirs)
    if session.get_bind().dialect.name != "sqlite":
        # Each statement sees the rows committed before it starts (PostgreSQL's read
        # committed): a message processed since the lines above would join this batch,
        # and the cascade take its media without journaling their files. It is left
        # to the next run instead, which journals them first. (SQLite's writers are
        # serialised: every statement of the batch finds the same rows.)
        has_media = select(MediaItem.id).where(MediaItem.message_id == Message.id).exists()
        batch = and_(batch, ~has_media)
    return Removed(_delete_where(session, Message, batch), media, files)


def _among(session: Session, column: Any, rows: Any) -> ColumnElement[bool]:
    """``column IN (rows)``, planned as a batch: the few rows probed by index."""
    rows = rows.correlate(None)
    if session.get_bind().dialect.name == "postgresql":
        # PostgreSQL may plan ``IN (subquery)`` as a hash join over a scan of the whole
        # table; an array built once from the subquery is probed through the index.
        return column == any_(func.array(rows.scalar_subquery()))
    return column.in_(rows)


def _delete_where(session: Session, model: Any, condition: Any) -> int:
    statement = delete(model).where(condition).execution_options(synchronize_session=False)
    return rows_affected(session.execute(statement))


def journal_files(session: Session, condition: Any) -> int:
    """Journal the files of the media rows matching ``condition``, in the transaction
    that is about to delete those rows; :func:`unlink_journaled_files` unlinks them."""
    paths = select(MediaItem.path, literal(utcnow(), FileDeletion.created_at.type)).where(
        condition, MediaItem.path.is_not(None)
    )
    # Core, not ORM: an ORM insert from a select does not report its row count.
    journal = cast(Table, FileDeletion.__table__)
    statement = insert(journal).from_select(["path", "created_at"], paths)
    return rows_affected(session.execute(statement))


def unlink_journaled_files(svc: Services, report: PurgeReport) -> int:
    """Unlink every journaled file, then forget it; returns how many were unlinked.

    Runs after each batch that journaled some, and at the start of every purge for
    what a crashed one left. Idempotent: two purges at once unlink and forget the same
    paths harmlessly. A file that cannot be unlinked stays journaled and fails the
    purge, loudly, once the others are done.
    """
    unlinked, failed, after = 0, 0, 0
    for _ in range(MAX_BATCHES):
        with svc.db.read() as session:
            page = session.execute(
                select(FileDeletion.id, FileDeletion.path)
                .where(FileDeletion.id > after)
                .order_by(FileDeletion.id)
                .limit(FILE_PAGE)
            ).all()
        if not page:
            break
        after = page[-1].id
        done = []
        for row in page:
            try:
                Path(row.path).unlink(missing_ok=True)
            except OSError:
                log.exception("retention could not delete media file %d", row.id)
                failed += 1
            else:
                done.append(row.id)
        if done:
            with _write(svc, report) as session:
                _delete_where(session, FileDeletion, FileDeletion.id.in_(done))
        unlinked += len(done)
    if failed:
        raise OSError(f"{failed} media file(s) could not be deleted; they stay journaled")
    return unlinked


# -- batches and their transactions -----------------------------------------------------


@contextmanager
def _write(svc: Services, report: PurgeReport) -> Iterator[Session]:
    """A write transaction, timed from the lock taken to the lock released."""
    with svc.db.session() as session:
        started = time.perf_counter()
        yield session
    report.wrote(time.perf_counter() - started)


def _walk(
    svc: Services,
    report: PurgeReport,
    due: _Due,
    delete_batch: Callable[[Session, ColumnElement[bool]], Removed],
) -> Removed:
    """Delete what is ``due`` a batch at a time, each batch in a transaction of its own.

    A batch is the next ``size`` rows in (time, id) order after the last batch's end,
    as the database finds them: its bounds are two keys, never a list of ids. Walking
    on from the last key (rather than asking again for the oldest) skips the rows a
    batch leaves on purpose, and, on PostgreSQL, the dead index entries of the rows it
    deleted, which stay until vacuum and would make every batch slower than the last.
    """
    size, after, total = FIRST_BATCH, None, Removed()
    order = (due.when, due.model.id)
    for _ in range(MAX_BATCHES):
        started = time.perf_counter()
        with _write(svc, report) as session:
            last = session.execute(
                select(*order)
                .where(due.between(after, None))
                .order_by(*order)
                .offset(size - 1)
                .limit(1)
            ).first()
            end: Key | None = None if last is None else (last[0], last[1])
            removed = delete_batch(session, due.batch(session, after, end, size))
        elapsed = time.perf_counter() - started
        if removed.files:
            unlink_journaled_files(svc, report)
        total += removed
        if end is None:  # that was the rest
            return total
        after = end
        if elapsed > TARGET_BATCH_SECONDS:
            size = max(MIN_BATCH, size // 2)
        elif elapsed < TARGET_BATCH_SECONDS / 2:
            size = min(MAX_BATCH, size * 2)
        _breathe(elapsed)
    log.warning("retention purge of %s stopped after %d batches", report.tenant, MAX_BATCHES)
    return total


def _erase_contacts(
    svc: Services, tenant: Tenant, condition: ColumnElement[bool], report: PurgeReport
) -> int:
    """Erase every contact matching ``condition``: selected a page at a time, each
    erased in a transaction of its own; returns how many."""
    erased, after = 0, 0
    for _ in range(MAX_BATCHES):
        with svc.db.read() as session:
            page = list(
                session.scalars(
                    select(Contact.id)
                    .where(condition, Contact.id > after)
                    .order_by(Contact.id)
                    .limit(CONTACT_PAGE)
                )
            )
        if not page:
            break
        after = page[-1]
        for contact_id in page:
            erased += _erase_if_still_due(svc, tenant, contact_id, condition, report)
    return erased


def _erase_if_still_due(
    svc: Services,
    tenant: Tenant,
    contact_id: int,
    condition: ColumnElement[bool],
    report: PurgeReport,
) -> int:
    files, started = 0, time.perf_counter()
    with _write(svc, report) as session:
        # Asked again under the lock: they may have written (or accepted) since the page.
        contact = session.scalar(select(Contact).where(Contact.id == contact_id, condition))
        if contact is None:
            return 0
        theirs = MediaItem.message_id.in_(contact_messages(tenant.id, contact_id))
        files = journal_files(session, theirs)
        erase_in_session(session, tenant, contact)
    if files:
        unlink_journaled_files(svc, report)
    _breathe(time.perf_counter() - started)
    return 1


def _breathe(elapsed: float) -> None:
    time.sleep(max(MIN_PAUSE_SECONDS, elapsed * PAUSE_SHARE))


# -- the daily run and its status -------------------------------------------------------


def purge_if_due(svc: Services, now: datetime) -> list[PurgeReport] | None:
    """The daily purge, run by whichever worker takes the lease first.

    The day is marked done only when every office's purge succeeded; until then each
    call (the worker's next round, or another worker's) purges the offices not yet
    purged today. Returns None when there was nothing to do (done, or running
    elsewhere, or no Redis to agree on it).
    """
    day = _DONE_KEY + now.date().isoformat()
    try:
        if svc.redis.exists(day):
            return None
        lease = svc.redis.lock(_LEASE_KEY, timeout=LEASE_SECONDS, blocking=False)
        if not lease.acquire():
            return None
    except RedisError:
        return None  # no shared clock: the next round tries again
    try:
        if svc.redis.exists(day):
            return None  # another worker finished it while we took the lease
        done = {
            slug
            for slug, outcome in office_outcomes(svc).items()
            if (outcome.get("last_success") or "")[:10] == now.date().isoformat()
        }
        reports = purge(svc, now, skip=done)
        if not any(report.error for report in reports):
            svc.redis.set(day, now.isoformat(), ex=2 * PURGE_EVERY)
        return reports
    finally:
        with suppress(LockError, RedisError):
            lease.release()


def office_outcomes(svc: Services) -> dict[str, dict[str, Any]]:
    """Each office's last purge: ``last_success``, ``last_attempt`` (ISO), ``failed``."""
    stored = svc.redis.hgetall(_STATUS_KEY)
    return {slug.decode(): json.loads(value) for slug, value in stored.items()}  # type: ignore[union-attr]


def _record_outcome(svc: Services, report: PurgeReport, now: datetime) -> None:
    at = iso_utc(now)
    try:
        previous = svc.redis.hget(_STATUS_KEY, report.tenant)
        outcome = json.loads(previous) if previous else {"last_success": None}
        outcome.update(last_attempt=at, failed=report.error is not None, error=report.error)
        if report.error is None:
            outcome["last_success"] = at
        svc.redis.hset(_STATUS_KEY, report.tenant, json.dumps(outcome))
    except RedisError:
        log.warning("retention outcome of %s not recorded: redis unavailable", report.tenant)


def retention_status(svc: Services, now: datetime) -> dict[str, Any]:
    """For ``/readyz``: per active office, its last successful purge and whether the
    last attempt failed; ``overdue`` when nothing succeeded for two days."""
    outcomes = office_outcomes(svc)
    with svc.db.read() as session:
        offices = session.execute(
            select(Tenant.slug, Tenant.created_at).where(Tenant.terminated_at.is_(None))
        ).all()
    status = {}
    for slug, created_at in offices:
        outcome = outcomes.get(slug, {})
        last = outcome.get("last_success")
        since = datetime.fromisoformat(last) if last else created_at
        status[slug] = {
            "last_success": last,
            "last_attempt": outcome.get("last_attempt"),
            "failed": bool(outcome.get("failed")),
            "overdue": now - since > 2 * PURGE_EVERY,
        }
    return {"offices": status}


def report_lines(reports: list[PurgeReport]) -> list[str]:
    return [
        f"{r.tenant}: "
        + (f"FAILED ({r.error}); " if r.error else "")
        + ", ".join(f"{kind} {count}" for kind, count in r.removed.items())
        for r in reports
    ]
