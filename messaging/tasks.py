"""Thin Celery entry points of messaging: webhook delivery, housekeeping, problems."""

from datetime import datetime

from celery import shared_task

from gateway import jwt_tokens
from messaging import problems, services, webhooks


@shared_task(name="messaging.tasks.deliver_webhook", ignore_result=True, soft_time_limit=30)
def deliver_webhook(event_pk: int, ticket: str | None = None) -> None:
    """One delivery attempt; failures are recorded and retried by the sweep, not raised.
    ``ticket``: the sweep that queued it took the event until then (webhooks.take_due_events)."""
    webhooks.deliver(event_pk, datetime.fromisoformat(ticket) if ticket else None)


@shared_task(name="messaging.tasks.sweep_webhooks", ignore_result=True)
def sweep_webhooks() -> None:
    """Beat: queue every due event again (retries, and deliveries whose task was lost),
    each once, however many beats run the sweep."""
    ids, ticket = webhooks.take_due_events()
    for event_pk in ids:
        deliver_webhook.apply_async((event_pk, ticket.isoformat()), queue="webhooks")


@shared_task(name="messaging.tasks.housekeeping", ignore_result=True)
def housekeeping() -> None:
    """Beat: expire stale waiting messages, prune old history and spent API tokens.
    Bounded and idempotent."""
    services.expire_stale()
    services.prune_history()
    jwt_tokens.prune()


@shared_task(name="messaging.tasks.sweep_problems", ignore_result=True)
def sweep_problems() -> None:
    """Beat: open, refresh and resolve the fleet's problems (messaging.problems)."""
    problems.sweep()
