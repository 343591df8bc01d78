from django.contrib import admin

from contacts.models import Contact, ContactEvent, Newsletter, Tag


class ContactEventInline(admin.TabularInline):
    model = ContactEvent
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "at", "reason", "message")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "account", "created_at")
    search_fields = ("title",)


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("id", "phone", "name", "account", "opted_out")
    list_filter = ("opted_out",)
    search_fields = ("phone", "name")
    filter_horizontal = ("tags",)
    inlines = [ContactEventInline]


@admin.register(Newsletter)
class NewsletterAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "account", "state", "send_at", "queued_count", "sent_count")
    list_filter = ("state",)
    readonly_fields = ("queued_count", "sent_count", "delivered_count", "failed_count")
