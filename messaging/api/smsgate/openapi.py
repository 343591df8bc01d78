"""This server's OpenAPI document of SMSGate's integration API, served at
``/api/3rdparty/v1/openapi.json`` (and under the cloud-shaped mount): every route, its
scope, bodies, answers and errors as this server gives them (docs/smsgate-api.md).

Written out here, not generated: the views are plain Django views speaking SMSGate's wire
format. ``tests/messaging/test_smsgate_schemathesis.py`` holds every answer to it, and
checks that every route and method served is documented, and nothing more.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from devices import phone_settings
from gateway import jwt_tokens
from messaging import webhooks
from messaging.api.smsgate import wire

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: dict[str, Any] | None = None, **headers: str) -> Any:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {JSON: {"schema": schema}}
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "The request is invalid (the message says why)",
        401: "No valid credentials",
        403: "The token lacks the scope",
        404: "Not found (also for another account's id)",
        409: "Conflict (the message says why)",
        413: "The body is too large",
        429: "Too many failed logins from this address",
    }
    return {str(code): _answer(meaning[code], _ref("Error")) for code in (401, 429, *codes)}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64}}  # fmt: skip


def _op(scope: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "description": f"Scope: `{scope}`.", "responses": responses,
            "security": [{"basic": []}, {"bearer": []}], **extra}  # fmt: skip


TIME = {"type": "string", "format": "date-time"}
OPTIONAL_TIME = {"type": "string", "format": "date-time", "nullable": True}
STATE = {"type": "string", "enum": list(wire.STATES)}
DEVICE_ID = {"type": "string", "maxLength": 21, "nullable": True}


def _schemas() -> dict[str, Any]:
    setting = {"type": "object", "additionalProperties": True}
    sections = {
        section: {
            "type": "object",
            "properties": {key: {} for key in keys if (section, key) not in phone_settings.DROPPED},
            "additionalProperties": True,
        }
        for section, keys in phone_settings.SCHEMA.items()
    }
    return {
        "Error": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"type": "string", "minLength": 1}},
        },
        "Message": {
            "type": "object",
            "required": ["phoneNumbers"],
            "properties": {
                "id": {"type": "string", "maxLength": 36},
                "deviceId": DEVICE_ID,
                "phoneNumbers": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                "textMessage": _ref("TextMessage"),
                "dataMessage": _ref("DataMessage"),
                "message": {"type": "string", "maxLength": 65535, "deprecated": True},
                "simNumber": {"type": "integer", "minimum": 1, "maximum": 3},
                "priority": {"type": "integer", "minimum": -128, "maximum": 127},
                "withDeliveryReport": {"type": "boolean"},
                "isEncrypted": {"type": "boolean"},
                "ttl": {"type": "integer", "minimum": 5},
                "validUntil": TIME,
                "scheduleAt": TIME,
            },
        },
        "TextMessage": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 65535}},
        },
        "DataMessage": {
            "type": "object",
            "required": ["data", "port"],
            "properties": {
                "data": {"type": "string", "minLength": 4, "maxLength": 65535},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
        },
        "MessageState": {
            "type": "object",
            "required": [
                "id",
                "deviceId",
                "state",
                "isHashed",
                "isEncrypted",
                "recipients",
                "states",
            ],
            "properties": {
                "id": {"type": "string"},
                "deviceId": {"type": "string"},
                "state": STATE,
                "isHashed": {"type": "boolean"},
                "isEncrypted": {"type": "boolean"},
                "recipients": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["phoneNumber", "state"],
                        "properties": {
                            "phoneNumber": {"type": "string"},
                            "state": STATE,
                            "error": {"type": "string"},
                        },
                    },
                },
                "states": {"type": "object", "additionalProperties": TIME},
                "createdAt": TIME,
                "textMessage": _ref("TextMessage"),
                "dataMessage": _ref("DataMessage"),
            },
        },
        "Device": {
            "type": "object",
            "required": ["id", "name", "createdAt", "updatedAt", "lastSeen"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "createdAt": TIME,
                "updatedAt": TIME,
                "lastSeen": TIME,
                "simCards": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["slotIndex", "simNumber"],
                        "properties": {
                            "slotIndex": {"type": "integer", "minimum": 0},
                            "simNumber": {"type": "integer", "minimum": 1},
                            "phoneNumber": {"type": "string"},
                            "carrierName": {"type": "string"},
                            "iccid": {"type": "string"},
                        },
                    },
                },
            },
        },
        "IncomingMessage": {
            "type": "object",
            "required": ["id", "type", "sender", "contentPreview", "createdAt"],
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string", "enum": ["SMS", "DATA_SMS", "MMS", "MMS_DOWNLOADED"]},
                "sender": {"type": "string"},
                "recipient": {"type": "string"},
                "simNumber": {"type": "integer", "minimum": 1},
                "contentPreview": {"type": "string"},
                "createdAt": TIME,
            },
        },
        "InboxRequest": {
            "type": "object",
            "required": ["since", "until"],
            "properties": {
                "deviceId": DEVICE_ID,
                "since": TIME,
                "until": TIME,
                "messageTypes": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["SMS", "MMS"]},
                },
                "webhookDelivery": {"type": "string", "enum": ["Disabled", "Individual", "Batch"]},
            },
        },
        "Webhook": {
            "type": "object",
            "required": ["id", "deviceId", "url", "event"],
            "properties": {
                "id": {"type": "string", "maxLength": 36, "nullable": True},
                "deviceId": DEVICE_ID,
                "url": {"type": "string", "format": "uri", "maxLength": 500},
                "event": {"type": "string", "enum": list(webhooks.SMSGATE_EVENTS)},
            },
        },
        "Settings": {"type": "object", "properties": sections, "additionalProperties": setting},
        "LogEntry": {
            "type": "object",
            "required": ["id", "priority", "module", "message", "context", "createdAt"],
            "properties": {
                "id": {"type": "integer"},
                "priority": {"type": "string", "enum": ["DEBUG", "INFO", "WARN", "ERROR"]},
                "module": {"type": "string"},
                "message": {"type": "string"},
                "context": {"type": "object"},
                "createdAt": TIME,
            },
        },
        "TokenRequest": {
            "type": "object",
            "required": ["scopes"],
            "properties": {
                "scopes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "enum": sorted(jwt_tokens.SCOPES)},
                },
                "ttl": {"type": "integer", "minimum": 0},
            },
        },
        "Token": {
            "type": "object",
            "required": [
                "id",
                "access_token",
                "refresh_token",
                "token_type",
                "expires_at",
                "accessToken",
                "refreshToken",
                "tokenType",
                "expiresAt",
            ],
            "properties": {
                "id": {"type": "string"},
                **{
                    key: {"type": "string"}
                    for key in (
                        "access_token",
                        "refresh_token",
                        "token_type",
                        "accessToken",
                        "refreshToken",
                        "tokenType",
                    )
                },
                "expires_at": TIME,
                "expiresAt": TIME,
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
                "checks": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "description": {"type": "string"},
                            "observedUnit": {"type": "string"},
                            "observedValue": {"type": "integer"},
                            "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
                        },
                    },
                },
            },
        },
    }


def _paths() -> dict[str, Any]:
    state = _answer("The message's state", _ref("MessageState"))
    states = _answer(
        "Message states", {"type": "array", "items": _ref("MessageState")},
        **{"X-Total-Count": "How many match"},
    )  # fmt: skip
    empty = _answer("Accepted", {"type": "object"})
    done = {"description": "Done"}
    page = [
        _query("limit", {"type": "integer", "minimum": 1}),
        _query("offset", {"type": "integer", "minimum": 0}),
        _query("from", TIME, "Created at or after"),
        _query("to", TIME, "Created before"),
        _query("deviceId", {"type": "string"}),
    ]
    message = {
        "get": _op("messages:read", "A message's state", {"200": state, **_errors(404)}),
        "delete": _op(
            "messages:cancel", "Cancel a message no phone has taken",
            {"200": state, **_errors(404, 409)},
        ),
        "parameters": [_path("id", "The message's id")],
    }  # fmt: skip
    messages = {
        "post": _op(
            "messages:send", "Send an SMS to 1-100 recipients",
            {"202": _answer("Accepted", _ref("MessageState"), Location="The state's URL"),
             **_errors(400, 409, 413)},
            requestBody=_body(_ref("Message")),
            parameters=[
                _query("skipPhoneValidation", {"type": "boolean"}),
                _query("deviceActiveWithin", {"type": "integer", "minimum": 0}, "Hours"),
            ],
        ),
        "get": _op(
            "messages:list", "List message states, newest first",
            {"200": states, **_errors(400)},
            parameters=[
                *page,
                _query("state", STATE),
                _query("sort", {"type": "string", "enum": ["created_at", "-created_at"]}),
                _query("includeContent", {"type": "boolean"}),
            ],
        ),
    }  # fmt: skip
    export = {
        "post": _op(
            "messages:export", "Ask the phones to upload their inbox again (older spelling)",
            {"202": empty, **_errors(400, 413)}, requestBody=_body(_ref("InboxRequest")),
        )
    }  # fmt: skip
    devices = {
        "get": _op(
            "devices:list", "The account's phones",
            {"200": _answer("Phones", {"type": "array", "items": _ref("Device")})},
        )
    }  # fmt: skip
    device = {
        "delete": _op("devices:delete", "Remove a phone", {"204": done, **_errors(404)}),
        "parameters": [_path("id", "The phone's id")],
    }
    settings_answer = _answer("The settings as stored", _ref("Settings"))
    write = {"200": settings_answer, **_errors(400, 413)}
    health = {
        "get": {
            "summary": "Health probe (no authentication)",
            "security": [],
            "responses": {
                "200": _answer("pass or warn", _ref("Health")),
                "503": _answer("fail", _ref("Health")),
            },
        }
    }
    return {
        "/messages": messages,
        "/message": messages,
        "/messages/{id}": message,
        "/message/{id}": message,
        "/inbox": {
            "get": _op(
                "inbox:list", "SMS the account's phones received, newest first",
                {"200": _answer("Incoming SMS", {"type": "array", "items": _ref("IncomingMessage")},
                                **{"X-Total-Count": "How many match"}),
                 **_errors(400)},
                parameters=[*page, _query("type", {"type": "string",
                            "enum": ["SMS", "DATA_SMS", "MMS", "MMS_DOWNLOADED"]})],
            )
        },
        "/inbox/refresh": {
            "post": _op(
                "inbox:refresh", "Ask the phones to upload their inbox between two times again",
                {"202": empty, **_errors(400, 413)}, requestBody=_body(_ref("InboxRequest")),
            )
        },
        "/inbox/export": export,
        "/messages/inbox/export": export,
        "/webhooks": {
            "get": _op(
                "webhooks:list", "The account's webhooks",
                {"200": _answer("Webhooks", {"type": "array", "items": _ref("Webhook")})},
            ),
            "post": _op(
                "webhooks:write", "Create a webhook, or replace the one with the same id",
                {"201": _answer("The webhook", _ref("Webhook")), **_errors(400, 413)},
                requestBody=_body(_ref("Webhook")),
            ),
        },
        "/webhooks/{id}": {
            "delete": _op("webhooks:delete", "Delete a webhook", {"204": done}),
            "parameters": [_path("id", "The webhook's id")],
        },
        "/devices": devices,
        "/device": devices,
        "/devices/{id}": device,
        "/device/{id}": device,
        "/settings": {
            "get": _op("settings:read", "The account's phone settings", {"200": settings_answer}),
            "put": _op("settings:write", "Replace the settings", write,
                       requestBody=_body(_ref("Settings"))),
            "patch": _op("settings:write", "Change some settings", write,
                         requestBody=_body(_ref("Settings"))),
        },
        "/logs": {
            "get": _op(
                "logs:read", "The server's record of the account's SMS, newest first",
                {"200": _answer("Entries", {"type": "array", "items": _ref("LogEntry")}),
                 **_errors(400)},
                parameters=[_query("from", TIME), _query("to", TIME)],
            )
        },
        "/auth/token": {
            "post": _op(
                "tokens:manage", "Issue an access and refresh token",
                {"201": _answer("The pair", _ref("Token")), **_errors(400, 413)},
                requestBody=_body(_ref("TokenRequest")),
            )
        },
        "/auth/token/refresh": {
            "post": {
                "summary": "A new pair for a refresh token (spent by it)",
                "description": "Authorization: Bearer <refresh token> (scope tokens:refresh).",
                "security": [{"bearer": []}],
                "responses": {"201": _answer("The pair", _ref("Token")), **_errors(403)},
            }
        },
        "/auth/token/{jti}": {
            "delete": _op("tokens:manage", "Revoke a pair", {"204": done}),
            "parameters": [_path("jti", "The pair's id")],
        },
        "/health": health,
        "/health/live": health,
        "/health/ready": health,
        "/health/startup": health,
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    paths = _paths()
    for item in paths.values():
        for method, operation in item.items():
            if method != "parameters" and operation.get("security"):
                operation["responses"].setdefault("403", _errors(403)["403"])
            if method != "parameters" and "parameters" in item:  # an id too long for a route
                operation["responses"].setdefault("404", _errors(404)["404"])
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "SMSGate integration API (as served by this gateway)",
            "version": "1",
            "description": "Compatible with SMSGate's 3rd-party API and SDKs: docs/smsgate-api.md.",
        },
        "servers": [{"url": "/api/3rdparty/v1"}, {"url": "/3rdparty/v1"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }
