"""Console sign-in limits: progressive delays per client address, account, office and
trusted device, kept in Redis; and failed sign-ins counted per office for the audit.

Why delays and not a lockout: a lockout after N failures is a switch anyone who
knows an email can flip. Here the n-th failure of a scope (past a few free ones)
makes the next attempt of that scope wait 2^n seconds, up to a cap; an attempt
during the wait is refused without being counted, so nobody can push the wait past
the cap. The scopes (:data:`POLICIES`):

- ``ip``: the client address, whatever account or office it tries: a guessing
  client slows down to one attempt every 15 minutes;
- ``account``: the typed email, whether or not such an account exists (so the
  throttle itself tells nothing about which emails are real); softer, capped at
  5 minutes, so many addresses together still guess slowly;
- ``office``: every attempt on one office, with a generous allowance, so a spray
  over an office's accounts from many addresses slows down too;
- ``device``: a browser the account already signed in from carries a signed
  device token (OWASP's "device cookies"); its attempts are limited on that device
  alone, so the account's owner is never held back by someone else's failures.

Every identifier is stored as a keyed hash: no email or address sits in Redis.

Failed sign-ins that are not about one known account (unknown emails, throttled
attempts) are counted per office in fixed windows and written to the audit trail
as one row per office, reason and window (:meth:`LoginThrottle.due`), never with
anything the client typed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadData, URLSafeTimedSerializer
from redis import Redis

PREFIX = "portineria:login"


@dataclass(frozen=True)
class Backoff:
    """After ``free`` failures, the n-th one makes the next attempt wait 2^(n - free)
    seconds, at most ``cap``; failures are forgotten after ``window`` quiet seconds."""

    free: int
    cap: float
    window: float

    def delay(self, failures: int) -> float:
        if failures <= self.free:
            return 0.0
        return min(self.cap, 2.0 ** (failures - self.free))


POLICIES: dict[str, Backoff] = {
    "ip": Backoff(free=5, cap=900, window=3600),
    "account": Backoff(free=3, cap=300, window=3600),
    "office": Backoff(free=20, cap=60, window=900),
    "device": Backoff(free=3, cap=300, window=3600),
}

# Failed sign-ins of an office are counted in windows this long (seconds).
AUDIT_WINDOW = 900
DEVICE_TOKEN_MAX_AGE = 180 * 24 * 3600

# Atomically: refuse if any scope is still waiting (changing nothing), otherwise
# count this attempt as a failure of every scope in advance, so that parallel
# attempts cannot all slip through the same opening. A success takes it back
# (:meth:`LoginThrottle.succeeded`). The delay mirrors Backoff.delay.
_CLAIM = """
local now = tonumber(ARGV[1])
local failures = {}
local blocked = {}
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 3
  local free, cap, window = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local saved = redis.call('HMGET', key, 'n', 'last')
  local n, last = tonumber(saved[1]) or 0, tonumber(saved[2]) or 0
  if now - last > window then
    n = 0
  end
  failures[i] = n
  if n > free and now < last + math.min(cap, 2 ^ (n - free)) then
    blocked[#blocked + 1] = i
  end
end
if #blocked > 0 then
  return blocked
end
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 3
  local cap, window = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  redis.call('HSET', key, 'n', failures[i] + 1, 'last', ARGV[1])
  redis.call('EXPIRE', key, math.ceil(window + cap))
end
return blocked
"""

# Take back one failure claimed in advance (never below zero, never on a key that
# expired meanwhile, which would then live for ever).
_RELEASE = """
for _, key in ipairs(KEYS) do
  local n = tonumber(redis.call('HGET', key, 'n'))
  if n and n > 0 then
    redis.call('HINCRBY', key, 'n', -1)
  end
end
return 0
"""


@dataclass(frozen=True)
class ThrottleKey:
    scope: str
    redis_key: str

    @property
    def policy(self) -> Backoff:
        return POLICIES[self.scope]


@dataclass(frozen=True)
class FailureCount:
    """Failed sign-ins of one office, for one reason, in one window."""

    office_id: int
    reason: str
    start: datetime
    end: datetime
    count: int
    addresses: int

    def audit_detail(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "count": self.count,
            "addresses": self.addresses,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
        }


class LoginThrottle:
    """The sign-in limits of one app. ``clock`` (epoch seconds) is a test seam.

    Every method that talks to Redis lets ``redis.RedisError`` through: the caller
    decides what a sign-in does without Redis (see ``bot.console.auth``).
    """

    def __init__(self, redis: Redis, secret: str, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._secret = secret.encode()
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._devices = URLSafeTimedSerializer(secret, salt="portineria-login-device")
        # Offices and windows already written to the audit trail while Redis was
        # unreachable, by this process: one row per office, reason and window each.
        self._written_without_redis: set[tuple[int, str, int]] = set()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- which limits an attempt falls under ------------------------------------------

    def key(self, scope: str, value: str) -> ThrottleKey:
        return ThrottleKey(scope, f"{PREFIX}:{scope}:{self._hash(scope, value)}")

    def account_key(self, email: str) -> str:
        return self._hash("account", email.strip().lower())

    def keys_for(
        self, *, ip: str | None, email: str, office_id: int | None, device: str | None
    ) -> list[ThrottleKey]:
        """A trusted device is limited on its own; anything else by address, account
        and (when one is concerned) office."""
        if device is not None:
            return [self.key("device", device)]
        keys = [self.key("ip", ip or "unknown"), self.key("account", email.strip().lower())]
        if office_id is not None:
            keys.append(self.key("office", str(office_id)))
        return keys

    def claim(self, keys: list[ThrottleKey]) -> set[str]:
        """The scopes that are still waiting (the attempt must be refused), or none,
        in which case the attempt has been counted as a failure in advance."""
        args: list[float] = [self.clock()]
        for key in keys:
            args += [key.policy.free, key.policy.cap, key.policy.window]
        blocked = self._claim(keys=[k.redis_key for k in keys], args=args)
        return {keys[int(i) - 1].scope for i in blocked}

    def succeeded(self, keys: list[ThrottleKey]) -> None:
        """Take back the failure claimed in advance; an account or device that got
        in starts afresh."""
        fresh = [k.redis_key for k in keys if k.scope in ("account", "device")]
        if fresh:
            self.redis.delete(*fresh)
        shared = [k.redis_key for k in keys if k.scope not in ("account", "device")]
        if shared:
            self._release(keys=shared)

    # -- trusted devices --------------------------------------------------------------

    def device_token(self, email: str) -> str:
        """A signed token for the browser that just signed in to this account."""
        return self._devices.dumps({"a": self.account_key(email), "d": secrets.token_hex(16)})

    def trusted_device(self, token: str | None, email: str) -> str | None:
        """The device's own id if ``token`` was issued to this account, else None."""
        if not token or len(token) > 512:
            return None
        try:
            data = self._devices.loads(token, max_age=DEVICE_TOKEN_MAX_AGE)
        except BadData:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("d"), str):
            return None
        if not hmac.compare_digest(str(data.get("a")), self.account_key(email)):
            return None
        return data["d"]

    # -- failed sign-ins, counted per office for the audit trail -------------------

    def count_failure(self, office_id: int, reason: str, ip: str | None) -> None:
        window = int(self.clock() // AUDIT_WINDOW)
        name = f"{office_id}:{reason}:{window}"
        keep = AUDIT_WINDOW * 24 * 7  # long enough for a late flush to find it
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(f"{PREFIX}:count:{name}")
        pipe.expire(f"{PREFIX}:count:{name}", keep)
        pipe.pfadd(f"{PREFIX}:addresses:{name}", self._hash("ip", ip or "unknown"))
        pipe.expire(f"{PREFIX}:addresses:{name}", keep)
        pipe.zadd(f"{PREFIX}:pending", {name: (window + 1) * AUDIT_WINDOW})
        pipe.execute()

    def due(self) -> list[FailureCount]:
        """The counts of windows that are over, each handed out once (to one caller)."""
        names = self.redis.zrangebyscore(f"{PREFIX}:pending", "-inf", self.clock())
        counts: list[FailureCount] = []
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            count = self.redis.getdel(f"{PREFIX}:count:{name}")
            self.redis.zrem(f"{PREFIX}:pending", name)
            if count is None:
                continue  # another process took it (and reads its addresses)
            addresses = self.redis.pfcount(f"{PREFIX}:addresses:{name}")
            self.redis.delete(f"{PREFIX}:addresses:{name}")
            office, reason, window = name.split(":")
            counts.append(
                FailureCount(
                    office_id=int(office),
                    reason=reason,
                    start=datetime.fromtimestamp(int(window) * AUDIT_WINDOW, UTC),
                    end=datetime.fromtimestamp((int(window) + 1) * AUDIT_WINDOW, UTC),
                    count=int(count),
                    addresses=int(addresses),
                )
            )
        return counts

    def first_without_redis(self, office_id: int, reason: str) -> FailureCount | None:
        """Without Redis nothing can be counted: the first failure of an office, reason
        and window in this process is written (``count`` 0: not counted), the rest not."""
        window = int(self.clock() // AUDIT_WINDOW)
        mark = (office_id, reason, window)
        if mark in self._written_without_redis:
            return None
        self._written_without_redis = {m for m in self._written_without_redis if m[2] >= window}
        self._written_without_redis.add(mark)
        return FailureCount(
            office_id=office_id,
            reason=reason,
            start=datetime.fromtimestamp(window * AUDIT_WINDOW, UTC),
            end=datetime.fromtimestamp((window + 1) * AUDIT_WINDOW, UTC),
            count=0,
            addresses=0,
        )

    def _hash(self, scope: str, value: str) -> str:
        digest = hmac.new(self._secret, f"{scope}\0{value}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]
