from django.contrib import admin

from messaging.models import Message, MessageStatusChange


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
