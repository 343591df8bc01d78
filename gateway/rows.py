"""One row and the row its foreign key points to, read by a statement written once.

For lookups every request makes (a token and its account): building and compiling the
``select_related(...).filter(...).first()`` queryset on each call cost more than
PostgreSQL running it. Values go through the fields' own database converters, as the
ORM's do (SQLite's times come naive, JSON comes as text), and the related instance is
cached on the row as ``select_related`` caches it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)


def first_with(model: type[M], relation: str, where: str, params: Sequence[Any]) -> M | None:
    """The first ``model`` row (``t``) matching ``where`` (SQL over ``t`` and the related
    table ``r``, with %s placeholders), with its ``relation`` loaded; None if none."""
    with connection.cursor() as cursor:
        cursor.execute(_statement(model, relation, where), list(params))
        row = cursor.fetchone()
    if row is None:
        return None
    field = model._meta.get_field(relation)
    split = len(model._meta.concrete_fields)
    found = _instance(model, row[:split])
    field.set_cached_value(found, _instance(field.related_model, row[split:]))  # type: ignore[union-attr]
    return found


@functools.cache
def _statement(model: type[models.Model], relation: str, where: str) -> str:
    field = model._meta.get_field(relation)
    related = field.related_model._meta  # type: ignore[union-attr]
    columns = [f't."{f.column}"' for f in model._meta.concrete_fields]
    columns += [f'r."{f.column}"' for f in related.concrete_fields]
    return (
        f"SELECT {', '.join(columns)} FROM {model._meta.db_table} t "  # noqa: S608
        f'JOIN {related.db_table} r ON r."{related.pk.column}" = t."{field.column}" '  # type: ignore[union-attr]
        f"WHERE {where} LIMIT 1"
    )


def _instance(model: Any, values: Sequence[Any]) -> Any:
    fields = model._meta.concrete_fields
    converted = [from_db(f, v) for f, v in zip(fields, values, strict=True)]
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def from_db(field: Any, value: Any) -> Any:
    """``value``, as this database returned it for ``field``'s column, as the ORM reads it."""
    column = field.get_col(field.model._meta.db_table)
    for convert in connection.ops.get_db_converters(column) + field.get_db_converters(connection):
        value = convert(value, column, connection)
    return value
