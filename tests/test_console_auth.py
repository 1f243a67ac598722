"""Console sign-in and sessions: server-side sign-out, limits per address, account,
office and trusted browser (real Redis), failed sign-ins counted for the audit, the
same answer and the same work whatever the failure, and where a login may lead."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import PASSWORD, audit_actions, csrf_token, make_tenant, make_user, post_form
from servers import RedisServer
from sqlalchemy import select

from bot.console.auth import THROTTLE_EXTENSION, flush_failed_logins, safe_next
from bot.console.blueprint import bp as console_bp
from bot.exceptions import InvalidAccount, NotFound
from bot.office.accounts import change_password, disable_user
from bot.office.throttle import AUDIT_WINDOW, POLICIES, LoginThrottle
from bot.services import Services
from bot.web.numbers import IdConverter
from storage.models import AuditEvent, Tenant, User

BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
OWNER_IP = "192.0.2.10"
ATTACKER_IP = "198.51.100.66"


class ManualClock:
    """The throttle's clock, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def throttle(app: Flask) -> LoginThrottle:
    return app.extensions[THROTTLE_EXTENSION]  # type: ignore[no-any-return]


@pytest.fixture
def clock(throttle: LoginThrottle) -> ManualClock:
    manual = ManualClock()
    throttle.clock = manual
    return manual


@pytest.fixture
def operator(svc: Services, tenant: Tenant) -> User:
    return make_user(svc, tenant, "anna@studio-rossi.it")


@pytest.fixture
def browser(app: Flask) -> Callable[..., FlaskClient]:
    """A new browser at an address (and with a user agent) of the test's choosing."""

    def open_browser(ip: str = OWNER_IP, agent: str = "Firefox/140") -> FlaskClient:
        client = app.test_client()
        client.environ_base.update(REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)
        return client

    return open_browser


def attempt(client: FlaskClient, email: str, password: str = PASSWORD, **form: str) -> Any:
    token = csrf_token(client)
    return client.post(
        "/console/login", data={"csrf_token": token, "email": email, "password": password, **form}
    )


def signed_in(client: FlaskClient) -> bool:
    return client.get("/console/").status_code == 200


def failed_login_details(svc: Services, tenant: Tenant) -> list[dict[str, Any]]:
    with svc.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent.detail)
                .where(AuditEvent.tenant_id == tenant.id, AuditEvent.action == "login.failed")
                .order_by(AuditEvent.id)
            )
        )


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def sign_in_and_copy_the_cookie(
    browser: Callable[..., FlaskClient], email: str
) -> tuple[FlaskClient, Callable[[], FlaskClient]]:
    """The owner's signed-in browser, and a way to replay its cookie as it is now, from
    the same address and browser (so only the server can tell the copy apart)."""
    owner = browser()
    assert attempt(owner, email).status_code == 302
    saved = session_cookie(owner)

    def replay() -> FlaskClient:
        copy = browser()
        copy.set_cookie("session", saved)
        return copy

    return owner, replay


# -- sessions end on the server ----------------------------------------------------------


@BOTH_DATABASES
def test_a_cookie_copied_before_logout_is_refused_after_it(browser, operator):
    owner, replay = sign_in_and_copy_the_cookie(browser, operator.email)
    assert signed_in(replay())

    assert "Sei uscito" in post_form(owner, "/console/logout").get_data(as_text=True)

    copy = replay()
    response = copy.get("/console/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/login")
    assert copy.get("/console/inbox/list").status_code == 401


@BOTH_DATABASES
def test_logout_ends_the_accounts_sessions_in_every_browser(browser, operator):
    desk, laptop = browser(), browser()
    attempt(desk, operator.email)
    attempt(laptop, operator.email)
    assert signed_in(laptop)

    post_form(desk, "/console/logout")

    assert not signed_in(laptop)


@BOTH_DATABASES
def test_a_cookie_copied_before_a_password_change_is_refused_after_it(
    browser, svc, tenant, operator
):
    owner, replay = sign_in_and_copy_the_cookie(browser, operator.email)

    with svc.db.session() as session:
        change_password(session, tenant.id, operator.id, "una-nuova-password-lunga")

    assert not signed_in(replay())
    assert not signed_in(owner)
    assert attempt(browser(), operator.email).status_code == 401
    assert attempt(browser(), operator.email, "una-nuova-password-lunga").status_code == 302


@BOTH_DATABASES
def test_a_cookie_copied_before_the_account_is_disabled_is_refused_after_it(
    browser, svc, tenant, operator
):
    _owner, replay = sign_in_and_copy_the_cookie(browser, operator.email)

    with svc.db.session() as session:
        disable_user(session, tenant.id, operator.id)

    assert not signed_in(replay())
    assert attempt(browser(), operator.email).status_code == 401


