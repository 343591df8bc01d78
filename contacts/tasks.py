"""Thin Celery entry points for newsletters."""

from celery import shared_task

from contacts import services


@shared_task(name="contacts.tasks.fan_out_newsletter", ignore_result=True)
def fan_out_newsletter(newsletter_id: int) -> None:
    services.fan_out(newsletter_id)


@shared_task(name="contacts.tasks.start_due_newsletters", ignore_result=True)
def start_due_newsletters() -> None:
    """Beat: fan out every newsletter whose time has come (also those whose task was lost)."""
    for newsletter_id in services.due_newsletters():
        services.fan_out(newsletter_id)
    services.finish_newsletters()
