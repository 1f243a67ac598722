"""The office's CRM endpoints: which URLs may receive its events, and their secrets.

A URL is accepted only if it is HTTPS and its host resolves to public addresses. Two
exceptions, each chosen explicitly when the endpoint is added: loopback
(``allow_loopback``: a CRM on the same host, development, tests), which may also be
plain HTTP; and private or link-local addresses (``allow_private``: a CRM on the
office's own network), still over HTTPS. The rule is checked again before every
delivery, against a fresh resolution, and the delivery connects to the address that
was checked (:mod:`notify.crm`), so a host that later resolves elsewhere is refused.

The signing secret is shown once, when it is made, and stored encrypted (it signs
every delivery, so it cannot be a hash). Rotating it keeps the previous one signing
too for an overlap, so that the CRM can switch without losing an event.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.exceptions import InvalidEndpoint, NotFound
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.crypto import BodyCipher
from storage.models import WebhookDelivery, WebhookEndpoint, utcnow
from storage.vocabulary import WebhookDeliveryStatus, WebhookEventType

MAX_URL = 2048
DEFAULT_OVERLAP_HOURS = 24.0
MAX_OVERLAP_HOURS = 30 * 24.0
SECRET_PREFIX = "whsec_"  # noqa: S105 - a marker, not a secret
EVENT_TYPES = tuple(t.value for t in WebhookEventType)

AddressKind = Literal["public", "loopback", "private", "forbidden"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (a test passes its own).
Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``), in its order."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise InvalidEndpoint(f"l'host {host!r} non si risolve in un indirizzo") from error
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def address_kind(raw: str) -> AddressKind:
    """Public, loopback, private (private ranges, link-local, shared and other
    non-global space), or forbidden whatever the flags (unspecified, multicast, reserved)."""
    address: IPAddress = ipaddress.ip_address(raw.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "forbidden"
    if address.is_private or address.is_link_local or not address.is_global:
        return "private"
    return "public"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Reachable:
    """A URL that passed the rules, with the checked addresses (connect to the first)."""

    url: str
    host: str
    addresses: tuple[str, ...]


def check_url(
    url: str,
    *,
    allow_loopback: bool,
    allow_private: bool,
    resolve: Resolver = resolve_host,
) -> Reachable:
    """The URL if events may be posted to it; :class:`InvalidEndpoint` saying why not."""
    url = url.strip()
    if not url or len(url) > MAX_URL:
        raise InvalidEndpoint(f"l'URL deve avere da 1 a {MAX_URL} caratteri")
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise InvalidEndpoint("la porta dell'URL non è valida") from error
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidEndpoint("l'URL deve essere https://host/...")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidEndpoint("l'URL non può contenere credenziali né un #frammento")
    addresses = [host] if _is_address(host) else resolve(host, port)
    if not addresses:
        raise InvalidEndpoint(f"l'host {host!r} non si risolve in un indirizzo")
    kinds = {address_kind(address) for address in addresses}
    if "forbidden" in kinds:
        raise InvalidEndpoint(f"{host} corrisponde a un indirizzo non ammesso")
    if "loopback" in kinds and not allow_loopback:
        raise InvalidEndpoint(f"{host} è questa macchina (loopback): va consentito esplicitamente")
    if "private" in kinds and not allow_private:
        raise InvalidEndpoint(
            f"{host} corrisponde a un indirizzo privato o link-local: va consentito esplicitamente"
        )
    if parts.scheme != "https" and kinds != {"loopback"}:
        raise InvalidEndpoint("solo URL https (http semplice solo su loopback)")
    return Reachable(url, host, tuple(addresses))


def parse_event_types(raw: str | Iterable[str] | None) -> list[str]:
    """``"a,b"`` (or a list) as known event types, in the vocabulary's order; empty = all."""
    if raw is None:
        return []
    given = raw.split(",") if isinstance(raw, str) else list(raw)
    wanted = {item.strip() for item in given if item.strip()}
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise InvalidEndpoint(
            f"tipi di evento sconosciuti: {', '.join(unknown)}; validi: {', '.join(EVENT_TYPES)}"
        )
    return [t for t in EVENT_TYPES if t in wanted]


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signing_secrets(cipher: BodyCipher, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one
    while its overlap lasts."""
    current = [cipher.decrypt(endpoint.secret)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret is not None and until is not None and now < until:
        current.append(cipher.decrypt(endpoint.previous_secret))
    return current


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as shown to the office (no secret), detached from any session."""

    id: int
    url: str
    host: str
    events: tuple[str, ...]
    allow_loopback: bool
    allow_private: bool
    created_at: datetime
    rotating_until: datetime | None
    failing_since: datetime | None
    last_success_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    @property
    def events_label(self) -> str:
        return ", ".join(self.events) if self.events else "tutti"


def endpoint_view(row: WebhookEndpoint, now: datetime | None = None) -> Endpoint:
    now = now or utcnow()
    until = row.previous_secret_until
    return Endpoint(
        id=row.id,
        url=row.url,
        host=host_of(row.url),
        events=tuple(row.events or ()),
        allow_loopback=row.allow_loopback,
        allow_private=row.allow_private,
        created_at=row.created_at,
        rotating_until=until if until is not None and until > now else None,
        failing_since=row.failing_since,
        last_success_at=row.last_success_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
    )


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@dataclass(frozen=True)
class NewSecret:
    """An endpoint and its new secret: shown once, never again."""

    endpoint: Endpoint
    secret: str


@dataclass(frozen=True)
class By:
    """Who changes an endpoint, for the audit trail."""

    actor: str
    user_id: int | None = None
    ip: str | None = None


def _audit(
    session: Session, tenant_id: int, by: By, action: str, endpoint_id: int, detail: dict
) -> None:
    record_audit(
        session,
        tenant_id,
        action,
        actor=by.actor,
        user_id=by.user_id,
        ip=by.ip,
        target_type="webhook_endpoint",
        target_id=endpoint_id,
        detail=detail,
    )


def _load(session: Session, tenant_id: int, endpoint_id: int) -> WebhookEndpoint:
    row = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id
        )
    )
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id} in this office")
    return row


