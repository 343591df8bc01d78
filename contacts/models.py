"""Tags (contact groups), contacts and newsletters ("paket" on the wire)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from gateway.models import TenantQuerySet


class Tag(models.Model):
    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="tags")
    title = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["account", "id"], name="tag_account_idx")]

    def __str__(self) -> str:
        return self.title


class Contact(models.Model):
    account = models.ForeignKey(
        "gateway.Account", on_delete=models.CASCADE, related_name="contacts"
    )
    phone = models.CharField(max_length=32, help_text="Normalized phone number.")
    name = models.CharField(max_length=150, blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="contacts")
    opted_out = models.BooleanField(default=False, help_text="Receives no newsletters.")
    opted_out_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "phone"], name="contact_phone_per_account")
        ]

    def __str__(self) -> str:
        return self.name or self.phone


class Newsletter(models.Model):
    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        DONE = "done", "Done"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"

    account = models.ForeignKey(
        "gateway.Account", on_delete=models.CASCADE, related_name="newsletters"
    )
    title = models.CharField(max_length=150)
    device = models.ForeignKey(
        "devices.Device", null=True, on_delete=models.SET_NULL, related_name="newsletters"
    )
    sim = models.PositiveSmallIntegerField(default=0)
    body = models.TextField()
    tags = models.ManyToManyField(Tag, related_name="newsletters")
    send_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=State.choices, default=State.SCHEDULED)
    # Progress, kept by the code that moves messages so reads never count the message table.
    queued_count = models.PositiveIntegerField(default=0)
    sent_count = models.PositiveIntegerField(default=0)
    delivered_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When its messages were written (None: not yet).
    fanned_out_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When one of its messages last reached (or left) an outcome: its progress.
    progressed_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["account", "id"], name="newsletter_account_idx"),
            models.Index(
                fields=["send_at"],
                name="newsletter_due_idx",
                condition=Q(state="scheduled"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["scheduled", "sending", "done", "paused", "cancelled"]),
                name="newsletter_state_valid",
            )
        ]

    def __str__(self) -> str:
        return self.title


class ContactEvent(models.Model):
    """A change of a contact's newsletter consent: when, and why."""

    class Kind(models.TextChoices):
        OPTED_OUT = "opted_out", "Opted out"
        OPTED_IN = "opted_in", "Opted in"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=200)
    message = models.ForeignKey(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["contact", "at"], name="contact_event_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M}"
