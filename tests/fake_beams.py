"""A local Pusher Beams publish API over HTTPS, with a certificate made for it.

The ``pusher-push-notifications`` SDK always builds ``https://`` URLs, so the fake
must speak TLS: ``FakeBeams`` makes a throw-away CA and a server certificate for
127.0.0.1 with ``cryptography`` and serves werkzeug over TLS in a thread. Point the
SDK at it with ``endpoint=fake.endpoint`` (``127.0.0.1:PORT``) and trust the CA with
``session.verify = fake.ca_path`` (Portineria: ``PUSHER_BEAMS_ENDPOINT`` and
``PUSHER_BEAMS_CA_BUNDLE``).

``POST /publish_api/v1/instances/<instance>/publishes/interests``, checked in order:

    ====  ===============================================================
    404   another instance id
    401   no ``Authorization: Bearer <secret key>`` (the SDK's scheme)
    any   a fault scripted with ``fail_next(status)``
    422   a body that is not a JSON object with 1-100 ``interests`` and at
          least one of ``web``, ``fcm``, ``apns``
    200   ``{"publishId": "pubid-..."}``; recorded in ``.publishes``
    ====  ===============================================================
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import ssl
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from servers import _Managed
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

PLATFORMS = ("web", "fcm", "apns")


@dataclass(frozen=True)
class Publish:
    instance_id: str
    interests: list[str]
    body: dict[str, Any]
    publish_id: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: ``(ca, cert, key)`` PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Portineria test CA"))
        .issuer_name(_name("Portineria test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class FakeBeams(_Managed):
    """Beams' publish API on https://127.0.0.1:PORT (see the module docstring)."""

    def __init__(self, instance_id: str, secret_key: str, folder: Path) -> None:
        self.instance_id = instance_id
        self.secret_key = secret_key
        self.ca_path, self._cert, self._key = make_certificates(folder)
        self._lock = threading.Condition()
        self._publishes: list[Publish] = []
        self._faults: deque[int] = deque()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeBeams:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self._cert), str(self._key))
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, ssl_context=context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """What the SDK takes as ``endpoint``: host and port, no scheme."""
        return f"127.0.0.1:{self.port}"

    @property
    def publishes(self) -> list[Publish]:
        with self._lock:
            return list(self._publishes)

    def fail_next(self, status: int) -> None:
        with self._lock:
            self._faults.append(status)

    def wait_for_publishes(self, n: int, timeout: float = 5.0) -> list[Publish]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._publishes) >= n, timeout):
                raise TimeoutError(f"expected {n} Beams publishes, got {len(self._publishes)}")
            return list(self._publishes)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return self._answer(Request(environ))(environ, start_response)

    def _answer(self, request: Request) -> Response:
        prefix, suffix = "/publish_api/v1/instances/", "/publishes/interests"
        path = request.path
        if request.method != "POST" or not (path.startswith(prefix) and path.endswith(suffix)):
            return _error(404, "Not Found", "no such route")
        if path[len(prefix) : -len(suffix)] != self.instance_id:
            return _error(404, "Instance not found", "unknown instance id")
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return _error(401, "Unauthorized", "bad secret key")
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            return _error(fault, "Injected", "scripted failure")
        try:
            body = json.loads(request.get_data(as_text=True))
        except ValueError:
            return _error(422, "Unprocessable", "body is not JSON")
        interests = body.get("interests") if isinstance(body, dict) else None
        if not isinstance(interests, list) or not 1 <= len(interests) <= 100:
            return _error(422, "Unprocessable", "interests must be a list of 1 to 100")
        if not any(isinstance(body.get(platform), dict) for platform in PLATFORMS):
            return _error(422, "Unprocessable", "no web, fcm or apns payload")
        publish = Publish(self.instance_id, interests, body, "pubid-" + secrets.token_hex(8))
        with self._lock:
            self._publishes.append(publish)
            self._lock.notify_all()
        return Response(
            json.dumps({"publishId": publish.publish_id}), 200, mimetype="application/json"
        )


def _error(status: int, error: str, description: str) -> Response:
    body = json.dumps({"error": error, "description": description})
    return Response(body, status, mimetype="application/json")
