"""Push to operators' devices: the browser's subscription, Web Push through a local push
service that checks VAPID and decrypts, Pusher Beams over HTTPS, the installable console."""

from __future__ import annotations

import json
import re
import stat

import pytest
from fake_beams import FakeBeams
from fake_webpush import FakePushService
from helpers import (
    OFFICE_NUMBER,
    RESIDENT,
    audit_actions,
    csrf_token,
    drain,
    login,
    make_user,
    send_inbound,
)
from sqlalchemy import select

from bot.config import load_config
from bot.conversation.alerts import emergency_payload
from bot.conversation.understanding import Reading
from bot.office.push import push_to_operators
from intents.prediction import Entity
from notify.push import vapid_public_key
from storage.models import AuditEvent, PushSubscription, User

LOOPBACK = {"PUSH_ALLOW_LOOPBACK_ENDPOINTS": True}
GAS = "C'è puzza di gas in cantina, via Roma 12"


def subscribe_json(
    client, subscription, *, token: str | None = None, path="/console/push/subscribe"
):
    headers = {"X-Requested-With": "fetch"}
    if token is not False:
        headers["X-CSRFToken"] = token or csrf_token(client, "/console/")
    return client.post(path, json=subscription, headers=headers)


def signed_in(svc, tenant, client, email="anna@studio-rossi.it", role="operator") -> User:
    user = make_user(svc, tenant, email, role)
    login(client, email)
    return user


def subscriptions(svc) -> list[PushSubscription]:
    with svc.db.read() as session:
        return list(session.scalars(select(PushSubscription).order_by(PushSubscription.id)))


def last_audit(svc, action: str) -> AuditEvent:
    with svc.db.read() as session:
        return session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc())
        ).first()


def device_for(svc, push_service: FakePushService, user: User) -> dict:
    """A browser subscription of ``user``, stored as the console would store it."""
    subscription = push_service.new_subscription(application_server_key=svc.push.public_key)
    with svc.db.session() as session:
        session.add(
            PushSubscription(
                tenant_id=user.tenant_id,
                user_id=user.id,
                endpoint=subscription["endpoint"],
                p256dh=subscription["keys"]["p256dh"],
                auth=subscription["keys"]["auth"],
                failures=0,
            )
        )
    return subscription


def read_with_place(text: str) -> Reading:
    start = text.find("via Roma 12")
    entities = (Entity("ADDRESS", "via Roma 12", start, start + 11),) if start >= 0 else ()
    return Reading("emergenza", 1.0, "gas_smell", entities=entities, model_version="test")


# -- keys -----------------------------------------------------------------------------------


def test_the_vapid_key_is_generated_once_into_the_instance_folder(tmp_path):
    first = load_config(str(tmp_path), {}, environ={})["VAPID_PRIVATE_KEY"]
    again = load_config(str(tmp_path), {}, environ={})["VAPID_PRIVATE_KEY"]

    assert first == again
    key_file = tmp_path / "vapid_private_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(vapid_public_key(first)) == 87  # 65 bytes, base64url without padding


def test_the_environment_gives_the_vapid_key_and_subject(tmp_path):
    other = load_config(str(tmp_path / "a"), {}, environ={})["VAPID_PRIVATE_KEY"]
    config = load_config(
        str(tmp_path / "b"),
        {},
        environ={"VAPID_PRIVATE_KEY": other, "VAPID_SUBJECT": "mailto:ops@studio.it"},
    )

    assert config["VAPID_PRIVATE_KEY"] == other
    assert config["VAPID_SUBJECT"] == "mailto:ops@studio.it"
    assert not (tmp_path / "b" / "vapid_private_key").exists()


def test_the_console_page_carries_the_public_key_and_the_manifest(svc, tenant, client):
    signed_in(svc, tenant, client)

    page = client.get("/console/").get_data(as_text=True)

    assert f'data-push-key="{svc.push.public_key}"' in page
    assert 'rel="manifest" href="/console/manifest.webmanifest"' in page
    assert client.get("/console/push/key").get_json()["key"] == svc.push.public_key


