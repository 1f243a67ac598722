"""What every admin page shares: the admin-only guard, the office, downloads."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Response, abort, request
from sqlalchemy.orm import Session

from bot.console.auth import operator
from storage.models import Tenant

View = TypeVar("View", bound=Callable[..., Any])


def admin_required(view: View) -> View:
    """Operators get 403 on the page and on every action (GET or POST alike)."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not operator().is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(View, guarded)


def office(session: Session) -> Tenant:
    tenant = session.get(Tenant, operator().tenant_id)
    assert tenant is not None  # the session's loader checked it exists and is live
    return tenant


def filters_for_audit() -> dict[str, str]:
    # Bounded: the query string is the client's, the audit row is forever.
    return {key[:32]: value[:100] for key, value in list(request.args.items())[:10] if value}


def download(name: str, body: bytes, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def json_download(name: str, data: Any) -> Response:
    body = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    return download(name, body, "application/json")


def csv_download(name: str, header: list[str], rows: Iterable[Iterable[Any]]) -> Response:
    """A CSV that Excel opens as UTF-8 (with a BOM), ``;``-separated as Italian
    spreadsheets expect; cells starting like a formula are quoted as text."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer, delimiter=";")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    return download(name, buffer.getvalue().encode("utf-8"), "text/csv; charset=utf-8")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # CSV injection: a cell a spreadsheet would run as a formula is kept as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
