"""``portineria worker``: a non-forking RQ worker, the relay, the sweeper and the spool's
drain, in one process.

The worker does not fork per job: forking costs more than our jobs do, and the
spaCy pipeline stays loaded once for the life of the process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bot.conversation.handoff import release_idle_conversations
from bot.privacy.retention import purge_if_due
from bot.runtime.queueing import BackgroundLoop, connect_redis, inbound_relay, sweep_once
from bot.runtime.spool import DrainReport, drain_loop, drain_spools
from bot.services import Services, services
from storage.db import Database
from storage.inbound import database_unavailable
from storage.models import utcnow

log = logging.getLogger(__name__)


def preload_language() -> None:
    import intents

    started = time.perf_counter()
    intents.classify("buongiorno")
    log.info(
        "language pipeline %s loaded in %.2fs",
        intents.model_version(),
        time.perf_counter() - started,
    )


RELEASE_CHECK_SECONDS = 60.0


def make_sweeper(app: Flask) -> BackgroundLoop:
    """Every few seconds: enqueue lost messages; every minute: release idle handoffs;
    once a day (across all workers): the retention purge."""
    svc = services()
    config = app.config
    sweep = partial(
        sweep_once,
        svc.db,
        svc.jobs,
        grace_seconds=float(config["SWEEP_GRACE_SECONDS"]),
        lease_seconds=int(config["PROCESSING_LEASE_SECONDS"]),
        max_attempts=int(config["MAX_PROCESSING_ATTEMPTS"]),
    )
    last_release = 0.0

    def housekeeping() -> None:
        nonlocal last_release
        sweep()
        purge_if_due(svc, utcnow())
        if time.monotonic() - last_release >= RELEASE_CHECK_SECONDS:
            last_release = time.monotonic()
            released = release_idle_conversations(svc, utcnow())
            if released:
                log.info("released %d idle conversation(s) to the bot", released)

    return BackgroundLoop("sweeper", housekeeping, pause=float(config["SWEEP_INTERVAL_SECONDS"]))


def make_rq_worker(svc: Services, gate: DatabaseGate | None = None) -> SimpleWorker:
    """The RQ worker, listening on a Redis client of its own.

    RQ raises the socket timeout of the client it is given above its blocking wait
    (minutes). On the app's shared client that would let a job's Redis call hang for
    minutes in an outage, and connections opened before the change would still time
    out mid-wait, making the worker drop and retry its listen.

    With a ``gate`` the worker pauses while the database is away (see
    :class:`DatabaseGate`).
    """
    listener = connect_redis(svc.redis_url, socket_timeout=None)
    if gate is None:
        return SimpleWorker([svc.jobs.queue], connection=listener)
    worker = PausingWorker(
        [svc.jobs.queue], connection=listener, exception_handlers=[gate.note_job_failure]
    )
    worker.gate = gate
    return worker


# -- while the database is away: pause, back off, resume; drain the spool ---------------------


class DatabaseGate:
    """Whether the database was found away, and a backoff to wait until it answers.

    Without it, every queued job fails at once while the database is down: a traceback
    each, one of its RQ retries spent, the whole queue in seconds, and after three
    retries the jobs give up (the sweeper would find their messages later). With it,
    the first job that finds the database away closes the gate; the worker takes no
    further job, probes with growing pauses (0.5 s doubling to 15 s) and goes on by
    itself when the database answers. If it is found away again soon after (a
    database that reads but cannot write: a locked, full or read-only SQLite), the
    pauses keep growing instead of starting over.
    """

    FIRST_PAUSE = 0.5
    MAX_PAUSE = 15.0
    SETTLED_SECONDS = 60.0  # up this long: the next outage starts from the first pause

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._up_since = 0.0
        self._pause = self.FIRST_PAUSE

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def mark_down(self) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            if time.monotonic() - self._up_since >= self.SETTLED_SECONDS:
                self._pause = self.FIRST_PAUSE
            self._down_since = time.monotonic()
        log.warning("database unavailable: the worker pauses until it answers again")

    def note_job_failure(self, job: Any, exc_type: Any, exc_value: Any, traceback: Any) -> bool:
        """An RQ exception handler: a job that failed on the database closes the gate."""
        if isinstance(exc_value, BaseException) and database_unavailable(exc_value):
            self.mark_down()
        return True  # the other handlers (RQ's own retry bookkeeping) go on

    def note_drain(self, report: DrainReport) -> None:
        if report.database_down:
            self.mark_down()

    def probe(self) -> bool:
        try:
            with self._db.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            if database_unavailable(error):
                return False
            raise
        return True

    def wait(self, should_stop: Callable[[], bool], keep_alive: Callable[[], None]) -> None:
        """Block while the gate is closed: probe with growing pauses, stop on request."""
        while self._down_since is not None and not should_stop():
            deadline = time.monotonic() + self._pause
            while time.monotonic() < deadline and not should_stop():
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            self._pause = min(self._pause * 2, self.MAX_PAUSE)
            keep_alive()
            if self.probe():
                with self._lock:
                    down_for = time.monotonic() - (self._down_since or time.monotonic())
                    self._down_since, self._up_since = None, time.monotonic()
                log.warning("database answers again after %.1fs: the worker goes on", down_for)


class PausingWorker(SimpleWorker):
    """RQ's non-forking worker that takes no job while its :class:`DatabaseGate` is closed."""

    gate: DatabaseGate

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        self.gate.wait(lambda: self._stop_requested, self._keep_registered)
        if self._stop_requested:
            return None  # asked to stop while paused: take no job (RQ then stops)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _keep_registered(self) -> None:
        # A long pause must not let the worker's registration expire in Redis; Redis may
        # be away too, and that must not stop the worker.
        try:
            self.heartbeat()
        except RedisError:
            pass


