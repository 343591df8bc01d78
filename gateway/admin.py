from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.contrib.auth.models import Group
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from devices.models import Device
from devices.queries import is_online
from gateway import services
from gateway.admin_base import AccountScopedAdmin, account_of, sim_label
from gateway.models import Account, ApiToken, ServiceHeartbeat, User
from messaging import problems
from messaging.admin import problem_link, problem_subject
from messaging.models import FAILED, Message, MessageStatusChange, Problem, Status

# Our name on every admin page, and no "View site" link: the server has no public site.
admin.site.site_header = "SMS gateway"
admin.site.site_title = "SMS gateway"
admin.site.index_title = "Operator's console"
admin.site.site_url = None
# The lists need the width at 1280 px (the index and breadcrumbs lead everywhere the
# sidebar did); tests/test_browser_admin.py checks that no list scrolls sideways.
admin.site.enable_nav_sidebar = False
# Access is scoped by account (gateway.admin_base), not by Django's permission groups.
admin.site.unregister(Group)


class EmailUserCreationForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email", "account")


class EmailUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = ("email", "password", "account", "full_name", "is_active", "is_staff")


@admin.register(User)
class UserAdmin(AccountScopedAdmin, BaseUserAdmin):
    form = EmailUserChangeForm
    add_form = EmailUserCreationForm
    list_display = ("email", "account", "is_staff", "is_active", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "full_name")
    ordering = ("email",)
    fieldsets = (
        (None, {"fields": ("email", "password", "account")}),
        ("Personal info", {"fields": ("full_name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "account", "password1", "password2")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if account_of(request) is not None:
            # Staff never see superusers, even of their own account: opening one would let
            # them set its password and so become it.
            queryset = queryset.filter(is_superuser=False)
        return queryset

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if account_of(request) is None:
            return fieldsets
        # Staff of an account manage its logins (and who of them may use the admin), but
        # cannot make superusers, grant permissions or groups, or move logins to other
        # accounts. Only the fields shown are accepted from the form.
        hidden = {"account", "is_superuser", "groups", "user_permissions"}
        return [
            (name, {**opts, "fields": [f for f in opts["fields"] if f not in hidden]})
            for name, opts in fieldsets
        ]


@admin.register(Account)
class AccountAdmin(AccountScopedAdmin):
    account_path = "pk"
    list_display = ("name", "time_zone", "created_at")
    search_fields = ("name",)
    fields = ("name", "time_zone")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)


class TokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("account", "name")


@admin.register(ApiToken)
class ApiTokenAdmin(AccountScopedAdmin):
    """Tokens: created here with the secret shown once; revoked, never edited."""

    form = TokenForm
    list_display = ("name", "prefix", "kind", "created_at", "last_used_at", "revoked_at")
    list_filter = ("kind",)
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        return ("account", "name", "kind", "prefix", "created_at", "last_used_at", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("name",) if account_of(request) else ("account", "name")
        return self.get_readonly_fields(request, obj)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> Any:
        account = account_of(request)
        form = TokenForm(request.POST or None)
        if account is not None:
            form.fields.pop("account")
        if request.method == "POST" and form.is_valid():
            owner = account or form.cleaned_data["account"]
            token, secret = services.create_api_token(owner, form.cleaned_data["name"])
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f'API token "{token.name}" created',
                "token": token,
                "secret": secret,
            }
            return TemplateResponse(request, "admin/gateway/apitoken/created.html", context)
        return super().add_view(request, form_url, extra_context)

    @admin.action(description="Revoke")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for token in queryset:
            services.revoke_token(token.account, token.pk)
        self.message_user(request, f"{queryset.count()} tokens revoked.")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ServiceHeartbeat)
class ServiceHeartbeatAdmin(admin.ModelAdmin):
    """The worker's and beat's liveness marks (what /readyz reads): internal, so not on the
    index; a superuser can still open the list by its address when diagnosing."""

    list_display = ("name", "seen_at")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# --- Dashboard ------------------------------------------------------------------------------

_BUCKETS = {
    "sent": Q(to_status=Status.SENT),
    "delivered": Q(to_status=Status.DELIVERED),
    "failed": Q(to_status__in=FAILED),
}


def _counts(changes: QuerySet[Any]) -> dict[str, int]:
    return changes.aggregate(**{name: Count("pk", filter=q) for name, q in _BUCKETS.items()})


def _sim_rows(devices: QuerySet[Any], changes: QuerySet[Any], now: Any) -> list[dict[str, Any]]:
    """One row per device and SIM: health, queue, and what it sent, delivered and failed in
    24 hours and 7 days. A fixed number of grouped queries, however many phones."""
    day_ago = now - timedelta(hours=24)
    windows = {
        f"{window}_{name}": Count("pk", filter=q & since)
        for window, since in (("day", Q(changed_at__gte=day_ago)), ("week", Q()))
        for name, q in _BUCKETS.items()
    }
    moved = {
        (row["message__device_id"], row["message__sim"]): row
        for row in changes.filter(message__device__in=devices)
        .values("message__device_id", "message__sim")
        .annotate(**windows)
        .order_by()
    }
    queued = {
        (d, sim, status): n
        for d, sim, status, n in Message.objects.filter(
            device__in=devices, status__in=[Status.NEW, Status.TAKEN]
        )
        .values_list("device_id", "sim", "status")
        .annotate(n=Count("pk"))
        .order_by()
    }
    rows = []
    for device in devices.prefetch_related("sims").order_by("title", "pk"):
        cards = {card.slot: card for card in device.sims.all()}
        slots = sorted(set(cards) | {0})
        for slot in slots:
            counts = moved.get((device.pk, slot), {})
            rows.append(
                {
                    "device": device,
                    "sim": slot,
                    "sim_label": sim_label(slot, cards.get(slot)),
                    "first": slot == slots[0],
                    "span": len(slots),
                    "online": is_online(device, now),
                    "waiting": queued.get((device.pk, slot, Status.NEW), 0),
                    "with_phone": queued.get((device.pk, slot, Status.TAKEN), 0),
                    "day": {name: counts.get(f"day_{name}", 0) for name in _BUCKETS},
                    "week": {name: counts.get(f"week_{name}", 0) for name in _BUCKETS},
                }
            )
    return rows


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Per-device health and sent/delivered/failed counts over 24 hours and 7 days."""
    now = timezone.now()
    account = account_of(request)
    devices = Device.objects.all() if account is None else Device.objects.filter(account=account)
    changes = MessageStatusChange.objects.filter(changed_at__gte=now - timedelta(days=7))
    if account is not None:
        changes = changes.filter(message__account=account)
    by_day: dict[Any, dict[str, Any]] = {
        row["day"]: dict(row)
        for row in changes.annotate(day=TruncDate("changed_at"))
        .values("day")
        .annotate(**{name: Count("pk", filter=q) for name, q in _BUCKETS.items()})
    }
    days = [(now - timedelta(days=offset)).date() for offset in range(6, -1, -1)]
    counts = [{k: int(by_day.get(day, {}).get(k, 0)) for k in _BUCKETS} for day in days]
    peak = max([1, *(n for row in counts for n in row.values())])
    colors = {"sent": "#79aec8", "delivered": "#2e7d32", "failed": "#ba2121"}
    bars, labels = [], []
    for index, (day, row) in enumerate(zip(days, counts, strict=True)):
        labels.append({"x": index * 100, "text": f"{day:%a %d}"})
        for offset, (name, value) in enumerate(row.items()):
            height = round(80 * value / peak)
            bars.append(
                {
                    "x": index * 100 + offset * 22,
                    "y": 90 - height,
                    "height": height,
                    "color": colors[name],
                    "title": f"{day}: {value} {name}",
                }
            )
    device_rows = _sim_rows(devices, changes, now)
    scoped = Problem.objects.all() if account is None else Problem.objects.filter(account=account)
    open_problems = [
        {"problem": p, "about": problem_subject(p), "concerned": problem_link(p)}
        for p in problems.open_problems(scoped)[:50]
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "devices": device_rows,
        "problems": open_problems,
        "bars": bars,
        "labels": labels,
        "totals_day": _counts(changes.filter(changed_at__gte=now - timedelta(hours=24))),
        "totals_week": _counts(changes),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
