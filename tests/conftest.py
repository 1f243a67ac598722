"""Fixtures for real servers: Redis, PostgreSQL (where it starts), a fake Twilio
REST API, a fake Pusher, a Web Push service and a CRM webhook receiver, all on
127.0.0.1; and the app built on them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fake_crm import FakeCrmReceiver
from fake_pusher import FakePusher
from fake_twilio import FakeTwilio
from fake_webpush import FakePushService
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE_URL, login, make_tenant, make_user
from readers import KeywordReader
from servers import PostgresServer, RedisServer

from bot import create_app
from bot.services import Services, services
from notify.push import generate_vapid_key
from storage.migrate import upgrade
from storage.models import Tenant, User

VAPID_PRIVATE_KEY = generate_vapid_key()
# Playwright's expect() gives up after 5 s; a page updated by the worker and the live
# stream takes longer than that on a loaded 2-core CI machine.
BROWSER_ASSERTION_TIMEOUT_MS = 15_000


@pytest.fixture(scope="session", autouse=True)
def patient_browser_assertions() -> None:
    try:
        from playwright.sync_api import expect
    except ImportError:  # the browser tests skip themselves then
        return
    expect.set_options(timeout=BROWSER_ASSERTION_TIMEOUT_MS)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    if not PostgresServer.available():
        yield None
        return
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite by default; parametrize indirectly with "postgresql" to run on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'portineria.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    if server is None:
        pytest.skip("no PostgreSQL server can be started here")
    name = "t_" + uuid.uuid4().hex[:12]
    yield server.create_database(name)
    server.drop_database(name)


@pytest.fixture(scope="session")
def fake_twilio_server() -> Iterator[FakeTwilio]:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture
def twilio(fake_twilio_server: FakeTwilio) -> FakeTwilio:
    fake_twilio_server.reset()
    return fake_twilio_server


@pytest.fixture(scope="session")
def fake_pusher_server() -> Iterator[FakePusher]:
    with FakePusher("4242", "test-key", "test-secret") as fake:
        yield fake


@pytest.fixture
def pusher_fake(fake_pusher_server: FakePusher) -> FakePusher:
    fake_pusher_server.reset()
    return fake_pusher_server


@pytest.fixture(scope="session")
def fake_webpush_server() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


@pytest.fixture
def push_service(fake_webpush_server: FakePushService) -> FakePushService:
    """The session's Web Push service, emptied: no subscriptions, deliveries or faults."""
    fake_webpush_server.reset()
    return fake_webpush_server


@pytest.fixture(scope="session")
def fake_crm_server() -> Iterator[FakeCrmReceiver]:
    with FakeCrmReceiver(secrets=["crm-test-secret"]) as receiver:
        yield receiver


@pytest.fixture
def crm(fake_crm_server: FakeCrmReceiver) -> FakeCrmReceiver:
    """The session's CRM receiver, emptied and listening; sign with ``crm.secrets[0]``."""
    fake_crm_server.up()  # a test may have left it down()
    fake_crm_server.reset()
    return fake_crm_server


@pytest.fixture
def app_config_extra(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Per-test settings: parametrize indirectly with a dict of overrides."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def app_config(
    database_url: str,
    redis_url: str,
    twilio: FakeTwilio,
    tmp_path: Path,
    app_config_extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret-key",
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio.base_url,
        "WHATSAPP_TRANSPORT": "twilio",
        "SEND_RETRY_DELAYS": "0.05,0.1,0.2",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "QUEUE_NAME": "test",
        "PUSHER_APP_ID": None,
        # Given, so a test run writes no key into the checkout's instance folder.
        "VAPID_PRIVATE_KEY": VAPID_PRIVATE_KEY,
        **app_config_extra,
    }


@pytest.fixture
def app(app_config: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Flask]:
    application = create_app(app_config)
    with application.app_context():
        upgrade(services().db.engine)
    if request.node.get_closest_marker("real_model") is None:
        # Engine behaviour is tested on plain rules; the trained model has its own tests.
        application.extensions["portineria"].understand = KeywordReader()
    yield application
    svc: Services = application.extensions["portineria"]
    svc.db.dispose()
    svc.redis.close()


@pytest.fixture
def svc(app: Flask) -> Services:
    """The app's parts. No app context is held for the test: each request the test
    makes gets its own, as in production (a held one would share ``g``, and with it
    the logged-in user and the CSRF token, across requests)."""
    return app.extensions["portineria"]  # type: ignore[no-any-return]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def tenant(svc: Services) -> Tenant:
    return make_tenant(svc)


@pytest.fixture
def operator(svc: Services, tenant: Tenant) -> User:
    return make_user(svc, tenant, "anna@studio-rossi.it")


@pytest.fixture
def signed_in(client: FlaskClient, operator: User) -> FlaskClient:
    """The client, signed in to the console as ``operator``."""
    assert login(client, operator.email).status_code == 302
    return client
