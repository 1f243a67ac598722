"""Real-time notifications to operators: Pusher Channels, or the app's own stream.

Both carry the same events on the same channel names (``private-tenant-<slug>``,
``private-user-<id>``). Each backend is one class with the whole face the app needs,
so nothing above asks which one it got:

* ``publish(event)``: after a commit, tell the consoles;
* ``browser_settings()``: what the console's script needs to listen;
* ``connect_origins()``: where the browser connects (for the content security policy);
* ``authorise(channel, socket_id)``: sign a private channel (Pusher) or ``None``;
* ``read(channels, cursor)``: the events after ``cursor`` (the stream) or ``None``.

The stream keeps each channel's recent events in a Redis stream and the console
fetches what is new every couple of seconds in short requests: no request stays
open, so a console never holds a web worker that Twilio's webhooks need.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pusher
from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Pusher refuses payloads over 10 KB; ours carry ids and a short summary only.
MAX_PAYLOAD_BYTES = 9_000
PUSHER_BATCH = 10  # events per batch request, Pusher's limit
STREAM_PREFIX = "portineria:events:"
# Enough for a console that was away for a minute in a busy office; older ones are
# on the inbox page anyway.
STREAM_LENGTH = 1000
STREAM_IDLE_SECONDS = 24 * 3600
READ_BATCH = 200
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def tenant_channel(slug: str) -> str:
    return f"private-tenant-{slug}"


def user_channel(user_id: int) -> str:
    return f"private-user-{user_id}"


@dataclass(frozen=True)
class OperatorEvent:
    channels: tuple[str, ...]
    name: str
    data: dict[str, Any]
    # One id for every channel it goes to: a console listening to two channels
    # sees the event once.
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def encoded(self) -> str:
        text = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(text.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"event {self.name} payload too large")
        return text


@dataclass(frozen=True)
class EventBatch:
    """Events after a cursor, oldest first, and the cursor to ask from next time."""

    events: list[dict[str, Any]]
    cursor: str


class OperatorNotifier(Protocol):
    name: str

    def publish(self, event: OperatorEvent) -> None: ...

    def publish_all(self, events: Sequence[OperatorEvent]) -> None:
        """Several events in as few requests as the backend allows."""
        ...

    def browser_settings(self) -> dict[str, str]: ...

    def connect_origins(self) -> list[str]: ...

    def authorise(self, channel: str, socket_id: str) -> dict[str, Any] | None: ...

    def read(self, channels: tuple[str, ...], cursor: str | None) -> EventBatch | None: ...


class PusherNotifier:
    """Pusher Channels: the browser subscribes to Pusher with channels we sign."""

    name = "pusher"

    def __init__(self, client: pusher.Pusher, browser: dict[str, str], origins: list[str]) -> None:
        self.client = client
        self._browser = browser
        self._origins = origins

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
            address = f"{host}:{port}" if port else host
            origins = [
                f"{'wss' if ssl else 'ws'}://{address}",
                f"{'https' if ssl else 'http'}://{address}",
            ]
        else:
            if cluster:
                options["cluster"] = cluster
            region = cluster or "mt1"
            origins = [f"wss://ws-{region}.pusher.com", f"https://sockjs-{region}.pusher.com"]
        browser = {
            "key": key,
            "cluster": cluster or "",
            "host": host or "",
            "port": str(port or ""),
            "tls": "true" if ssl else "false",
            "origins": " ".join(origins),
        }
        return cls(pusher.Pusher(**options), browser, origins)

    def publish(self, event: OperatorEvent) -> None:
        # Sent as the JSON text already checked for size; the SDK passes text through.
        self.client.trigger(list(event.channels), event.name, event.encoded())

    def publish_all(self, events: Sequence[OperatorEvent]) -> None:
        # Pusher's batch endpoint: one channel per entry, PUSHER_BATCH entries a request.
        entries = [
            {"channel": channel, "name": event.name, "data": event.encoded()}
            for event in events
            for channel in event.channels
        ]
        for start in range(0, len(entries), PUSHER_BATCH):
            self.client.trigger_batch(entries[start : start + PUSHER_BATCH])

    def browser_settings(self) -> dict[str, str]:
        return dict(self._browser)

    def connect_origins(self) -> list[str]:
        return list(self._origins)

    def authorise(self, channel: str, socket_id: str) -> dict[str, Any] | None:
        """Pusher's signature for a private channel (the caller checks it is theirs)."""
        signed: dict[str, Any] = self.client.authenticate(channel=channel, socket_id=socket_id)
        return signed

    def read(self, channels: tuple[str, ...], cursor: str | None) -> EventBatch | None:
        return None  # the browser hears Pusher directly


class RedisStreamNotifier:
    """The embedded default: each channel's recent events in a Redis stream, which the
    console reads in short requests (``read``) instead of holding a connection open."""

    name = "stream"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def publish(self, event: OperatorEvent) -> None:
        self.publish_all([event])

    def publish_all(self, events: Sequence[OperatorEvent]) -> None:
        if not events:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for event in events:
                message = json.dumps(
                    {"id": event.id, "event": event.name, "data": json.loads(event.encoded())},
                    ensure_ascii=False,
                    separators=(",", ":"),
                )
                for channel in event.channels:
                    key = STREAM_PREFIX + channel
                    pipe.xadd(key, {"m": message}, maxlen=STREAM_LENGTH, approximate=True)
                    pipe.expire(key, STREAM_IDLE_SECONDS)
            pipe.execute()
        except RedisError:
            log.warning("%d operator event(s) not published: redis unavailable", len(events))

    def browser_settings(self) -> dict[str, str]:
        return {}

    def connect_origins(self) -> list[str]:
        return []

    def authorise(self, channel: str, socket_id: str) -> dict[str, Any] | None:
        return None  # our own endpoint serves only the signed-in operator's channels

    def read(self, channels: tuple[str, ...], cursor: str | None) -> EventBatch:
        """Events on ``channels`` after ``cursor``; with no (or a foreign) cursor, none,
        and the cursor of "now". Raises RedisError when Redis is unreachable."""
        keys = [STREAM_PREFIX + channel for channel in channels]
        positions = _decode_cursor(cursor, len(keys))
        if positions is None:
            return EventBatch([], _encode_cursor(self._latest(keys)))
        answer: Any = self.redis.xread(
            dict(zip(keys, positions, strict=True)),
            count=READ_BATCH,
        )
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for raw_key, entries in answer or []:
            index = keys.index(_text(raw_key))
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                positions[index] = entry_id
                event = _event(fields)
                if event is not None and event["id"] not in found:
                    found[event["id"]] = (entry_id, event)
        ordered = sorted(found.values(), key=lambda item: _sort_key(item[0]))
        return EventBatch([event for _, event in ordered], _encode_cursor(positions))

    def _latest(self, keys: list[str]) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.xrevrange(key, count=1)
        latest = []
        for entries in pipe.execute():
            latest.append(_text(entries[0][0]) if entries else "0-0")
        return latest


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event(fields: dict[Any, Any]) -> dict[str, Any] | None:
    raw = fields.get(b"m") or fields.get("m")
    try:
        event = json.loads(_text(raw)) if raw else None
    except ValueError:
        return None
    return event if isinstance(event, dict) and "id" in event else None


def _sort_key(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence)


def _encode_cursor(positions: list[str]) -> str:
    return "~".join(positions)


def _decode_cursor(cursor: str | None, count: int) -> list[str] | None:
    if not cursor:
        return None
    parts = cursor.split("~")
    if len(parts) != count or not all(_STREAM_ID.match(part) for part in parts):
        return None
    return parts
