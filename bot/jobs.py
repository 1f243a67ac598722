"""RQ job functions: module-level, ids in, the core does the work.

They run inside the worker's app context (see :mod:`bot.runtime.worker`).
"""

from __future__ import annotations

from typing import Any

from bot.services import services


def process_inbound(message_id: int) -> None:
    # Queued by versions before batch jobs: an upgrade finds them still waiting.
    from bot.conversation.engine import process_inbound as run

    run(services(), message_id)


def process_inbound_batch(message_ids: list[int], readings: dict[int, Any] | None = None) -> None:
    from bot.conversation.engine import process_inbound_batch as run

    run(services(), message_ids, readings or {})


def deliver_message(message_id: int) -> None:
    from bot.outbound.send import deliver

    deliver(services(), message_id)


def send_notice(notice_id: int) -> None:
    from bot.office.notices import send_notice as run

    run(services(), notice_id)


def push_to_operators(tenant_id: int, payload: dict[str, Any]) -> None:
    from bot.office.push import push_to_operators as push

    push(services(), tenant_id, payload)