# -- subscribing ----------------------------------------------------------------------------


@pytest.mark.parametrize("app_config_extra", [LOOPBACK], indirect=True)
def test_a_signed_in_operator_subscribes_their_browser(svc, tenant, client, push_service):
    user = signed_in(svc, tenant, client)
    browser = push_service.new_subscription(application_server_key=svc.push.public_key)

    response = subscribe_json(client, browser)

    assert response.status_code == 201, response.get_data(as_text=True)
    (stored,) = subscriptions(svc)
    assert (stored.user_id, stored.tenant_id, stored.endpoint) == (
        user.id,
        tenant.id,
        browser["endpoint"],
    )
    assert "push.subscribe" in audit_actions(svc, tenant)


@pytest.mark.parametrize("app_config_extra", [LOOPBACK], indirect=True)
def test_subscribing_again_from_the_same_browser_keeps_one_row_for_the_new_operator(
    svc, tenant, client, app, push_service
):
    signed_in(svc, tenant, client)
    browser = push_service.new_subscription()
    subscribe_json(client, browser)
    colleague_client = app.test_client()
    colleague = signed_in(svc, tenant, colleague_client, "bruno@studio-rossi.it")

    assert subscribe_json(colleague_client, browser).status_code == 201

    (stored,) = subscriptions(svc)
    assert stored.user_id == colleague.id


@pytest.mark.parametrize("app_config_extra", [LOOPBACK], indirect=True)
def test_a_subscription_without_the_csrf_token_is_refused(svc, tenant, client, push_service):
    signed_in(svc, tenant, client)

    response = subscribe_json(client, push_service.new_subscription(), token=False)

    assert response.status_code == 400
    assert subscriptions(svc) == []


def test_subscribing_needs_a_signed_in_operator(client, tenant):
    token = csrf_token(client, "/console/login")  # a valid token, but nobody signed in

    response = client.post(
        "/console/push/subscribe",
        json={"endpoint": "https://fcm.googleapis.com/fcm/send/x", "keys": {}},
        headers={"X-Requested-With": "fetch", "X-CSRFToken": token},
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        {"endpoint": "http://push.example.com/x"},  # not HTTPS
        {"endpoint": "ftp://push.example.com/x"},
        {"endpoint": "https://" + "a" * 1100},
        {"keys": {"p256dh": "bm90IGEga2V5", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},
        {"keys": {"auth": "short"}},
    ],
)
def test_a_subscription_that_is_not_one_is_refused(svc, tenant, client, push_service, change):
    signed_in(svc, tenant, client)
    browser = push_service.new_subscription()
    browser["endpoint"] = "https://fcm.googleapis.com/fcm/send/abc"
    if "keys" in change:
        browser["keys"] = {**browser["keys"], **change["keys"]}
    else:
        browser.update(change)

    response = subscribe_json(client, browser)

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_subscription"


def test_a_push_service_on_loopback_is_refused_unless_allowed(svc, tenant, client, push_service):
    signed_in(svc, tenant, client)

    response = subscribe_json(client, push_service.new_subscription())

    assert response.status_code == 400


@pytest.mark.parametrize("app_config_extra", [LOOPBACK], indirect=True)
def test_an_operator_unsubscribes_only_their_own_browser(svc, tenant, client, app, push_service):
    signed_in(svc, tenant, client)
    mine = push_service.new_subscription()
    subscribe_json(client, mine)
    other_client = app.test_client()
    signed_in(svc, tenant, other_client, "bruno@studio-rossi.it")

    refused = subscribe_json(
        other_client, {"endpoint": mine["endpoint"]}, path="/console/push/unsubscribe"
    )
    removed = subscribe_json(
        client, {"endpoint": mine["endpoint"]}, path="/console/push/unsubscribe"
    )

    assert refused.get_json() == {"unsubscribed": False}
    assert removed.get_json() == {"unsubscribed": True}
    assert subscriptions(svc) == []


