from __future__ import annotations

import csv
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from contacts import services
from contacts.models import Contact, ContactEvent, Newsletter, Tag
from devices.admin import SenderChoiceField, senders
from gateway import inputs
from gateway.admin_base import (
    SIM_CHOICES,
    AccountScopedAdmin,
    ScopedInline,
    account_of,
    sim_label,
)
from gateway.phones import InvalidPhone, normalize_phone
from messaging.services import InvalidMessage, check_body

MAX_CSV_BYTES = 10 * 1024 * 1024


def _check_send_time(value: Any) -> None:
    # The rule every API applies to a send time (gateway.inputs): at most 10 years ahead.
    try:
        inputs.send_time(value, "Send time")
    except inputs.InvalidInput as exc:
        raise forms.ValidationError(str(exc)) from None


class ContactEventInline(ScopedInline):
    model = ContactEvent
    fields = ("kind", "at", "reason", "message")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _csv_response(name: str, header: list[str], rows: Any) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now():%Y%m%d}.csv"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows(rows)
    return response


@admin.register(Tag)
class TagAdmin(AccountScopedAdmin):
    list_display = ("id", "title", "created_at")
    search_fields = ("title",)
    actions = ["export_members"]

    @admin.action(description="Export their contacts as CSV")
    def export_members(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        contacts = Contact.objects.filter(tags__in=queryset).distinct().prefetch_related("tags")
        return _csv_response(
            "tag-contacts",
            ["phone", "name", "tags", "opted_out"],
            (
                [c.phone, c.name, ";".join(t.title for t in c.tags.all()), int(c.opted_out)]
                for c in contacts.iterator(chunk_size=2000)
            ),
        )


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row: phone,name,tags (tags separated by ;)")


class ContactForm(forms.ModelForm):
    """The number is normalized as every API normalizes it; a new number is a new contact."""

    class Meta:
        model = Contact
        fields = ("account", "phone", "name", "tags", "opted_out")

    def clean_phone(self) -> str:
        try:
            phone = normalize_phone(self.cleaned_data["phone"])
        except InvalidPhone as exc:
            raise forms.ValidationError(str(exc)) from None
        if self.instance.pk is not None and phone != self.instance.phone:
            raise forms.ValidationError("A contact's number cannot change; add a new contact")
        return phone


@admin.register(Contact)
class ContactAdmin(AccountScopedAdmin):
    form = ContactForm
    list_display = ("id", "phone", "name", "opted_out", "created_at")
    list_filter = ("opted_out",)
    search_fields = ("phone", "name")
    filter_horizontal = ("tags",)
    inlines = [ContactEventInline]
    actions = ["export_csv"]
    change_list_template = "admin/contacts/contact/change_list.html"

    def get_urls(self) -> list[Any]:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="contacts_contact_import",
            ),
            *super().get_urls(),
        ]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Through the services: one contact per number and account, consent changes logged.
        data = form.cleaned_data
        account = account_of(request) or data.get("account") or obj.account
        tags = [t.pk for t in data.get("tags", [])]
        if change:
            saved = services.update_contact(
                account,
                obj.pk,
                name=data.get("name", ""),
                opted_out=data.get("opted_out"),
                tag_ids=tags,
                reason="changed in the admin",
            )
        else:
            saved = services.save_contact(
                account, data["phone"], name=data.get("name", ""), tag_ids=tags
            )
            if data.get("opted_out"):
                services.set_opt_out(saved, True, reason="added opted out in the admin")
        obj.pk, obj.account_id = saved.pk, saved.account_id

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # The service saved the tags; the consent history inline is read-only (saving its
        # formset writes nothing, and the admin's change message reads what it did).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @admin.action(description="Export as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        return _csv_response(
            "contacts",
            ["phone", "name", "tags", "opted_out"],
            (
                [c.phone, c.name, ";".join(t.title for t in c.tags.all()), int(c.opted_out)]
                for c in queryset.prefetch_related("tags").iterator(chunk_size=2000)
            ),
        )

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """CSV import: phones normalized, duplicates merged, errors reported per row."""
        account = account_of(request) or request.user.account  # type: ignore[union-attr]
        form = ImportForm(request.POST or None, request.FILES or None)
        result = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            if upload.size > MAX_CSV_BYTES:
                form.add_error("file", "The file is larger than 10 MB")
            else:
                try:
                    result = services.import_csv(account, upload.file)
                except services.InvalidImport as exc:
                    form.add_error("file", str(exc))
                else:
                    trouble = result.errors or result.duplicates
                    level = messages.WARNING if trouble else messages.SUCCESS
                    self.message_user(
                        request,
                        f"{result.created} contacts created, {result.updated} updated, "
                        f"{len(result.errors)} rows with errors"
                        + (
                            f", {len(result.duplicates)} rows repeating a number of the file."
                            if result.duplicates
                            else "."
                        ),
                        level,
                    )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "result": result,
            "title": "Import contacts",
        }
        return TemplateResponse(request, "admin/contacts/contact/import.html", context)


