"""``portineria worker``: a non-forking RQ worker, the relay and the sweeper, in one process.

The worker does not fork per job: forking costs more than our jobs do, and the
spaCy pipeline stays loaded once for the life of the process.
"""

from __future__ import annotations

import logging
import time
from functools import partial

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


def make_sweeper(app: Flask) -> BackgroundLoop:
    """Every few seconds: enqueue lost messages; every minute: release idle handoffs."""
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
        if time.monotonic() - last_release >= RELEASE_CHECK_SECONDS:
            last_release = time.monotonic()
            released = release_idle_conversations(svc, utcnow())
            if released:
                log.info("released %d idle conversation(s) to the bot", released)

    return BackgroundLoop("sweeper", housekeeping, pause=float(config["SWEEP_INTERVAL_SECONDS"]))


# -- retention: its own thread ----------------------------------------------------------

RETENTION_CHECK_SECONDS = 300.0


def make_retention_loop() -> BackgroundLoop:
    """Every few minutes: the daily retention purge, if no worker has done today's.

    A thread of its own: a catch-up purge of millions of rows takes a minute or more,
    and the sweeper that recovers lost messages must not wait for it. A failed purge
    leaves the day open, so the next round tries it again.
    """
    svc = services()
    return BackgroundLoop(
        "retention", lambda: purge_if_due(svc, utcnow()), pause=RETENTION_CHECK_SECONDS
    )


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
    retention = make_retention_loop()
    relay = inbound_relay(svc.jobs)
    if burst:
        svc.jobs.relay_waiting()
    else:
        relay.start()
    sweeper.start()
    if not burst:  # a burst worker exits when the queue is empty, likely mid-purge
        retention.start()
    try:
        make_rq_worker(svc).work(burst=burst, with_scheduler=True, logging_level="WARNING")
    finally:
        relay.stop()
        sweeper.stop()
        retention.stop()
