"""Plain factory functions and the moves a test makes (sign, post, drain the queue)."""

from __future__ import annotations

import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from bot.office.lifecycle import create_tenant
from bot.runtime.worker import make_rq_worker
from bot.services import Services
from storage.models import Message, Tenant

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


def count_messages(svc: Services, **filters: Any) -> int:
    with svc.db.session() as session:
        query = select(func.count(Message.id))
        for name, value in filters.items():
            query = query.where(getattr(Message, name) == value)
        return int(session.scalar(query) or 0)
