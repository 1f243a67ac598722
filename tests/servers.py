"""Real local servers for the test suite: Redis, PostgreSQL and a WSGI host.

Everything listens on 127.0.0.1 only, lives in a temporary directory and is
bounded in time: every wait has a deadline and raises ``ServerError`` (with
the tail of the server's log) when it passes.

Usage::

    with RedisServer() as redis_server:
        url = redis_server.url            # redis://127.0.0.1:PORT/0
        redis_server.stop()               # simulate an outage
        redis_server.start()              # back, on the same port

    if PostgresServer.available():
        with PostgresServer() as pg:
            pg.url                        # postgresql+psycopg://USER@127.0.0.1:PORT/DB

``WsgiServer`` runs a WSGI callable on a werkzeug threaded server in a daemon
thread; the Twilio and Pusher fakes are built on it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from bot.runtime.devstack import stop_process

__all__ = [
    "LOOPBACK",
    "FakeService",
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "WsgiServer",
    "free_port",
    "wait_until",
]

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A local test server could not be found, started or reached in time."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _log_tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-limit:]
    except OSError:
        return "<no log>"


class _Managed:
    """Context-manager plumbing shared by the servers below."""

    def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- Redis


def _is_debian_root() -> bool:
    return os.geteuid() == 0 and os.path.exists("/etc/debian_version")


def _apt_install(package: str, timeout: float = 600.0) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, timeout=timeout, check=False).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], env=env, timeout=timeout, check=False)
    return subprocess.run(install, env=env, timeout=timeout, check=False).returncode == 0


def find_redis_server() -> str:
    """Locate ``redis-server``, installing it with apt when root on Debian."""
    found = shutil.which("redis-server") or _first_existing(["/usr/bin/redis-server"])
    if found:
        return found
    if _is_debian_root() and _apt_install("redis-server"):
        found = shutil.which("redis-server") or _first_existing(["/usr/bin/redis-server"])
        if found:
            return found
    raise ServerError(
        "redis-server not found on PATH; install it (Debian: apt-get install -y redis-server)"
    )


def _first_existing(paths: Iterable[str]) -> str | None:
    for path in paths:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _redis_command(port: int, payload: bytes, timeout: float = 1.0) -> bytes:
    """Send one inline command to Redis and return the first reply line."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


class RedisServer(_Managed):
    """A throwaway ``redis-server`` on 127.0.0.1 (no persistence by default).

    ``RedisServer(port=None, startup_timeout=10.0, appendonly=False)``; the port is
    chosen at construction so that ``.stop()`` then ``.start()`` comes back on the
    same ``.url``. With ``appendonly`` it keeps an append-only file (``everysec``) in
    its directory, so what it held survives ``stop()`` and ``start()``, as a
    production Redis that keeps the spool must. Use as a context manager or call
    ``start()``/``close()``.
    """

    def __init__(
        self, port: int | None = None, startup_timeout: float = 10.0, appendonly: bool = False
    ) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.appendonly = appendonly
        self._executable: str | None = None
        self._dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start (or restart) the server on ``self.port``; wait for PING."""
        if self.running:
            return self
        self._executable = self._executable or find_redis_server()
        self._dir = self._dir or tempfile.mkdtemp(prefix="portineria-redis-")
        log_path = os.path.join(self._dir, "redis.log")
        self._close_log()
        self._log_handle = open(log_path, "ab")  # noqa: SIM115 - kept until stop()
        self._process = subprocess.Popen(
            self._command(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self._dir,
        )
        try:
            if not wait_until(self._ready, self.startup_timeout, interval=0.01):
                raise ServerError(f"redis-server did not answer PING:\n{_log_tail(log_path)}")
        except BaseException:
            self.stop()
            raise
        return self

    def _command(self) -> list[str]:
        assert self._executable is not None and self._dir is not None
        return [
            self._executable,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--loglevel",
            "warning",
        ]

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise ServerError(
                "redis-server exited early:\n"
                + _log_tail(os.path.join(self._dir or "", "redis.log"))
            )
        return self.ping()

    def ping(self) -> bool:
        """True if the server answers PING right now."""
        try:
            return _redis_command(self.port, b"PING\r\n").startswith(b"+PONG")
        except OSError:
            return False

    def flushall(self) -> None:
        """Empty every database (between tests)."""
        reply = _redis_command(self.port, b"FLUSHALL\r\n", timeout=5.0)
        if not reply.startswith(b"+OK"):
            raise ServerError(f"FLUSHALL failed: {reply!r}")

    def stop(self) -> None:
        """Terminate the server (bounded), keeping port and directory for start()."""
        stop_process(self._process)
        self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def close(self) -> None:
        """Stop and delete the temporary directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ----------------------------------------------------------------------- PostgreSQL

_PG_BINARIES = ("initdb", "postgres")
_PG_DIRS = ("/usr/local/bin",)


def _pg_search_dirs() -> list[str]:
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    return [*_PG_DIRS, *versioned]


