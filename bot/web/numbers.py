"""Numbers from outside (webhook fields, query strings, forms, URL paths), parsed strictly.

``str.isdigit()`` and ``\\d`` accept far more than 0-9: ``"²".isdigit()`` is true and
``int("²")`` then raises, while ``int("٣")`` quietly reads 3, a number nobody typed.
And a number may be well formed but too big for the column it is compared with
(our ids are INTEGER columns: 32 bits on PostgreSQL, which refuses a larger value
bound to them, 64 bits on SQLite, whose driver cannot even bind more), and the
database reports that as an error deep inside a query. So every number that crosses
an edge goes through :func:`parse_int`: ASCII digits only, no sign, no spaces, within
the bounds its use gives it; anything else raises :class:`~bot.exceptions.InvalidInput`,
which the edge answers with a 4xx. Path ids go through :class:`IdConverter`
(``<id:name>``), so an id out of range never matches a route and answers 404 like any
unknown id.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.routing import BaseConverter, ValidationError

from bot.exceptions import InvalidInput

__all__ = ["ID_MAX", "IdConverter", "parse_id", "parse_int"]

# The largest id an INTEGER column holds on every backend we run on (PostgreSQL's
# int4; SQLite's go to 2**63 - 1). Widen it with the columns, never beyond them.
ID_MAX = 2**31 - 1
_ASCII_DIGITS = re.compile(r"[0-9]+")  # never \d: it matches every script's digits


def parse_int(raw: str, name: str, *, low: int, high: int) -> int:
    """``raw`` as an integer within ``low..high``, or :class:`InvalidInput` naming ``name``."""
    # The length check keeps int() from ever working on a huge string.
    if len(raw) <= len(str(high)) and _ASCII_DIGITS.fullmatch(raw):
        value = int(raw)
        if low <= value <= high:
            return value
    raise InvalidInput(f"{name} must be a whole number from {low} to {high}")


def parse_id(raw: str, name: str) -> int:
    """A row id: 1 to :data:`ID_MAX`."""
    return parse_int(raw, name, low=1, high=ID_MAX)


class IdConverter(BaseConverter):
    """``<id:name>``: a row id in a URL path; anything else is not this route (404)."""

    regex = r"[0-9]{1,10}"  # len(str(ID_MAX)); parse_id checks the value
    weight = 50  # as werkzeug's own number converters: before plain strings

    def to_python(self, value: str) -> int:
        try:
            return parse_id(value, "id")
        except InvalidInput as error:
            raise ValidationError() from error

    def to_url(self, value: Any) -> str:
        return str(int(value))  # our own ids, from url_for: already integers
