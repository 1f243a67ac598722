"""Delivering the outbox: the workers' CRM dispatcher.

Why a loop over the outbox rather than one RQ job per delivery: the database already is
the record of what must be delivered (the outbox is written with the change), and the
order per conversation is a question about that record ("is an earlier delivery of
this conversation to this endpoint still pending?") that RQ's queues cannot answer.
So every ``portineria worker`` runs a :class:`CrmDispatcher` in a thread: it claims
due deliveries with a lease (a dead worker's claim expires and another retries it),
posts them in parallel, each with its own timeout, and records each attempt.

* **Due** means pending, its ``next_attempt_at`` reached, its endpoint enabled, and no
  earlier pending delivery of the same conversation for the same endpoint: a
  conversation's events reach each CRM in the order they happened, the later ones
  waiting until the earlier are delivered or given up.
* **Retries** back off exponentially (``CRM_BACKOFF_SECONDS``, doubling, at most
  ``CRM_BACKOFF_MAX_SECONDS``) for ``CRM_RETRY_WINDOW_SECONDS`` (a day by default);
  the last attempt falls on the window's end, and a delivery still failing then is
  given up (``failed``).
* **At least once**: a CRM that took an event but answered late is sent it again;
  receivers dedupe on the event id.
* An **endpoint failing** for a whole window (no success since a window ago, or a
  delivery given up with no success to the endpoint during its window) is disabled,
  with an audit event the console shows as a warning. Its deliveries wait,
  recorded, until an admin enables it again.

A new event nudges the dispatchers through Redis (a list they block on), so delivery
starts at once; without Redis they find it at their next poll (``CRM_POLL_SECONDS``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import aliased

from bot.conversation.handoff import publish
from bot.crm.endpoints import Resolver, check_url, host_of, resolve_host, signing_secrets
from bot.crm.events import event_body, wake_key
from bot.exceptions import InvalidEndpoint
from bot.privacy.audit import record_audit
from bot.runtime.queueing import BackgroundLoop, connect_redis
from bot.services import Services
from notify.crm import CrmAttempt, CrmDestination, CrmSender
from notify.operators import OperatorEvent, user_channel
from storage.db import rows_affected
from storage.models import (
    Tenant,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    utcnow,
)
from storage.vocabulary import Role, WebhookDeliveryStatus

log = logging.getLogger(__name__)

PENDING = WebhookDeliveryStatus.PENDING
BATCH = 100
MAX_ROUNDS = 50
LEASE_MARGIN_SECONDS = 30.0
MAX_ERROR = 200
DISABLED_EVENT = "webhook.disabled"  # the audit action and the consoles' live event


# -- the rules (plain functions) ----------------------------------------------------------


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base, 2×base, 4×base… ≤ cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def next_attempt(
    attempts: int, at: datetime, retry_from: datetime, window: float, base: float, cap: float
) -> datetime | None:
    """When to try again after a failure at ``at``; None once the window is over."""
    end = retry_from + timedelta(seconds=window)
    if at >= end:
        return None
    return min(at + timedelta(seconds=backoff(attempts, base, cap)), end)


def should_disable(
    failing_since: datetime | None,
    last_success_at: datetime | None,
    at: datetime,
    window: float,
    given_up_from: datetime | None = None,
) -> bool:
    """Disable an endpoint that accepted nothing for a whole window: failing since a
    window ago, or a delivery given up whose window saw no success at all.

    One event the CRM keeps refusing does not disable an endpoint that takes the others.
    """
    if failing_since is None:
        return False
    if at - failing_since >= timedelta(seconds=window):
        return True
    return given_up_from is not None and (
        last_success_at is None or last_success_at < given_up_from
    )


# -- the dispatcher ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    """One claimed delivery, with all it needs to be attempted outside any transaction."""

    delivery_id: int
    tenant_id: int
    endpoint_id: int
    url: str
    allow_loopback: bool
    allow_private: bool
    secrets: tuple[str, ...]
    event_uid: str
    body: bytes


class CrmDispatcher:
    """Claims due deliveries, posts them, records every attempt (see the module docstring)."""

    def __init__(
        self,
        svc: Services,
        *,
        sender: CrmSender | None = None,
        resolve: Resolver = resolve_host,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        config = svc.config
        self.svc = svc
        self.timeout = float(config["CRM_TIMEOUT_SECONDS"])
        self.window = float(config["CRM_RETRY_WINDOW_SECONDS"])
        self.base = float(config["CRM_BACKOFF_SECONDS"])
        self.cap = float(config["CRM_BACKOFF_MAX_SECONDS"])
        self.poll = float(config["CRM_POLL_SECONDS"])
        self.parallel = max(1, int(config["CRM_PARALLEL_SENDS"]))
        self.sender = sender or CrmSender(
            self.timeout, ca_bundle=config.get("CRM_CA_BUNDLE") or None, pool_size=self.parallel
        )
        self.resolve = resolve
        self.now = now
        self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="portineria-crm-send")
        self._listener: Redis | None = None
        self._stopped = threading.Event()

    # -- one pass ------------------------------------------------------------------------

    def deliver_due(self, max_rounds: int = MAX_ROUNDS) -> int:
        """Attempt what is due now, round after round (a delivery unblocks the next of its
        conversation), until nothing is; bounded. Returns the attempts made."""
        total = 0
        for _ in range(max_rounds):
            attempted = self.run_once()
            if not attempted:
                break
            total += attempted
        return total

    def run_once(self) -> int:
        claimed = self._claim(self.now())
        if claimed:
            list(self._pool.map(self._attempt, claimed))
        return len(claimed)

    def _claim(self, now: datetime) -> list[_Claimed]:
        lease = now + timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        with self.svc.db.session() as session:
            ids = [
                delivery_id
                for delivery_id in session.scalars(_due(now, BATCH))
                if rows_affected(
                    session.execute(
                        update(WebhookDelivery)
                        .where(
                            WebhookDelivery.id == delivery_id,
                            WebhookDelivery.status == PENDING,
                            or_(
                                WebhookDelivery.lease_until.is_(None),
                                WebhookDelivery.lease_until < now,
                            ),
                        )
                        .values(lease_until=lease)
                        .execution_options(synchronize_session=False)
                    )
                )
                == 1
            ]
            if not ids:
                return []
            rows = session.execute(
                select(WebhookDelivery, WebhookEndpoint, Tenant.slug)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(Tenant, Tenant.id == WebhookDelivery.tenant_id)
                .where(WebhookDelivery.id.in_(ids))
                .order_by(WebhookDelivery.id)
            ).all()
            return [
                self._prepare(delivery, endpoint, slug, now) for delivery, endpoint, slug in rows
            ]

    def _prepare(
        self, delivery: WebhookDelivery, endpoint: WebhookEndpoint, slug: str, now: datetime
    ) -> _Claimed:
        cipher = self.svc.cipher
        event: WebhookEvent = delivery.event
        private = json.loads(cipher.decrypt(event.private)) if event.private else None
        return _Claimed(
            delivery_id=delivery.id,
            tenant_id=delivery.tenant_id,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            allow_loopback=endpoint.allow_loopback,
            allow_private=endpoint.allow_private,
            secrets=tuple(signing_secrets(cipher, endpoint, now)),
            event_uid=event.uid,
            body=event_body(event.uid, event.type, event.created_at, slug, event.data, private),
        )

    def _attempt(self, claimed: _Claimed) -> None:
        try:
            attempt = self._post(claimed)
        except Exception:
            log.exception("crm delivery %s failed unexpectedly", claimed.delivery_id)
            attempt = CrmAttempt(None, 0.0, "internal error")
        try:
            self._record(claimed, attempt, self.now())
        except Exception:
            # The lease expires and another pass retries: at least once, never lost.
            log.exception("crm delivery %s: could not record the attempt", claimed.delivery_id)

    def _post(self, claimed: _Claimed) -> CrmAttempt:
        try:
            reachable = check_url(
                claimed.url,
                allow_loopback=claimed.allow_loopback,
                allow_private=claimed.allow_private,
                resolve=self.resolve,
            )
        except InvalidEndpoint as refused:
            return CrmAttempt(None, 0.0, f"refused: {refused}")
        destination = CrmDestination(claimed.url, reachable.addresses[0])
        return self.sender.post(destination, claimed.body, claimed.event_uid, claimed.secrets)

    def _record(self, claimed: _Claimed, attempt: CrmAttempt, at: datetime) -> None:
        disabled: str | None = None
        with self.svc.db.session() as session:
            delivery = session.get(WebhookDelivery, claimed.delivery_id)
            if delivery is None or delivery.status != PENDING:
                return  # erased or purged meanwhile
            delivery.attempts += 1
            delivery.last_attempt_at = at
            delivery.last_status_code = attempt.status
            delivery.latency_ms = attempt.latency_ms
            delivery.lease_until = None
            endpoints = update(WebhookEndpoint).where(WebhookEndpoint.id == claimed.endpoint_id)
            if attempt.delivered:
                delivery.status = WebhookDeliveryStatus.DELIVERED
                delivery.delivered_at = at
                delivery.last_error = None
                session.execute(endpoints.values(failing_since=None, last_success_at=at))
                return
            delivery.last_error = (attempt.error or "failed")[:MAX_ERROR]
            retry = next_attempt(
                delivery.attempts, at, delivery.retry_from, self.window, self.base, self.cap
            )
            if retry is None:
                delivery.status = WebhookDeliveryStatus.FAILED
            else:
                delivery.next_attempt_at = retry
            session.execute(
                endpoints.values(failing_since=func.coalesce(WebhookEndpoint.failing_since, at))
            )
            endpoint = session.get(WebhookEndpoint, claimed.endpoint_id)
            if endpoint is not None:
                session.refresh(endpoint)
                given_up = delivery.retry_from if retry is None else None
                if endpoint.disabled_at is None and should_disable(
                    endpoint.failing_since, endpoint.last_success_at, at, self.window, given_up
                ):
                    disabled = self._disable(session, endpoint, at, delivery.last_error)
        if disabled is not None:
            tell_admins_disabled(self.svc, claimed.tenant_id, claimed.endpoint_id, disabled)

    def _disable(
        self, session: Any, endpoint: WebhookEndpoint, at: datetime, error: str
    ) -> str | None:
        """Disable the endpoint unless another worker just did; the host if this one did."""
        disabled = rows_affected(
            session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint.id, WebhookEndpoint.disabled_at.is_(None))
                .values(disabled_at=at, disabled_reason=f"nessuna consegna riuscita: {error}"[:200])
                .execution_options(synchronize_session=False)
            )
        )
        if not disabled:
            return None
        host = host_of(endpoint.url)
        record_audit(
            session,
            endpoint.tenant_id,
            DISABLED_EVENT,
            actor="system",
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            detail={
                "host": host,
                "failing_since": endpoint.failing_since.isoformat()
                if endpoint.failing_since
                else None,
                "last_error": error,
            },
        )
        log.warning("crm endpoint %s (%s) disabled after a window of failures", endpoint.id, host)
        return host

    # -- waiting -----------------------------------------------------------------------------

    def wait_for_work(self) -> None:
        """Until a new event's nudge, or the poll interval; without Redis, just the interval."""
        try:
            if self._listener is None:
                # Its own client: the wait blocks longer than the app client's socket timeout.
                self._listener = connect_redis(self.svc.redis_url, socket_timeout=self.poll + 5)
            key = wake_key(self.svc.config["QUEUE_NAME"])
            if self._listener.blpop([key], timeout=self.poll) is not None:
                self._listener.delete(key)  # one pass serves every nudge that came meanwhile
        except RedisError:
            self._stopped.wait(self.poll)

    def run_pass(self) -> None:
        """The worker thread's pass: deliver what is due, then wait for more."""
        self.deliver_due()
        if not self._stopped.is_set():
            self.wait_for_work()

    def stop(self) -> None:
        """No more waiting: the current pass ends after its sends."""
        self._stopped.set()

    def close(self) -> None:
        self.stop()
        self._pool.shutdown(wait=True)
        self.sender.close()
        if self._listener is not None:
            self._listener.close()


