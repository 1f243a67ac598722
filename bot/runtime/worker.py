"""``portineria worker``: a non-forking RQ worker, the relay, the sweeper, the spool's
drain and the CRM dispatcher, in one process.

The worker does not fork per job: forking costs more than our jobs do, and the
spaCy pipeline stays loaded once for the life of the process.

It outlives Redis. RQ retries by itself only while it waits for a job; a Redis
failure anywhere else (a heartbeat, the bookkeeping after a job, its own teardown)
makes ``work()`` give up. The process then waits for Redis with a backoff and
starts a fresh RQ worker, as often as it takes, until it is told to stop. Nothing
is lost meanwhile: the database is the record of what must be processed, and the
sweeper hands it to RQ again once Redis answers (a restarted Redis may be empty).

RQ's scheduler (it enqueues retries when their delay is over) runs as a thread of
this process, like the relay and the sweeper, not as the child RQ would fork: a
fork of a process with threads and open database connections is unsafe, and that
child dies at the first Redis failure, with a traceback, until RQ notices.

It outlives the database too: while the database is away the worker takes no job
(see :class:`DatabaseGate`), and a thread of its own drains the spool of webhook
deliveries the database could not take (``bot.runtime.spool``).
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from functools import partial
from typing import Any

from flask import Flask
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.scheduler import RQScheduler
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bot.conversation.emergency import urgent_among
from bot.conversation.escalation import escalate_unacknowledged
from bot.conversation.handoff import release_idle_conversations, send_handoff_reminders
from bot.crm.delivery import CrmThread
from bot.outbound.send import deliver, reconcile_stale_sends
from bot.outbound.senders import SenderPool, SendPacer
from bot.privacy.retention import purge_if_due
from bot.runtime.queueing import (
    BackgroundLoop,
    Backoff,
    RedisOutage,
    Triage,
    Triaged,
    connect_redis,
    inbound_relay,
    run_each,
    sweep_once,
)
from bot.runtime.spool import DrainReport, drain_loop, drain_spools
from bot.services import Services, services
from storage.db import Database
from storage.inbound import database_unavailable
from storage.models import utcnow

log = logging.getLogger(__name__)

# RQ retries a lost connection while it waits for jobs, doubling up to this (its own
# default is a minute: far too long to notice that Redis is back).
RQ_RECONNECT_CAP_SECONDS = 5.0
# A worker that ran this long before it gave up resets the restart backoff.
STEADY_RUN_SECONDS = 60.0
# How long a stopping worker gives its senders to finish what was handed to them.
SENDERS_CLOSE_SECONDS = 20.0
SWITCH_INTERVAL_SECONDS = 0.0005


def preload_language() -> None:
    import intents

    started = time.perf_counter()
    intents.classify("buongiorno")
    log.info(
        "language pipeline %s loaded in %.2fs",
        intents.model_version(),
        time.perf_counter() - started,
    )


def freeze_what_is_loaded() -> None:
    """Leave what is loaded by now (the language model, the app) out of the garbage
    collector's full passes: it lives as long as the process, and walking it took
    150-200 ms with the interpreter lock held, in which no sender sent. At the office's
    full rate, a send slot that passes unused is not made up later."""
    gc.collect()
    gc.freeze()
    log.info("%d long-lived objects left out of garbage collection", gc.get_freeze_count())


RELEASE_CHECK_SECONDS = 60.0
REMINDER_CHECK_SECONDS = 30.0
# SQLite's planner statistics, refreshed from a sample at start and then hourly (see
# storage.db.Database.refresh_statistics): a few milliseconds under the write lock.
STATISTICS_SECONDS = 3600.0


def sweep_pass(svc: Services, config: Mapping[str, Any]) -> Callable[[], int]:
    """One pass of the sweeper as configured (returns how many messages it enqueued)."""
    return partial(
        sweep_once,
        svc.db,
        svc.jobs,
        grace_seconds=float(config["SWEEP_GRACE_SECONDS"]),
        lease_seconds=int(config["PROCESSING_LEASE_SECONDS"]),
        max_attempts=int(config["MAX_PROCESSING_ATTEMPTS"]),
    )


def make_sweeper(app: Flask, outage: RedisOutage | None = None) -> BackgroundLoop:
    """Every few seconds: enqueue lost messages, reconcile stale sends and call the
    on-call people about unacknowledged emergencies; every minute: release idle
    handoffs; every half minute: remind residents waiting for an operator; every hour
    (and at start): the query planner's statistics. Duties that need only the database
    run through a Redis outage."""
    svc = services()
    config = app.config
    sweep = sweep_pass(svc, config)
    last_release = last_reminder = 0.0
    last_statistics: float | None = None

    def refresh_statistics() -> None:
        nonlocal last_statistics
        if last_statistics is not None and time.monotonic() - last_statistics < STATISTICS_SECONDS:
            return
        last_statistics = time.monotonic()
        svc.db.refresh_statistics()

    def release_idle() -> None:
        nonlocal last_release
        if time.monotonic() - last_release < RELEASE_CHECK_SECONDS:
            return
        last_release = time.monotonic()
        released = release_idle_conversations(svc, utcnow())
        if released:
            log.info("released %d idle conversation(s) to the bot", released)

    def remind_waiting() -> None:
        nonlocal last_reminder
        if time.monotonic() - last_reminder < REMINDER_CHECK_SECONDS:
            return
        last_reminder = time.monotonic()
        reminded = send_handoff_reminders(svc, utcnow())
        if reminded:
            log.info("reminded %d resident(s) waiting for an operator", reminded)

    def escalate() -> None:
        # Each call is claimed by a row first: several workers never place the same one.
        placed = escalate_unacknowledged(svc, utcnow())
        if placed:
            log.info("placed %d escalation call(s)", len(placed))

    def housekeeping() -> None:
        run_each(
            (
                refresh_statistics,
                sweep,
                escalate,
                lambda: reconcile_stale_sends(svc, utcnow()),
                release_idle,
                remind_waiting,
            )
        )

    return BackgroundLoop(
        "sweeper", housekeeping, pause=float(config["SWEEP_INTERVAL_SECONDS"]), outage=outage
    )


# -- retention: its own thread ----------------------------------------------------------

RETENTION_CHECK_SECONDS = 300.0


def make_retention_loop(outage: RedisOutage | None = None) -> BackgroundLoop:
    """Every few minutes: the daily retention purge, if no worker has done today's.

    A thread of its own: a catch-up purge of millions of rows takes a minute or more,
    and the sweeper that recovers lost messages must not wait for it. A failed purge
    leaves the day open, so the next round tries it again.
    """
    svc = services()
    return BackgroundLoop(
        "retention",
        lambda: purge_if_due(svc, utcnow()),
        pause=RETENTION_CHECK_SECONDS,
        outage=outage,
    )


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


class PortineriaWorker(SimpleWorker):
    """RQ's non-forking worker, made to let go cleanly when Redis fails under it and
    to take no job while its :class:`DatabaseGate` is closed.

    ``shutdown_requested`` tells a stop asked for by a signal from RQ leaving its
    loop because Redis failed: only the first ends the process.
    """

    max_connection_wait_time = RQ_RECONNECT_CAP_SECONDS

    def __init__(
        self,
        *args: Any,
        stop: threading.Event | None = None,
        gate: DatabaseGate | None = None,
        **kwargs: Any,
    ) -> None:
        if gate is not None:
            kwargs["exception_handlers"] = [gate.note_job_failure]
        super().__init__(*args, **kwargs)
        self.shutdown_requested = False
        self._stop = stop
        self.gate = gate

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if self.gate is not None:
            self.gate.wait(lambda: self._stop_requested, self._keep_registered)
            if self._stop_requested:
                return None  # asked to stop while paused: take no job (RQ then stops)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _keep_registered(self) -> None:
        # A long pause must not let the worker's registration expire in Redis; Redis may
        # be away too, and that must not stop the worker.
        with suppress(RedisError):
            self.heartbeat()

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self._stop is not None and self._stop.is_set():
            # A signal that came while this worker was being built, before RQ listened.
            self.shutdown_requested = True
            self._stop_requested = True

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.shutdown_requested = True
        super().request_stop(signum, frame)

    def set_shutdown_requested_date(self) -> None:
        # Runs inside the signal handler: a Redis failure here would be raised into
        # the job being finished, which a warm shutdown is meant to let complete.
        with suppress(RedisError):
            super().set_shutdown_requested_date()

    def teardown(self) -> None:
        try:
            super().teardown()
        except RedisError:
            # The registration expires by itself; what runs locally must stop now.
            self.let_go()
            raise

    def let_go(self) -> None:
        """Stop the pubsub thread without asking Redis; safe after a clean teardown too."""
        thread = self.pubsub_thread
        if thread is not None:
            thread.stop()
            thread.join(timeout=1)
            self.pubsub_thread = None
            if self.pubsub is not None:
                with suppress(RedisError, OSError):
                    self.pubsub.close()


def make_scheduler(svc: Services, outage: RedisOutage | None = None) -> BackgroundLoop:
    """RQ's scheduler as a thread: every second, move the retries that are due to the queue.

    One worker at a time holds the queue's scheduler lock (RQ's own); the others
    try again now and then, and take over if its holder is gone. After a Redis
    restart the holder's heartbeat takes the lock back.
    """
    # Both queues: a retried emergency waits in the urgent queue's scheduled registry.
    scheduler = RQScheduler(svc.jobs.queues, connection=svc.redis, logging_level="WARNING")

    def tick() -> None:
        if scheduler.should_reacquire_locks:
            scheduler.acquire_locks()
        elif scheduler.acquired_locks:
            scheduler.heartbeat()
        if scheduler.acquired_locks:
            scheduler.enqueue_scheduled_jobs()

    return BackgroundLoop("scheduler", tick, pause=1.0, outage=outage)


def make_rq_worker(
    svc: Services, stop: threading.Event | None = None, gate: DatabaseGate | None = None
) -> PortineriaWorker:
    """The RQ worker, listening on a Redis client of its own.

    RQ raises the socket timeout of the client it is given above its blocking wait
    (minutes). On the app's shared client that would let a job's Redis call hang for
    minutes in an outage, and connections opened before the change would still time
    out mid-wait, making the worker drop and retry its listen.

    With a ``gate`` the worker pauses while the database is away. Building it talks to
    Redis (RQ names its connection): RedisError if Redis is down.
    """
    listener = connect_redis(svc.redis_url, socket_timeout=None)
    return PortineriaWorker(svc.jobs.queues, connection=listener, stop=stop, gate=gate)


class FoldRedisRetries(logging.Filter):
    """Turns RQ's own lines about a lost Redis into one report to the outage.

    RQ logs every reconnection try (and, when it gives up, a traceback); the
    worker's :class:`RedisOutage` says it once per outage instead.
    """

    _MARKERS = ("could not connect to Redis", "Redis connection timeout")

    def __init__(self, outage: RedisOutage) -> None:
        super().__init__()
        self._outage = outage

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RedisError) or any(m in record.getMessage() for m in self._MARKERS):
            self._outage.failed("rq worker")
            return False
        return True


class StopSignal:
    """SIGTERM/SIGINT while no RQ worker is listening for them (between workers)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if a stop was asked for meanwhile."""
        return self.event.wait(seconds)


def wait_for_redis(svc: Services, outage: RedisOutage, stop: StopSignal) -> bool:
    """Ping Redis with a backoff until it answers; False if told to stop first."""
    backoff = Backoff(0.25, RQ_RECONNECT_CAP_SECONDS)
    while not stop.event.is_set():
        try:
            svc.redis.ping()
        except RedisError:
            outage.failed("worker")
            if stop.wait(backoff.next()):
                return False
            continue
        outage.recovered()
        return True
    return False


def work_through_outages(
    svc: Services, outage: RedisOutage, stop: StopSignal, gate: DatabaseGate | None = None
) -> None:
    """Run RQ workers one after another until a stop is asked for.

    Each one works until it is stopped or Redis fails under it; then, once Redis
    answers, the next one starts. Restarts back off so a persistent failure is
    retried, not spun on.
    """
    restarts = Backoff(0.5, 30.0)
    while not stop.event.is_set():
        started = time.monotonic()
        worker: PortineriaWorker | None = None
        try:
            worker = make_rq_worker(svc, stop.event, gate)
            worker.work(logging_level="WARNING")
        except RedisError:
            outage.failed("rq worker")
        finally:
            if worker is not None:
                worker.let_go()
            # RQ's handlers point at a worker that is gone: listen ourselves.
            stop.install()
        if worker is not None and worker.shutdown_requested:
            return
        log.warning("the RQ worker quit by itself; it starts again once Redis answers")
        if time.monotonic() - started >= STEADY_RUN_SECONDS:
            restarts.reset()
        if stop.wait(restarts.next()) or not wait_for_redis(svc, outage, stop):
            return


def start_senders(svc: Services, concurrency: int) -> SenderPool:
    """The worker's sender threads, pacing every send to its office's rate."""
    pacer = SendPacer(svc.redis)
    return SenderPool(
        lambda send: deliver(svc, send, paced_by=pacer.turns),
        senders=concurrency,
        context=svc.app_context,
    ).start()


def lane_triage(svc: Services) -> Triage:
    """The priority lane's triage: the engine's reader, on messages about to be queued."""

    def triage(message_ids: list[int]) -> Triaged:
        return Triaged(*urgent_among(svc, message_ids))

    return triage


def run_worker(app: Flask, *, burst: bool = False, concurrency: int = 1) -> None:
    stop = StopSignal()
    stop.install()
    preload_language()
    svc = services()
    freeze_what_is_loaded()
    if concurrency > 1:
        if concurrency > int(app.config["WORKER_CONCURRENCY"]):
            log.warning(
                "--concurrency %d is past WORKER_CONCURRENCY %s, which sizes the database "
                "pool: set WORKER_CONCURRENCY instead",
                concurrency,
                app.config["WORKER_CONCURRENCY"],
            )
        svc.senders = start_senders(svc, concurrency)
        # A thread holding SQLite's write lock waits for the interpreter lock after
        # every statement; with the sender threads about, by default for up to 5 ms,
        # and every other writer waits with it. A shorter switch keeps the hold short.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    if app.config["PRIORITY_LANE"]:
        # Emergencies overtake queued work: read before queueing, with the model loaded.
        svc.jobs.triage = lane_triage(svc)
    outage = RedisOutage()
    fold = FoldRedisRetries(outage)
    rq_logger = logging.getLogger("rq.worker")
    rq_logger.addFilter(fold)
    # The gate pauses the RQ worker while the database is away; the spool's drain (the
    # deliveries the database could not take) runs in a loop of its own.
    gate = DatabaseGate(svc.db)
    loops = [
        inbound_relay(svc.jobs, outage),
        make_sweeper(app, outage),
        make_scheduler(svc, outage),
        drain_loop(svc, on_report=gate.note_drain),
    ]
    # Not in a burst run: it exits when the queue is empty, likely in the middle of a purge.
    retention = make_retention_loop(outage)
    crm = CrmThread(svc)  # the outbox to the offices' CRMs (bot.crm.delivery)
    try:
        if burst:
            svc.jobs.relay_waiting()
            for loop in loops[1:3]:
                loop.run_pass()
            gate.note_drain(drain_spools(svc))
            make_rq_worker(svc, gate=gate).work(burst=True, logging_level="WARNING")
            crm.dispatcher.deliver_due()
            return
        for loop in loops:
            loop.start()
        crm.start()
        retention.start()
        work_through_outages(svc, outage, stop, gate)
    finally:
        for loop in loops:
            loop.stop()
        crm.stop()
        retention.stop()
        rq_logger.removeFilter(fold)
        if svc.senders is not None:
            # A warm stop sends what was handed over; what is left stays pending.
            svc.senders.close(timeout=SENDERS_CLOSE_SECONDS)
            svc.senders = None
