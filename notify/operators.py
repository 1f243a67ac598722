"""Real-time notifications to operators: Pusher Channels, or the app's own stream.

Both carry the same events on the same channel names (``private-tenant-<slug>``,
``private-user-<id>``); the console subscribes to whichever is configured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import pusher
from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Pusher refuses payloads over 10 KB; ours carry ids and a short summary only.
MAX_PAYLOAD_BYTES = 9_000
STREAM_PREFIX = "portineria:events:"


def tenant_channel(slug: str) -> str:
    return f"private-tenant-{slug}"


def user_channel(user_id: int) -> str:
    return f"private-user-{user_id}"


@dataclass(frozen=True)
class OperatorEvent:
    channels: tuple[str, ...]
    name: str
    data: dict[str, Any]

    def encoded(self) -> str:
        text = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(text.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"event {self.name} payload too large")
        return text


class OperatorNotifier(Protocol):
    name: str

    def publish(self, event: OperatorEvent) -> None: ...


class PusherNotifier:
    name = "pusher"

    def __init__(self, client: pusher.Pusher) -> None:
        self.client = client

    @classmethod
    def from_settings(
        cls,
        app_id: str,
        key: str,
        secret: str,
        *,
        cluster: str | None = None,
        host: str | None = None,
        port: int | None = None,
        ssl: bool = True,
    ) -> PusherNotifier:
        options: dict[str, Any] = {
            "app_id": app_id,
            "key": key,
            "secret": secret,
            "ssl": ssl,
            "timeout": 5,
        }
        if host:
            options["host"] = host
            if port:
                options["port"] = port
        elif cluster:
            options["cluster"] = cluster
        return cls(pusher.Pusher(**options))

    def publish(self, event: OperatorEvent) -> None:
        # Sent as the JSON text already checked for size; the SDK passes text through.
        self.client.trigger(list(event.channels), event.name, event.encoded())

    def authenticate(self, channel: str, socket_id: str) -> dict[str, Any]:
        return self.client.authenticate(channel=channel, socket_id=socket_id)  # type: ignore[no-any-return]


class RedisStreamNotifier:
    """The embedded default: Redis pub/sub, relayed to browsers as server-sent events."""

    name = "stream"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def publish(self, event: OperatorEvent) -> None:
        message = f'{{"event":{json.dumps(event.name)},"data":{event.encoded()}}}'
        try:
            pipe = self.redis.pipeline()
            for channel in event.channels:
                pipe.publish(STREAM_PREFIX + channel, message)
            pipe.execute()
        except RedisError:
            log.warning("operator event %s not published: redis unavailable", event.name)