class NewsletterForm(forms.ModelForm):
    """Checks what it sends as the services do: the device's SIM slot, the body's bounds."""

    sim = forms.TypedChoiceField(label="SIM", choices=SIM_CHOICES, coerce=int, initial=0)

    class Meta:
        model = Newsletter
        fields = ("account", "title", "device", "sim", "body", "tags", "send_at")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        device, sim = data.get("device"), data.get("sim")
        if device is not None and sim is not None and "sim" in self.fields:
            try:
                services.check_sender(device.account, device.pk, sim)
            except InvalidMessage as exc:
                if exc.field == "sim":  # the services count slots from 0; this page from 1
                    self.add_error("sim", f"This device has no {sim_label(sim)}.")
                else:
                    self.add_error(exc.field if exc.field in self.fields else None, str(exc))
        if data.get("body") and "body" in self.fields:
            try:
                check_body(data["body"])
            except InvalidMessage as exc:
                self.add_error("body", str(exc))
        return data


@admin.register(Newsletter)
class NewsletterAdmin(AccountScopedAdmin):
    form = NewsletterForm
    list_display = ("id", "title", "state", "send_at", "progress", "device")
    list_filter = ("state",)
    filter_horizontal = ("tags",)
    fields = (
        "account",
        "title",
        "device",
        "sim",
        "body",
        "tags",
        "send_at",
        "reach",
        "state",
        "queued_count",
        "sent_count",
        "delivered_count",
        "failed_count",
    )
    readonly_fields = (
        "reach",
        "state",
        "queued_count",
        "sent_count",
        "delivered_count",
        "failed_count",
    )
    actions = ["start_now", "pause", "resume", "cancel"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name != "device":
            return super().formfield_for_foreignkey(db_field, request, **kwargs)
        # A phone, or a pool that spreads the newsletter over its SIMs.
        kwargs.update(form_class=SenderChoiceField, help_text="A pool picks each SMS's SIM.")
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        field.queryset = senders(account_of(request))
        return field

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "send_at" and field is not None:
            field.validators.append(_check_send_time)
        return field

    def _sent(self, obj: Any) -> bool:
        return obj is not None and obj.state != Newsletter.State.SCHEDULED

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_fields(request, obj)
        # Fixed once it is being sent: the SIM shown as people count them.
        return [("sim_card" if f == "sim" else f) for f in fields] if self._sent(obj) else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self._sent(obj):
            # Once it is being sent, what it sends is fixed.
            return (*self.readonly_fields, "title", "device", "sim_card", "body", "tags", "send_at")
        return self.readonly_fields

    @admin.display(description="SIM")
    def sim_card(self, newsletter: Newsletter) -> str:
        return sim_label(newsletter.sim)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Through the services, as every API creates and changes newsletters (checks, the
        # fan-out of one that is due); the form has checked the fields already.
        data = form.cleaned_data
        account = account_of(request) or data.get("account") or obj.account
        if not change:
            created = services.create_newsletter(
                account,
                title=data["title"],
                device_id=data["device"].pk,
                sim=data["sim"],
                body=data["body"],
                tag_ids=[t.pk for t in data["tags"]],
                send_at=data.get("send_at"),
            )
            obj.pk, obj.account_id, obj.state = created.pk, created.account_id, created.state
            return
        fields = {"title": "title", "device": "device_id", "sim": "sim", "body": "body"}
        changes = {fields[f]: data[f] for f in form.changed_data if f in fields}
        if "device_id" in changes:
            changes["device_id"] = changes["device_id"].pk
        if "send_at" in form.changed_data:
            changes["send_at"] = data["send_at"]
        tags = [t.pk for t in data["tags"]] if "tags" in form.changed_data else None
        if changes or tags is not None:
            services.update_newsletter(account, obj.pk, tag_ids=tags, **changes)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the tags were saved with the newsletter by the service

    @admin.display(description="Will reach")
    def reach(self, newsletter: Newsletter) -> str:
        if newsletter.pk is None:
            return "(save to see)"
        return f"{services.recipients(newsletter).count()} contacts (not opted out)"

    @admin.display(description="Progress")
    def progress(self, newsletter: Newsletter) -> str:
        total = newsletter.queued_count or 0
        done = newsletter.sent_count + newsletter.failed_count
        percent = int(100 * done / total) if total else 0
        return format_html(
            '<div title="{} sent, {} delivered, {} failed of {}" '
            'style="width:120px;background:#eee;border-radius:3px">'
            '<div class="progress-bar" '
            'style="width:{}%;background:#417690;height:10px;border-radius:3px">'
            "</div></div>{}%",
            newsletter.sent_count,
            newsletter.delivered_count,
            newsletter.failed_count,
            total,
            percent,
            percent,
        )

    def _each(self, request: HttpRequest, queryset: QuerySet[Any], change: Any, verb: str) -> None:
        done, refused = 0, 0
        for newsletter in queryset:
            try:
                change(newsletter.account, newsletter.pk)
                done += 1
            except services.IllegalNewsletterChange:
                refused += 1
        self.message_user(request, f"{done} {verb}, {refused} could not be.")

    @admin.action(description="Start now")
    def start_now(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, services.start_newsletter, "started")

    @admin.action(description="Pause")
    def pause(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, services.pause_newsletter, "paused")

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, services.resume_newsletter, "resumed")

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, services.cancel_newsletter, "cancelled")

    def response_post_save_add(self, request: HttpRequest, obj: Any) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:contacts_newsletter_change", args=[obj.pk]))
