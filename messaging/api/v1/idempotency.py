"""Idempotency-Key for the REST API's create calls, kept 24 hours.

Same key and same request: the original answer again. Same key, different request: 422.
The same key while its first request is still running: 409. A first request that never
finished (its process killed, the database gone between the key and the work) stops
holding its key after IN_FLIGHT_LIMIT: nothing of it was stored, since the work and its
recorded answer commit together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from messaging.api.v1.base import Conflict, Unprocessable, account_of
from messaging.models import IdempotencyKey

MAX_KEY_LENGTH = 255
# Far longer than any create request runs.
IN_FLIGHT_LIMIT = timedelta(minutes=10)


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(request: Request, handle: Callable[[], Response]) -> Response:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return handle()
    if len(key) > MAX_KEY_LENGTH:
        raise Unprocessable(f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
    if not key.isprintable():
        # Control characters (a NUL cannot even be stored) are no one's idempotency key.
        raise Unprocessable("Idempotency-Key must be printable text")
    account = account_of(request)
    fingerprint = _fingerprint(request)
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(
                account=account, key=key, request_hash=fingerprint
            )
    except IntegrityError:
        existing = IdempotencyKey.objects.get(account=account, key=key)
        age = timezone.now() - existing.created_at
        if age > IdempotencyKey.KEEP or (existing.status_code is None and age > IN_FLIGHT_LIMIT):
            # Past its 24 hours (not swept yet), or abandoned unfinished: it starts afresh.
            existing.delete()
            return idempotent(request, handle)
        if existing.request_hash != fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was used with a different request; use a new key"
            ) from None
        if existing.status_code is None:
            raise Conflict() from None
        replay = Response(json.loads(existing.response), status=existing.status_code)
        replay["Idempotent-Replayed"] = "true"
        return replay
    try:
        # The work and its recorded answer commit together: one commit, not two.
        with transaction.atomic():
            response = handle()
            if response.status_code < 500:
                IdempotencyKey.objects.filter(pk=record.pk).update(
                    status_code=response.status_code,
                    response=json.dumps(response.data, default=str),
                )
    except Exception:
        # Nothing was done (a validation error, say): the key may be used again.
        record.delete()
        raise
    if response.status_code >= 500:
        record.delete()
    return response
