"""Operators' devices: Web Push subscriptions, and a push to every device of an office.

A console user's browser subscribes (``subscribe``) with the endpoint and keys its
push service gave it; ``push_to_operators`` then reaches every active user's devices
of that office, or, when Pusher Beams is configured, publishes once to the office's
Beams interest instead. The push services answer for the subscriptions: 404/410 and
the subscription is deleted; any other failure is counted and the device kept.

What a push carries is the caller's (ids and a short summary, never a message's text
or a phone number); each push is audited with its counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update

from bot.exceptions import InvalidSubscription
from bot.office.actor import Actor
from bot.privacy.audit import record_actor_audit, record_audit
from bot.services import Services
from notify.push import PushOutcome, PushResult, WebPushSubscription, valid_subscription_keys
from storage.db import rows_affected
from storage.models import PushSubscription, Tenant, User, utcnow
from storage.vocabulary import Role

log = logging.getLogger(__name__)

MAX_ENDPOINT = 1024
# Sends run side by side, so one slow push service does not delay the others.
MAX_PARALLEL_SENDS = 8
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class PushReport:
    """What one push to an office's devices came to (also its audit detail)."""

    via: str
    subscriptions: int = 0
    delivered: int = 0
    gone: int = 0
    failed: int = 0

    def as_detail(self) -> dict[str, Any]:
        return {
            "via": self.via,
            "subscriptions": self.subscriptions,
            "delivered": self.delivered,
            "gone": self.gone,
            "failed": self.failed,
        }


def beams_interest(slug: str) -> str:
    """The Beams interest every device of an office's operators subscribes to."""
    return f"tenant-{slug}"


# -- subscriptions ------------------------------------------------------------------------


def check_endpoint(endpoint: str, *, allow_loopback: bool) -> str:
    """A push service's URL: HTTPS, or loopback HTTP(S) only where allowed (tests, dev).

    The worker POSTs to whatever is stored here, so nothing else may be stored.
    """
    endpoint = endpoint.strip()
    if not endpoint or len(endpoint) > MAX_ENDPOINT:
        raise InvalidSubscription("endpoint missing or too long")
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        raise InvalidSubscription("endpoint is not a push service URL")
    if host in LOOPBACK_HOSTS:
        if not allow_loopback or parts.scheme not in ("http", "https"):
            raise InvalidSubscription("endpoint on loopback refused")
    elif parts.scheme != "https":
        raise InvalidSubscription("endpoint must be https")
    return endpoint


def subscribe(svc: Services, actor: Actor, endpoint: str, p256dh: str, auth: str) -> None:
    """Keep (or hand over to ``actor``) the browser's subscription; audited."""
    endpoint = check_endpoint(
        endpoint, allow_loopback=bool(svc.config.get("PUSH_ALLOW_LOOPBACK_ENDPOINTS"))
    )
    if not valid_subscription_keys(p256dh, auth):
        raise InvalidSubscription("keys are not a P-256 public key and a 16-byte secret")
    with svc.db.session() as session:
        existing = session.scalar(
            select(PushSubscription).where(PushSubscription.endpoint == endpoint)
        )
        if existing is None:
            existing = PushSubscription(endpoint=endpoint, failures=0)
            session.add(existing)
        # The same browser under another operator (or office) is that device changing hands.
        existing.tenant_id = actor.tenant_id
        existing.user_id = actor.user_id
        existing.p256dh = p256dh
        existing.auth = auth
        existing.failures = 0
        session.flush()
        record_actor_audit(session, actor, "push.subscribe", "push_subscription", existing.id)


def unsubscribe(svc: Services, actor: Actor, endpoint: str) -> bool:
    """Forget the actor's own subscription at ``endpoint``; whether there was one."""
    with svc.db.session() as session:
        removed = rows_affected(
            session.execute(
                delete(PushSubscription).where(
                    PushSubscription.endpoint == endpoint.strip(),
                    PushSubscription.tenant_id == actor.tenant_id,
                    PushSubscription.user_id == actor.user_id,
                )
            )
        )
        if removed:
            record_actor_audit(session, actor, "push.unsubscribe", "user", actor.user_id)
    return removed > 0


# -- pushing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Device:
    id: int
    subscription: WebPushSubscription


