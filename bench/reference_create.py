"""The minimal reference of a single SMS create: a bare WSGI app doing only the unavoidable
work of ``POST /api/v1/messages`` on the gateway's own tables, without Django's request
handling, ORM, middleware, rate limits or idempotency. bench/single_create.py serves it with
the same gunicorn shape as the real app: real CPU per request / this one's is how close the
real paths get to the minimal endpoint doing the same one-row insert in one transaction.

Per request (psycopg, one connection per thread, no health check): the JSON body parsed;
the API token found by its hash (one SELECT); in one transaction, the device checked to be
the account's and to have the SIM (one SELECT), the message row inserted (its id
returned), COMMIT; the id answered as JSON. The number is taken as it comes (the real path
normalizes it) and the segments are counted as 1. Not for production: bench only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import _benchlib as lib
import django
import orjson
import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
django.setup()


from gateway.services import hash_token  # noqa: E402
from messaging.models import Status  # noqa: E402

NEW = int(Status.NEW)


def _create(conn: psycopg.Connection[Any], account: int, item: dict[str, Any]) -> int | None:
    now = datetime.now(UTC)
    with conn.transaction():
        owned = conn.execute(
            "SELECT 1 FROM devices_simslot s JOIN devices_device d ON d.id = s.device_id "
            "WHERE d.id = %s AND d.account_id = %s AND s.slot = 0",
            (item["device_id"], account),
        ).fetchone()
        if owned is None:
            return None
        row = conn.execute(
            "INSERT INTO messaging_message (account_id, device_id, sim, phone, phone_raw, body,"
            " status, send_at, urgent, segments, error_detail, external_id, created_at,"
            " status_changed_at, hold_reason) VALUES"
            " (%s, %s, 0, %s, %s, %s, %s, %s, false, 1, '', '', %s, %s, '') RETURNING id",
            (account, item["device_id"], item["to"], item["to"], item["body"], NEW, now, now, now),
        ).fetchone()
    return int(row[0]) if row else None


def _answer(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/healthz":
        return _answer(start_response, "200 OK", b"{}")
    conn = lib.reference_connection()
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    found = conn.execute(
        "SELECT account_id FROM gateway_apitoken WHERE token_hash = %s AND revoked_at IS NULL",
        (hash_token(token.strip()),),
    ).fetchone()
    conn.commit()
    if scheme.lower() != "bearer" or found is None:
        return _answer(start_response, "401 Unauthorized", b'{"detail":"unknown token"}')
    length = int(environ.get("CONTENT_LENGTH") or 0)
    created = _create(conn, found[0], orjson.loads(environ["wsgi.input"].read(length)))
    if created is None:
        return _answer(start_response, "422 Unprocessable Entity", b'{"detail":"no device"}')
    return _answer(start_response, "201 Created", orjson.dumps({"id": created}))
