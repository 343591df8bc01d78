"""The minimal reference of the SMSGate fetch/report path: a bare WSGI app doing only the
unavoidable database work of ``GET /api/mobile/v1/message`` and ``PATCH
/api/mobile/v1/message`` on the gateway's own tables, without Django's request handling,
ORM, middleware or lifecycle checks. bench/smsgate_streams.py serves it with the same
gunicorn (workers x threads) as the real app and drains the same kind of queue through it:
real rate / this rate is how close the real path gets to what the machine can do.

Per request, in SQL (psycopg, one connection per thread, no health check):

- both: the device by its token hash (one SELECT);
- GET: one UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING
  leasing the device's next waiting messages and their history rows (INSERT ... SELECT: every
  move keeps one), answered as the app's JSON list;
- PATCH (one element, as the app sends): in one transaction, the row locked and read
  (SELECT ... FOR UPDATE), the status moved (UPDATE), its history row (INSERT), the
  account's status webhooks looked up (the outbox needs to know), COMMIT.

It skips what the real path must also do (pacing, SIM choice, state mapping, monotonic
outcome rules beyond one legal source state, heartbeats, input bounds, events for
listeners), so it is a limit, not an alternative. Not for production: bench only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import _benchlib as lib
import django
import orjson
import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
django.setup()


from gateway.services import hash_token  # noqa: E402
from messaging.models import Status, served_id, served_pk  # noqa: E402

TAKEN, SENT, NEW = int(Status.TAKEN), int(Status.SENT), int(Status.NEW)


def _device(conn: psycopg.Connection[Any], environ: dict[str, Any]) -> tuple[int, int] | None:
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    row = conn.execute(
        "SELECT id, account_id FROM devices_device WHERE token_hash = %s AND protocol = 'smsgate'",
        (hash_token(token.strip()),),
    ).fetchone()
    conn.commit()
    return (row[0], row[1]) if row else None


def _fetch(conn: psycopg.Connection[Any], device: int) -> bytes:
    now = datetime.now(UTC)
    rows = conn.execute(
        """UPDATE messaging_message SET status = %s, lease_id = %s, lease_expires_at = %s,
               status_changed_at = %s
           WHERE id IN (SELECT id FROM messaging_message
                        WHERE device_id = %s AND status = %s AND send_at <= %s
                        ORDER BY urgent DESC, send_at, id LIMIT 100
                        FOR UPDATE SKIP LOCKED)
           RETURNING id, created_at, phone, body, sim""",
        (TAKEN, uuid.uuid4(), now + timedelta(minutes=10), now, device, NEW, now),
    ).fetchall()
    conn.execute(
        "INSERT INTO messaging_messagestatuschange "
        "(message_id, from_status, to_status, changed_at, source, detail) "
        "SELECT id, %s, %s, %s, %s, '' FROM messaging_message WHERE id = ANY(%s)",
        (NEW, TAKEN, now, f"device {device}", [row[0] for row in rows]),
    )
    conn.commit()
    items = [
        {
            "id": served_id(pk, created),
            "message": body,
            "phoneNumbers": [phone],
            "simNumber": sim + 1,
            "withDeliveryReport": True,
        }
        for pk, created, phone, body, sim in sorted(rows)
    ]
    return orjson.dumps(items)


def _report(conn: psycopg.Connection[Any], device: int, account: int, body: bytes) -> None:
    (item,) = orjson.loads(body)
    pk = served_pk(item["id"])
    if pk is None:
        return
    now = datetime.now(UTC)
    with conn.transaction():
        row = conn.execute(
            "SELECT status, created_at FROM messaging_message "
            "WHERE id = %s AND device_id = %s FOR UPDATE",
            (pk, device),
        ).fetchone()
        if row is None or row[0] != TAKEN or served_id(pk, row[1]) != item["id"]:
            return
        conn.execute(
            "UPDATE messaging_message SET status = %s, status_changed_at = %s, "
            "sent_at = COALESCE(sent_at, %s) WHERE id = %s",
            (SENT, now, now, pk),
        )
        conn.execute(
            "INSERT INTO messaging_messagestatuschange "
            "(message_id, from_status, to_status, changed_at, source, detail) "
            "VALUES (%s, %s, %s, %s, %s, '')",
            (pk, TAKEN, SENT, now, f"device {device}"),
        )
        conn.execute(
            "SELECT id FROM messaging_webhookendpoint "
            "WHERE account_id = %s AND kind = 'status' AND enabled",
            (account,),
        ).fetchall()


def _answer(start_response: Callable[..., Any], status: str, body: bytes = b"") -> list[bytes]:
    headers = [("Content-Length", str(len(body)))]
    if body:
        headers.append(("Content-Type", "application/json"))
    start_response(status, headers)
    return [body]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/healthz":
        return _answer(start_response, "200 OK", b"{}")
    conn = lib.reference_connection()
    device = _device(conn, environ)
    if device is None:
        return _answer(start_response, "401 Unauthorized", b'{"message":"unknown token"}')
    if environ["REQUEST_METHOD"] == "GET":
        return _answer(start_response, "200 OK", _fetch(conn, device[0]))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    _report(conn, device[0], device[1], environ["wsgi.input"].read(length))
    return _answer(start_response, "204 No Content")
