"""Downloading the media a WhatsApp message carries, within limits.

A ``MediaUrlN`` arrives in a webhook, and the download carries the account's
credentials, so what may be fetched is narrow:

* only a Twilio media URL of our own account under the configured API base
  (``{base}/2010-04-01/Accounts/{our SID}/Messages/{MM…}/Media/{ME…}``), and the
  credentials go to that URL alone;
* Twilio answers it with a redirect to its CDN: at most a few redirects are
  followed, by hand and without credentials, to HTTPS hosts whose every address is
  public (no loopback, private, link-local or reserved target). The address that
  was checked is the one connected to, so a name cannot resolve to another one
  in between. The API base's own host is trusted as configured (in tests it is
  loopback, and the fake CDN shares it);
* the whole download of one item, redirects included, ends within a deadline;
  a watchdog cuts the connection when it passes, however slowly bytes trickle.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MEDIA_PATH = re.compile(
    r"/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})"
    r"/Messages/(?:MM|SM)[0-9a-f]{32}/Media/ME[0-9a-f]{32}"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class MediaRefused(Exception):
    """The media was not kept; ``reason`` is a short code for the record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DownloadedMedia:
    content: bytes
    content_type: str


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


@dataclass(frozen=True)
class MediaAccount:
    """Whose media we fetch: the configured Twilio API base and account."""

    api_base_url: str
    account_sid: str
    auth_token: str

    @property
    def host(self) -> str:
        return _origin(urlsplit(self.api_base_url))[1]

    def owns(self, url: str) -> bool:
        """Whether ``url`` is a media URL of this account under the API base, exactly."""
        try:
            parts, base = urlsplit(url), urlsplit(self.api_base_url.rstrip("/"))
            same_origin = _origin(parts) == _origin(base)
        except ValueError:  # a port that is not a number
            return False
        if not same_origin or parts.username or parts.password or parts.query or parts.fragment:
            return False
        path = parts.path.removeprefix(base.path)
        found = _MEDIA_PATH.fullmatch(path) if parts.path.startswith(base.path) else None
        return found is not None and found["account"] == self.account_sid


def download_media(
    url: str,
    *,
    account: MediaAccount | None,
    max_bytes: int,
    allowed_types: frozenset[str],
    deadline_seconds: float = 30.0,
    max_redirects: int = MAX_REDIRECTS,
) -> DownloadedMedia:
    """Fetch one media item of ``account`` (see the module docstring for what is refused).

    The size limit is enforced while streaming, so a lying Content-Length cannot
    make us hold more than ``max_bytes``.
    """
    if account is None:
        raise MediaRefused("no_credentials")
    if not account.owns(url):
        raise MediaRefused("not_twilio_media")
    deadline = time.monotonic() + deadline_seconds
    headers = urllib3.make_headers(basic_auth=f"{account.account_sid}:{account.auth_token}")
    target = url
    for _ in range(max_redirects + 1):
        with _fetch(target, headers, deadline, trusted_host=account.host) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise MediaRefused(f"http_{response.status}")
                target = urljoin(target, location)
                headers = {}  # the credentials are for Twilio's own URL only
                continue
            return _read(response, max_bytes, allowed_types)
    raise MediaRefused("too_many_redirects")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    address: str
    path: str


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(url: str, trusted_host: str) -> _Target:
    """Where to connect for ``url``, refusing what is not a public HTTPS host."""
    try:
        parts = urlsplit(url)
        scheme, host, port = _origin(parts)
    except ValueError as error:
        raise MediaRefused("redirect_refused") from error
    trusted = host == trusted_host
    if not host or scheme not in _DEFAULT_PORTS or (scheme != "https" and not trusted):
        raise MediaRefused("redirect_refused")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise MediaRefused("download_failed") from error
    addresses = [str(info[4][0]) for info in found]
    if not addresses or not (trusted or all(_public(a) for a in addresses)):
        raise MediaRefused("private_address")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme, host, port, addresses[0], path)


class _Watchdog:
    """Cuts a connection when the deadline passes, even mid-read.

    It holds the socket itself: once a response is read to the end of the
    connection, the connection object lets go of it.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._cut()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._cut()

    def _cut(self) -> None:
        if self._sock is not None:
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


@contextmanager
def _fetch(
    url: str, headers: dict[str, str], deadline: float, *, trusted_host: str
) -> Iterator[urllib3.BaseHTTPResponse]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MediaRefused("deadline_exceeded")
    target = _resolve(url, trusted_host)
    connection = _connection(target, remaining)
    default_port = _DEFAULT_PORTS[target.scheme]
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host:  # an IPv6 literal
        host_header = f"[{target.host}]" + host_header[len(target.host) :]
    request_headers = {**headers, "Host": host_header, "User-Agent": "portineria-media"}
    watchdog = _Watchdog(deadline - time.monotonic())
    try:
        with watchdog:
            try:
                connection.connect()  # bounded by its own timeout, the time that remains
                watchdog.watch(connection.sock)
                connection.request(
                    "GET", target.path, headers=request_headers, preload_content=False
                )
                response = connection.getresponse()
                yield response
            except (OSError, urllib3.exceptions.HTTPError) as error:
                reason = "deadline_exceeded" if watchdog.fired else "download_failed"
                raise MediaRefused(reason) from error
            if watchdog.fired:
                # A cut connection may read as a clean end: what came is not the item.
                raise MediaRefused("deadline_exceeded")
    finally:
        connection.close()


def _connection(target: _Target, timeout: float) -> HTTPConnection:
    """A connection to the address that was checked (TLS still verifies the host name)."""
    if target.scheme == "https":
        return HTTPSConnection(
            target.address,
            target.port,
            timeout=timeout,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    return HTTPConnection(target.address, target.port, timeout=timeout)


def _read(
    response: urllib3.BaseHTTPResponse, max_bytes: int, allowed_types: frozenset[str]
) -> DownloadedMedia:
    if response.status != 200:
        raise MediaRefused(f"http_{response.status}")
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type not in allowed_types:
        raise MediaRefused("type_not_allowed")
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaRefused("too_large")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise MediaRefused("too_large")
        chunks.append(chunk)
    return DownloadedMedia(content=b"".join(chunks), content_type=content_type)
