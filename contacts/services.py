"""Tags, contacts and newsletters."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.models import Contact, Newsletter, Tag
from devices.services import get_device, sim_slots_by_device
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone
from messaging.services import InvalidMessage, check_body

log = logging.getLogger(__name__)


class TagNotFound(Exception):
    pass


class InvalidContact(ValueError):
    pass


def save_tag(account: Account, title: str) -> Tag:
    """The account's tag with this title, created if new. Idempotent by title.

    Clients call savetag at start-up; creating a new tag each time would pile up duplicates.
    """
    title = title.strip()[:150]
    existing = Tag.objects.for_account(account).filter(title=title).order_by("id").first()
    return existing or Tag.objects.create(account=account, title=title)


def _account_tags(account: Account, tag_ids: Iterable[int]) -> list[Tag]:
    wanted = set(tag_ids)
    tags = list(Tag.objects.for_account(account).filter(pk__in=wanted))
    if len(tags) != len(wanted):
        raise TagNotFound(sorted(wanted - {t.pk for t in tags}))
    return tags


def save_contact(
    account: Account, phone: str, *, name: str = "", tag_ids: Iterable[int] = ()
) -> Contact:
    """Create or update the account's contact with this phone number and add it to tags.

    A contact is unique per account by normalized number: saving it again updates its name
    (when one is given) and adds the tags. Idempotent.
    """
    try:
        normalized = normalize_phone(phone)
    except InvalidPhone as exc:
        raise InvalidContact(str(exc)) from None
    tags = _account_tags(account, tag_ids)
    with transaction.atomic():
        try:
            with transaction.atomic():
                contact, created = Contact.objects.get_or_create(
                    account=account, phone=normalized, defaults={"name": name.strip()[:150]}
                )
        except IntegrityError:  # a concurrent save of the same number won
            contact, created = Contact.objects.get(account=account, phone=normalized), False
        if not created and name.strip() and contact.name != name.strip()[:150]:
            contact.name = name.strip()[:150]
            contact.save(update_fields=["name"])
        if tags:
            contact.tags.add(*tags)
    return contact


def create_newsletter(
    account: Account,
    *,
    title: str,
    device_id: int,
    sim: int,
    body: str,
    tag_ids: Iterable[int],
    send_at: datetime | None = None,
) -> Newsletter:
    """Schedule a newsletter to every contact in the tags, sent from one device and SIM.

    Validates like a single SMS (device, SIM slot, body); the messages are written when it
    falls due. Not idempotent: each call schedules a new newsletter.
    """
    device = get_device(account, device_id)
    if sim not in sim_slots_by_device(account, [device.pk]).get(device.pk, set()):
        raise InvalidMessage(f"Device has no SIM slot {sim}")
    check_body(body)
    tag_ids = list(tag_ids)
    if not tag_ids:
        raise TagNotFound([])
    tags = _account_tags(account, tag_ids)
    with transaction.atomic():
        newsletter = Newsletter.objects.create(
            account=account,
            title=title.strip()[:150],
            device=device,
            sim=sim,
            body=body,
            send_at=max(send_at or timezone.now(), timezone.now()),
        )
        newsletter.tags.set(tags)
    log.info("account %s: newsletter %s scheduled", account.pk, newsletter.pk)
    return newsletter
