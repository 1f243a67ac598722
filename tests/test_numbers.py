"""The one parser of numbers from outside, and the path converter built on it."""

from __future__ import annotations

import re

import pytest

from bot.exceptions import InvalidInput
from bot.web.numbers import ID_MAX, parse_id, parse_int


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("7", 7), ("500", 500), ("007", 7)])
def test_ascii_digits_within_bounds_are_read(raw, value):
    assert parse_int(raw, "n", low=0, high=500) == value


@pytest.mark.parametrize(
    "raw",
    ["", "²", "٣", "１", "-1", "+1", " 1", "1 ", "1\n", "1.0", "1e3", "0x1", "1_000"]
    + ["501", "0500"],
)
def test_anything_but_bounded_ascii_digits_is_invalid_input(raw):
    with pytest.raises(InvalidInput, match="n must be a whole number from 0 to 500"):
        parse_int(raw, "n", low=0, high=500)


def test_ids_run_from_one_to_the_largest_integer_every_database_column_holds():
    assert parse_id(str(ID_MAX), "id") == 2**31 - 1
    for raw in ("0", str(ID_MAX + 1), "9" * 25, "1" * 5000):
        with pytest.raises(InvalidInput):
            parse_id(raw, "id")


def test_every_route_takes_its_ids_through_the_bounded_converter(app):
    # werkzeug's <int:> reads every script's digits and has no upper bound.
    unbounded = sorted(
        rule.rule for rule in app.url_map.iter_rules() if re.search(r"<int[:(]", rule.rule)
    )

    assert unbounded == []
    assert any("<id:" in rule.rule for rule in app.url_map.iter_rules())
