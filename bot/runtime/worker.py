"""``portineria worker``: a non-forking RQ worker, the relay and the sweeper, in one process.

The worker does not fork per job: forking costs more than our jobs do, and the
spaCy pipeline stays loaded once for the life of the process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from flask import Flask
from rq import SimpleWorker

from bot.conversation.handoff import release_idle_conversations
from bot.privacy.retention import purge_if_due
from bot.runtime.queueing import BackgroundLoop, connect_redis, inbound_relay, sweep_once
from bot.services import Services, services
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


def make_sweeper(app: Flask) -> BackgroundLoop:
    """Every few seconds: enqueue lost messages; every minute: release idle handoffs;
    every hour: the query planner's statistics; once a day (across all workers): the
    retention purge."""
    svc = services()
    config = app.config
    sweep = sweep_pass(svc, config)
    last_release = 0.0
    last_statistics: float | None = None

    def housekeeping() -> None:
        nonlocal last_release, last_statistics
        if last_statistics is None or time.monotonic() - last_statistics >= STATISTICS_SECONDS:
            last_statistics = time.monotonic()
            svc.db.refresh_statistics()
        sweep()
        purge_if_due(svc, utcnow())
        if time.monotonic() - last_release >= RELEASE_CHECK_SECONDS:
            last_release = time.monotonic()
            released = release_idle_conversations(svc, utcnow())
            if released:
                log.info("released %d idle conversation(s) to the bot", released)

    return BackgroundLoop("sweeper", housekeeping, pause=float(config["SWEEP_INTERVAL_SECONDS"]))


def make_rq_worker(svc: Services) -> SimpleWorker:
    """The RQ worker, listening on a Redis client of its own.

    RQ raises the socket timeout of the client it is given above its blocking wait
    (minutes). On the app's shared client that would let a job's Redis call hang for
    minutes in an outage, and connections opened before the change would still time
    out mid-wait, making the worker drop and retry its listen.
    """
    listener = connect_redis(svc.redis_url, socket_timeout=None)
    return SimpleWorker([svc.jobs.queue], connection=listener)


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
    try:
        make_rq_worker(svc).work(burst=burst, with_scheduler=True, logging_level="WARNING")
    finally:
        relay.stop()
        sweeper.stop()