# -- pushing --------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_an_emergency_through_the_webhook_reaches_every_operators_device(
    svc, tenant, client, push_service
):
    anna = make_user(svc, tenant, "anna@studio-rossi.it")
    admin = make_user(svc, tenant, "admin@studio-rossi.it", role="admin")
    devices = [device_for(svc, push_service, anna), device_for(svc, push_service, admin)]
    device_for(svc, push_service, anna)
    svc.understand = read_with_place

    send_inbound(client, GAS)
    drain(svc)

    deliveries = push_service.wait_for_deliveries(3)
    assert {d.endpoint for d in deliveries} >= {d["endpoint"] for d in devices}
    payload = deliveries[0].json()
    assert payload["type"] == "emergency"
    assert payload["hazard"] == "gas_smell"
    assert payload["street"] == "via Roma 12"
    assert payload["url"] == f"/console/conversations/{payload['conversation_id']}"
    assert deliveries[0].urgency == "high"
    assert deliveries[0].claims["sub"] == "mailto:admin@studio-rossi.it"


def test_a_push_carries_neither_the_message_nor_a_phone_number(svc, tenant, client, push_service):
    device_for(svc, push_service, make_user(svc, tenant, "anna@studio-rossi.it"))
    svc.understand = read_with_place

    send_inbound(client, GAS)
    drain(svc)

    text = push_service.wait_for_deliveries(1)[0].text
    assert "puzza" not in text and "cantina" not in text
    assert RESIDENT.lstrip("+") not in text and OFFICE_NUMBER.lstrip("+") not in text
    assert not re.search(r"\d{7,}", text)


def test_an_ordinary_message_pushes_nothing(svc, tenant, client, push_service):
    device_for(svc, push_service, make_user(svc, tenant, "anna@studio-rossi.it"))

    send_inbound(client, "Il citofono non funziona")
    drain(svc)

    assert push_service.deliveries == []
    assert "push.sent" not in audit_actions(svc, tenant)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_subscription_the_push_service_forgot_is_deleted(svc, tenant, push_service):
    user = make_user(svc, tenant, "anna@studio-rossi.it")
    gone, alive = device_for(svc, push_service, user), device_for(svc, push_service, user)
    push_service.expire(gone)

    report = push_to_operators(svc, tenant.id, emergency_payload(7, "fire", {}))

    assert (report.delivered, report.gone, report.failed) == (1, 1, 0)
    assert [s.endpoint for s in subscriptions(svc)] == [alive["endpoint"]]
    assert subscriptions(svc)[0].last_success_at is not None


def test_a_failing_push_service_keeps_the_subscription_and_counts_the_failure(
    svc, tenant, push_service
):
    device_for(svc, push_service, make_user(svc, tenant, "anna@studio-rossi.it"))
    push_service.fail_next(503)

    report = push_to_operators(svc, tenant.id, emergency_payload(7, "fire", {}))

    assert (report.delivered, report.failed) == (0, 1)
    assert subscriptions(svc)[0].failures == 1


def test_a_deactivated_operators_devices_are_not_pushed(svc, tenant, push_service):
    user = make_user(svc, tenant, "anna@studio-rossi.it")
    device_for(svc, push_service, user)
    with svc.db.session() as session:
        session.get(User, user.id).active = False

    report = push_to_operators(svc, tenant.id, emergency_payload(7, "fire", {}))

    assert report.subscriptions == 0
    assert push_service.deliveries == []


def test_another_offices_devices_are_not_pushed(svc, tenant, push_service):
    from helpers import make_tenant

    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    device_for(svc, push_service, make_user(svc, other, "bea@studio-bianchi.it"))

    assert push_to_operators(svc, tenant.id, emergency_payload(7, "fire", {})).subscriptions == 0


