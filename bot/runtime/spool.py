"""The spool: where a signed webhook delivery goes when the database cannot take it,
and the drain that moves it into the database once it can.

Twilio does not retry a messaging webhook that fails (unless its URL asks for it),
so a 500 while the database restarts is a resident's message lost. Instead the
webhook keeps the delivery somewhere durable and answers 200 only then:

1. a Redis list (``portineria:spool:<queue>``), when Redis answers and keeps an
   append-only file (asked with ``INFO persistence``: without AOF a Redis restart
   would forget what we promised to keep);
2. else this web process's own file, ``<SPOOL_DIR>/<host>-<pid>.jsonl``: one JSON
   record a line, appended and fsynced before the answer, bounded in size;
3. else nothing: the webhook answers 503 with ``Retry-After``.

A record holds what routing and the signature check already established: the
office's number and tenant, the ``MessageSid``, the payload encrypted exactly as the
database would store it (never the clear text), the time received; for a status
callback, the status and error code.

Draining (``portineria worker``'s own loop, and a thread in each web process) moves
records into the database with the webhook's own insert, so a record drained twice,
or a delivery that also reached the database directly, is stored once (the unique
(tenant, MessageSid)); then hands the message on as usual. Routing is repeated: a
number that no longer belongs to that office is logged, counted and dropped. A
status callback is applied by the same monotonic rule as when it arrives.

A file can be drained only on its own host. Each writer holds an ``flock`` on
``<host>-<pid>.lock`` for its whole life; the kernel releases it when the process
dies, however it dies, and any process on the host then finds that lock free and
drains the file. A process drains its own file itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from redis import Redis
from redis.exceptions import RedisError

from bot.runtime.queueing import BackgroundLoop
from storage.files import FILE_MODE, private_folder
from storage.inbound import database_unavailable
from storage.models import utcnow
from storage.vocabulary import SpoolKind, SpoolOutcome

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

RECORD_VERSION = 1
DRAIN_BATCH = 100
# A drainer's hold on the Redis spool; renewed with every batch it trims.
DRAIN_LOCK_MS = 30_000
# How long Redis's answer about its append-only file is trusted.
AOF_RECHECK_SECONDS = 10.0


# -- the record ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SpooledDelivery:
    """One webhook delivery the database could not take, as the spool keeps it."""

    kind: SpoolKind
    number: str  # the office's number (E.164): routing is repeated on drain
    sid: str
    received_at: datetime
    tenant_id: int | None = None  # the routing at receipt; None if the database could not route
    payload: bytes | None = None  # a message: encrypted, exactly as the database stores it
    status: str | None = None  # a status callback
    error_code: int | None = None
    message_id: int | None = None  # a status already applied: only its delivery error is left

    def encode(self) -> bytes:
        record: dict[str, Any] = {
            "v": RECORD_VERSION,
            "kind": str(self.kind),
            "number": self.number,
            "tenant": self.tenant_id,
            "sid": self.sid,
            "at": self.received_at.astimezone(UTC).isoformat(),
        }
        if self.payload is not None:
            record["payload"] = self.payload.decode("ascii")  # a Fernet token is ASCII
        if self.kind == SpoolKind.STATUS:
            record.update(status=self.status, error_code=self.error_code)
            record["message_id"] = self.message_id
        return json.dumps(record, separators=(",", ":")).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes | str) -> SpooledDelivery:
        """The record on one line; ``ValueError`` if it is not one of ours."""
        try:
            record = json.loads(raw)
            if record.get("v") != RECORD_VERSION:
                raise ValueError(f"unknown spool record version {record.get('v')!r}")
            payload = record.get("payload")
            return cls(
                kind=SpoolKind(record["kind"]),
                number=str(record["number"]),
                sid=str(record["sid"]),
                received_at=datetime.fromisoformat(record["at"]),
                tenant_id=_optional_int(record.get("tenant")),
                payload=payload.encode("ascii") if isinstance(payload, str) else None,
                status=record.get("status"),
                error_code=_optional_int(record.get("error_code")),
                message_id=_optional_int(record.get("message_id")),
            )
        except (KeyError, TypeError, AttributeError, UnicodeError) as error:
            raise ValueError(f"unreadable spool record: {error}") from error

    def age_seconds(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.received_at).total_seconds())


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("spool record: not an integer")
    return value


Apply = Callable[[SpooledDelivery], SpoolOutcome]


@dataclass
class DrainReport:
    """What one drain pass did; ``database_down`` if it stopped because of the database."""

    outcomes: Counter[SpoolOutcome] = field(default_factory=Counter)
    database_down: bool = False

    def add(self, other: DrainReport) -> None:
        self.outcomes.update(other.outcomes)
        self.database_down = self.database_down or other.database_down


class _DatabaseDown(Exception):
    """Raised by an apply step when the database still cannot take the record."""


def _apply_guarded(apply: Apply, raw: bytes | str) -> SpoolOutcome:
    """One record through ``apply``: the database being down stops the drain (raises
    :class:`_DatabaseDown`); anything else wrong with the record sets it aside."""
    try:
        record = SpooledDelivery.decode(raw)
    except ValueError:
        log.error("spool: an unreadable record set aside")
        return SpoolOutcome.REJECTED
    try:
        return apply(record)
    except Exception as error:
        if database_unavailable(error):
            raise _DatabaseDown from error
        log.exception("spool: a %s record the database refuses was set aside", record.kind)
        return SpoolOutcome.REJECTED


_Raw = TypeVar("_Raw", bound=bytes | str)


def _apply_in_order(
    records: Sequence[_Raw], apply: Apply, set_aside: Callable[[_Raw], None]
) -> tuple[int, DrainReport]:
    """Apply ``records`` oldest first, until the database stops the drain; returns how
    many were done with (applied, dropped or set aside: none of them is kept)."""
    report = DrainReport()
    done = 0
    for raw in records:
        if raw:  # an empty line: a torn record sealed off, nothing to apply
            try:
                outcome = _apply_guarded(apply, raw)
            except _DatabaseDown:
                report.database_down = True
                break
            if outcome == SpoolOutcome.REJECTED:
                set_aside(raw)
            report.outcomes[outcome] += 1
        done += 1
    return done, report


# -- Redis ----------------------------------------------------------------------------------

# Push only below the bound, in one step (no other client can slip in between).
_PUSH = """
if redis.call('llen', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('rpush', KEYS[1], ARGV[2])
return 1
"""
# Trim what this drainer applied, only while it still holds the drain lock: a drainer
# whose lock expired must not trim entries that the next one is applying.
_TRIM = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ltrim', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('pexpire', KEYS[1], tonumber(ARGV[3]))
return 1
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisSpool:
    """The spool list in Redis: any worker, on any host, can drain it."""

    def __init__(self, redis: Redis, name: str, mode: str, max_entries: int) -> None:
        self.redis = redis
        self.key = f"portineria:spool:{name}"
        self._lock_key = f"{self.key}:drain"
        self._rejected_key = f"{self.key}:rejected"
        self._counts_key = f"{self.key}:counts"
        self._mode = mode
        self._max_entries = max_entries
        self._push = redis.register_script(_PUSH)
        self._trim = redis.register_script(_TRIM)
        self._release = redis.register_script(_RELEASE)
        self._aof: tuple[float, bool] = (-AOF_RECHECK_SECONDS, False)

    def durable(self) -> bool:
        """Whether Redis keeps what it is given across its own restart (AOF on)."""
        if self._mode != "auto":
            return self._mode == "on"
        checked_at, previous = self._aof
        if time.monotonic() - checked_at < AOF_RECHECK_SECONDS:
            return previous
        info = self.redis.info("persistence")
        enabled = bool(int(info.get("aof_enabled", 0)))
        if not enabled and (checked_at < 0 or previous):
            log.warning("spool: redis keeps no append-only file; deliveries go to the file spool")
        self._aof = (time.monotonic(), enabled)
        return enabled

    def push(self, record: SpooledDelivery) -> bool:
        """Keep the record; ``False`` if Redis is not durable or the list is full.
        Raises RedisError when Redis does not answer."""
        if not self.durable():
            return False
        return bool(self._push(keys=[self.key], args=[self._max_entries, record.encode()]))

    def length(self) -> int:
        return int(self.redis.llen(self.key))

    def oldest(self) -> SpooledDelivery | None:
        raw = self.redis.lindex(self.key, 0)
        if raw is None:
            return None
        try:
            return SpooledDelivery.decode(raw)
        except ValueError:
            return None

    def counts(self) -> dict[str, int]:
        counts = self.redis.hgetall(self._counts_key)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in counts.items()}

    def count(self, outcomes: Counter[SpoolOutcome]) -> None:
        """Keep the tally of what draining dropped or set aside (shown by /readyz)."""
        kept = {o: n for o, n in outcomes.items() if o in _TALLIED and n}
        if kept:
            with self.redis.pipeline() as pipeline:
                for outcome, number in kept.items():
                    pipeline.hincrby(self._counts_key, str(outcome), number)
                pipeline.execute()

    def drain(self, apply: Apply, max_batches: int = 50) -> DrainReport:
        """Apply spooled records oldest first, under a lock only one drainer holds."""
        report = DrainReport()
        if not self.redis.llen(self.key):
            return report
        token = uuid.uuid4().hex
        if not self.redis.set(self._lock_key, token, nx=True, px=DRAIN_LOCK_MS):
            return report  # another drainer is at it
        try:
            for _ in range(max_batches):
                batch = self.redis.lrange(self.key, 0, DRAIN_BATCH - 1)
                if not batch:
                    break
                applied, part = _apply_in_order(batch, apply, self._set_aside)
                report.add(part)
                if applied and not self._trim(
                    keys=[self._lock_key, self.key], args=[token, applied, DRAIN_LOCK_MS]
                ):
                    break  # our lock expired: the next drainer goes on (re-applying is harmless)
                if report.database_down or applied < len(batch):
                    break
        finally:
            self._release(keys=[self._lock_key], args=[token])
        return report

    def _set_aside(self, raw: bytes | str) -> None:
        self.redis.rpush(self._rejected_key, raw)


_TALLIED = {SpoolOutcome.UNROUTED, SpoolOutcome.REJECTED}


# -- files ------------------------------------------------------------------------------------


def _host_name() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``descriptor`` (not unlinked or replaced)."""
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _lock_path(data_path: Path) -> Path:
    return data_path.with_suffix(".lock")


@contextlib.contextmanager
def _locked(lock_path: Path, *, wait: bool) -> Iterator[int | None]:
    """The writer's lock on a spool file: yields the descriptor holding it, or ``None``
    if another process holds it (``wait=False``) or the file was drained and removed."""
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield descriptor if _same_file(descriptor, lock_path) else None
    finally:
        os.close(descriptor)  # releases the lock


def _lines(data: bytes) -> list[bytes]:
    """Complete records only: a tail without its newline was never acknowledged."""
    return data.split(b"\n")[:-1]


def _replace_with(path: Path, rest: bytes) -> None:
    """Atomically make ``path`` hold ``rest`` (the records not drained yet)."""
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        _write_all(descriptor, rest)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _drain_lines(
    data: bytes, apply: Apply, set_aside: Callable[[bytes], None]
) -> tuple[int, DrainReport]:
    """Apply the records in ``data`` in order; returns how many bytes were consumed."""
    lines = _lines(data)
    done, report = _apply_in_order(lines, apply, set_aside)
    return sum(len(line) + 1 for line in lines[:done]), report


@dataclass(frozen=True)
class FileSpoolStats:
    entries: int
    oldest: SpooledDelivery | None


class FileSpool:
    """This process's append-only spool file, and the files of dead writers on this host."""

    def __init__(self, folder: Path | str, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.host = _host_name()
        self._guard = threading.Lock()  # request threads append, the drain thread trims
        self._draining = threading.Lock()  # one drain of the own file at a time
        self._pid = 0
        self._descriptor: int | None = None
        self._lock_descriptor: int | None = None
        self._size = 0

    @property
    def path(self) -> Path:
        return self.folder / f"{self.host}-{os.getpid()}.jsonl"

    @property
    def rejected_path(self) -> Path:
        return self.folder / f"{self.host}-rejected.jsonl"

    def append(self, record: SpooledDelivery) -> bool:
        """Append and fsync the record; ``False`` past the size bound. Raises OSError
        when the file cannot be written (the delivery is then not kept)."""
        line = record.encode() + b"\n"
        with self._guard:
            descriptor = self._own_file()
            if self._size + len(line) > self.max_bytes:
                return False
            try:
                _write_all(descriptor, line)
                os.fsync(descriptor)
            except OSError:
                # Leave no half record behind for the next append to glue onto.
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, self._size)
                raise
            self._size += len(line)
        return True

    def _own_file(self) -> int:
        """This process's file, open for appending, its lock held (``self._guard`` held)."""
        if self._pid == os.getpid() and self._descriptor is not None:
            return self._descriptor
        private_folder(self.folder)
        path = self.path
        lock_path = _lock_path(path)
        for _ in range(10):
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            # A drainer may hold it briefly (a dead process had our pid): wait for it.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _same_file(lock, lock_path):
                break
            os.close(lock)  # drained and removed meanwhile: take a fresh one
        else:
            raise OSError(f"cannot take the spool lock {lock_path}")
        created = not path.exists()
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        if created:
            _fsync_folder(self.folder)
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            # A dead process with our pid left a torn last line: seal it off.
            _write_all(descriptor, b"\n")
            os.fsync(descriptor)
            size += 1
        self._descriptor, self._lock_descriptor = descriptor, lock
        self._pid, self._size = os.getpid(), size
        return descriptor

    def _set_aside(self, line: bytes) -> None:
        private_folder(self.folder)
        descriptor = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            _write_all(descriptor, line + b"\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def drain_own(self, apply: Apply) -> DrainReport:
        """Drain this process's own file (appends may go on meanwhile)."""
        if not self._draining.acquire(blocking=False):
            return DrainReport()
        try:
            with self._guard:
                data = self._own_snapshot()
            consumed, report = _drain_lines(data, apply, self._set_aside)
            if consumed:
                with self._guard:
                    self._drop_prefix(consumed)
            return report
        finally:
            self._draining.release()

    def _drop_prefix(self, consumed: int) -> None:
        assert self._descriptor is not None
        if consumed >= self._size:
            os.ftruncate(self._descriptor, 0)
            os.fsync(self._descriptor)
            self._size = 0
            return
        rest = os.pread(self._descriptor, self._size - consumed, consumed)
        _replace_with(self.path, rest)
        os.close(self._descriptor)
        self._descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND, FILE_MODE)
        self._size = len(rest)

    def orphans(self) -> list[Path]:
        """Spool files of this host other than this process's own."""
        if not self.folder.is_dir():
            return []
        skip = {self.rejected_path, self.path if self._pid == os.getpid() else None}
        return sorted(p for p in self.folder.glob(f"{self.host}-*.jsonl") if p not in skip)

    def drain_orphans(self, apply: Apply) -> DrainReport:
        """Drain the files whose writer is gone (its lock is free), one drainer at a time."""
        report = DrainReport()
        for path in self.orphans():
            with _locked(_lock_path(path), wait=False) as held:
                if held is None or not path.exists():
                    continue  # its writer lives, or another drainer has it
                data = path.read_bytes()
                consumed, part = _drain_lines(data, apply, self._set_aside)
                report.add(part)
                if consumed >= len(data):
                    path.unlink()
                    _lock_path(path).unlink(missing_ok=True)  # still held: nobody reuses it
                elif consumed:
                    _replace_with(path, data[consumed:])
            if report.database_down:
                break
        return report

    def stats(self) -> FileSpoolStats:
        """How many records wait in this host's files, and the oldest of them."""
        entries, oldest = 0, None
        paths = self.orphans()
        with self._guard:
            own = self._own_snapshot()
        for data in [own, *(_read_or_empty(p) for p in paths)]:
            lines = _lines(data)
            entries += len(lines)
            if lines:
                try:
                    first = SpooledDelivery.decode(lines[0])
                except ValueError:
                    continue
                if oldest is None or first.received_at < oldest.received_at:
                    oldest = first
        return FileSpoolStats(entries, oldest)

    def _own_snapshot(self) -> bytes:
        if self._pid != os.getpid() or self._descriptor is None or not self._size:
            return b""
        return os.pread(self._descriptor, self._size, 0)


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


# -- the spool the webhook uses ----------------------------------------------------------------


class Spool:
    """Redis first (any worker can drain it), then this process's file, else nothing."""

    def __init__(self, redis_spool: RedisSpool, files: FileSpool, retry_after: int) -> None:
        self.redis = redis_spool
        self.files = files
        self.retry_after = retry_after
        self._kept_here = False
        self._wake = threading.Event()
        self._drain_pid = 0
        self._drain_guard = threading.Lock()

    def keep(self, record: SpooledDelivery) -> str | None:
        """Keep the delivery durably; where (``"redis"``/``"file"``), or ``None`` if nowhere."""
        place: str | None = None
        try:
            if self.redis.push(record):
                place = "redis"
        except RedisError:
            log.warning("spool: redis unavailable, keeping the delivery in the file spool")
        if place is None:
            try:
                if self.files.append(record):
                    place = "file"
                else:
                    log.error("spool: the file spool is full (%d bytes)", self.files.max_bytes)
            except OSError as error:
                log.error("spool: cannot write the file spool: %s", error.strerror or error)
        self._kept_here = self._kept_here or place is not None
        return place

    def database_answered(self) -> None:
        """The webhook stored a delivery: if this process spooled some, drain them now,
        so that messages arriving after them do not overtake them for long."""
        if self._kept_here:
            self._kept_here = False
            self._wake.set()

    def once_per_process(self, start: Callable[[], None]) -> None:
        """Run ``start`` (the drain thread) once in each process."""
        if self._drain_pid == os.getpid():
            return
        with self._drain_guard:
            if self._drain_pid != os.getpid():
                start()
                self._drain_pid = os.getpid()

    def wait_for_drain(self, seconds: float) -> None:
        """The drain loop's pause: ``seconds``, or less when the database is back."""
        self._wake.wait(seconds)
        self._wake.clear()

    def status(self) -> dict[str, Any]:
        """The spool's size and the age of its oldest record, for ``/readyz``."""
        now = utcnow()
        files = self.files.stats()
        oldest = [files.oldest] if files.oldest else []
        body: dict[str, Any] = {"files": files.entries, "folder": str(self.files.folder)}
        try:
            body["redis"] = self.redis.length()
            first = self.redis.oldest()
            if first is not None:
                oldest.append(first)
            body.update(self.redis.counts())
        except RedisError:
            body["redis"] = None  # unknown: Redis does not answer
        body["entries"] = files.entries + (body["redis"] or 0)
        body["oldest_seconds"] = (
            round(max(r.age_seconds(now) for r in oldest), 1) if oldest else None
        )
        return body


def build_spool(config: dict[str, Any], redis: Redis) -> Spool:
    return Spool(
        RedisSpool(
            redis,
            config["QUEUE_NAME"],
            mode=str(config["SPOOL_REDIS"]),
            max_entries=int(config["SPOOL_REDIS_MAX_ENTRIES"]),
        ),
        FileSpool(config["SPOOL_DIR"], int(config["SPOOL_FILE_MAX_BYTES"])),
        retry_after=int(config["SPOOL_RETRY_AFTER_SECONDS"]),
    )


# -- draining ---------------------------------------------------------------------------------


def apply_spooled(svc: Services, record: SpooledDelivery) -> SpoolOutcome:
    """Put one spooled delivery where the webhook would have: routing repeated, and
    idempotent, so applying a record twice changes nothing the second time."""
    tenant_id = svc.tenants.tenant_for(record.number)
    if tenant_id is None or (record.tenant_id is not None and tenant_id != record.tenant_id):
        log.warning("spool: a %s for a number its office no longer serves, dropped", record.kind)
        return SpoolOutcome.UNROUTED
    if record.kind == SpoolKind.MESSAGE:
        return _store_message(svc, tenant_id, record)
    return _apply_status(svc, tenant_id, record)


def _store_message(svc: Services, tenant_id: int, record: SpooledDelivery) -> SpoolOutcome:
    if record.payload is None:
        raise ValueError("a spooled message without its payload")
    message_id = svc.inbound_writer.store(tenant_id, record.sid, record.payload, record.received_at)
    if message_id is None:
        return SpoolOutcome.DUPLICATE
    try:
        svc.jobs.hand_off(message_id)
    except RedisError:
        log.warning("spooled message %s stored but not handed off: redis unavailable", message_id)
    return SpoolOutcome.STORED


def _apply_status(svc: Services, tenant_id: int, record: SpooledDelivery) -> SpoolOutcome:
    from bot.crm import record_message_status
    from bot.privacy.consent import record_delivery_error
    from storage.delivery import apply_status

    if record.status is None:
        raise ValueError("a spooled status callback without its status")
    message_id = record.message_id
    if message_id is None:
        message_id = apply_status(
            svc.db,
            tenant_id,
            record.sid,
            record.status,
            record.error_code,
            then=record_message_status,
        )
    if message_id is not None and record.error_code is not None:
        record_delivery_error(svc, tenant_id, message_id, record.error_code)
    return SpoolOutcome.APPLIED


def drain_spools(svc: Services) -> DrainReport:
    """One pass over this process's file, this host's orphaned files and the Redis list."""
    spool = svc.spool
    apply = partial(apply_spooled, svc)
    report = DrainReport()
    assert svc.app_context is not None
    with svc.app_context():
        for drain in (spool.files.drain_own, spool.files.drain_orphans):
            report.add(drain(apply))
            if report.database_down:
                break
        if not report.database_down:
            try:
                report.add(spool.redis.drain(apply))
            except RedisError:
                log.debug("spool: redis unavailable, its spool waits")
    if report.outcomes:
        log.info("spool: drained %s", {str(k): v for k, v in report.outcomes.items()})
        with contextlib.suppress(RedisError):
            spool.redis.count(report.outcomes)
    return report


def drain_loop(
    svc: Services, on_report: Callable[[DrainReport], None] | None = None
) -> BackgroundLoop:
    """A thread that drains every ``SPOOL_DRAIN_INTERVAL_SECONDS``, sooner when woken."""
    interval = float(svc.config["SPOOL_DRAIN_INTERVAL_SECONDS"])

    def run_pass() -> None:
        svc.spool.wait_for_drain(interval)
        report = drain_spools(svc)
        if on_report is not None:
            on_report(report)

    return BackgroundLoop("spool-drain", run_pass, pause=0, error_pause=interval)


def ensure_web_drain(svc: Services) -> None:
    """Start this web process's drain thread, once per process: only this process can
    drain its own file, and threads do not survive the fork of a preloading server."""
    svc.spool.once_per_process(lambda: drain_loop(svc).start())
