"""JWT access and refresh tokens of SMSGate's integration API (docs/smsgate-api.md).

HS256 with a key derived from SECRET_KEY for this purpose only, an issuer and an audience
of our own, so the tokens are good on that API and nowhere else (the REST API takes its own
tokens). Each issued pair is a row (``IssuedJwt``): a token whose row is revoked, spent by a
refresh, or gone is refused, so revoking works at once and a refresh token works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gateway import rows
from gateway.models import Account, IssuedJwt

ISSUER = "sms-gateway"
AUDIENCE = "smsgate-3rdparty"
ALL = "all:any"
REFRESH = "tokens:refresh"  # only in refresh tokens, and never satisfied by ALL
SCOPES = frozenset(
    {
        ALL,
        "messages:send",
        "messages:read",
        "messages:list",
        "messages:cancel",
        "messages:export",
        "devices:list",
        "devices:delete",
        "webhooks:list",
        "webhooks:write",
        "webhooks:delete",
        "settings:read",
        "settings:write",
        "logs:read",
        "inbox:list",
        "inbox:refresh",
        "tokens:manage",
    }
)


class InvalidToken(Exception):
    """Not a token of ours, expired, revoked or spent."""


class InvalidRequest(ValueError):
    pass


@dataclass(frozen=True)
class Pair:
    jti: str
    access: str
    refresh: str
    expires_at: datetime


@dataclass(frozen=True)
class Caller:
    account: Account
    scopes: frozenset[str]
    refresh: bool  # presented a refresh token


def _key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), b"smsgate-3rdparty-jwt", hashlib.sha256).digest()


def _encode(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, _key(), algorithm="HS256")


def _sign(row: IssuedJwt) -> Pair:
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(row.account_id), "jti": row.jti}
    issued = int(row.created_at.timestamp())
    access = _encode(
        {**base, "iat": issued, "exp": int(row.access_expires_at.timestamp()), "scopes": row.scopes}
    )
    refresh = _encode(
        {
            **base,
            "iat": issued,
            "exp": int(row.refresh_expires_at.timestamp()),
            "scopes": [REFRESH],
            "typ": "refresh",
        }
    )
    return Pair(row.jti, access, refresh, row.access_expires_at)


def check_scopes(scopes: object) -> list[str]:
    if not isinstance(scopes, list) or not 1 <= len(scopes) <= len(SCOPES):
        raise InvalidRequest("scopes must be a list of at least one scope")
    unknown = [s for s in scopes if not isinstance(s, str) or s not in SCOPES]
    if unknown:
        raise InvalidRequest(f"unknown scope: {str(unknown[0])[:40]}")
    return sorted(set(scopes))


def issue(account: Account, scopes: Iterable[str], ttl: int | None = None) -> Pair:
    """A new pair; ``ttl`` seconds of access life, capped at SMSGATE_JWT_ACCESS_SECONDS."""
    now = timezone.now().replace(microsecond=0)
    most = settings.SMSGATE_JWT_ACCESS_SECONDS
    life = most if not ttl else min(ttl, most)
    row = IssuedJwt.objects.create(
        jti=secrets.token_hex(16),
        account=account,
        scopes=sorted(set(scopes)),
        created_at=now,
        access_expires_at=now + timedelta(seconds=life),
        refresh_expires_at=now + timedelta(seconds=settings.SMSGATE_JWT_REFRESH_SECONDS),
    )
    return _sign(row)


def authenticate(token: str) -> Caller:
    """The account and scopes of a token; InvalidToken when it is not good now."""
    try:
        claims = jwt.decode(
            token,
            _key(),
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "jti", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        raise InvalidToken("invalid or expired token") from None
    account_id = claims["sub"]  # ours (the signature holds): an account's id as text
    if not (isinstance(account_id, str) and account_id.isascii() and account_id.isdigit()
            and len(account_id) <= 18):  # fmt: skip
        raise InvalidToken("invalid token")
    row = rows.first_with(
        IssuedJwt,
        "account",
        "t.jti = %s AND t.account_id = %s AND t.revoked_at IS NULL",
        [str(claims["jti"]), int(account_id)],
    )
    if row is None:
        raise InvalidToken("the token was revoked")
    refresh = claims.get("typ") == "refresh"
    scopes = frozenset([REFRESH] if refresh else row.scopes)
    return Caller(row.account, scopes, refresh)


def refresh(token: str) -> Pair:
    """A new pair with the same scopes for a refresh token, which is spent by it."""
    caller = authenticate(token)
    if not caller.refresh:
        raise InvalidToken("not a refresh token")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with transaction.atomic():
        row = IssuedJwt.objects.select_for_update().get(jti=jti)
        if row.revoked_at is not None:  # refreshed at the same moment by another request
            raise InvalidToken("the token was revoked")
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
        return issue(row.account, row.scopes)


def revoke(account: Account, jti: str) -> None:
    """End the pair ``jti`` of this account (access and refresh token); unknown: nothing."""
    IssuedJwt.objects.filter(account=account, jti=jti[:32], revoked_at=None).update(
        revoked_at=timezone.now()
    )


def prune(now: datetime | None = None) -> int:
    """Forget pairs whose refresh token has expired (housekeeping)."""
    deleted, _ = IssuedJwt.objects.filter(refresh_expires_at__lt=now or timezone.now()).delete()
    return deleted