def push_to_operators(svc: Services, tenant_id: int, payload: dict[str, Any]) -> PushReport:
    """Push ``payload`` to every active operator's devices of the office; audited as
    ``push.sent`` with the counts (and the conversation and hazard, if given)."""
    with svc.db.read() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.terminated_at is not None:
            return PushReport(via="none")
        slug = tenant.slug
        devices = [
            _Device(row.id, WebPushSubscription(row.endpoint, row.p256dh, row.auth))
            for row in session.scalars(
                select(PushSubscription)
                .join(User, User.id == PushSubscription.user_id)
                .where(
                    PushSubscription.tenant_id == tenant_id,
                    User.tenant_id == tenant_id,
                    User.active.is_(True),
                )
                .order_by(PushSubscription.id)
            )
        ]
        subject = _subject(svc, session, tenant_id)
    if svc.beams is not None:
        report = _publish_to_beams(svc, slug, payload)
        results: dict[int, PushResult] = {}
    else:
        results = _send_all(svc, devices, payload, subject)
        report = _report(results.values())
    with svc.db.session() as session:
        _apply_results(session, results)
        detail: dict[str, Any] = {
            **report.as_detail(),
            **{k: payload[k] for k in ("conversation_id", "hazard") if k in payload},
        }
        record_audit(
            session,
            tenant_id,
            "push.sent",
            actor="system",
            target_type="tenant",
            target_id=tenant_id,
            detail=detail,
        )
    return report


def _subject(svc: Services, session: Any, tenant_id: int) -> str:
    """Whom push services may write to about our pushes: the configured contact, or
    the office's first admin."""
    configured = svc.config.get("VAPID_SUBJECT")
    if configured:
        return str(configured)
    email = session.scalar(
        select(User.email)
        .where(User.tenant_id == tenant_id, User.role == Role.ADMIN, User.active.is_(True))
        .order_by(User.id)
        .limit(1)
    )
    host = urlsplit(str(svc.config["PUBLIC_BASE_URL"])).hostname or "localhost"
    return f"mailto:{email or 'privacy@' + host}"


def _send_all(
    svc: Services, devices: list[_Device], payload: dict[str, Any], subject: str
) -> dict[int, PushResult]:
    if not devices:
        return {}
    sender = svc.push

    def send(device: _Device) -> tuple[int, PushResult]:
        return device.id, sender.send(device.subscription, payload, subject)

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SENDS, len(devices))) as pool:
        return dict(pool.map(send, devices))


def _publish_to_beams(svc: Services, slug: str, payload: dict[str, Any]) -> PushReport:
    assert svc.beams is not None
    result = svc.beams.publish([beams_interest(slug)], beams_body(svc, payload))
    delivered = result.outcome == PushOutcome.DELIVERED
    return PushReport(via="beams", delivered=int(delivered), failed=int(not delivered))


def beams_body(svc: Services, payload: dict[str, Any]) -> dict[str, Any]:
    """One publish for the three platforms Beams serves: web, Android (FCM), iOS (APNs)."""
    title = str(payload.get("title", "Portineria"))
    body = str(payload.get("body", ""))
    link = str(svc.config["PUBLIC_BASE_URL"]) + str(payload.get("url", "/console/"))
    return {
        "web": {"notification": {"title": title, "body": body, "deep_link": link}, "data": payload},
        "fcm": {
            "notification": {"title": title, "body": body},
            # FCM data values must be strings.
            "data": {key: str(value) for key, value in payload.items()},
        },
        "apns": {
            "aps": {"alert": {"title": title, "body": body}, "sound": "default"},
            "data": payload,
        },
    }


def _report(results: Iterable[PushResult]) -> PushReport:
    outcomes = [result.outcome for result in results]
    return PushReport(
        via="webpush",
        subscriptions=len(outcomes),
        delivered=outcomes.count(PushOutcome.DELIVERED),
        gone=outcomes.count(PushOutcome.GONE),
        failed=outcomes.count(PushOutcome.FAILED),
    )


def _apply_results(session: Any, results: dict[int, PushResult]) -> None:
    by_outcome: dict[PushOutcome, list[int]] = {outcome: [] for outcome in PushOutcome}
    for subscription_id, result in results.items():
        by_outcome[result.outcome].append(subscription_id)
    if by_outcome[PushOutcome.GONE]:
        session.execute(
            delete(PushSubscription).where(PushSubscription.id.in_(by_outcome[PushOutcome.GONE]))
        )
    if by_outcome[PushOutcome.DELIVERED]:
        session.execute(
            update(PushSubscription)
            .where(PushSubscription.id.in_(by_outcome[PushOutcome.DELIVERED]))
            .values(last_success_at=utcnow(), failures=0)
        )
    if by_outcome[PushOutcome.FAILED]:
        session.execute(
            update(PushSubscription)
            .where(PushSubscription.id.in_(by_outcome[PushOutcome.FAILED]))
            .values(failures=PushSubscription.failures + 1)
        )
