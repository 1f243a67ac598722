"""A local Web Push service (RFC 8030, 8291, 8292), as a real HTTP server on 127.0.0.1.

``FakePushService(port=0)`` stands where FCM or Mozilla's autopush stands, and
also plays the browser behind each subscription, so it can decrypt what it is
sent. It checks the sender independently: the decryption and the VAPID check
are written here from the RFCs with ``cryptography`` primitives, not borrowed
from pywebpush, http_ece or py_vapid.

Subscriptions
    ``new_subscription(application_server_key=None) -> dict`` returns what a
    browser's ``PushSubscription.toJSON()`` gives: ``{"endpoint":
    "http://127.0.0.1:PORT/push/<id>", "keys": {"p256dh": <base64url
    uncompressed P-256 public key>, "auth": <base64url 16 random bytes>}}``;
    the fake keeps the private key. With ``application_server_key`` (the
    base64url uncompressed public key, or its 65 raw bytes, as passed to
    ``pushManager.subscribe``) the subscription is restricted to that key
    (RFC 8292 section 4.2). ``expire(subscription)`` (the dict, its endpoint or
    its id) makes the endpoint answer ``410 Gone`` from then on, as when the
    user unsubscribed or the browser dropped the subscription.

``POST /push/<id>``, checked in this order; the first fault answers:

    ====  ===================================================================
    404   unknown subscription id
    410   expired subscription
    any   a fault scripted with ``fail_next(status, count=1)``
    400   ``TTL`` header missing or not a non-negative integer (RFC 8030 5.2);
          ``Urgency`` not one of very-low, low, normal, high (5.3); ``Topic``
          longer than 32 characters or outside the base64url alphabet (5.4)
    401   no ``Authorization: vapid t=<JWT>, k=<key>`` header (with
          ``WWW-Authenticate: vapid``); a JWT whose header is not ES256, whose
          ES256 signature (raw r||s, 64 bytes) does not verify with ``k``,
          whose ``aud`` is not this service's origin (``http://127.0.0.1:PORT``),
          whose ``exp`` is past or more than 24 h ahead, or whose ``sub`` is
          not a ``mailto:`` or ``https:`` URL. The pre-RFC form
          (``Authorization: WebPush <JWT>`` + ``Crypto-Key: p256ecdsa=``) is
          refused too: pywebpush 2.x sends the RFC 8292 form (its ``Vapid`` is
          ``Vapid02``); only a caller handing it a ``Vapid01`` would send the
          old one
    403   ``k`` is not the key a restricted subscription was created with
    413   a body over 4096 bytes (the size every push service must accept)
    400   a body without ``Content-Encoding: aes128gcm``, or one that does not
          decrypt (a real push service forwards it and the browser drops it;
          the fake refuses it so the sender's bug shows in the test)
    201   accepted: ``Location: http://127.0.0.1:PORT/message/<id>`` and the
          ``TTL`` it was stored with
    ====  ===================================================================

Decryption (RFC 8188 framing, RFC 8291 keys): the body is ``salt (16) || rs
(uint32) || idlen (1) || keyid (idlen: the sender's 65-byte public key)``, then
records of ``rs`` bytes. ``IKM = HKDF(salt=auth secret, ikm=ECDH(subscription
private key, sender key), info="WebPush: info\\0" || ua_public || as_public,
32)``; ``CEK = HKDF(salt, IKM, "Content-Encoding: aes128gcm\\0", 16)``;
``NONCE = HKDF(salt, IKM, "Content-Encoding: nonce\\0", 12)``, XORed with the
record number; AES-128-GCM per record; the plaintext ends at the last non-zero
byte, the padding delimiter: ``0x02`` on the last record, ``0x01`` before.

Records (thread-safe copies): ``.deliveries`` (``Delivery``: subscription id,
endpoint, decrypted ``payload`` bytes and ``.json()``, ``ttl``, ``urgency``,
``topic``, the JWT ``claims``, the ``vapid_key``, ``message_id``,
``received_at``), ``.rejections`` (``Rejection``: status, reason, subscription
id); ``wait_for_deliveries(n, timeout)``, ``reset()`` (forgets
subscriptions, records and scripted faults).

Point pywebpush (2.x) at it with nothing but the subscription dict::

    subscription = push.new_subscription(application_server_key=public_b64)
    pywebpush.webpush(subscription, json.dumps(payload),
                      vapid_private_key=private_b64,
                      vapid_claims={"sub": "mailto:ops@example.it"})
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from servers import FakeService, WsgiServer
from werkzeug.wrappers import Request, Response

__all__ = [
    "Delivery",
    "FakePushService",
    "PushRejection",
    "Rejection",
    "b64url_decode",
    "b64url_encode",
    "decrypt_aes128gcm",
]

MAX_BODY_BYTES = 4096
MAX_TTL_SECONDS = 28 * 24 * 3600  # FCM's and autopush's ceiling: four weeks
MAX_JWT_LIFETIME = 24 * 3600  # RFC 8292 section 2: exp at most 24 hours ahead
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_HEADER_LENGTH = 16 + 4 + 1  # salt, rs, idlen
_TAG_LENGTH = 16


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as Web Push keys and JWTs are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ``ValueError`` if it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


class PushRejection(Exception):
    """A request the push service refuses: HTTP status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """One accepted push message, decrypted."""

    subscription_id: str
    endpoint: str
    payload: bytes
    ttl: int
    urgency: str
    topic: str | None
    claims: dict[str, Any]
    vapid_key: str
    message_id: str
    received_at: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class Rejection:
    """One refused request."""

    status: int
    reason: str
    subscription_id: str | None
    received_at: float