def tell_admins_disabled(svc: Services, tenant_id: int, endpoint_id: int, host: str) -> None:
    """After the commit: every active admin's open console hears ``webhook.disabled`` on
    their own channel at once (operators are not told: only admins can act on it)."""
    with svc.db.read() as session:
        admins = session.scalars(
            select(User.id)
            .where(User.tenant_id == tenant_id, User.role == Role.ADMIN, User.active.is_(True))
            .order_by(User.id)
        ).all()
    if admins:
        data = {"endpoint_id": endpoint_id, "host": host}
        channels = tuple(user_channel(user_id) for user_id in admins)
        publish(svc, [OperatorEvent(channels, DISABLED_EVENT, data)])


class CrmThread(BackgroundLoop):
    """The worker's thread that runs a :class:`CrmDispatcher` until stopped."""

    def __init__(self, svc: Services) -> None:
        self.dispatcher = CrmDispatcher(svc)
        super().__init__("crm", self.dispatcher.run_pass, pause=0)

    def stop(self) -> None:
        super().stop()
        self.dispatcher.stop()
        if self.is_alive():
            # A pass in flight ends within one attempt's timeout (and one poll's wait).
            self.join(self.dispatcher.timeout + self.dispatcher.poll + 5)
        self.dispatcher.close()


def _due(now: datetime, limit: int) -> Any:
    """Ids of deliveries due now, oldest due first (see the module docstring)."""
    earlier = aliased(WebhookDelivery)
    return (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(Tenant, Tenant.id == WebhookDelivery.tenant_id)
        .where(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
            WebhookEndpoint.disabled_at.is_(None),
            Tenant.terminated_at.is_(None),
            ~exists().where(
                earlier.endpoint_id == WebhookDelivery.endpoint_id,
                earlier.conversation_id == WebhookDelivery.conversation_id,
                earlier.status == PENDING,
                earlier.id < WebhookDelivery.id,
            ),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