def find_pg_binary(name: str) -> str | None:
    """Find a PostgreSQL program on PATH, /usr/local/bin or /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    return _first_existing(os.path.join(d, name) for d in _pg_search_dirs())


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


class PostgresServer(_Managed):
    """A throwaway PostgreSQL cluster on 127.0.0.1 with trust auth, fsync off.

    ``PostgresServer(user="portineria", database="portineria_test",
    startup_timeout=30.0)``. After ``start()``: ``.port``, ``.url``
    (``postgresql+psycopg://USER@127.0.0.1:PORT/DB``), ``.url_for(db)``,
    ``.create_database(name) -> url``. As root it runs as ``nobody``.
    """

    def __init__(
        self,
        user: str = "portineria",
        database: str = "portineria_test",
        startup_timeout: float = 30.0,
    ) -> None:
        self.host = LOOPBACK
        self.user = user
        self.database = database
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self._dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    @staticmethod
    def available() -> bool:
        """True if the binaries, psycopg and (as root) an unprivileged user exist."""
        if any(find_pg_binary(name) is None for name in _PG_BINARIES):
            return False
        if os.geteuid() == 0 and _unprivileged_account() is None:
            return False
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        if self._process is not None and self._process.poll() is None:
            return self
        if not self.available():
            raise ServerError("PostgreSQL (initdb/postgres + psycopg) is not available")
        if self._dir is None:
            self._dir = self._make_dir()
            self._initdb()
        self._launch()
        try:
            if not wait_until(self._ready, self.startup_timeout, interval=0.05):
                raise ServerError(f"postgres did not accept connections:\n{self._log()}")
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="portineria-pg-")
        account = _unprivileged_account()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
        return path

    def _run_as(self) -> dict[str, Any]:
        """Popen keyword arguments that drop root privileges when needed."""
        account = _unprivileged_account()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        kwargs: dict[str, Any] = {"env": env, "cwd": self._dir, "stdin": subprocess.DEVNULL}
        if account is not None:
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        return kwargs

    def _initdb(self) -> None:
        assert self._dir is not None
        initdb = find_pg_binary("initdb")
        assert initdb is not None
        command = [
            initdb,
            "-D",
            self._data_dir,
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            timeout=self.startup_timeout,
            check=False,
            **self._run_as(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise ServerError(f"initdb failed ({result.returncode}):\n{output}")

    @property
    def _data_dir(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "data")

    @property
    def _log_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "postgres.log")

    def _launch(self) -> None:
        postgres = find_pg_binary("postgres")
        assert postgres is not None and self._dir is not None
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": self._dir,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "16MB",
        }
        command = [postgres, "-D", self._data_dir]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        self._log_handle = open(self._log_path, "ab")  # noqa: SIM115 - kept until stop()
        self._process = subprocess.Popen(
            command, stdout=self._log_handle, stderr=subprocess.STDOUT, **self._run_as()
        )

    def _log(self) -> str:
        return _log_tail(self._log_path) if self._dir else "<no log>"

    def _connect(self, database: str = "postgres", timeout: int = 2) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=database,
            connect_timeout=timeout,
            autocommit=True,
        )

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise ServerError(f"postgres exited early:\n{self._log()}")
        try:
            with self._connect():
                return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    # -- helpers -------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing; return its SQLAlchemy URL."""
        from psycopg import sql

        with self._connect(timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (terminating its sessions)."""
        from psycopg import sql

        with self._connect(timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Fast shutdown (SIGINT), bounded; the cluster stays for start()."""
        stop_process(self._process, timeout=10.0, first_signal=signal.SIGINT)
        self._process = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ------------------------------------------------------------------------ WSGI host


class _ConnectionSet:
    """The sockets a server has accepted and not yet finished with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def shutdown_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request; tracks its connection for close()."""

    def setup(self) -> None:
        super().setup()
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.add(self.connection)

    def finish(self) -> None:
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.discard(self.connection)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class WsgiServer(_Managed):
    """Serve a WSGI callable on 127.0.0.1 in a daemon thread (werkzeug, threaded).

    ``WsgiServer(app, port=0)``; after ``start()``: ``.host``, ``.port``,
    ``.base_url``. ``close()`` shuts it down (bounded) and cuts open keep-alive
    connections, so clients see a real outage; ``start()`` again serves on the
    same port.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], port: int = 0) -> None:
        self.app = app
        self.host = LOOPBACK
        self._requested_port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections = _ConnectionSet()

    @property
    def port(self) -> int:
        if self._server is None:
            raise ServerError("server not started: call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = make_server(
            self.host,
            self._requested_port,
            self.app,
            threaded=True,
            request_handler=_QuietHandler,
        )
        server.open_connections = self._connections  # type: ignore[attr-defined]
        self._server = server
        self._requested_port = self.port  # a restart comes back on the same port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"wsgi-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._connections.shutdown_all()
        if thread is not None:
            thread.join(timeout=5.0)

    stop = close


class FakeService(_Managed):
    """Base of the fakes of outside services (Twilio, Pusher, Web Push, a CRM): one
    ``WsgiServer`` serving ``self._wsgi``, started and stopped with the fake.

    Subclasses set ``self._server = WsgiServer(self._wsgi, port=port)`` and may extend
    ``start``/``close`` (calling ``super()``) for their own clocks or second servers.
    """

    _server: WsgiServer

    def start(self) -> Self:
        self._server.start()
        return self

    def close(self) -> None:
        self._server.close()

    def stop(self) -> None:
        self.close()

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return self._server.base_url
