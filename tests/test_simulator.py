"""The dev simulator: it writes through the real, signed webhook over HTTP, and it
shows only the conversations of the numbers this browser wrote from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import RESIDENT, add_message, drain, make_contact, make_conversation
from servers import WsgiServer, free_port

from bot.services import Services
from storage.models import Tenant

SIMULATED = "+393339990001"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """Dev mode, with the public address where the app itself is served."""
    app_config.update(DEV_MODE=True, PUBLIC_BASE_URL=f"http://127.0.0.1:{free_port()}")
    return app_config


@pytest.fixture
def served(app: Flask) -> Iterator[WsgiServer]:
    port = int(app.config["PUBLIC_BASE_URL"].rsplit(":", 1)[1])
    with WsgiServer(app, port=port) as server:
        yield server


def thread(client: FlaskClient, phone: str) -> dict[str, Any]:
    response = client.get("/dev/simulator/messages", query_string={"phone": phone})
    assert response.status_code == 200
    return response.get_json()  # type: ignore[no-any-return]


def write(client: FlaskClient, phone: str, body: str) -> None:
    response = client.post("/dev/simulator/send", json={"phone": phone, "body": body})
    assert response.status_code == 200 and response.get_json()["status"] == 200


@pytest.fixture
def residents_conversation(svc: Services, tenant: Tenant) -> str:
    conversation = make_conversation(svc, tenant, make_contact(svc, tenant, RESIDENT))
    add_message(svc, conversation, "Il mio IBAN è IT60X0542811101000000123456")
    return "IBAN"


def test_another_contacts_conversation_is_not_served(client, residents_conversation):
    answer = thread(client, RESIDENT)

    assert answer == {"messages": [], "consent": "none", "mode": None}


def test_the_simulator_shows_the_conversation_of_its_own_number(client, svc, tenant, served):
    write(client, SIMULATED, "Buongiorno")
    drain(svc)

    bodies = [m["body"] for m in thread(client, SIMULATED)["messages"]]
    assert bodies[0] == "Buongiorno" and len(bodies) > 1  # the bot answered
    assert thread(client.application.test_client(), SIMULATED)["messages"] == []


def test_writing_from_a_contacts_number_does_not_reveal_what_came_before(
    client, svc, served, residents_conversation
):
    write(client, RESIDENT, "Buongiorno")
    drain(svc)

    bodies = [m["body"] for m in thread(client, RESIDENT)["messages"]]
    assert "Buongiorno" in bodies
    assert not any(residents_conversation in body for body in bodies)
