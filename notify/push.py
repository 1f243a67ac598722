"""Push notifications to operators' devices: Web Push (VAPID), or Pusher Beams.

Web Push is the one standard behind every platform the office uses: Chrome on
Android delivers through FCM, Safari (macOS, and iOS 16.4+ for a PWA added to the
Home Screen) through APNs, Firefox through Mozilla's service. The browser hands the
console a subscription (an endpoint URL and two keys); :class:`WebPushSender`
encrypts each message for those keys (RFC 8291) and signs a VAPID JWT (RFC 8292)
with the instance's key, through pywebpush. Whether a subscription is still alive is
the push service's to say: 404 or 410 means it is gone for good, and the caller
deletes it.

:class:`BeamsPublisher` publishes to Pusher Beams interests instead, when an office
runs Beams. Nothing here decides who is told or what: that is the caller's.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import requests
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pusher_push_notifications import PusherError, PushNotifications
from pywebpush import Vapid, WebPushException, webpush
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

# An emergency is worth nothing tomorrow: the push service may drop it after an hour.
DEFAULT_TTL_SECONDS = 3600
_GONE = frozenset({404, 410})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_vapid_key() -> str:
    """A new VAPID private key: the P-256 scalar, 32 bytes, base64url (py_vapid's raw form)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def vapid_public_key(private_key: str) -> str:
    """The browser's ``applicationServerKey``: the uncompressed public point, base64url."""
    scalar = int.from_bytes(_b64url_decode(private_key.strip()), "big")
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    return _b64url(key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))


def valid_subscription_keys(p256dh: str, auth: str) -> bool:
    """Whether ``p256dh`` is a P-256 public point and ``auth`` a 16-byte secret (base64url)."""
    try:
        point = _b64url_decode(p256dh)
        secret = _b64url_decode(auth)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (ValueError, TypeError):
        return False
    return len(secret) == 16


class PushOutcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"  # the push service no longer knows the subscription: delete it
    FAILED = "failed"  # refused or unreachable this time: keep it, count the failure


@dataclass(frozen=True)
class WebPushSubscription:
    endpoint: str
    p256dh: str
    auth: str

    def as_info(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    status: int | None = None


class PushSender(Protocol):
    name: str

    def send(
        self, subscription: WebPushSubscription, payload: dict[str, Any], subject: str
    ) -> PushResult: ...


class WebPushSender:
    """Web Push through pywebpush, signed with the instance's VAPID key."""

    name = "webpush"

    def __init__(
        self, private_key: str, *, ttl: int = DEFAULT_TTL_SECONDS, timeout: float = 10.0
    ) -> None:
        self._vapid = Vapid.from_string(private_key=private_key.strip())
        self.public_key = vapid_public_key(private_key)
        self._ttl = ttl
        self._timeout = timeout

    def send(
        self, subscription: WebPushSubscription, payload: dict[str, Any], subject: str
    ) -> PushResult:
        """Encrypt ``payload`` (JSON) for the subscription and post it, signed for
        ``subject`` (the ``mailto:`` or ``https:`` contact push services may use)."""
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        try:
            response = webpush(
                subscription.as_info(),
                data,
                vapid_private_key=self._vapid,
                # A fresh dict every time: pywebpush writes the endpoint's origin into
                # it as ``aud``, which would then be wrong for the next push service.
                vapid_claims={"sub": subject},
                ttl=self._ttl,
                timeout=self._timeout,
                headers={"Urgency": "high"},
            )
        except WebPushException as error:
            status = error.response.status_code if error.response is not None else None
            outcome = PushOutcome.GONE if status in _GONE else PushOutcome.FAILED
            log.warning("web push refused (status %s)", status)
            return PushResult(outcome, status)
        except requests.RequestException:
            log.warning("web push service unreachable")
            return PushResult(PushOutcome.FAILED)
        return PushResult(PushOutcome.DELIVERED, int(getattr(response, "status_code", 201)))


class _TimeoutAdapter(HTTPAdapter):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class BeamsPublisher:
    """Pusher Beams: one publish reaches every device registered for the interests.

    ``endpoint`` replaces Beams' host (``<instance>.pushnotifications.pusher.com``);
    the SDK always speaks HTTPS, so ``ca_bundle`` (a CA file) lets a private CA, or a
    test's own, be trusted.
    """

    name = "beams"

    def __init__(
        self,
        instance_id: str,
        secret_key: str,
        *,
        endpoint: str | None = None,
        ca_bundle: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.client = PushNotifications(instance_id, secret_key, endpoint=endpoint)
        if ca_bundle:
            self.client.session.verify = ca_bundle
        # The SDK sends without a timeout: a hung Beams must not hold the worker.
        adapter = _TimeoutAdapter(timeout)
        self.client.session.mount("https://", adapter)

    def publish(self, interests: list[str], body: dict[str, Any]) -> PushResult:
        try:
            self.client.publish_to_interests(interests, body)
        except (PusherError, requests.RequestException) as error:
            log.warning("beams publish failed: %s", type(error).__name__)
            return PushResult(PushOutcome.FAILED)
        return PushResult(PushOutcome.DELIVERED, 200)