def add_endpoint(
    svc: Services,
    tenant_id: int,
    url: str,
    events: str | Iterable[str] | None,
    *,
    allow_loopback: bool,
    allow_private: bool,
    by: By,
    resolve: Resolver = resolve_host,
) -> NewSecret:
    """Store a checked URL with a new secret; the audit trail names only its host."""
    reachable = check_url(
        url, allow_loopback=allow_loopback, allow_private=allow_private, resolve=resolve
    )
    types = parse_event_types(events)
    secret = new_secret()
    with svc.db.session() as session:
        row = WebhookEndpoint(
            tenant_id=tenant_id,
            url=reachable.url,
            events=types,
            secret=svc.cipher.encrypt(secret),
            allow_loopback=allow_loopback,
            allow_private=allow_private,
        )
        session.add(row)
        session.flush()
        _audit(
            session,
            tenant_id,
            by,
            "webhook.add",
            row.id,
            {
                "host": reachable.host,
                "events": types or "all",
                "allow_loopback": allow_loopback,
                "allow_private": allow_private,
            },
        )
        return NewSecret(endpoint_view(row), secret)


def list_endpoints(svc: Services, tenant_id: int) -> list[Endpoint]:
    with svc.db.read() as session:
        rows = session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id)
            .order_by(WebhookEndpoint.id)
        ).all()
        now = utcnow()
        return [endpoint_view(row, now) for row in rows]


def get_endpoint(svc: Services, tenant_id: int, endpoint_id: int) -> Endpoint:
    with svc.db.read() as session:
        return endpoint_view(_load(session, tenant_id, endpoint_id))


def remove_endpoint(svc: Services, tenant_id: int, endpoint_id: int, *, by: By) -> Endpoint:
    """Delete the endpoint and its delivery log; its events stay for the others."""
    with svc.db.session() as session:
        row = _load(session, tenant_id, endpoint_id)
        removed = endpoint_view(row)
        session.delete(row)
        session.flush()
        _audit(session, tenant_id, by, "webhook.remove", endpoint_id, {"host": removed.host})
        return removed


def rotate_secret(
    svc: Services,
    tenant_id: int,
    endpoint_id: int,
    overlap_hours: float = DEFAULT_OVERLAP_HOURS,
    *,
    by: By,
) -> NewSecret:
    """A new secret; the current one keeps signing for ``overlap_hours`` (0: not at all)."""
    if not 0 <= overlap_hours <= MAX_OVERLAP_HOURS:
        raise InvalidEndpoint(f"la sovrapposizione va da 0 a {MAX_OVERLAP_HOURS:g} ore")
    secret = new_secret()
    now = utcnow()
    with svc.db.session() as session:
        row = _load(session, tenant_id, endpoint_id)
        if overlap_hours > 0:
            row.previous_secret = row.secret
            row.previous_secret_until = now + timedelta(hours=overlap_hours)
        else:
            row.previous_secret, row.previous_secret_until = None, None
        row.secret = svc.cipher.encrypt(secret)
        _audit(
            session,
            tenant_id,
            by,
            "webhook.rotate",
            endpoint_id,
            {"host": host_of(row.url), "overlap_hours": overlap_hours},
        )
        return NewSecret(endpoint_view(row, now), secret)


def enable_endpoint(svc: Services, tenant_id: int, endpoint_id: int, *, by: By) -> Endpoint:
    """Deliver again to an endpoint that was disabled: what waited for it goes first,
    each delivery with a fresh retry window."""
    now = utcnow()
    with svc.db.session() as session:
        row = _load(session, tenant_id, endpoint_id)
        was_disabled = row.disabled_at is not None
        row.disabled_at, row.disabled_reason, row.failing_since = None, None, None
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == row.id,
                WebhookDelivery.status == WebhookDeliveryStatus.PENDING,
            )
            .values(retry_from=now, next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        if was_disabled:
            _audit(session, tenant_id, by, "webhook.enable", row.id, {"host": host_of(row.url)})
        return endpoint_view(row, now)


def disabled_count(session: Session, tenant_id: int) -> int:
    """How many of the office's endpoints are disabled (the console's warning)."""
    return len(
        session.scalars(
            select(WebhookEndpoint.id).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.disabled_at.is_not(None)
            )
        ).all()
    )


def endpoint_hosts(session: Session, tenant_id: int) -> list[str]:
    """The hosts the office's events go to (the register's recipients), each once."""
    urls = session.scalars(
        select(WebhookEndpoint.url)
        .where(WebhookEndpoint.tenant_id == tenant_id)
        .order_by(WebhookEndpoint.id)
    )
    return list(dict.fromkeys(host_of(url) for url in urls))
