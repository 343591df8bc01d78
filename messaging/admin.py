from django import forms
from django.contrib import admin

from messaging import webhooks
from messaging.models import Message, MessageStatusChange, WebhookEndpoint, WebhookEvent


class StatusChangeInline(admin.TabularInline):
    model = MessageStatusChange
    extra = 0
    can_delete = False
    readonly_fields = ("from_status", "to_status", "changed_at", "source", "detail")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "phone", "status", "device", "sim", "urgent", "send_at", "created_at")
    list_filter = ("status", "urgent")
    search_fields = ("phone", "=customer_id")
    raw_id_fields = ("device", "newsletter", "account")
    # Status is written by messaging.services only; the admin shows it.
    readonly_fields = ("status", "status_changed_at", "sent_at", "delivered_at", "segments")
    show_full_result_count = False
    inlines = [StatusChangeInline]


class WebhookEndpointForm(forms.ModelForm):
    class Meta:
        model = WebhookEndpoint
        fields = ("account", "device", "kind", "url", "secret", "enabled")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        # The same check as every delivery: no private or loopback targets unless allowed.
        try:
            webhooks.resolve_target(url)
        except webhooks.TargetRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return str(url)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("id", "kind", "url", "device", "account", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    raw_id_fields = ("account", "device")


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = (
        "event_id",
        "kind",
        "endpoint",
        "state",
        "attempts",
        "last_status_code",
        "created_at",
    )
    list_filter = ("state", "kind")
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
