"""The only place that reads configuration: defaults, then the environment, then overrides.

Secrets that the embedded default needs (``SECRET_KEY``, ``ENCRYPTION_KEYS``, and the
Web Push signing key ``VAPID_PRIVATE_KEY``) are generated once into the instance
folder, so a restart keeps sessions, can still decrypt what it stored, and browsers
stay subscribed (a subscription is bound to the key it was made with).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from notify.push import generate_vapid_key
from storage.crypto import generate_key
from storage.files import private_folder

DEFAULTS: dict[str, Any] = {
    "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
    "TWILIO_API_BASE_URL": "https://api.twilio.com",
    "TWILIO_ACCOUNT_SID": None,
    "TWILIO_AUTH_TOKEN": None,
    "WHATSAPP_TRANSPORT": None,
    "DATABASE_URL": None,
    # Media files; by default in the instance folder.
    "MEDIA_ROOT": None,
    "REDIS_URL": None,
    "PUSHER_APP_ID": None,
    "PUSHER_KEY": None,
    "PUSHER_SECRET": None,
    "PUSHER_CLUSTER": None,
    "PUSHER_HOST": None,
    "PUSHER_PORT": None,
    "PUSHER_SSL": True,
    "ENCRYPTION_KEYS": None,
    # Twilio caps a WhatsApp webhook far below this; anything larger is not Twilio.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "QUEUE_NAME": "portineria",
    # How long a worker may hold an inbound message before the sweeper hands it on.
    "PROCESSING_LEASE_SECONDS": 120,
    "SWEEP_INTERVAL_SECONDS": 5.0,
    # A stored message is swept only if this old, so the webhook's hand-off wins.
    "SWEEP_GRACE_SECONDS": 10.0,
    "MAX_PROCESSING_ATTEMPTS": 5,
    # An outbound message still pending or sending this long is stuck (/readyz); a
    # sending one is then looked up in Twilio's list, never sent again by itself.
    # Keep it above the longest send (the transport's timeouts and retries, ~45 s).
    "SENDING_LEASE_SECONDS": 120.0,
    # /readyz answers 503 once a stored inbound message has waited this long.
    "READY_MAX_BACKLOG_SECONDS": 120.0,
    # The whole download of one media item (redirects included) must end within this.
    "MEDIA_FETCH_DEADLINE_SECONDS": 30.0,
    "MEDIA_MAX_BYTES": 16 * 1024 * 1024,
    "MEDIA_ALLOWED_TYPES": (
        "image/jpeg,image/png,image/webp,image/gif,application/pdf,"
        "audio/ogg,audio/mpeg,audio/amr,audio/mp4,video/mp4,video/3gpp,text/vcard"
    ),
    # An operator's attachment (images and PDF: WhatsApp's documents and photos), and
    # how long the signed address Twilio fetches it from stays valid.
    "ATTACHMENT_MAX_BYTES": 5 * 1024 * 1024,
    "ATTACHMENT_URL_SECONDS": 3600,
    "SEND_RETRY_DELAYS": "0.5,1,2",
    "DEV_MODE": False,
    # A conversation held by an operator goes back to the bot after this long idle.
    "HUMAN_MODE_TIMEOUT_MINUTES": 30,
    # Workers read handed-off messages before queueing them; emergencies jump the queue.
    "PRIORITY_LANE": True,
    # Sender threads per worker (``portineria worker --concurrency``): sends in flight
    # at once, so a slow Twilio costs wall time, not processing. 1: the job sends inline.
    "WORKER_CONCURRENCY": 32,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    # How many reverse proxies stand in front of the app and set X-Forwarded-For and
    # -Proto: the client's address (sign-in limits, the audit trail) comes from them.
    # 0 trusts no header. Signatures never depend on it (they use PUBLIC_BASE_URL).
    "TRUSTED_PROXIES": 0,
    # Web Push to operators' devices: the VAPID key (base64url P-256 scalar; generated
    # into the instance folder when unset) and the contact push services may write to.
    "VAPID_PRIVATE_KEY": None,
    # Who push services may contact about our pushes (mailto: or https:); unset, the
    # office's first admin's address.
    "VAPID_SUBJECT": None,
    # Push endpoints must be HTTPS; a push service on loopback only for tests and dev.
    "PUSH_ALLOW_LOOPBACK_ENDPOINTS": False,
    # Pusher Beams, used instead of Web Push when both are set. The CA bundle is for a
    # private CA (or a test's own): the Beams SDK always speaks HTTPS.
    "PUSHER_BEAMS_INSTANCE_ID": None,
    "PUSHER_BEAMS_SECRET_KEY": None,
    "PUSHER_BEAMS_ENDPOINT": None,
    "PUSHER_BEAMS_CA_BUNDLE": None,
    # A delivery the database cannot take within this many seconds (write lock, busy
    # wait, statement) is spooled instead: well under Twilio's 15 s wait.
    "WEBHOOK_DB_TIMEOUT_SECONDS": 3.0,
    # The spool: a Redis list when Redis keeps an append-only file ("auto"; "on" trusts
    # Redis without asking, "off" never uses it), else one file per web process here
    # (default: instance/spool), each at most this many bytes; past that, 503.
    "SPOOL_REDIS": "auto",
    "SPOOL_REDIS_MAX_ENTRIES": 100_000,
    "SPOOL_DIR": None,
    "SPOOL_FILE_MAX_BYTES": 64 * 1024 * 1024,
    # How often workers and web processes try to move spooled deliveries into the
    # database; and the Retry-After of a 503 when no spool could keep a delivery.
    "SPOOL_DRAIN_INTERVAL_SECONDS": 2.0,
    "SPOOL_RETRY_AFTER_SECONDS": 5,
    # Outbound webhooks to the offices' CRMs (bot.crm): the timeout of one attempt; how
    # long a delivery is retried, which is also how long an endpoint may keep failing
    # before it is disabled; the backoff's first and longest wait; how often the
    # dispatcher looks for due deliveries when nothing woke it; sends in parallel; and a
    # CA file to trust for the CRMs' certificates (a private CA), besides the system's.
    "CRM_TIMEOUT_SECONDS": 10.0,
    "CRM_RETRY_WINDOW_SECONDS": 24 * 3600.0,
    "CRM_BACKOFF_SECONDS": 10.0,
    "CRM_BACKOFF_MAX_SECONDS": 3600.0,
    "CRM_POLL_SECONDS": 1.0,
    "CRM_PARALLEL_SENDS": 8,
    "CRM_CA_BUNDLE": None,
}

_ENV_KEYS = [
    k
    for k in DEFAULTS
    if k not in {"MAX_CONTENT_LENGTH", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE"}
] + ["SECRET_KEY"]
_BOOLS = {"PUSHER_SSL", "DEV_MODE", "PUSH_ALLOW_LOOPBACK_ENDPOINTS", "PRIORITY_LANE"}
_INTS = {
    "SPOOL_REDIS_MAX_ENTRIES",
    "SPOOL_FILE_MAX_BYTES",
    "SPOOL_RETRY_AFTER_SECONDS",
    "PROCESSING_LEASE_SECONDS",
    "MAX_PROCESSING_ATTEMPTS",
    "MEDIA_MAX_BYTES",
    "ATTACHMENT_MAX_BYTES",
    "ATTACHMENT_URL_SECONDS",
    "PUSHER_PORT",
    "HUMAN_MODE_TIMEOUT_MINUTES",
    "TRUSTED_PROXIES",
    "CRM_PARALLEL_SENDS",
    "WORKER_CONCURRENCY",
}
_FLOATS = {
    "SWEEP_INTERVAL_SECONDS",
    "SWEEP_GRACE_SECONDS",
    "SENDING_LEASE_SECONDS",
    "READY_MAX_BACKLOG_SECONDS",
    "MEDIA_FETCH_DEADLINE_SECONDS",
    "WEBHOOK_DB_TIMEOUT_SECONDS",
    "SPOOL_DRAIN_INTERVAL_SECONDS",
    "CRM_TIMEOUT_SECONDS",
    "CRM_RETRY_WINDOW_SECONDS",
    "CRM_BACKOFF_SECONDS",
    "CRM_BACKOFF_MAX_SECONDS",
    "CRM_POLL_SECONDS",
}


def _coerce(key: str, value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    if key in _BOOLS:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if key in _INTS:
        return int(value)
    if key in _FLOATS:
        return float(value)
    return value


def _instance_secret(instance: Path, name: str, make: Any) -> str:
    path = instance / name
    if path.exists():
        return path.read_text().strip()
    private_folder(instance)
    value = make()
    # Created private: these files are keys.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def instance_folder(environ: Mapping[str, str] | None = None) -> str | None:
    """Where keys, the SQLite file and media live: ``PORTINERIA_INSTANCE_PATH``, or
    ``None`` for Flask's default (``instance/`` beside the package)."""
    env = os.environ if environ is None else environ
    folder = env.get("PORTINERIA_INSTANCE_PATH")
    return os.path.abspath(folder) if folder else None