@dataclass
class _Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    public_bytes: bytes
    auth_secret: bytes
    application_server_key: bytes | None
    expired: bool = False


@dataclass
class _State:
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    faults: deque[int] = field(default_factory=deque)


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt_aes128gcm(
    body: bytes,
    private_key: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
) -> bytes:
    """Decrypt a Web Push message body (see the module docstring); 400 if it fails."""
    if len(body) < _HEADER_LENGTH:
        raise PushRejection(400, "aes128gcm body shorter than its header")
    salt = body[:16]
    (record_size,) = struct.unpack(">I", body[16:20])
    key_id_length = body[20]
    sender_key = body[_HEADER_LENGTH : _HEADER_LENGTH + key_id_length]
    ciphertext = body[_HEADER_LENGTH + key_id_length :]
    if record_size <= _TAG_LENGTH + 1:
        raise PushRejection(400, f"aes128gcm record size {record_size} is too small")
    try:
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_key)
    except ValueError:
        raise PushRejection(400, "aes128gcm keyid is not a P-256 public key") from None
    ua_public = _public_bytes(private_key.public_key())
    shared = private_key.exchange(ec.ECDH(), sender)
    key_info = b"WebPush: info\x00" + ua_public + sender_key
    ikm = _hkdf(auth_secret, shared, key_info, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    return _open_records(AESGCM(cek), nonce, ciphertext, record_size)


def _open_records(cipher: AESGCM, nonce: bytes, ciphertext: bytes, record_size: int) -> bytes:
    if not ciphertext:
        raise PushRejection(400, "aes128gcm body has no record")
    records = [ciphertext[i : i + record_size] for i in range(0, len(ciphertext), record_size)]
    plaintext = b""
    base = int.from_bytes(nonce, "big")
    for number, record in enumerate(records):
        record_nonce = (base ^ number).to_bytes(12, "big")
        try:
            padded = cipher.decrypt(record_nonce, record, None)
        except InvalidTag:
            raise PushRejection(400, f"aes128gcm record {number} does not decrypt") from None
        content = padded.rstrip(b"\x00")
        last = number == len(records) - 1
        if not content or content[-1] != (2 if last else 1):
            raise PushRejection(400, f"aes128gcm record {number} has a wrong padding delimiter")
        plaintext += content[:-1]
    return plaintext


def _parse_vapid(header: str) -> tuple[str, str]:
    """``(jwt, key)`` from ``vapid t=..., k=...``; 401 if it is not that."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise PushRejection(401, f"Authorization scheme {scheme or '(none)'!r} is not vapid")
    params: dict[str, str] = {}
    for part in rest.split(","):
        name, separator, value = part.strip().partition("=")
        if separator:
            params[name.strip().lower()] = value.strip()
    if not params.get("t") or not params.get("k"):
        raise PushRejection(401, "vapid Authorization needs both t= and k=")
    return params["t"], params["k"]


def _verify_jwt(token: str, key_b64: str) -> tuple[dict[str, Any], bytes]:
    """The JWT's claims and the raw public key, if the ES256 signature holds; else 401."""
    try:
        key_bytes = b64url_decode(key_b64)
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
    except ValueError:
        raise PushRejection(401, "vapid k= is not a P-256 public key") from None
    pieces = token.split(".")
    if len(pieces) != 3:
        raise PushRejection(401, "vapid t= is not a JWS compact serialisation")
    try:
        header = json.loads(b64url_decode(pieces[0]))
        claims = json.loads(b64url_decode(pieces[1]))
        signature = b64url_decode(pieces[2])
    except ValueError:
        raise PushRejection(401, "vapid JWT does not decode") from None
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise PushRejection(401, f"vapid JWT header must be ES256, got {header!r}")
    if header.get("typ", "JWT") != "JWT":
        raise PushRejection(401, f"vapid JWT typ must be JWT, got {header.get('typ')!r}")
    if not isinstance(claims, dict):
        raise PushRejection(401, "vapid JWT claims are not an object")
    if len(signature) != 64:
        raise PushRejection(401, "vapid JWT signature is not 64 bytes of r||s")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    signed = f"{pieces[0]}.{pieces[1]}".encode("ascii")
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise PushRejection(401, "vapid JWT signature does not verify with k=") from None
    return claims, key_bytes


def _check_claims(claims: dict[str, Any], origin: str, now: float) -> None:
    if claims.get("aud") != origin:
        raise PushRejection(401, f"vapid aud {claims.get('aud')!r} is not {origin!r}")
    expires = claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise PushRejection(401, "vapid exp must be an integer")
    if expires <= now:
        raise PushRejection(401, "vapid JWT has expired")
    if expires > now + MAX_JWT_LIFETIME:
        raise PushRejection(401, "vapid exp is more than 24 hours ahead")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.startswith(("mailto:", "https:")):
        raise PushRejection(401, f"vapid sub must be a mailto: or https: URL, got {subject!r}")


def _ttl(request: Request) -> int:
    raw = request.headers.get("TTL")
    if raw is None:
        raise PushRejection(400, "TTL header is required")
    if not raw.strip().isdigit():
        raise PushRejection(400, f"TTL must be a non-negative integer, got {raw!r}")
    return min(int(raw), MAX_TTL_SECONDS)


def _urgency(request: Request) -> str:
    urgency = request.headers.get("Urgency", "normal")
    if urgency not in URGENCIES:
        raise PushRejection(400, f"Urgency must be one of {', '.join(URGENCIES)}")
    return urgency


def _topic(request: Request) -> str | None:
    topic = request.headers.get("Topic")
    if topic is not None and not _TOPIC.match(topic):
        raise PushRejection(400, "Topic must be at most 32 base64url characters")
    return topic


def _key_bytes(key: str | bytes) -> bytes:
    raw = key if isinstance(key, bytes) else b64url_decode(key)
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # ValueError if not
    return raw


class FakePushService(FakeService):
    """A Web Push service on 127.0.0.1 (see the module docstring).

    ``FakePushService(port=0)``; ``start()`` or ``with`` to serve; then
    ``.base_url`` (also ``.origin``, the JWT audience), ``.host``, ``.port``.
    """

    def __init__(self, *, port: int = 0) -> None:
        self._cond = threading.Condition()
        self._state = _State()
        self._server = WsgiServer(self._wsgi, port=port)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self._server.base_url

    # -- subscriptions and controls ---------------------------------------------------

    def new_subscription(self, application_server_key: str | bytes | None = None) -> dict[str, Any]:
        """A browser-like PushSubscription JSON; keeps the private key to decrypt."""
        pinned = _key_bytes(application_server_key) if application_server_key else None
        private_key = ec.generate_private_key(ec.SECP256R1())
        subscription = _Subscription(
            id=secrets.token_urlsafe(24),
            private_key=private_key,
            public_bytes=_public_bytes(private_key.public_key()),
            auth_secret=secrets.token_bytes(16),
            application_server_key=pinned,
        )
        with self._cond:
            self._state.subscriptions[subscription.id] = subscription
        return {
            "endpoint": self._endpoint(subscription.id),
            "expirationTime": None,
            "keys": {
                "p256dh": b64url_encode(subscription.public_bytes),
                "auth": b64url_encode(subscription.auth_secret),
            },
        }

    def expire(self, subscription: dict[str, Any] | str) -> None:
        """Make the subscription's endpoint answer 410 Gone from now on."""
        subscription_id = self._id_of(subscription)
        with self._cond:
            self._state.subscriptions[subscription_id].expired = True

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` pushes to live subscriptions with ``status``."""
        with self._cond:
            self._state.faults.extend([status] * count)

    def reset(self) -> None:
        with self._cond:
            self._state = _State()

    def _endpoint(self, subscription_id: str) -> str:
        return f"{self.base_url}/push/{subscription_id}"

    def _id_of(self, subscription: dict[str, Any] | str) -> str:
        endpoint = subscription["endpoint"] if isinstance(subscription, dict) else subscription
        return str(endpoint).rsplit("/push/", 1)[-1]

    # -- records ---------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._state.deliveries)

    @property
    def rejections(self) -> list[Rejection]:
        with self._cond:
            return list(self._state.rejections)

    def deliveries_to(self, subscription: dict[str, Any] | str) -> list[Delivery]:
        subscription_id = self._id_of(subscription)
        return [d for d in self.deliveries if d.subscription_id == subscription_id]

    def wait_for_deliveries(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        """Wait until at least ``n`` deliveries are recorded; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._state.deliveries) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} push deliveries within {timeout}s, got "
                    f"{len(self._state.deliveries)}; rejections: {self._state.rejections}"
                )
            return list(self._state.deliveries)

    # -- HTTP ------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        subscription_id: str | None = None
        try:
            if not request.path.startswith("/push/"):
                raise PushRejection(404, "Not found")
            subscription_id = request.path.removeprefix("/push/")
            if request.method != "POST":
                raise PushRejection(405, "Only POST delivers a push message")
            response = self._deliver(request, subscription_id)
        except PushRejection as rejection:
            self._reject(rejection, subscription_id)
            headers = {"WWW-Authenticate": "vapid"} if rejection.status == 401 else None
            response = Response(
                json.dumps({"code": rejection.status, "message": rejection.reason}),
                status=rejection.status,
                mimetype="application/json",
                headers=headers,
            )
        return response(environ, start_response)

    def _reject(self, rejection: PushRejection, subscription_id: str | None) -> None:
        record = Rejection(rejection.status, rejection.reason, subscription_id, time.time())
        with self._cond:
            self._state.rejections.append(record)
            self._cond.notify_all()

    def _deliver(self, request: Request, subscription_id: str) -> Response:
        with self._cond:
            subscription = self._state.subscriptions.get(subscription_id)
            if subscription is None:
                raise PushRejection(404, "No such subscription")
            if subscription.expired:
                raise PushRejection(410, "Subscription has expired or was unsubscribed")
            fault = self._state.faults.popleft() if self._state.faults else None
        if fault is not None:
            raise PushRejection(fault, "Injected failure")
        ttl, urgency, topic = _ttl(request), _urgency(request), _topic(request)
        claims, key = self._authenticate(request)
        pinned = subscription.application_server_key
        if pinned is not None and key != pinned:
            raise PushRejection(403, "vapid key is not the subscription's application server key")
        body = request.get_data(cache=False)
        payload = self._decrypt(request, body, subscription)
        message_id = secrets.token_urlsafe(16)
        delivery = Delivery(
            subscription_id=subscription_id,
            endpoint=self._endpoint(subscription_id),
            payload=payload,
            ttl=ttl,
            urgency=urgency,
            topic=topic,
            claims=claims,
            vapid_key=b64url_encode(key),
            message_id=message_id,
            received_at=time.time(),
        )
        with self._cond:
            self._state.deliveries.append(delivery)
            self._cond.notify_all()
        headers = {"Location": f"{self.base_url}/message/{message_id}", "TTL": str(ttl)}
        return Response(b"", status=201, headers=headers)

    def _authenticate(self, request: Request) -> tuple[dict[str, Any], bytes]:
        header = request.headers.get("Authorization")
        if not header:
            raise PushRejection(401, "Authorization header (vapid) is required")
        token, key = _parse_vapid(header)
        claims, key_bytes = _verify_jwt(token, key)
        _check_claims(claims, self.origin, time.time())
        return claims, key_bytes

    @staticmethod
    def _decrypt(request: Request, body: bytes, subscription: _Subscription) -> bytes:
        if len(body) > MAX_BODY_BYTES:
            raise PushRejection(413, f"Body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        if not body:
            return b""
        encoding = request.headers.get("Content-Encoding", "")
        if encoding.lower() != "aes128gcm":
            raise PushRejection(400, f"Content-Encoding must be aes128gcm, got {encoding!r}")
        return decrypt_aes128gcm(body, subscription.private_key, subscription.auth_secret)
