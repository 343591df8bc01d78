"""What every admin page of the gateway shares: account scoping and counts that stay cheap.

A superuser sees everything. A staff user sees and changes only the objects of their own
account: list and detail pages, autocomplete, related choices in forms and filters, actions
and exports all start from ``get_queryset``, which is filtered here once for all models.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import DateTimeField, Model, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from gateway import inputs
from gateway.models import Account, User

# Exact counts above this are replaced by the planner's estimate (PostgreSQL).
EXACT_COUNT_LIMIT = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to EXACT_COUNT_LIMIT rows, then trusts the query planner.

    A changelist of a million messages must not run COUNT(*) over them on every page load:
    on PostgreSQL the count of a large result is the planner's row estimate for the same
    query (cheap, usually within a few percent), and "page N of about M" is all a person
    needs. SQLite (the embedded default) is small enough to count exactly.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor != "postgresql" or not isinstance(queryset, QuerySet):
            return super().count
        exact = queryset[: EXACT_COUNT_LIMIT + 1].count()
        if exact <= EXACT_COUNT_LIMIT:
            return int(exact)
        return max(exact, _planner_estimate(queryset))


def _planner_estimate(queryset: QuerySet[Any]) -> int:
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        import json

        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


# SIM slots as people count them, in every admin page: "SIM 1", "SIM 2" (the wire formats
# keep their own numbering: 0-based `sim` in our APIs, 1-based `simNumber` for the app).
SIM_CHOICES = [(0, "SIM 1"), (1, "SIM 2")]


def sim_label(slot: int | None, card: Any = None) -> str:
    """ "SIM 1", with the card's number and carrier where the phone reported them
    (``card``: its devices.models.SimSlot)."""
    if slot is None:
        return "-"
    known = [v for v in (getattr(card, "number", ""), getattr(card, "carrier_name", "")) if v]
    return f"SIM {slot + 1}" + (f" ({', '.join(known)})" if known else "")


def account_of(request: HttpRequest) -> Account | None:
    """The account whose objects this admin user may see; None = all (superuser)."""
    user = request.user
    if not isinstance(user, User) or user.is_superuser:
        return None
    return user.account


def _storable_time(value: Any) -> None:
    try:
        inputs.stored_time(value, "Time")
    except inputs.InvalidInput as exc:
        raise ValidationError(str(exc)) from None


class AccountScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose every queryset and choice is limited to the user's account.

    ``account_path`` is the lookup from the model to its account ("account" for most,
    "device__account" for SIM slots, ...). Staff of an account may manage its objects
    without per-model permissions: being staff of the account is the permission.
    """

    account_path = "account"
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        account = account_of(request)
        if account is None:
            return queryset
        return queryset.filter(**{self.account_path: account.pk})

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        # A time typed here is stored like one sent to an API: it must render in any zone.
        if isinstance(db_field, DateTimeField) and field is not None:
            field.validators.append(_storable_time)
        return field

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        # A term no text column can hold (a NUL: PostgreSQL refuses to even compare it)
        # matches nothing, rather than failing the page.
        try:
            inputs.check_text(search_term, "q")
        except inputs.InvalidInput:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        account = account_of(request)
        if account is not None:
            related = db_field.related_model
            if related is Account:
                kwargs["queryset"] = Account.objects.filter(pk=account.pk)
            elif hasattr(related, "account"):
                kwargs["queryset"] = related._default_manager.filter(account=account)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        account = account_of(request)
        related = db_field.related_model
        if account is not None and hasattr(related, "account"):
            kwargs["queryset"] = related._default_manager.filter(account=account)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def _hides_account(self, request: HttpRequest) -> bool:
        # A staff user's objects always belong to their own account: no field to choose it.
        return account_of(request) is not None and self.account_path == "account"

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        fields = super().get_fields(request, obj)
        if self._hides_account(request):
            return [f for f in fields if f != "account"]
        return fields

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if not self._hides_account(request):
            return fieldsets
        return [
            (name, {**opts, "fields": [f for f in opts["fields"] if f != "account"]})
            for name, opts in fieldsets
        ]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        account = account_of(request)
        if account is not None and self.account_path == "account" and not change:
            obj.account = account
        super().save_model(request, obj, form, change)

    def _staff(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._staff(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._staff(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._staff(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._staff(request)


class ScopedInline(admin.TabularInline):
    """Inlines are reached through a parent that is already scoped; they add nothing."""

    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_staff)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_staff)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_staff)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_staff)
