from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from devices import services
from devices.models import Device, PairingCode, SimSlot
from gateway.models import User


class SimSlotInline(admin.TabularInline):
    model = SimSlot
    extra = 0


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "account", "app_version", "enabled", "last_seen_at")
    list_filter = ("enabled",)
    search_fields = ("title", "imei", "serial_number", "number")
    inlines = [SimSlotInline]


@admin.register(PairingCode)
class PairingCodeAdmin(admin.ModelAdmin):
    """Adding a pairing code shows it once, with its QR code and the agent command."""

    list_display = ("id", "account", "created_at", "expires_at", "used_at", "device")
    readonly_fields = ("account", "created_at", "expires_at", "used_at", "device")

    def add_view(self, request, form_url="", extra_context=None):  # type: ignore[no-untyped-def]
        if not self.has_add_permission(request):
            raise PermissionDenied
        user = request.user
        assert isinstance(user, User)
        pairing, code = services.create_pairing_code(user.account)
        how = services.pairing_instructions(pairing, code, request.build_absolute_uri("/"))
        context = {**self.admin_site.each_context(request), "how": how, "opts": self.opts}
        return TemplateResponse(request, "admin/devices/pairingcode/created.html", context)

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
