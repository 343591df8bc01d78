from django.contrib import admin

from devices.models import Device, SimSlot


class SimSlotInline(admin.TabularInline):
    model = SimSlot
    extra = 0


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "account", "app_version", "enabled", "last_seen_at")
    list_filter = ("enabled",)
    search_fields = ("title", "imei", "serial_number", "number")
    inlines = [SimSlotInline]
