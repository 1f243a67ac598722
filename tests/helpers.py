"""Plain factory functions and the moves a test makes (sign, post, drain the queue)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from servers import wait_until
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from bot.office.accounts import create_user
from bot.office.actor import Actor
from bot.office.lifecycle import create_tenant
from bot.privacy.rights import write_export
from bot.runtime.devstack import stop_process
from bot.runtime.worker import make_rq_worker
from bot.services import Services
from storage.models import AuditEvent, Contact, Conversation, Message, Tenant, Ticket, User, utcnow

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_BASE_URL = "https://portineria.example.it"
OFFICE_NUMBER = "+390212345678"
RESIDENT = "+393331234567"


def make_tenant(
    svc: Services, *, slug: str = "studio-rossi", number: str = OFFICE_NUMBER, **settings: Any
) -> Tenant:
    tenant = create_tenant(svc, name="Studio Rossi", whatsapp_number=number, slug=slug)
    if settings:
        with svc.db.session() as session:
            stored = session.get(Tenant, tenant.id)
            assert stored is not None
            stored.settings = {**stored.settings, **settings}
        tenant.settings = {**tenant.settings, **settings}
    return tenant


def inbound_params(
    body: str = "Buongiorno",
    *,
    sender: str = RESIDENT,
    to: str = OFFICE_NUMBER,
    sid: str | None = None,
    **extra: str,
) -> dict[str, str]:
    params = {
        "MessageSid": sid or "SM" + uuid.uuid4().hex,
        "AccountSid": ACCOUNT_SID,
        "From": f"whatsapp:{sender}",
        "To": f"whatsapp:{to}",
        "Body": body,
        "NumMedia": "0",
        "WaId": sender.lstrip("+"),
        "ProfileName": "Mario",
        "ApiVersion": "2010-04-01",
    }
    params.update(extra)
    return params


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def post_signed(
    client: FlaskClient, path: str, params: dict[str, str], **kwargs: Any
) -> TestResponse:
    signature = sign(PUBLIC_BASE_URL + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature}, **kwargs)


def send_inbound(client: FlaskClient, body: str = "Buongiorno", **kwargs: Any) -> dict[str, str]:
    params = inbound_params(body, **kwargs)
    response = post_signed(client, "/webhooks/twilio/messages", params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return params


def drain(svc: Services) -> None:
    """Run every queued job in this process, as ``portineria worker --burst`` would."""
    assert svc.app_context is not None
    svc.jobs.relay_waiting()
    with svc.app_context():
        worker = make_rq_worker(svc)
        try:
            worker.work(burst=True, logging_level="WARNING")
        finally:
            worker.connection.close()


# -- a real ``portineria worker`` process ------------------------------------------------

_WORKER_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "ENCRYPTION_KEYS",
    "PUBLIC_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_BASE_URL",
    "WHATSAPP_TRANSPORT",
    "MEDIA_ROOT",
    "QUEUE_NAME",
)


def worker_env(app_config: dict[str, Any], **settings: object) -> dict[str, str]:
    """The environment of a worker process on the test's servers: short leases, a fast
    sweeper, and ``settings`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "TWILIO_"))}
    env.update({key: str(app_config[key]) for key in _WORKER_SETTINGS})
    env.update(PROCESSING_LEASE_SECONDS="4", SWEEP_INTERVAL_SECONDS="0.5", SWEEP_GRACE_SECONDS="0")
    env.update({key: str(value) for key, value in settings.items()})
    return env


def start_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """``portineria worker`` as its own process; its log lines go to ``log`` if given."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], env=env, stdout=out, stderr=out
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 15) -> int | None:
    """SIGTERM (a warm shutdown), SIGKILL if it outlasts ``timeout``; its exit status."""
    stop_process(process, timeout)
    return process.wait(timeout=timeout)


def kill_worker_mid_send(client: FlaskClient, twilio: Any, env: dict[str, str]) -> None:
    """A real worker takes a new message and dies by SIGKILL while Twilio, which has
    the reply, holds its answer back (the reply is recorded as ``sending``, no SID)."""
    twilio.delay_next(3.0)
    send_inbound(client, "Buongiorno")
    worker = start_worker(env)
    try:
        # Recorded means Twilio has the whole request: it holds only the answer back.
        assert wait_until(lambda: len(twilio.messages) >= 1, timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()


@contextmanager
def running_worker(
    env: dict[str, str], log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(env, log)
    try:
        yield process
    finally:
        stop_worker(process)


def count_messages(svc: Services, **filters: Any) -> int:
    with svc.db.session() as session:
        query = select(func.count(Message.id))
        for name, value in filters.items():
            query = query.where(getattr(Message, name) == value)
        return int(session.scalar(query) or 0)


# -- console: accounts, records, sign-in ------------------------------------------------

PASSWORD = "password-sicura-123"


def make_user(svc: Services, tenant: Tenant, email: str, role: str = "operator") -> User:
    with svc.db.session() as session:
        return create_user(session, tenant, email, role, PASSWORD)


def make_contact(
    svc: Services,
    tenant: Tenant,
    phone: str = RESIDENT,
    *,
    consent: str = "granted",
    legal_basis: str | None = "consent",
) -> Contact:
    now = utcnow()
    with svc.db.session() as session:
        contact = Contact(
            tenant_id=tenant.id,
            wa_id=phone.lstrip("+"),
            phone=phone,
            kind="condomino",
            legal_basis=legal_basis,
            consent=consent,
            source="whatsapp_inbound",
            last_contact_at=now,
            last_inbound_at=now,
        )
        session.add(contact)
    return contact


def make_conversation(
    svc: Services, tenant: Tenant, contact: Contact | None = None, **fields: Any
) -> Conversation:
    contact = contact or make_contact(svc, tenant)
    values: dict[str, Any] = {
        "mode": "human",
        "priority": "normal",
        "needs_attention": True,
        "status": "open",
        "clarifications": 0,
        "last_message_at": utcnow(),
        "human_since": utcnow(),
    }
    values.update(fields)
    with svc.db.session() as session:
        conversation = Conversation(tenant_id=tenant.id, contact_id=contact.id, **values)
        session.add(conversation)
    return conversation


def make_ticket(svc: Services, conversation: Conversation, **fields: Any) -> Ticket:
    """An open fault ticket of the conversation, as the bot files one."""
    values: dict[str, Any] = {"kind": "guasto", "intent": "guasto", "status": "open"}
    values.update(fields)
    with svc.db.session() as session:
        ticket = Ticket(tenant_id=conversation.tenant_id, conversation_id=conversation.id, **values)
        session.add(ticket)
    return ticket


def add_message(
    svc: Services, conversation: Conversation, body: str, *, direction: str = "in", **fields: Any
) -> Message:
    fields.setdefault("status", "processed" if direction == "in" else "delivered")
    with svc.db.session() as session:
        message = Message(
            tenant_id=conversation.tenant_id,
            conversation_id=conversation.id,
            contact_id=conversation.contact_id,
            direction=direction,
            body=svc.cipher.encrypt(body),
            **fields,
        )
        session.add(message)
    return message


def reload(svc: Services, conversation: Conversation) -> Conversation:
    with svc.db.session() as session:
        fresh = session.get(Conversation, conversation.id)
        assert fresh is not None
        return fresh


def audit_actions(svc: Services, tenant: Tenant) -> list[str]:
    with svc.db.session() as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.tenant_id == tenant.id)
                .order_by(AuditEvent.id)
            )
        )


def actor_for(user: User, ip: str = "127.0.0.1") -> Actor:
    return Actor(user_id=user.id, tenant_id=user.tenant_id, role=user.role, ip=ip)


def csrf_token(client: FlaskClient, path: str = "/console/login") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(client: FlaskClient, email: str, password: str = PASSWORD, studio: str = "") -> Any:
    token = csrf_token(client)
    return client.post(
        "/console/login",
        data={"csrf_token": token, "email": email, "password": password, "studio": studio},
    )


def post_form(
    client: FlaskClient, path: str, data: dict[str, str] | None = None, page: str = "/console/"
) -> Any:
    return client.post(
        path, data={"csrf_token": csrf_token(client, page), **(data or {})}, follow_redirects=True
    )


def export_lines(svc: Services, tenant: Tenant, contact_id: int | None = None) -> list[Any]:
    """The records of an export (JSON Lines), one dictionary per line."""
    out = io.StringIO()
    write_export(svc, tenant, contact_id, out, actor="test")
    return parse_lines(out.getvalue())


def parse_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def records(lines: list[Any], kind: str) -> list[Any]:
    """The export's records of one kind: contact, consent_event_of_erased_contact, ..."""
    return [line for line in lines if line["record"] == kind]
