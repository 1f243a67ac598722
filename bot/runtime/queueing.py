"""The RQ queue for inbound processing, and the relay and sweeper that make it lossless.

The webhook stores the message durably, then hands its id to the workers with one
Redis command (``RPUSH`` on the hand-off list). The relay inside every
``portineria worker`` turns handed-off ids into RQ jobs, in batches. This keeps
RQ's job creation (about 0.2-0.3 ms of CPU per job, more than the rest of the
webhook put together) out of the request, where it would halve the web tier's
throughput, while the jobs themselves are ordinary RQ jobs with RQ's retries.

If Redis is down at webhook time, if a relay dies between popping an id and
enqueuing its job, or if a worker dies mid-job, the stored message is still
unprocessed; the sweeper (also inside ``portineria worker``) finds it and enqueues
it again. The database, not Redis, is the record of what must be processed.

Jobs carry batches: the relay waits a moment after the first hand-off for the
ones right behind it, and queues up to ``JOB_BATCH`` messages as one RQ job. RQ's
bookkeeping (a dequeue, a heartbeat, the registries: a few milliseconds of CPU) is
then paid once per batch, not per message, as are the batch's claim and its one
deciding transaction (``bot.conversation.engine``): that is what lets two cores
keep up with Twilio's 80 messages a second. While jobs already wait for the
workers, the relay lingers longer, for a whole batch. A message that fails in a
batch does not hold back the others; a retry of the batch finds the ones already
processed and skips them. Every message's job is found
again through a short-lived key (``JobQueue.job_id_for``), so the sweeper knows a
queued message from a lost one.

The priority lane: a worker process gives its queue a ``triage`` (the engine's
reader, run on the stored messages about to be queued); the emergencies among them
go to the urgent queue, one per job, which RQ workers listen to first. A burst of
ordinary messages then waits behind an emergency, never the other way round. What
the triage read travels with the job, so the message is not read twice. The
webhook stays as it is: one ``RPUSH``, no language model in web processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from functools import partial
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from storage.db import Database
from storage.inbound import (
    database_unavailable,
    give_up_exhausted,
    note_swept,
    pending_outbound,
    unprocessed_for_sweep,
)
from storage.models import utcnow

log = logging.getLogger(__name__)

PROCESS_INBOUND_BATCH = "bot.jobs.process_inbound_batch"
DELIVER_MESSAGE = "bot.jobs.deliver_message"
PUSH_TO_OPERATORS = "bot.jobs.push_to_operators"
SEND_NOTICE = "bot.jobs.send_notice"
RELAY_BATCH = 200
MAX_RELAY_BATCHES = 50
# Messages per processing job, and how long the relay waits after a first hand-off
# for the ones right behind it (a burst then fills its jobs; a lone message waits
# this long at most).
JOB_BATCH = 32
RELAY_LINGER_SECONDS = 0.1
# While jobs already wait for the workers, a fuller batch costs the messages no time
# (they would wait in the queue instead) and the workers less per message: the relay
# then lingers up to this long for a whole batch. Emergencies are not held: what
# arrives is triaged every poll, and an emergency queued at once.
RELAY_BUSY_LINGER_SECONDS = 0.25
# How often a lingering relay takes and triages what has arrived.
RELAY_POLL_SECONDS = 0.05
# How long a message's job can be found from the message (the sweeper asks within
# seconds; RQ's retries of a failed job are spread over a few minutes).
JOB_OF_MESSAGE_TTL = 3600
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


@dataclass(frozen=True)
class Triaged:
    """What a triage made of stored messages about to be queued: the emergencies
    among them, and each message's reading (for its job, so it is not read again)."""

    urgent: set[int] = field(default_factory=set)
    readings: dict[int, Any] = field(default_factory=dict)


Triage = Callable[[list[int]], Triaged]


def inbound_job_id(message_id: int, sweeps: int = 0) -> str:
    return f"inbound-{message_id}" if sweeps == 0 else f"inbound-{message_id}-s{sweeps}"


def connect_redis(url: str, socket_timeout: float | None = 2.0) -> Redis:
    # Short timeouts: a Redis outage must cost the webhook milliseconds, not seconds.
    return Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=socket_timeout, health_check_interval=30
    )


