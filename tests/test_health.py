"""Probes: liveness, and readiness with the inbound backlog operators alert on."""

from __future__ import annotations

import pytest
from helpers import send_inbound

pytestmark = pytest.mark.usefixtures("tenant")


def test_ready_reports_the_messages_waiting_for_a_worker(client, svc):
    send_inbound(client, "Buongiorno")
    send_inbound(client, "Il cancello non si apre")
    svc.jobs.relay(batch=1)

    answer = client.get("/readyz")

    assert answer.status_code == 200
    assert answer.get_json()["checks"] == {"database": "ok", "redis": "ok"}
    assert answer.get_json()["backlog"] == {"handed_off": 1, "queued": 1}


def test_ready_without_redis_is_still_ready_and_says_so(client, redis_server):
    redis_server.stop()
    try:
        answer = client.get("/readyz")
    finally:
        redis_server.start()

    assert answer.status_code == 200
    assert answer.get_json()["checks"]["redis"] == "unavailable"
    assert answer.get_json()["backlog"] == {}