def load_config(
    instance_path: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    for key in _ENV_KEYS:
        if env.get(key):
            config[key] = env[key]
    config.update(overrides or {})
    config = {key: _coerce(key, value) for key, value in config.items()}

    instance = Path(instance_path)
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _instance_secret(
            instance, "secret_key", lambda: secrets.token_hex(32)
        )
    if not config.get("ENCRYPTION_KEYS"):
        config["ENCRYPTION_KEYS"] = _instance_secret(instance, "encryption_keys", generate_key)
    if not config.get("VAPID_PRIVATE_KEY"):
        config["VAPID_PRIVATE_KEY"] = _instance_secret(
            instance, "vapid_private_key", generate_vapid_key
        )
    if not config.get("DATABASE_URL"):
        # The folder of the keys, the database and the media: its owner's only.
        private_folder(instance)
        config["DATABASE_URL"] = f"sqlite:///{instance / 'portineria.db'}"
    if not config.get("WHATSAPP_TRANSPORT"):
        has_credentials = config["TWILIO_ACCOUNT_SID"] and config["TWILIO_AUTH_TOKEN"]
        config["WHATSAPP_TRANSPORT"] = "twilio" if has_credentials else "console"
    config["PUBLIC_BASE_URL"] = str(config["PUBLIC_BASE_URL"]).rstrip("/")
    config["MEDIA_ROOT"] = config.get("MEDIA_ROOT") or str(instance / "media")
    config["SPOOL_DIR"] = config.get("SPOOL_DIR") or str(instance / "spool")
    if str(config["SPOOL_REDIS"]).lower() not in {"auto", "on", "off"}:
        raise ValueError("SPOOL_REDIS must be auto, on or off")
    config["SPOOL_REDIS"] = str(config["SPOOL_REDIS"]).lower()
    return config


def encryption_keys(config: Mapping[str, Any]) -> list[str]:
    return [k.strip() for k in str(config["ENCRYPTION_KEYS"]).split(",") if k.strip()]


def float_list(value: str | list[float]) -> list[float]:
    if isinstance(value, list):
        return value
    return [float(v) for v in value.split(",") if v.strip()]
