"""Events to an office's CRM: the signature and the HTTP POST, nothing more.

Which events go where, whether an address may be reached at all and what a failure
leads to are the caller's business (``bot.crm``). This module signs a body and posts
it to the address it is handed: the caller resolves the URL's host and checks every
address first, and the connection goes to that very address (the URL's host is kept
for ``Host``, TLS's SNI and the certificate check), so a DNS answer that changes
between the check and the connection cannot point a delivery somewhere else.

The signature (documented for receivers in the README)::

    Portineria-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

with one ``v1`` per secret in use (two while a secret is being rotated), and
``Portineria-Event-Id`` carrying the event's id, on which receivers dedupe.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "CrmAttempt",
    "CrmDestination",
    "CrmSender",
    "sign",
    "signature_header",
]

SIGNATURE_HEADER = "Portineria-Signature"
EVENT_ID_HEADER = "Portineria-Event-Id"
USER_AGENT = "Portineria-Webhooks/1"
# What a CRM answers is not ours to keep; read a little so the connection can be reused.
MAX_ANSWER_BYTES = 64 * 1024


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256, keyed with the secret's UTF-8 bytes, of ``"<t>." + body``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=<t>,v1=<sig>[,v1=<sig>...]``, one ``v1`` per secret, in the order given."""
    if not secrets:
        raise ValueError("a delivery needs at least one secret")
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in secrets)])


@dataclass(frozen=True)
class CrmDestination:
    """Where one delivery goes: the configured URL, and the checked address to connect to."""

    url: str
    address: str


@dataclass(frozen=True)
class CrmAttempt:
    """What one POST came to: the CRM's status code (None if none came), how long it
    took, and a short error (never the CRM's answer, never a secret)."""

    status: int | None
    latency_ms: float
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class CrmSender:
    """Posts signed events; keeps one connection pool per destination, so a busy CRM's
    deliveries reuse their connections. Safe to share between threads."""

    def __init__(self, timeout: float, *, ca_bundle: str | None = None, pool_size: int = 4) -> None:
        self._timeout = urllib3.Timeout(total=timeout)
        self._ca_bundle = ca_bundle
        self._pool_size = pool_size
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def post(
        self,
        destination: CrmDestination,
        body: bytes,
        event_id: str,
        secrets: Sequence[str],
        *,
        timestamp: int | None = None,
    ) -> CrmAttempt:
        """POST ``body`` signed with ``secrets`` (at ``timestamp``, default now)."""
        parts = urlsplit(destination.url)
        moment = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Host": parts.netloc.rpartition("@")[2],
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(secrets, moment, body),
            EVENT_ID_HEADER: event_id,
        }
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        started = time.perf_counter()
        try:
            answer = self._pool(parts.scheme, destination.address, parts).urlopen(
                "POST",
                path,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                answer.read(MAX_ANSWER_BYTES)
            finally:
                answer.release_conn()
        except HTTPError as error:
            return CrmAttempt(None, _since(started), _describe(error))
        status = answer.status
        problem = None if 200 <= status < 300 else f"HTTP {status}"
        return CrmAttempt(status, _since(started), problem)

    def _pool(self, scheme: str, address: str, parts: SplitResult) -> urllib3.HTTPConnectionPool:
        hostname = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, address, port, hostname)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self._new_pool(scheme, address, port, hostname)
            return pool

    def _new_pool(
        self, scheme: str, address: str, port: int, hostname: str
    ) -> urllib3.HTTPConnectionPool:
        common = {"timeout": self._timeout, "maxsize": self._pool_size, "block": False}
        if scheme == "https":
            return urllib3.HTTPSConnectionPool(
                address,
                port,
                server_hostname=hostname,
                assert_hostname=hostname,
                cert_reqs="CERT_REQUIRED",
                ca_certs=self._ca_bundle,
                **common,  # type: ignore[arg-type]
            )
        return urllib3.HTTPConnectionPool(address, port, **common)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _describe(error: HTTPError) -> str:
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return "timeout"
    if isinstance(error, SSLError):
        return "TLS error"
    if isinstance(error, NewConnectionError):
        return "connection refused or unreachable"
    return f"connection error ({type(error).__name__})"
