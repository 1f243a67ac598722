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

Pacing: every send, from every process on every host, books a slot in its office's
ledger on Redis (one script): at most the office's rate in any one-second window, so
the rate is never exceeded towards Twilio whatever the number of workers, and a reply
waits for its slot instead of being refused. A 429 gives its slot back and is retried
in a new one by the transport, then here with a backoff, then left pending for the
sweeper.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from bot.exceptions import SendDeferred
from bot.outbound.gate import DEFAULT_SEND_RATE
from bot.outbound.send import ReadySend
from notify import WaitTurn
from storage.models import Tenant

log = logging.getLogger(__name__)

# Books one send in its office's ledger of slots (a sorted set of microseconds on
# Redis's clock: the hosts' clocks may differ), as Twilio counts: at most ``rate`` in
# any one-second window. The slot is the earliest that keeps it so and comes after
# every slot already booked; slots older than a window no longer count and are
# dropped. Returns the wait as a string: Lua would print the number in exponent form.
_BOOK_SLOT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local rate, window, gap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
local slot = t
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then slot = math.max(slot, tonumber(last[2]) + gap) end
if redis.call('ZCARD', KEYS[1]) >= rate then
  local base = redis.call('ZRANGE', KEYS[1], -rate, -rate, 'WITHSCORES')
  slot = math.max(slot, tonumber(base[2]) + window)
end
redis.call('ZADD', KEYS[1], slot, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return string.format('%.0f', slot - t)
"""
WINDOW_MICROS = 1_000_000
# How much faster than its rate an office's sends may go while they catch up on room
# the window left: all at one instant would reach Twilio bunched up. Gently: with a
# window that stays full, the catching up is what arrives at Twilio bunched, and
# twice the rate drew a third more 429s than this.
CATCH_UP = 1.25
# A send that wakes this much after its slot (seconds) moves its slot to when it went.
LATE_ENOUGH_TO_MOVE = 0.001
# A send held back this long by its office's rate is left pending (the sweeper's).
MAX_PACE_WAIT_SECONDS = 30.0
# The ledger outlives its furthest booking by a window.
_LEDGER_TTL_MS = round(MAX_PACE_WAIT_SECONDS * 1000) + WINDOW_MICROS // 1000
# After a deferred send (Twilio busy or unreachable past the transport's own retries).
RETRY_PAUSES = (1.0, 2.0, 4.0)


def send_rate(tenant: Tenant) -> int:
    return max(1, int(tenant.settings.get("send_rate_per_second", DEFAULT_SEND_RATE)))


def _catch_up_gap(rate: int) -> int:
    """The least time between two of an office's sends, in microseconds."""
    return int(WINDOW_MICROS / (CATCH_UP * rate))


def slot_ledger_key(tenant_id: int) -> str:
    return f"portineria:send-slots:{tenant_id}"


class SendPacer:
    """Keeps an office's sends, from every process sharing Redis, to at most its rate
    in any one-second window, the window Twilio counts.

    A window rather than slots ``1/rate`` apart: a send that goes a little late
    (its batch was still being processed) leaves its room to the next ones, which
    catch up within the second instead of every later send inheriting the delay.
    A send Twilio refused (429) gives its slot back, since Twilio did not count it,
    and books again; a send whose thread woke late moves its slot to when it went.
    Without Redis the ledger is this process's own, said once.
    """

    def __init__(self, redis: Redis, sleep: Callable[[float], None] = time.sleep) -> None:
        self._redis = redis
        self._book = redis.register_script(_BOOK_SLOT)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._local: dict[int, list[int]] = {}
        self._redis_down = False

    def turns(self, tenant: Tenant) -> WaitTurn:
        """The waits of one send's attempts, each for a slot of its own: called with
        how many times Twilio refused the send so far, it first gives back the slot of
        an attempt just refused (a retry after any other error keeps it: Twilio may
        have counted that one). SendDeferred if the slot is further off than allowed."""
        slot: str | None = None
        refused = 0

        def wait_turn(refusals: int) -> None:
            nonlocal slot, refused
            if slot is not None and refusals > refused:
                self._give_back(tenant.id, slot)
            refused, slot = refusals, self.wait(tenant)

        return wait_turn

    def wait(self, tenant: Tenant) -> str:
        """Block until a slot for one send; the slot's name, to give it back with."""
        name = uuid.uuid4().hex
        delay = self._reserve(tenant.id, send_rate(tenant), name)
        if delay > MAX_PACE_WAIT_SECONDS:
            self._give_back(tenant.id, name)
            raise SendDeferred(f"office {tenant.id}'s send rate is booked {delay:.0f}s ahead")
        due = time.monotonic() + delay
        if delay > 0:
            self._sleep(delay)
        self._moved_to_now(tenant.id, name, time.monotonic() - due)
        return name

    def _moved_to_now(self, tenant_id: int, name: str, late: float) -> None:
        """A send that wakes late (its thread waited for a core or for the interpreter
        lock) goes out late: its slot moves with it, so that the send a window after it
        counts its window from when this one went, not from when it was due."""
        if late < LATE_ENOUGH_TO_MOVE or self._redis_down:
            return
        try:
            self._redis.zadd(
                slot_ledger_key(tenant_id), {name: round(late * 1e6)}, xx=True, incr=True
            )
        except RedisError:
            pass  # the slot stays where it was booked: at worst a 429, retried

    def _reserve(self, tenant_id: int, rate: int, name: str) -> float:
        try:
            micros = self._book(
                keys=[slot_ledger_key(tenant_id)],
                args=[rate, WINDOW_MICROS, name, _LEDGER_TTL_MS, _catch_up_gap(rate)],
            )
        except RedisError:
            if not self._redis_down:
                log.warning("send pacing within this process only: redis unavailable")
            self._redis_down = True
            return self._reserve_locally(tenant_id, rate)
        self._redis_down = False
        return int(micros) / 1_000_000

    def _give_back(self, tenant_id: int, name: str) -> None:
        try:
            self._redis.zrem(slot_ledger_key(tenant_id), name)
        except RedisError:
            pass  # the slot expires with its window; this process's own ledger keeps it

    def _reserve_locally(self, tenant_id: int, rate: int) -> float:
        with self._lock:
            now = round(time.monotonic() * 1_000_000)
            slots = [s for s in self._local.get(tenant_id, []) if s > now - WINDOW_MICROS]
            slot = max([now, *(s + _catch_up_gap(rate) for s in slots[-1:])])
            if len(slots) >= rate:
                slot = max(slot, slots[-rate] + WINDOW_MICROS)
            self._local[tenant_id] = [*slots, slot][-rate:]
            return (slot - now) / 1_000_000


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