class JobQueue:
    """The app's RQ queue: inbound processing and outbound delivery jobs."""

    def __init__(self, redis: Redis, name: str, job_timeout: int) -> None:
        self.redis = redis
        self.queue = Queue(name, connection=redis)
        # Emergencies: workers take from this queue first (RQ listens in order).
        self.urgent_queue = Queue(f"{name}-urgent", connection=redis)
        self.handoff_key = f"portineria:handoff:{name}"
        self._job_timeout = job_timeout
        # Set by a worker process (which has the language model loaded); None: no lane.
        self.triage: Triage | None = None

    @property
    def queues(self) -> list[Queue]:
        """The queues a worker listens to, the urgent one first."""
        return [self.urgent_queue, self.queue]

    def hand_off(self, message_id: int) -> None:
        """The webhook's single Redis round trip: a stored message, for the relay.

        Raises RedisError if Redis is unreachable (the sweeper then finds the message).
        """
        self.redis.rpush(self.handoff_key, message_id)

    def handed_off(self) -> int:
        """How many stored messages wait for the relay."""
        return int(self.redis.llen(self.handoff_key))

    def relay(self, wait_seconds: float = 0, batch: int = RELAY_BATCH) -> int:
        """Enqueue RQ jobs for the handed-off message ids; returns how many ids.

        With ``wait_seconds`` it blocks that long for the first id, then lingers a
        moment for the ones right behind it (see :meth:`_gather`). Ids popped but not
        enqueued (Redis failing in between) are the sweeper's to find.
        """
        if wait_seconds <= 0:
            ids = _message_ids(self.redis.lpop(self.handoff_key, batch) or [])
            self.enqueue_many([(message_id, 0) for message_id in ids])
            return len(ids)
        first = self.redis.blpop([self.handoff_key], timeout=wait_seconds)
        if first is None:
            return 0
        return self._gather(first[1], batch)

    def _gather(self, first: Any, batch: int) -> int:
        """Linger after a first hand-off for the ones right behind it, and while jobs
        already wait for the workers, until a whole job's batch is there (or the longer
        linger ends). What arrives is triaged every poll: an emergency is queued then,
        never held for the batch."""
        held: list[int] = []
        readings: dict[int, Any] = {}
        taken: set[int] = set()  # every id this pass took, urgent or held

        def take(raw: Any) -> None:
            ids = [i for i in _message_ids(raw) if i not in taken]
            if not ids:
                return
            taken.update(ids)
            triaged = self._triage(ids)
            urgent = [(i, 0) for i in ids if i in triaged.urgent]
            if urgent:
                self._enqueue_triaged(urgent, triaged)
            held.extend(i for i in ids if i not in triaged.urgent)
            readings.update(triaged.readings)

        waiting, started = [first], time.monotonic()
        while True:
            time.sleep(RELAY_POLL_SECONDS)
            room = batch - len(taken) - len(waiting)
            more = (self.redis.lpop(self.handoff_key, room) or []) if room > 0 else []
            take([*waiting, *more])
            waiting = []
            lingered = time.monotonic() - started
            if (
                len(held) >= JOB_BATCH
                or len(taken) >= batch
                or lingered >= RELAY_BUSY_LINGER_SECONDS
                or (lingered >= RELAY_LINGER_SECONDS and self.queue.count == 0)
            ):
                break
        self._enqueue_triaged([(i, 0) for i in held], Triaged(readings=readings))
        return len(taken)

    def relay_waiting(self, max_batches: int = MAX_RELAY_BATCHES) -> int:
        """Relay what waits now, without blocking; bounded, so a flood cannot hold the caller."""
        total = 0
        for _ in range(max_batches):
            relayed = self.relay()
            if not relayed:
                break
            total += relayed
        return total

    def enqueue(self, message_id: int, sweeps: int = 0) -> None:
        """Enqueue one processing job; raises RedisError if Redis is unreachable."""
        self.enqueue_many([(message_id, sweeps)])

    def enqueue_many(self, messages: list[tuple[int, int]]) -> None:
        """One pipelined round trip for a batch of ``(message id, sweeps)``:
        emergencies (by the triage, if any) to the urgent queue, a job each; first
        attempts in jobs of up to ``JOB_BATCH``; a sweep's retry in a job of its own."""
        if messages:
            self._enqueue_triaged(messages, self._triage([m for m, _ in messages]))

    def _enqueue_triaged(self, messages: list[tuple[int, int]], triaged: Triaged) -> None:
        if not messages:
            return
        urgent = [m for m in messages if m[0] in triaged.urgent]
        ordinary = [m for m in messages if m[0] not in triaged.urgent]
        firsts = [message_id for message_id, sweeps in ordinary if sweeps == 0]
        batches = [firsts[i : i + JOB_BATCH] for i in range(0, len(firsts), JOB_BATCH)]
        with self.redis.pipeline() as pipeline:
            if urgent:
                jobs = [self._job([m], sweeps, triaged.readings) for m, sweeps in urgent]
                self.urgent_queue.enqueue_many(jobs, pipeline=pipeline)
            jobs = [self._job(batch, 0, triaged.readings) for batch in batches]
            jobs += [self._job([m], sweeps, triaged.readings) for m, sweeps in ordinary if sweeps]
            if jobs:
                self.queue.enqueue_many(jobs, pipeline=pipeline)
            for batch in batches:
                for message_id in batch[1:]:
                    key = self._job_of_key(message_id)
                    pipeline.set(key, inbound_job_id(batch[0]), ex=JOB_OF_MESSAGE_TTL)
            pipeline.execute()

    def _triage(self, message_ids: list[int]) -> Triaged:
        if self.triage is None:
            return Triaged()
        try:
            return self.triage(message_ids)
        except Exception:
            # Triage is a head start, not a gate: without it every message still goes.
            log.exception("triage failed; %d message(s) queued in order", len(message_ids))
            return Triaged()

    def _job(self, message_ids: list[int], sweeps: int, readings: dict[int, Any]) -> Any:
        hints = {m: readings[m] for m in message_ids if m in readings}
        return Queue.prepare_data(
            PROCESS_INBOUND_BATCH,
            args=(message_ids,),
            kwargs={"readings": hints} if hints else None,
            job_id=inbound_job_id(message_ids[0], sweeps),
            timeout=self._job_timeout * len(message_ids),
            result_ttl=300,
            failure_ttl=7 * 24 * 3600,
            # Retries are for failures the job raises; a killed worker is the sweeper's.
            retry=Retry(max=3, interval=[5, 30, 120]),
        )

    def _job_of_key(self, message_id: int) -> str:
        return f"portineria:job-of:{self.queue.name}:{message_id}"

    def job_id_for(self, message_id: int, sweeps: int = 0) -> str:
        """The id of the RQ job that carries this message (its sweep's, after a sweep)."""
        if sweeps == 0:
            batch = self.redis.get(self._job_of_key(message_id))
            if batch is not None:
                return str(batch.decode() if isinstance(batch, bytes) else batch)
        return inbound_job_id(message_id, sweeps)

    def enqueue_delivery(self, message_id: int) -> None:
        """Send a recorded outbound message from the worker (API and console sends)."""
        try:
            self.queue.enqueue_call(
                DELIVER_MESSAGE,
                args=(message_id,),
                job_id=f"deliver-{message_id}",
                timeout=60,
                result_ttl=300,
                failure_ttl=7 * 24 * 3600,
                retry=Retry(max=5, interval=[5, 15, 60, 300, 900]),
            )
        except RedisError:
            # The row is recorded as pending; the sweeper enqueues it when Redis is back.
            log.warning(
                "outbound message %s recorded but not enqueued: redis unavailable", message_id
            )

    def enqueue_notice(self, notice_id: int) -> None:
        """Send a building notice's copies from the worker, at the office's send rate.
        Raises RedisError (the caller answers that the notice is not on its way)."""
        self.queue.enqueue_call(
            SEND_NOTICE,
            args=(notice_id,),
            job_id=f"notice-{notice_id}",
            timeout=3600,
            result_ttl=300,
            failure_ttl=7 * 24 * 3600,
            retry=Retry(max=5, interval=[5, 15, 60, 300, 900]),
        )

    def enqueue_push(self, tenant_id: int, payload: dict[str, Any]) -> None:
        """A push to the office's operators, at the front of the queue: an emergency's
        alert must not wait behind a burst of ordinary messages. Raises RedisError."""
        self.queue.enqueue_call(
            PUSH_TO_OPERATORS,
            args=(tenant_id, payload),
            timeout=60,
            result_ttl=300,
            failure_ttl=7 * 24 * 3600,
            at_front=True,
            retry=Retry(max=2, interval=[5, 30]),
        )

    def delivery_is_queued(self, message_id: int) -> bool:
        try:
            job = Job.fetch(f"deliver-{message_id}", connection=self.redis)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in _WAITING | {JobStatus.STARTED}

    def is_pending(self, message_id: int, sweeps: int, lease_seconds: int) -> bool:
        """Whether the latest job for this message can still run by itself."""
        try:
            job = Job.fetch(self.job_id_for(message_id, sweeps), connection=self.redis)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status in _WAITING:
            return True
        if status == JobStatus.STARTED and job.started_at is not None:
            # RQ stores naive UTC times.
            started = job.started_at.replace(tzinfo=UTC)
            return utcnow() - started < timedelta(seconds=lease_seconds)
        return False


