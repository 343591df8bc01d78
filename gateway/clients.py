"""Who is calling: the client's address, as every password and rate limit counts it."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """The caller's IP address; behind a proxy (BEHIND_PROXY), the one the proxy saw."""
    if settings.BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            # The proxy appends the address it saw; anything left of it is client-supplied.
            return forwarded.split(",")[-1].strip()[:64]
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def public_url(request: HttpRequest) -> str:
    """The server's own address for URLs handed to phones and people: PUBLIC_URL, else the
    address this request came to (scheme and host as the proxy reported them with
    BEHIND_PROXY)."""
    return settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
