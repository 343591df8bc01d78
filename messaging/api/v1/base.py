"""What every /api/v1/ view shares: bearer tokens, problem-details errors, rate limits."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request
from rest_framework.response import Response

from gateway import services as accounts
from gateway.models import Account, ApiToken

log = logging.getLogger(__name__)

PROBLEM_TYPES = "https://sms-gateway.invalid/problems/"


class TokenPrincipal:
    """request.user for a bearer-token request: the account the token belongs to."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, token: ApiToken) -> None:
        self.token = token
        self.account = token.account
        self.pk = None

    def __str__(self) -> str:
        return f"token {self.token.prefix}"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <API token>`` (any of the account's tokens)."""

    def authenticate(self, request: Request) -> tuple[TokenPrincipal, ApiToken] | None:
        scheme, _, secret = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = accounts.authenticate_token(secret.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("The token is invalid or was revoked")
        return TokenPrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class HasAccount(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(
            request.user
            and request.user.is_authenticated
            and getattr(request.user, "account", None)
        )


def account_of(request: Request) -> Account:
    account = getattr(request.user, "account", None)
    if not isinstance(account, Account):
        raise exceptions.NotAuthenticated()
    return account


class TokenRateThrottle(throttling.BaseThrottle):
    """API_RATE_LIMIT requests per token (or login) in fixed windows of the rate's period.

    One atomic counter per window (INCR on Redis), so the cost is the same at any rate;
    a cache that is down (Redis stopped) lets requests through rather than failing them.
    """

    def __init__(self) -> None:
        from rest_framework.settings import api_settings

        rate = str(api_settings.DEFAULT_THROTTLE_RATES["api"])
        count, _, period = rate.partition("/")
        self.limit = int(count)
        self.period = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[:1]]
        self.retry_after = 0

    def allow_request(self, request: Request, view: Any) -> bool:
        from django.core.cache import cache

        if isinstance(request.auth, ApiToken):
            who = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            who = f"user-{request.user.pk}"
        else:
            who = f"ip-{self.get_ident(request)}"
        now = time.time()
        window = int(now // self.period)
        key = f"ratelimit:{who}:{window}"
        try:
            cache.add(key, 0, timeout=2 * self.period)
            used = cache.incr(key)
        except Exception as exc:  # the cache backend is unreachable
            log.warning("rate limit not applied, cache unavailable: %s", exc)
            return True
        if used <= self.limit:
            return True
        self.retry_after = max(1, int((window + 1) * self.period - now))
        return False

    def wait(self) -> float:
        return float(self.retry_after)


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "A request with this Idempotency-Key is still being processed"
    default_code = "conflict"


class Unprocessable(exceptions.APIException):
    status_code = 422
    default_detail = "The request cannot be processed"
    default_code = "unprocessable"


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request is too large"
    default_code = "too_large"


_TITLES = {
    400: "Invalid request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
}


def problem(status: int, detail: str, *, errors: Any = None, code: str | None = None) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPES + (code or str(status)),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(body, status=status, content_type="application/problem+json")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every 4xx of the API as one RFC 9457 problem body (type, title, status, detail,
    errors for fields)."""
    # Imported here: DRF imports this module while rest_framework.views is still loading.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(f"The request body is larger than {limit:,} bytes")
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        result = problem(400, "Some fields are not valid", errors=errors, code="validation")
    else:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        result = problem(
            exc.status_code,
            str(detail),
            code=str(exc.default_code),
        )
    for header in ("Retry-After", "WWW-Authenticate", "Allow"):
        if header in response:
            result[header] = response[header]
    return result


class BearerScheme(OpenApiAuthenticationExtension):
    """How the schema describes BearerTokenAuthentication."""

    target_class = "messaging.api.v1.base.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API token of the account"}


PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": True},
    },
    "required": ["type", "title", "status", "detail"],
}
_ERROR_RESPONSES = {
    "400": "Invalid request (field errors in `errors`)",
    "401": "Missing, invalid or revoked token",
    "403": "Not allowed",
    "404": "No such object in your account",
    "405": "Method not allowed",
    "409": "A request with this Idempotency-Key is still running",
    "413": "Too large",
    "415": "Unsupported media type",
    "422": "Valid, but cannot be done (see `detail`)",
    "429": "Rate limit reached; see Retry-After",
    "503": "The database is not reachable; retry after Retry-After",
}


def add_problem_responses(
    result: dict[str, Any], generator: Any, request: Any, public: Any
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every operation documents its problem answers."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    reference = {"$ref": "#/components/schemas/Problem"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, text in _ERROR_RESPONSES.items():
                responses.setdefault(
                    code,
                    {
                        "description": text,
                        "content": {"application/problem+json": {"schema": reference}},
                    },
                )
    return result