def sweep_once(
    db: Database,
    queue: JobQueue,
    *,
    grace_seconds: float,
    lease_seconds: int,
    max_attempts: int,
) -> int:
    """Enqueue every stored inbound message that nothing will process otherwise."""
    older_than = utcnow() - timedelta(seconds=grace_seconds)
    # Handed-off ids first: a message waiting for the relay is not lost.
    queue.relay_waiting()
    enqueued = 0
    for message_id, sweeps in unprocessed_for_sweep(db, older_than, max_attempts):
        if queue.is_pending(message_id, sweeps, lease_seconds):
            continue
        if not note_swept(db, message_id, sweeps):
            continue
        queue.enqueue(message_id, sweeps + 1)
        enqueued += 1
    for message_id in pending_outbound(db, older_than):
        if not queue.delivery_is_queued(message_id):
            queue.enqueue_delivery(message_id)
            enqueued += 1
    for message_id in give_up_exhausted(db, max_attempts):
        log.error(
            "inbound message %s failed %d processing attempts; stored, not retried",
            message_id,
            max_attempts,
        )
    if enqueued:
        log.info("sweeper enqueued %d stored message(s)", enqueued)
    return enqueued


class RedisOutage:
    """One process's view of whether Redis answers, so an outage is logged once.

    Every part of a worker (the RQ loop, the relay, the sweeper) reports here: the
    first failure of an outage is logged, every further try is not, and the first
    success after it says how long Redis was away.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, where: str) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.warning("redis unavailable (%s): retrying with backoff until it answers", where)

    def recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            lasted, self._since = time.monotonic() - self._since, None
        log.warning("redis answers again after %.1fs", lasted)


class Backoff:
    """Pauses that double from ``first`` up to ``cap`` while failures go on."""

    def __init__(self, first: float, cap: float) -> None:
        self._first = first
        self._cap = max(cap, first)
        self._next = first

    def next(self) -> float:
        pause = self._next
        self._next = min(self._next * 2, self._cap)
        return pause

    def reset(self) -> None:
        self._next = self._first


class BackgroundLoop(threading.Thread):
    """Runs one pass of a worker's background duty again and again until stopped.

    ``pause`` follows every pass. After a failed pass the pause is a backoff that
    starts at ``error_pause`` and doubles up to ``max_error_pause``, so an outage is
    retried, not spun on; a Redis failure is reported to ``outage`` (logged once per
    outage), anything else is logged with its traceback.
    """

    def __init__(
        self,
        name: str,
        run_pass: Callable[[], object],
        pause: float,
        error_pause: float = 1.0,
        max_error_pause: float = 5.0,
        outage: RedisOutage | None = None,
    ) -> None:
        super().__init__(name=f"portineria-{name}", daemon=True)
        self.run_pass = run_pass  # one pass, for whoever needs to run it by hand
        self._pause = pause
        self._backoff = Backoff(error_pause, max_error_pause)
        self._outage = outage or RedisOutage()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pause = self._pause
            try:
                self.run_pass()
            except RedisError:
                self._outage.failed(self.name)
                pause = max(pause, self._backoff.next())
            except Exception as error:
                if database_unavailable(error):
                    # Expected while the database is away (the readiness probe says so):
                    # one line a pass, not a traceback.
                    log.warning("%s pass skipped: the database is unavailable", self.name)
                else:
                    log.exception("%s pass failed", self.name)
                pause = max(pause, self._backoff.next())
            else:
                self._backoff.reset()
                self._outage.recovered()
            self._stop_event.wait(pause)

    def stop(self) -> None:
        self._stop_event.set()


def run_each(duties: Iterable[Callable[[], object]]) -> None:
    """Run every duty even if an earlier one fails; then raise the first failure.

    A sweeper pass mixes duties that need Redis with duties that need only the
    database: a Redis outage must not stop the second kind.
    """
    failure: Exception | None = None
    for duty in duties:
        try:
            duty()
        except Exception as error:
            if failure is None:
                failure = error
            elif not isinstance(error, RedisError) and not database_unavailable(error):
                # Redis or the database away: the first failure's loop says so once.
                log.exception("background duty failed")
    if failure is not None:
        raise failure


def _message_ids(raw: Any) -> list[int]:
    """Hand-off entries as ids: ordered and without repeats (RQ refuses a repeated job
    id); a malformed one is dropped."""
    ids: dict[int, None] = {}
    for entry in raw:
        try:
            ids[int(entry)] = None
        except ValueError:
            log.error("relay: dropped a malformed hand-off entry")
    return list(ids)


def inbound_relay(queue: JobQueue, outage: RedisOutage | None = None) -> BackgroundLoop:
    """Turns the webhook's hand-offs into RQ jobs as they arrive.

    Each pass blocks on Redis for up to a second (below the client's socket timeout),
    so there is no pause between passes.
    """
    return BackgroundLoop(
        "relay", partial(queue.relay, wait_seconds=1.0), pause=0, error_pause=0.5, outage=outage
    )
