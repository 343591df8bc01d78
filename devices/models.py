"""Phones (devices) and their SIM slots."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from gateway.models import TenantQuerySet


class Device(models.Model):
    account = models.ForeignKey("gateway.Account", on_delete=models.CASCADE, related_name="devices")
    title = models.CharField(max_length=150, default="Phone", help_text="Model name or a label.")
    number = models.CharField(max_length=32, blank=True)
    imei = models.CharField(max_length=32, blank=True)
    serial_number = models.CharField(max_length=64, blank=True)
    app_version = models.CharField(max_length=32, blank=True)
    # Seconds between two SMS on one SIM; None = no extra delay (the platform limit holds).
    delay_between_sms = models.PositiveIntegerField(null=True, blank=True)
    # Seconds between two polls when there is nothing to send.
    delay_between_requests = models.PositiveIntegerField(default=10)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["account", "id"], name="device_account_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(delay_between_requests__gte=1) & Q(delay_between_requests__lte=3600),
                name="device_poll_delay_range",
            ),
            models.CheckConstraint(
                condition=Q(delay_between_sms__isnull=True) | Q(delay_between_sms__lte=3600),
                name="device_sms_delay_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} (#{self.pk})"


class SimSlot(models.Model):
    """One SIM slot of a device, as the phone last reported it."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="sims")
    slot = models.PositiveSmallIntegerField(help_text="0-based slot index (the API's `sim`).")
    iccid = models.CharField(max_length=32, blank=True)
    number = models.CharField(max_length=32, blank=True)
    roaming = models.BooleanField(default=False)
    country_iso = models.CharField(max_length=8, blank=True)
    carrier_name = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["slot"]
        constraints = [
            models.UniqueConstraint(fields=["device", "slot"], name="simslot_unique_per_device"),
            models.CheckConstraint(condition=Q(slot__lte=7), name="simslot_slot_range"),
        ]

    def __str__(self) -> str:
        return f"SIM {self.slot + 1} of device #{self.device_id}"
