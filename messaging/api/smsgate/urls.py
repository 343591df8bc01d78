"""Routes of SMSGate's integration API, mounted at ``/api/3rdparty/v1/`` and
``/3rdparty/v1/`` (gateway/urls.py): both spellings SMSGate's SDKs use (``/message`` and
``/messages``, ``/device`` and ``/devices``), with or without a trailing slash, never a
redirect (a redirected POST loses its body)."""

from django.urls import re_path

from messaging.api.smsgate import views

messages = views.api(GET=(views.list_messages, "messages:list"), POST=(views.send, "messages:send"))
message = views.api(
    GET=(views.get_state, "messages:read"), DELETE=(views.cancel, "messages:cancel")
)
devices = views.api(GET=(views.list_devices, "devices:list"))
device = views.api(DELETE=(views.remove_device, "devices:delete"))
inbox = views.api(GET=(views.list_inbox, "inbox:list"))
inbox_refresh = views.api(POST=(views.refresh_inbox, "inbox:refresh"))
inbox_export = views.api(POST=(views.export_inbox, "messages:export"))
hooks = views.api(
    GET=(views.list_webhooks, "webhooks:list"), POST=(views.create_webhook, "webhooks:write")
)
hook = views.api(DELETE=(views.delete_webhook, "webhooks:delete"))
settings = views.api(
    GET=(views.get_settings, "settings:read"),
    PUT=(views.replace_settings, "settings:write"),
    PATCH=(views.patch_settings, "settings:write"),
)
logs = views.api(GET=(views.logs, "logs:read"))
token = views.api(POST=(views.issue_token, "tokens:manage"))
refresh = views.api(POST=(views.refresh_token, "tokens:refresh"))
revoke = views.api(DELETE=(views.revoke_token, "tokens:manage"))

urlpatterns = [
    re_path(r"^messages?/?$", messages, name="smsgate-messages"),
    # Before the message routes: inbox/export must not be read as a message id.
    re_path(r"^(?:messages?/)?inbox/export/?$", inbox_export, name="smsgate-inbox-export"),
    re_path(r"^messages?/(?P<key>[^/]{1,64})/?$", message, name="smsgate-message"),
    re_path(r"^inbox/?$", inbox, name="smsgate-inbox"),
    re_path(r"^inbox/refresh/?$", inbox_refresh, name="smsgate-inbox-refresh"),
    re_path(r"^logs/?$", logs, name="smsgate-logs"),
    re_path(r"^settings/?$", settings, name="smsgate-settings"),
    re_path(r"^webhooks/?$", hooks, name="smsgate-webhooks"),
    re_path(r"^webhooks/(?P<client_id>[^/]{1,64})/?$", hook, name="smsgate-webhook"),
    re_path(r"^devices?/?$", devices, name="smsgate-devices"),
    re_path(r"^devices?/(?P<device_id>[^/]{1,32})/?$", device, name="smsgate-device"),
    re_path(r"^auth/token/?$", token, name="smsgate-token"),
    re_path(r"^auth/token/refresh/?$", refresh, name="smsgate-token-refresh"),
    re_path(r"^auth/token/(?P<jti>[^/]{1,64})/?$", revoke, name="smsgate-token-revoke"),
    re_path(r"^openapi\.json$", views.openapi_view, name="smsgate-openapi"),
    re_path(r"^health/?$", views.health_view),
    re_path(r"^health/(?P<probe>live|ready|startup)/?$", views.health_view),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
