"""Thin Celery entry points for the device protocol's sweeps (scheduled by beat)."""

from celery import shared_task

from devices import handoff, pools, services
from messaging import lifecycle


@shared_task(name="devices.tasks.sweep_leases", ignore_result=True)
def sweep_leases() -> None:
    """Unconfirmed leases past expiry back to the queue; overdue confirmed ones to unknown.

    Polls also return a device's own expired leases, so this only matters for devices that
    stopped polling. Both steps are bounded and idempotent; a backlog drains over runs.
    """
    handoff.return_expired_leases(limit=5000)
    lifecycle.settle_overdue(limit=5000)


@shared_task(name="devices.tasks.announce_device_states", ignore_result=True)
def announce_device_states() -> None:
    """Beat: webhook events for devices that went offline or came back online."""
    services.announce_device_states()


@shared_task(name="devices.tasks.route_pools", ignore_result=True)
def route_pools() -> None:
    """Beat: pools' waiting messages moved off SIMs that may not send them now, and held
    ones routed once a SIM may (devices.pools.sweep). Bounded and idempotent."""
    pools.sweep(limit=5000)
