"""Sending off the processing path: a bounded pool of sender threads in each worker.

The processing job records its replies (pending rows under their idempotency keys)
and hands their ids here; a sender thread claims and sends them, one message's
replies in order, while the job's thread goes on to the next message. A slow
Twilio then costs wall time, not worker capacity: with N senders, N sends are in
flight at once over reused connections.

Nothing is held here that another process needs: the pending row is the record.
If the process dies with ids still waiting here, the sweeper finds the rows pending
and enqueues their delivery jobs; a row a sender had claimed stays ``sending`` and
is reconciled with Twilio's list, never sent again (:mod:`bot.outbound.send`).
Whoever claims a row first sends it; any other attempt finds it claimed.

Pacing: every send, from every process on every host, takes the next slot of its
office's send rate from Redis (slots ``1/rate`` apart, one script), so the office's
rate is never exceeded towards Twilio whatever the number of workers; a reply waits
for its slot instead of being refused. Twilio's 429s are retried by the transport,
then here with a backoff, then left pending for the sweeper.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from bot.exceptions import SendDeferred
from bot.outbound.gate import DEFAULT_SEND_RATE
from bot.outbound.send import ReadySend
from storage.models import Tenant

log = logging.getLogger(__name__)

# One send's slot: the later of now and the previous slot plus the interval, taken
# on Redis's clock (the hosts' clocks may differ). Microseconds, kept as a string:
# Lua would print the number in exponent form.
_NEXT_SLOT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(t, last + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], string.format('%.0f', slot), 'PX', 60000)
return slot - t
"""
# A send held back this long by its office's rate is left pending (the sweeper's).
MAX_PACE_WAIT_SECONDS = 30.0
# After a deferred send (Twilio busy or unreachable past the transport's own retries).
RETRY_PAUSES = (1.0, 2.0, 4.0)


def send_rate(tenant: Tenant) -> int:
    return max(1, int(tenant.settings.get("send_rate_per_second", DEFAULT_SEND_RATE)))


class SendPacer:
    """Spaces an office's sends ``1/rate`` apart across every process sharing Redis.

    Without Redis it spaces them within this process only, and says so once.
    """

    def __init__(self, redis: Redis, sleep: Callable[[float], None] = time.sleep) -> None:
        self._next_slot = redis.register_script(_NEXT_SLOT)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._local: dict[int, float] = {}
        self._redis_down = False

    def wait(self, tenant: Tenant) -> None:
        """Block until this send's slot; SendDeferred if it is further off than allowed."""
        delay = self._reserve(tenant.id, 1.0 / send_rate(tenant))
        if delay > MAX_PACE_WAIT_SECONDS:
            raise SendDeferred(f"office {tenant.id}'s send rate is booked {delay:.0f}s ahead")
        if delay > 0:
            self._sleep(delay)

    def _reserve(self, tenant_id: int, interval: float) -> float:
        try:
            key = f"portineria:send-slot:{tenant_id}"
            micros = self._next_slot(keys=[key], args=[round(interval * 1_000_000)])
        except RedisError:
            if not self._redis_down:
                log.warning("send pacing within this process only: redis unavailable")
            self._redis_down = True
            return self._reserve_locally(tenant_id, interval)
        self._redis_down = False
        return int(micros) / 1_000_000

    def _reserve_locally(self, tenant_id: int, interval: float) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._local.get(tenant_id, 0.0) + interval)
            self._local[tenant_id] = slot
            return slot - now


@dataclass(order=True)
class _Batch:
    rank: int  # 0 first: safety advice overtakes the queue
    sequence: int
    sends: tuple[Send, ...] = field(compare=False)


_STOP = _Batch(rank=9, sequence=-1, sends=())

# A recorded message: its id, or what its send needs (recorded by this process).
Send = int | ReadySend
# Sends one recorded message (claim, pace, transport); SendDeferred to try later.
Deliver = Callable[[Send], object]


class SenderPool:
    """``senders`` threads sending recorded messages; at most ``backlog`` batches wait.

    :meth:`submit` blocks while the backlog is full, so processing slows to the pace
    sending keeps up with instead of piling up ids in memory.
    """

    def __init__(
        self,
        deliver: Deliver,
        senders: int,
        backlog: int | None = None,
        context: Callable[[], AbstractContextManager[object]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._deliver = deliver
        self._queue: queue.PriorityQueue[_Batch] = queue.PriorityQueue(
            maxsize=backlog or 8 * senders
        )
        self._sequence = itertools.count()
        self._context = context or nullcontext
        self._sleep = sleep
        self._threads = [
            threading.Thread(target=self._run, name=f"portineria-sender-{n}", daemon=True)
            for n in range(senders)
        ]

    def start(self) -> SenderPool:
        for thread in self._threads:
            thread.start()
        return self

    def submit(self, sends: Sequence[Send], *, urgent: bool = False) -> None:
        """Send these recorded messages, in this order, as soon as a sender is free."""
        if sends:
            self._queue.put(_Batch(0 if urgent else 1, next(self._sequence), tuple(sends)))

    def waiting(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> bool:
        """Send what waits, then stop the senders; False if some were still busy at
        ``timeout`` (their rows stay pending or sending: the sweeper's)."""
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        with self._context():
            while True:
                batch = self._queue.get()
                if batch is _STOP:
                    return
                for send in batch.sends:
                    if not self._send(send):
                        # Later replies wait for this one (order): all stay pending.
                        break

    def _send(self, send: Send) -> bool:
        message_id = send.message_id if isinstance(send, ReadySend) else send
        for pause in (*RETRY_PAUSES, None):
            try:
                self._deliver(send)
                return True
            except SendDeferred as deferred:
                if pause is None:
                    log.warning("send of %s deferred to the sweeper: %s", message_id, deferred)
                    return False
                self._sleep(pause)
            except Exception:
                log.exception("send of %s failed; left for the sweeper", message_id)
                return False
        return False