def test_a_cookie_replayed_from_another_browser_is_dropped(browser, operator):
    owner = browser(agent="Firefox/140")
    attempt(owner, operator.email)

    thief = browser(ip=ATTACKER_IP, agent="curl/8.5")
    thief.set_cookie("session", session_cookie(owner))

    assert not signed_in(thief)
    assert signed_in(owner)


def test_password_change_and_disable_take_only_the_callers_office(svc, operator):
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    with svc.db.session() as session, pytest.raises(NotFound):
        change_password(session, other.id, operator.id, "una-nuova-password-lunga")
    with svc.db.session() as session, pytest.raises(NotFound):
        disable_user(session, other.id, operator.id)
    with svc.db.session() as session, pytest.raises(InvalidAccount):
        change_password(session, operator.tenant_id, operator.id, "corta")


def test_a_session_signed_in_before_versions_existed_must_sign_in_again(app, browser, operator):
    # Flask-Login kept the bare user id; such a session names no version.
    old = browser()
    with old.session_transaction() as session:
        session["_user_id"] = str(operator.id)
        session["_fresh"] = True
    assert not signed_in(old)


# -- limits: progressive delays, not a lockout anyone can cause --------------------------


def test_an_attackers_failures_do_not_lock_the_owner_out_from_another_address(
    browser, clock, operator
):
    attacker = browser(ip=ATTACKER_IP)
    for n in range(10):
        if n:
            clock.advance(POLICIES["ip"].cap)  # whatever the wait, it is over
        assert attempt(attacker, operator.email, "indovino-sbagliato").status_code == 401

    # The account's own wait after ten failures (2^7 s), then the owner is in.
    owner = browser(ip=OWNER_IP)
    assert attempt(owner, operator.email).status_code == 401
    clock.advance(POLICIES["account"].delay(10))
    assert attempt(owner, operator.email).status_code == 302
    assert signed_in(owner)


def test_attempts_during_a_wait_are_refused_without_lengthening_it(browser, clock, operator):
    free = POLICIES["account"].free
    for n in range(free + 1):
        attempt(browser(ip=f"203.0.113.{n}"), operator.email, "indovino-sbagliato")
    wait = POLICIES["account"].delay(free + 1)
    for n in range(5):  # hammering while the account waits
        assert attempt(browser(ip=f"203.0.114.{n}"), operator.email).status_code == 401

    clock.advance(wait)
    assert attempt(browser(), operator.email).status_code == 302


def test_a_browser_the_owner_signed_in_from_is_not_held_back_by_others(browser, clock, operator):
    owner = browser(ip=OWNER_IP)
    attempt(owner, operator.email)
    post_form(owner, "/console/logout")
    attacker = browser(ip=ATTACKER_IP)
    for n in range(8):
        attempt(browser(ip=f"203.0.113.{n}"), operator.email, "indovino-sbagliato")
    assert attempt(attacker, operator.email).status_code == 401  # the account waits

    # The owner's own browser (its device cookie), even from a new address, at once.
    owner.environ_base["REMOTE_ADDR"] = "192.0.2.77"
    assert attempt(owner, operator.email).status_code == 302


def test_one_address_trying_many_emails_is_slowed_down(browser, clock, operator):
    client = browser(ip=ATTACKER_IP)
    for n in range(POLICIES["ip"].free + 1):
        attempt(client, f"nessuno{n}@example.it", "qualcosa-di-lungo")

    # Even the right password waits from that address (2 s after the sixth failure).
    assert attempt(client, operator.email).status_code == 401
    assert attempt(browser(ip=OWNER_IP), operator.email).status_code == 302
    clock.advance(POLICIES["ip"].delay(POLICIES["ip"].free + 1))
    assert attempt(client, operator.email).status_code == 302


def test_an_office_sprayed_from_many_addresses_slows_down(browser, clock, tenant, operator):
    office = POLICIES["office"]
    for n in range(office.free + 1):
        sprayer = browser(ip=f"203.0.113.{n}")
        attempt(sprayer, f"n{n}@example.it", "qualcosa-di-lungo", studio=tenant.slug)

    assert attempt(browser(), operator.email, studio=tenant.slug).status_code == 401
    clock.advance(office.delay(office.free + 1))
    assert attempt(browser(), operator.email, studio=tenant.slug).status_code == 302


