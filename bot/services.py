"""The app's parts, built once by the factory and kept in ``app.extensions``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from flask.ctx import AppContext
from redis import Redis
from twilio.request_validator import RequestValidator

from bot.config import encryption_keys, float_list
from bot.conversation.understanding import Reader, read_with_model
from bot.office.directory import TenantDirectory
from bot.runtime.queueing import JobQueue, connect_redis
from bot.runtime.spool import Spool, build_spool
from notify import ConsoleTransport, TwilioTransport, WhatsAppTransport
from notify.operators import OperatorNotifier, PusherNotifier, RedisStreamNotifier
from notify.push import BeamsPublisher, WebPushSender
from storage import BodyCipher, Database
from storage.inbound import InboundWriter

if TYPE_CHECKING:
    from bot.outbound.senders import SenderPool

EXTENSION = "portineria"


@dataclass
class Services:
    config: dict[str, Any]
    db: Database
    cipher: BodyCipher
    redis: Redis
    redis_url: str
    jobs: JobQueue
    transport: WhatsAppTransport
    tenants: TenantDirectory
    request_validator: RequestValidator | None
    notifier: OperatorNotifier
    inbound_writer: InboundWriter
    # Where a delivery goes when the database cannot take it (Redis, else a local file).
    spool: Spool
    # Web Push to operators' devices, signed with the instance's VAPID key.
    push: WebPushSender

    # What a message means: the trained pipeline, or a test's own reader.
    understand: Reader = read_with_model

    # Pushes to operators' devices: Pusher Beams instead of Web Push when configured.
    beams: BeamsPublisher | None = None

    # A worker's sender threads (``portineria worker --concurrency N``, N > 1): the
    # processing job records its replies and hands them over instead of sending them.
    senders: SenderPool | None = None

    # The app's context factory: a job needs the app's context to run
    # (``bot.jobs`` reads ``services()``), and code holding only the parts can open it.
    app_context: Callable[[], AppContext] | None = None

    @property
    def twilio_auth(self) -> tuple[str, str] | None:
        sid, token = self.config.get("TWILIO_ACCOUNT_SID"), self.config.get("TWILIO_AUTH_TOKEN")
        return (sid, token) if sid and token else None


def build_transport(config: dict[str, Any]) -> WhatsAppTransport:
    if config["WHATSAPP_TRANSPORT"] == "twilio":
        if not (config["TWILIO_ACCOUNT_SID"] and config["TWILIO_AUTH_TOKEN"]):
            raise RuntimeError(
                "WHATSAPP_TRANSPORT=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        return TwilioTransport(
            config["TWILIO_ACCOUNT_SID"],
            config["TWILIO_AUTH_TOKEN"],
            api_base_url=config["TWILIO_API_BASE_URL"],
            retry_delays=float_list(config["SEND_RETRY_DELAYS"]),
            connections=int(config["WORKER_CONCURRENCY"]),
        )
    if config["WHATSAPP_TRANSPORT"] == "console":
        return ConsoleTransport()
    raise RuntimeError(f"unknown WHATSAPP_TRANSPORT {config['WHATSAPP_TRANSPORT']!r}")


def build_notifier(config: dict[str, Any], redis: Redis) -> OperatorNotifier:
    if config.get("PUSHER_APP_ID") and config.get("PUSHER_KEY") and config.get("PUSHER_SECRET"):
        return PusherNotifier.from_settings(
            str(config["PUSHER_APP_ID"]),
            config["PUSHER_KEY"],
            config["PUSHER_SECRET"],
            cluster=config.get("PUSHER_CLUSTER"),
            host=config.get("PUSHER_HOST"),
            port=config.get("PUSHER_PORT"),
            ssl=bool(config.get("PUSHER_SSL", True)),
        )
    return RedisStreamNotifier(redis)


def build_beams(config: dict[str, Any]) -> BeamsPublisher | None:
    instance, secret = config.get("PUSHER_BEAMS_INSTANCE_ID"), config.get("PUSHER_BEAMS_SECRET_KEY")
    if not (instance and secret):
        return None
    return BeamsPublisher(
        str(instance),
        str(secret),
        endpoint=config.get("PUSHER_BEAMS_ENDPOINT") or None,
        ca_bundle=config.get("PUSHER_BEAMS_CA_BUNDLE") or None,
    )


POOL_HEADROOM = 8


def init_app(app: Flask) -> Services:
    config = app.config
    # A worker's sender threads each use a connection around a send, beside its own
    # threads (the job, the relay, the sweeper, the scheduler, the CRM and retention
    # loops); a web process opens only the one or two it uses.
    db = Database(
        config["DATABASE_URL"], pool_size=int(config["WORKER_CONCURRENCY"]) + POOL_HEADROOM
    )
    redis_url = config["REDIS_URL"] or "redis://127.0.0.1:6379/0"
    redis = connect_redis(redis_url)
    token = config.get("TWILIO_AUTH_TOKEN")
    jobs = JobQueue(
        redis, config["QUEUE_NAME"], job_timeout=int(config["PROCESSING_LEASE_SECONDS"]) // 2
    )
    svc = Services(
        config=config,
        db=db,
        cipher=BodyCipher(encryption_keys(config)),
        redis=redis,
        redis_url=redis_url,
        jobs=jobs,
        transport=build_transport(config),
        tenants=TenantDirectory(db),
        # No token, no valid signature: webhooks answer 403 rather than fail open.
        request_validator=RequestValidator(token) if token else None,
        notifier=build_notifier(config, redis),
        inbound_writer=InboundWriter(db, timeout=float(config["WEBHOOK_DB_TIMEOUT_SECONDS"])),
        spool=build_spool(config, redis),
        push=WebPushSender(config["VAPID_PRIVATE_KEY"]),
        beams=build_beams(config),
    )
    svc.app_context = app.app_context
    app.extensions[EXTENSION] = svc
    return svc


def services() -> Services:
    return current_app.extensions[EXTENSION]
