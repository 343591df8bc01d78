"""The input rules of gateway.inputs as Django REST framework pieces, for every DRF API.

The REST API (``/api/v1/``) and the device protocol (``/api/device/v1/``) parse JSON with
``JSONParser`` (the default parser in settings) and declare integers and times with the
fields below, so each API's own error handler renders a refusal in that API's shape.
"""

from __future__ import annotations

import codecs
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework import exceptions, parsers, serializers

from gateway import inputs


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, bounded: strict UTF-8, no NaN, nesting and surrogates checked by
    gateway.inputs. Every refusal is a ParseError (400), never a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        # DRF hands JSON parsers request.body, which Django bounds by
        # DATA_UPLOAD_MAX_MEMORY_SIZE (RequestDataTooBig, answered 413 by each API).
        raw = stream.read() if stream is not None else b""
        encoding = parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError):
            raise exceptions.ParseError(f"The request body is not valid {encoding}") from None
        try:
            return inputs.load_json(text, allow_nan=not self.strict)
        except inputs.InvalidInput as exc:
            raise exceptions.ParseError(str(exc)) from None
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


class Int64Field(serializers.IntegerField):
    """An integer within the signed 64-bit range of a BigIntegerField (or the narrower
    bounds given). DRF refuses true/false and fractions already."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", inputs.INT64_MIN)
        kwargs.setdefault("max_value", inputs.INT64_MAX)
        super().__init__(**kwargs)


class TimeField(serializers.DateTimeField):
    """An ISO 8601 time, in UTC and range-checked (gateway.inputs): a stored time, or with
    ``schedule`` a send time (at most 10 years ahead). Naive times are UTC."""

    def __init__(self, *, schedule: bool = False, **kwargs: Any) -> None:
        self.schedule = schedule
        super().__init__(**kwargs)

    def to_internal_value(self, value: Any) -> datetime:
        if isinstance(value, str):
            # The offset as written: DRF converts to UTC before we would see it.
            try:
                written = parse_datetime(value.strip())
            except ValueError:
                written = None
            if written is not None:
                self._check(inputs.to_utc, written)
        moment = super().to_internal_value(value)
        return self._check(inputs.send_time if self.schedule else inputs.stored_time, moment)

    def _check(self, rule: Any, moment: datetime) -> datetime:
        try:
            result: datetime = rule(moment, self.field_name or "time")
        except inputs.InvalidInput as exc:
            raise serializers.ValidationError(str(exc)) from None
        return result


def check_text(value: str, field: str) -> str:
    """gateway.inputs.check_text for a serializer field: a ValidationError."""
    try:
        return inputs.check_text(value, field)
    except inputs.InvalidInput as exc:
        raise serializers.ValidationError(str(exc)) from None
