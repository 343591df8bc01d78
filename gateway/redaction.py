"""Secrets out of log lines: a logging filter for every log the gateway writes or configures.

GET clients of the compatibility API send their token in the query string, and so do some
clients of every other API; access logs, error logs ("Error handling request /getdata/...")
and tracebacks would keep it. RedactSecrets masks, in each record's message and exception
text: the values of token-, password- and key-like parameters (``token=``, ``pass=``,
``password=``, ``*_token=``, ``api_key=``, ``secret=`` in query strings, forms, JSON and
Python reprs), ``Authorization`` values, bearer/basic credentials, our token formats
(``sgw_...``, ``dev_...``) anywhere, and 32-hex values (compatibility tokens) in query
strings. Where it is installed: settings.LOGGING (every handler, and Django's own loggers
routed through them), gateway/gunicorn_conf.py (gunicorn's access and error logs) and
gateway/celery.py (the Celery worker's and beat's handlers).
"""

from __future__ import annotations

import logging
import re

MASK = "[redacted]"

_NAME = r"(?:[a-z0-9_-]*token|pass|password|passwd|pwd|[a-z0-9_-]*secret|api[_-]?key)"
_RULES: list[tuple[re.Pattern[str], str]] = [
    # name=value in query strings, forms and reprs; the value may be quoted.
    (
        re.compile(
            rf"(?<![a-z0-9_-])({_NAME}=)(?:\[redacted\]|\"[^\"]*\"|'[^']*'|[^&\s\"'<>;,)}}\]]*)",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
    # "name": "value" in JSON and dict reprs.
    (
        re.compile(rf"([\"']{_NAME}[\"']\s*:\s*)(?:\"[^\"]*\"|'[^']*')", re.IGNORECASE),
        rf"\1{MASK}",
    ),
    # Authorization: <scheme> <credentials>, also as HTTP_AUTHORIZATION in a META repr.
    (
        re.compile(
            r"(authorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;}]+",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1 {MASK}"),
    # Our token formats, wherever they appear (prefixes shown in the admin are shorter).
    (re.compile(r"(?<![A-Za-z0-9])(sgw_|dev_)[A-Za-z0-9_-]{16,}"), rf"\1{MASK}"),
    # A compatibility token (32 hex) as any query-string value.
    (re.compile(r"([?&][^=&\s]*=)[0-9a-fA-F]{32}(?![0-9a-zA-Z])"), rf"\1{MASK}"),
]


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message or exception text holds a secret; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # by a filter met earlier on its way
            return True
        record.redacted = True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: the handler reports it as it would
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger) -> None:
    """Add the filter to ``logger`` and each of its handlers (once)."""
    for target in (logger, *logger.handlers):
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