# What asks the worker to stop while RQ's loop is not running (it has its own handlers).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve_jobs(svc: Services, gate: DatabaseGate, *, burst: bool = False) -> None:
    """Run RQ's worker loop until asked to stop; start it again when it quits by itself.

    RQ's loop gives up ("found an unhandled exception, quitting") when Redis fails
    under it, e.g. while it records a job that failed because the database was away
    too. The process would then end with the relay, the sweeper and the spool's drain.
    Instead it waits (growing pauses, as the gate's, and until Redis answers) and
    starts a new RQ worker: a stop request (SIGTERM, SIGINT, RQ's shutdown command)
    or a burst ends it, nothing else does.
    """
    pause = DatabaseGate.FIRST_PAUSE
    while True:
        worker = make_rq_worker(svc, gate)
        started = time.monotonic()
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
        except RedisError as error:
            if burst:
                raise  # a one-off run reports its failure
            log.warning("the RQ worker stopped on a Redis error: %s", error)
        if burst or worker._shutdown_requested_date is not None or worker._stop_requested:
            return
        if time.monotonic() - started >= DatabaseGate.SETTLED_SECONDS:
            pause = DatabaseGate.FIRST_PAUSE
        log.warning("the RQ worker quit by itself; it starts again once Redis answers")
        if not _wait_for_redis(svc, pause):
            return
        pause = min(pause * 2, DatabaseGate.MAX_PAUSE)


def _wait_for_redis(svc: Services, pause: float) -> bool:
    """Pause, then until Redis answers (pauses growing to the gate's longest);
    ``False`` if a stop was asked meanwhile (RQ's signal handlers are gone now)."""
    stopping = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in STOP_SIGNALS}
    try:
        while not stopping.wait(pause):
            try:
                svc.redis.ping()
                return True
            except RedisError:
                pause = min(pause * 2, DatabaseGate.MAX_PAUSE)
        return False
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_worker(app: Flask, *, burst: bool = False) -> None:
    preload_language()
    svc = services()
    sweeper = make_sweeper(app)
    relay = inbound_relay(svc.jobs)
    if burst:
        svc.jobs.relay_waiting()
    else:
        relay.start()
    sweeper.start()
    # The spool: deliveries the database could not take, drained in a loop of their own;
    # and the gate that pauses the RQ worker while the database is away.
    gate = DatabaseGate(svc.db)
    spool_drain = drain_loop(svc, on_report=gate.note_drain)
    if burst:
        gate.note_drain(drain_spools(svc))
    else:
        spool_drain.start()
    try:
        serve_jobs(svc, gate, burst=burst)
    finally:
        spool_drain.stop()
        relay.stop()
        sweeper.stop()