def test_parallel_attempts_cannot_slip_through_one_opening(throttle, clock):
    keys = throttle.keys_for(ip=ATTACKER_IP, email="x@example.it", office_id=None, device=None)
    passed: list[bool] = []
    start = threading.Barrier(20)

    def claim() -> None:
        start.wait(timeout=5)
        passed.append(not throttle.claim(keys))

    threads = [threading.Thread(target=claim) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # The free failures of the tightest scope (the account) and the first that waits.
    assert passed.count(True) == POLICIES["account"].free + 1


def test_the_throttle_keeps_no_email_or_address_in_redis(browser, svc, operator):
    attempt(browser(ip=ATTACKER_IP), "segreto@example.it", "qualcosa-di-lungo", studio="x")
    attempt(browser(ip=ATTACKER_IP), operator.email, "indovino-sbagliato")

    stored = b" ".join(svc.redis.keys("*"))
    for value in (b"segreto", b"anna", ATTACKER_IP.encode()):
        assert value not in stored


# -- failed sign-ins in the audit trail -----------------------------------------------


def test_unknown_emails_are_one_counted_row_per_office_and_window(
    browser, svc, throttle, clock, tenant
):
    typed = [f"prova{n}@example.it" for n in range(7)]
    for n, email in enumerate(typed):
        attempt(browser(ip=f"203.0.113.{n % 3}"), email, "qualcosa-di-lungo", studio=tenant.slug)
    assert audit_actions(svc, tenant) == []  # counted, not written one by one

    clock.advance(AUDIT_WINDOW)
    assert flush_failed_logins(svc, throttle) == 1
    assert flush_failed_logins(svc, throttle) == 0

    (detail,) = failed_login_details(svc, tenant)
    assert detail["reason"] == "unknown_account"
    assert (detail["count"], detail["addresses"]) == (7, 3)
    with svc.db.read() as session:
        rows = session.scalars(select(AuditEvent)).all()
    text = repr([(r.actor, r.target_id, r.detail) for r in rows])
    assert "prova" not in text and "example.it" not in text


def test_the_next_sign_in_after_a_window_writes_its_count(browser, svc, clock, tenant, operator):
    attempt(browser(ip=ATTACKER_IP), "nessuno@example.it", "qualcosa-di-lungo", studio=tenant.slug)
    clock.advance(AUDIT_WINDOW)

    attempt(browser(), operator.email)

    assert audit_actions(svc, tenant) == ["login", "login.failed"]
    assert failed_login_details(svc, tenant)[0]["count"] == 1


def test_attempts_held_back_are_counted_not_written_one_by_one(
    browser, svc, throttle, clock, tenant, operator
):
    free = POLICIES["account"].free
    for n in range(free + 1):
        attempt(browser(ip=f"203.0.113.{n}"), operator.email, "indovino-sbagliato")
    for n in range(6):
        attempt(browser(ip=f"203.0.114.{n}"), operator.email, "indovino-sbagliato")

    clock.advance(AUDIT_WINDOW)
    flush_failed_logins(svc, throttle)

    details = failed_login_details(svc, tenant)
    assert [d["reason"] for d in details] == ["bad_password"] * (free + 1) + ["throttled"]
    assert details[-1]["count"] == 6


def test_wrong_password_and_a_terminated_office_are_audited_on_the_account(
    browser, svc, tenant, operator
):
    attempt(browser(), operator.email, "indovino-sbagliato")
    with svc.db.session() as session:
        stored = session.get(Tenant, tenant.id)
        assert stored is not None
        stored.terminated_at = stored.created_at
    assert attempt(browser(), operator.email).status_code == 401

    reasons = [d["reason"] for d in failed_login_details(svc, tenant)]
    assert reasons == ["bad_password", "office_terminated"]


# -- Redis down: each account falls back to its own delay in the database ------------


def test_without_redis_an_account_waits_on_its_own_counter(
    browser, svc, clock, tenant, operator, redis_server: RedisServer
):
    redis_server.stop()
    free = POLICIES["account"].free
    for n in range(free + 1):
        attempt(browser(ip=f"203.0.113.{n}"), operator.email, "indovino-sbagliato")

    assert attempt(browser(), operator.email).status_code == 401
    clock.advance(POLICIES["account"].delay(free + 1))
    assert attempt(browser(), operator.email).status_code == 302
    with svc.db.read() as session:
        user = session.get(User, operator.id)
        assert user is not None and user.failed_logins == 0


def test_without_redis_unknown_emails_leave_one_uncounted_row_per_window(
    browser, svc, clock, tenant, redis_server: RedisServer
):
    redis_server.stop()
    for n in range(5):
        attempt(browser(), f"nessuno{n}@example.it", "qualcosa-di-lungo", studio=tenant.slug)

    (detail,) = failed_login_details(svc, tenant)
    assert detail["reason"] == "unknown_account" and detail["count"] == 0
    clock.advance(AUDIT_WINDOW)
    attempt(browser(), "nessuno@example.it", "qualcosa-di-lungo", studio=tenant.slug)
    assert len(failed_login_details(svc, tenant)) == 2


# -- the same answer, and the same work, whatever the failure ------------------------


def _timed_attempt(client: FlaskClient, email: str, password: str = PASSWORD) -> tuple[float, Any]:
    token = csrf_token(client)
    data = {"csrf_token": token, "email": email, "password": password}
    started = time.perf_counter()
    response = client.post("/console/login", data=data)
    return time.perf_counter() - started, response


def _flash(response: Any) -> str:
    found = re.search(r'<p class="flash error" role="alert">([^<]*)</p>', response.get_data(True))
    assert found is not None
    return found.group(1)


def test_unknown_held_back_and_wrong_password_take_the_time_of_a_right_one(
    browser, svc, clock, tenant, operator
):
    held = make_user(svc, tenant, "bloccato@studio-rossi.it")
    for n in range(POLICIES["account"].free + 1):
        attempt(browser(ip=f"203.0.113.{n}"), held.email, "indovino-sbagliato")

    cases = {
        "right password": (operator.email, PASSWORD, 302),
        "unknown": ("nessuno@studio-rossi.it", PASSWORD, 401),
        "held back": (held.email, PASSWORD, 401),
        "wrong password": (operator.email, "indovino-sbagliato", 401),
    }
    timings: dict[str, list[float]] = {case: [] for case in cases}
    texts = set()
    for round_ in range(5):  # case after case in each round, so a busy machine slows all
        for n, (case, (email, password, status)) in enumerate(cases.items()):
            took, response = _timed_attempt(browser(ip=f"198.18.{n}.{round_}"), email, password)
            assert response.status_code == status, case
            if status == 401:
                texts.add(_flash(response))
            timings[case].append(took)

    baseline = statistics.median(timings.pop("right password"))
    for case, taken in timings.items():
        assert statistics.median(taken) >= 0.5 * baseline, (case, taken, baseline)
    assert len(texts) == 1


# -- where a sign-in may lead -----------------------------------------------------------


@pytest.fixture(scope="module")
def routes() -> Flask:
    """The console's routes alone: enough for ``url_for``, no database or Redis."""
    bare = Flask(__name__)
    bare.url_map.converters["id"] = IdConverter
    bare.register_blueprint(console_bp)
    return bare


def test_a_crlf_in_next_does_not_break_the_redirect(client, operator):
    token = csrf_token(client)
    response = client.post(
        "/console/login?next=/console/%0d%0aSet-Cookie:%20x=1",
        data={"csrf_token": token, "email": operator.email, "password": PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    assert not any(c.startswith("x=") for c in response.headers.getlist("Set-Cookie"))


@pytest.mark.parametrize(
    "target",
    [
        "/console/\r\nSet-Cookie: x=1",
        "/console/\x00",
        "/console/%0d%0a",
        "/console/../healthz",
        "/console/%2e%2e/healthz",
        "/console/%2E%2E/%2E%2E/readyz",
        "/consolex",
        "/api/v1/contacts",
        "//evil.example/console",
        "https://evil.example/console",
        "/console\\..\\x",
        "/console/é",
        "/console/%C3%A9",
        "",
        None,
    ],
)
def test_next_outside_the_console_or_with_control_characters_goes_to_the_inbox(
    routes: Flask, target
):
    with routes.test_request_context():
        assert safe_next(target) == "/console/"


@pytest.mark.parametrize(
    "target", ["/console/", "/console/conversations/3", "/console/?filtro=tutte", "/console"]
)
def test_next_inside_the_console_is_kept(routes: Flask, target):
    with routes.test_request_context():
        assert safe_next(target) == target


@pytest.mark.parametrize(
    ("app_config_extra", "recorded"),
    [({"TRUSTED_PROXIES": 1}, "203.0.113.7"), ({"TRUSTED_PROXIES": 0}, "127.0.0.1")],
    indirect=["app_config_extra"],
)
def test_the_client_address_comes_from_the_trusted_proxy_only(
    client, svc, tenant, operator, recorded
):
    from sqlalchemy import select

    from storage.models import AuditEvent

    token = csrf_token(client)
    client.post(
        "/console/login",
        data={"csrf_token": token, "email": operator.email, "password": PASSWORD, "studio": ""},
        headers={"X-Forwarded-For": "203.0.113.7"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    with svc.db.read() as session:
        login = session.scalars(select(AuditEvent).where(AuditEvent.action == "login")).one()
    assert login.ip == recorded
