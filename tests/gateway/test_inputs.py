"""gateway.inputs: the one rule for input text, integers, times and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway import inputs
from gateway.inputs import InvalidInput


def test_text_with_a_nul_or_a_lone_surrogate_is_refused_naming_the_field():
    assert inputs.check_text("Grüße 😀", "body") == "Grüße 😀"
    with pytest.raises(InvalidInput, match=r"^body must not contain NUL"):
        inputs.check_text("a\x00b", "body")
    with pytest.raises(InvalidInput, match=r"^name contains an unpaired UTF-16 surrogate"):
        inputs.check_text("a\udc00", "name")


def test_integers_are_bounded_to_the_signed_64_bit_range():
    assert inputs.check_int(2**63 - 1, "customer_id") == 2**63 - 1
    assert inputs.check_int(-(2**63), "customer_id") == -(2**63)
    with pytest.raises(InvalidInput, match=r"^customer_id must be between"):
        inputs.check_int(2**63, "customer_id")


def test_a_local_time_that_is_year_10000_in_utc_is_out_of_range():
    local = datetime(9999, 12, 31, 23, 59, 59, tzinfo=ZoneInfo("Etc/GMT+12"))
    with pytest.raises(InvalidInput, match=r"^timetosend is out of range"):
        inputs.to_utc(local, "timetosend")
    with pytest.raises(InvalidInput, match=r"^timetosend is out of range"):
        inputs.stored_time(local, "timetosend")


def test_a_stored_time_keeps_a_day_from_the_ends_so_it_renders_in_any_zone():
    edge = datetime(9999, 12, 31, 12, 0, tzinfo=UTC)
    assert inputs.to_utc(edge, "f") == edge  # a filter bound may be anything representable
    with pytest.raises(InvalidInput, match="between 0001-01-02 and 9999-12-30"):
        inputs.stored_time(edge, "received_at")
    latest = inputs.stored_time(inputs.LATEST, "received_at")
    latest.astimezone(ZoneInfo("Pacific/Kiritimati"))  # +14:00 still renders
    inputs.stored_time(inputs.EARLIEST, "received_at").astimezone(ZoneInfo("Etc/GMT+12"))


def test_an_offset_beyond_15_59_is_refused_and_one_within_converts_to_utc():
    within = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=15, minutes=59)))
    assert inputs.to_utc(within, "send_at").utcoffset() == timedelta(0)
    beyond = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=16)))
    with pytest.raises(InvalidInput, match=r"^send_at has a UTC offset beyond"):
        inputs.to_utc(beyond, "send_at")


def test_a_send_time_is_at_most_ten_years_ahead_and_any_past_time_is_fine():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert inputs.send_time(now + timedelta(days=3653), "t", now=now) == now + timedelta(days=3653)
    assert inputs.send_time(datetime(1970, 1, 1, tzinfo=UTC), "t", now=now).year == 1970
    with pytest.raises(InvalidInput, match=r"^t is too far ahead: at most 10 years"):
        inputs.send_time(now + timedelta(days=3654), "t", now=now)


def test_naive_times_are_utc():
    assert inputs.to_utc(datetime(2030, 5, 1, 8, 0), "t") == datetime(2030, 5, 1, 8, 0, tzinfo=UTC)


def test_json_nested_deeper_than_the_limit_is_refused_without_a_recursion_error():
    for depth in (inputs.MAX_JSON_DEPTH + 1, 1000, 100_000):
        with pytest.raises(InvalidInput, match="nested deeper than 32 levels"):
            inputs.load_json("[" * depth + "]" * depth)
    deepest = "[" * inputs.MAX_JSON_DEPTH + "]" * inputs.MAX_JSON_DEPTH
    assert inputs.load_json(deepest) is not None


def test_an_over_deep_field_is_named_by_its_top_level_key():
    nested = "[" * 40 + "]" * 40
    with pytest.raises(InvalidInput, match=r"^smsdata is nested deeper"):
        inputs.load_json(f'{{"token": "x", "smsdata": {nested}}}')


def test_brackets_inside_strings_do_not_count_as_depth():
    text = json.dumps({"body": "[" * 500 + "{" * 500})
    assert inputs.load_json(text) == {"body": "[" * 500 + "{" * 500}


def test_a_lone_surrogate_anywhere_in_json_is_refused_with_its_path():
    with pytest.raises(InvalidInput, match=r"^smsdata\[1\]\.body contains an unpaired"):
        inputs.load_json('{"smsdata": [{"body": "ok"}, {"body": "a\\ud800"}]}')
    with pytest.raises(InvalidInput, match=r"\(a key\) contains an unpaired"):
        inputs.load_json('{"x\\udc00": 1}')
    # A surrogate pair is an ordinary character; an escaped backslash is no escape.
    assert inputs.load_json('{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}') == {
        "a": "😀",
        "b": "\\ud800",
    }


def test_nan_is_refused_only_where_asked():
    assert inputs.load_json("[NaN]") != [0]
    with pytest.raises(ValueError, match="NaN is not valid JSON"):
        inputs.load_json("[NaN]", allow_nan=False)