def test_each_push_is_audited_with_counts_only(svc, tenant, push_service):
    device_for(svc, push_service, make_user(svc, tenant, "anna@studio-rossi.it"))

    push_to_operators(svc, tenant.id, emergency_payload(7, "fire", {"building": "Le Rose"}))

    event = last_audit(svc, "push.sent")
    assert event.detail == {
        "via": "webpush",
        "subscriptions": 1,
        "delivered": 1,
        "gone": 0,
        "failed": 0,
        "conversation_id": 7,
        "hazard": "fire",
    }


# -- the installable console ----------------------------------------------------------------


def test_the_service_worker_is_served_for_the_console_scope_without_a_session(client):
    response = client.get("/console/sw.js")

    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Service-Worker-Allowed"] == "/console/"
    script = response.get_data(as_text=True)
    assert 'addEventListener("push"' in script and 'addEventListener("notificationclick"' in script


def test_the_manifest_makes_the_console_installable(client):
    response = client.get("/console/manifest.webmanifest")

    manifest = json.loads(response.get_data(as_text=True))
    assert response.mimetype == "application/manifest+json"
    assert (manifest["start_url"], manifest["scope"], manifest["display"]) == (
        "/console/",
        "/console/",
        "standalone",
    )
    sizes = {icon["sizes"] for icon in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        assert client.get(icon["src"]).status_code == 200


def test_the_security_policy_allows_our_worker_and_manifest_and_no_inline_script(client):
    policy = client.get("/console/login").headers["Content-Security-Policy"]

    assert "worker-src 'self'" in policy and "manifest-src 'self'" in policy
    assert "unsafe-inline" not in policy


# -- Pusher Beams ---------------------------------------------------------------------------

BEAMS_INSTANCE = "0f2a9c3e-1111-4222-8333-944445555666"
BEAMS_SECRET = "beams-test-secret"


@pytest.fixture
def beams(tmp_path):
    with FakeBeams(BEAMS_INSTANCE, BEAMS_SECRET, tmp_path / "beams-tls") as fake:
        yield fake


@pytest.fixture
def app_config(app_config, request):
    if "beams" in request.fixturenames:
        fake = request.getfixturevalue("beams")
        app_config.update(
            PUSHER_BEAMS_INSTANCE_ID=BEAMS_INSTANCE,
            PUSHER_BEAMS_SECRET_KEY=BEAMS_SECRET,
            PUSHER_BEAMS_ENDPOINT=fake.endpoint,
            PUSHER_BEAMS_CA_BUNDLE=str(fake.ca_path),
        )
    return app_config


def test_with_beams_configured_an_emergency_is_published_to_the_office_interest(
    svc, tenant, client, beams, push_service
):
    device_for(svc, push_service, make_user(svc, tenant, "anna@studio-rossi.it"))
    svc.understand = read_with_place

    send_inbound(client, GAS)
    drain(svc)

    (publish,) = beams.wait_for_publishes(1)
    assert publish.interests == ["tenant-studio-rossi"]
    web = publish.body["web"]
    assert web["notification"]["title"] == "Emergenza: odore di gas"
    assert web["notification"]["deep_link"].endswith(web["data"]["url"])
    assert publish.body["apns"]["aps"]["alert"]["title"] == "Emergenza: odore di gas"
    assert all(isinstance(v, str) for v in publish.body["fcm"]["data"].values())
    assert push_service.deliveries == []  # Beams instead of Web Push, not both
    assert last_audit(svc, "push.sent").detail["via"] == "beams"


def test_a_beams_refusal_is_audited_as_a_failed_push(svc, tenant, beams):
    beams.fail_next(500)

    report = push_to_operators(svc, tenant.id, emergency_payload(7, "flooding", {}))

    assert (report.via, report.delivered, report.failed) == ("beams", 0, 1)
    assert last_audit(svc, "push.sent").detail["failed"] == 1


def test_the_beams_secret_is_sent_as_a_bearer_token(svc, tenant, beams):
    svc.beams.client.secret_key = "wrong-secret"

    report = push_to_operators(svc, tenant.id, emergency_payload(7, "flooding", {}))

    assert report.failed == 1
    assert beams.publishes == []
