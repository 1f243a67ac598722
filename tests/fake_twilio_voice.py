"""The voice half of the Twilio fake: TwiML reading, Gather presses, webhook signing.

``FakeTwilio`` (``fake_twilio.py``) serves the Calls REST resource; this module
holds what it needs to play the callee's side of a call without any network:

* ``parse_twiml(text) -> TwimlDocument``: the ``<Say>`` texts (with their
  ``language`` and ``voice``) in document order, the first ``<Gather>`` (its
  ``action``, ``method`` (default ``POST``), ``numDigits``, ``finishOnKey``
  (default ``#``)) and whether the document hangs up. Twilio runs the verbs
  in order and leaves the document for the Gather's action once the caller
  has pressed keys, so the Says after that Gather were never heard.
* ``twilio_signature(auth_token, url, params)``: ``X-Twilio-Signature`` as
  Twilio documents it, written here from the description rather than taken
  from the SDK (``tests/test_fakes.py`` checks it against
  ``twilio.request_validator.RequestValidator``): the full URL, then for each
  parameter name in sorted order the name followed by its value (each value,
  sorted, for a repeated name), HMAC-SHA1 keyed with the auth token, base64.
* ``GatherRequest``: the signed request Twilio makes to a Gather's action
  when the callee presses keys: ``url`` (absolute: what Twilio signs),
  ``method``, ``params`` (form fields for POST, already in ``url`` for GET),
  ``signature``, and for posting it yourself ``headers`` and ``path`` (path
  and query of ``url``, for Flask's test client). ``send(base_url=None)``
  posts it over HTTP, to ``base_url`` + ``path`` when the app's real address
  differs from the public one the request was signed for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests

__all__ = [
    "Gather",
    "GatherRequest",
    "SpokenText",
    "TwimlDocument",
    "TwimlError",
    "parse_twiml",
    "twilio_signature",
]


class TwimlError(ValueError):
    """TwiML that Twilio could not run (error 12100 on a real call)."""


@dataclass(frozen=True)
class SpokenText:
    """One ``<Say>``: its text and the attributes a test may assert on."""

    text: str
    language: str | None
    voice: str | None


@dataclass(frozen=True)
class Gather:
    """The first ``<Gather>`` of a document, with Twilio's defaults applied."""

    action: str | None
    method: str
    num_digits: int | None
    finish_on_key: str
    # How many of the document's Says come before the Gather or inside it.
    says_heard: int


@dataclass(frozen=True)
class TwimlDocument:
    """What the fake needs from one TwiML document."""

    text: str
    says: tuple[SpokenText, ...]
    gather: Gather | None
    hangs_up: bool
    url: str | None = None  # the document's own URL, the base for relative actions

    def heard(self, pressed: bool) -> list[SpokenText]:
        """The Says a callee heard: up to the Gather if they pressed keys in it."""
        if pressed and self.gather is not None:
            return list(self.says[: self.gather.says_heard])
        return list(self.says)


def _text_of(element: ElementTree.Element) -> str:
    # SSML children (<break/>, <prosody>...) may split the text: join it back.
    return " ".join("".join(element.itertext()).split())


def parse_twiml(text: str, url: str | None = None) -> TwimlDocument:
    """Read a TwiML ``<Response>``; ``TwimlError`` if it is not one."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise TwimlError(f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"TwiML root must be <Response>, not <{root.tag}>")
    says: list[SpokenText] = []
    gather: Gather | None = None
    hangs_up = False
    for verb in root:
        if verb.tag == "Say":
            says.append(_spoken(verb))
        elif verb.tag == "Gather" and gather is None:
            says.extend(_spoken(child) for child in verb if child.tag == "Say")
            gather = _gather(verb, says_heard=len(says))
        elif verb.tag == "Gather":
            says.extend(_spoken(child) for child in verb if child.tag == "Say")
        elif verb.tag == "Hangup":
            hangs_up = True
    return TwimlDocument(text, tuple(says), gather, hangs_up, url)


def _spoken(element: ElementTree.Element) -> SpokenText:
    return SpokenText(_text_of(element), element.get("language"), element.get("voice"))


def _gather(element: ElementTree.Element, says_heard: int) -> Gather:
    method = (element.get("method") or "POST").upper()
    if method not in {"GET", "POST"}:
        raise TwimlError(f"Gather method must be GET or POST, not {method!r}")
    raw_digits = element.get("numDigits")
    try:
        num_digits = int(raw_digits) if raw_digits is not None else None
    except ValueError:
        raise TwimlError(f"Gather numDigits is not a number: {raw_digits!r}") from None
    return Gather(
        action=element.get("action"),
        method=method,
        num_digits=num_digits,
        finish_on_key=element.get("finishOnKey", "#"),
        says_heard=says_heard,
    )


def _values(params: Mapping[str, str | Iterable[str]], name: str) -> list[str]:
    value = params[name]
    return [value] if isinstance(value, str) else list(value)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, Any] | None = None) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with form ``params``."""
    material = url
    for name in sorted(params or {}):
        for value in sorted(set(_values(params or {}, name))):
            material += name + value
    digest = hmac.new(auth_token.encode(), material.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def resolve_action(
    action: str | None, document_url: str | None, public_base_url: str | None
) -> str:
    """The absolute URL Twilio would request for a Gather's ``action``.

    An absolute action is used as it is. A relative one is resolved against
    ``public_base_url`` when given (an inline ``Twiml`` document has no URL of
    its own), else against the document's URL. With no action at all Twilio
    requests the document's own URL again.
    """
    if action and urlsplit(action).scheme in {"http", "https"}:
        return action
    base = public_base_url or document_url
    if base is None:
        raise ValueError(
            "the Gather's action is relative (or missing) and the call has no document "
            "URL: pass public_base_url, the app's public address Twilio would use"
        )
    if not action:
        return base
    if public_base_url is not None and not public_base_url.endswith("/") and action[:1] != "/":
        base = public_base_url + "/"
    return urljoin(base, action)


@dataclass(frozen=True)
class GatherRequest:
    """The request Twilio makes to a Gather's action (see the module docstring)."""

    call_sid: str
    url: str
    method: str
    params: dict[str, str]
    signature: str
    digits: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"X-Twilio-Signature": self.signature, **self.extra_headers}
        if self.method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    @property
    def path(self) -> str:
        """Path and query of ``url``: what Flask's test client takes."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def send(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 5.0,
        session: requests.Session | None = None,
    ) -> requests.Response:
        """POST (or GET) it over HTTP: to ``base_url`` + ``path`` if given, else ``url``.

        The signature stays the one computed over the public ``url``, as when
        a proxy or tunnel sits between Twilio and the app.
        """
        target = base_url.rstrip("/") + self.path if base_url else self.url
        http = session or requests
        if self.method == "GET":
            return http.get(target, headers=self.headers, timeout=timeout)
        return http.post(target, data=self.params, headers=self.headers, timeout=timeout)


def gather_url_for_get(url: str, params: Mapping[str, str]) -> str:
    """A GET action's URL: Twilio appends the parameters to the query string."""
    separator = "&" if urlsplit(url).query else "?"
    return url + separator + urlencode(sorted(params.items()))
