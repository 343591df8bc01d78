"""The operator's path through the admin in a real headless browser (Debian's chromium).

Log in, add a device (pairing code with its QR code), pair the simulated agent with that
code, send an SMS from the admin, and see it delivered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from devices.agent import sms_agent
from messaging.models import Message, Status
from tests.conftest import missing_tool

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(monkeypatch):
    if CHROMIUM is None:
        missing_tool("chromium is not installed")
    # Playwright's sync API keeps an event loop around; the ORM calls of this test are
    # plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def log_in(browser, live_server, email: str, password: str):
    """A new page of the admin, logged in."""
    page = browser.new_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page


def test_operator_pairs_a_phone_and_sends_an_sms_that_gets_delivered(
    live_server, browser, make_user, tmp_path: Path
):
    make_user("ops@example.com", "a-long-passphrase", is_staff=True, is_superuser=True)
    page = log_in(browser, live_server, "ops@example.com", "a-long-passphrase")

    page.goto(f"{live_server.url}/admin/devices/device/")
    page.click(".object-tools a.addlink")
    assert page.locator(".pairing-code").count() == 0  # no code until asked for
    page.click("input.pairing-create")
    assert page.locator(".pairing-qr svg").count() == 1
    code = page.locator(".pairing-code").inner_text().strip()
    assert len(code) == 9
    assert f"--code {code}" in page.locator(".pairing-command").inner_text()
    page.screenshot(path=str(tmp_path / "pairing.png"))

    state = tmp_path / "agent"
    sms_agent.main(["--state", str(state), "pair", "--server", live_server.url, "--code", code])
    device_id = json.loads((state / "device.json").read_text())["device_id"]

    page.goto(f"{live_server.url}/admin/messaging/message/")
    page.click("text=Send SMS")
    page.select_option("#id_device", str(device_id))
    page.fill("#id_to", "+49 157 52982212")
    page.fill("#id_body", "Hello from the browser")
    page.click("#send-sms input[type=submit]")
    page.wait_for_url("**/change/")
    message = Message.objects.get()
    assert message.status == Status.NEW and message.body == "Hello from the browser"

    sms_agent.main(
        ["--state", str(state), "run", "--sender", "simulated", "--wait", "0", "--loops", "1"]
    )
    page.reload()
    timeline = page.locator("#history-group").inner_text()  # the status history inline
    assert "Delivered" in timeline and "Sent by Phone" in timeline
    assert Message.objects.get().status == Status.DELIVERED
    page.screenshot(path=str(tmp_path / "delivered.png"), full_page=True)


def test_the_send_form_counts_characters_and_parts_as_the_server_does(
    live_server, browser, make_user, paired
):
    from messaging.encoding import encoding_of

    user = make_user("count@example.com", "a-long-passphrase", is_staff=True)
    paired(account=user.account, title="Pixel")
    page = log_in(browser, live_server, "count@example.com", "a-long-passphrase")
    page.goto(f"{live_server.url}/admin/messaging/message/send/")
    for text in ("Hello", "x" * 160, "x" * 161, "{" * 80, "{" * 81, "Grüße 😀", "😀" * 35,
                 "😀" * 36):  # fmt: skip
        page.fill("#id_body", text)
        shown = page.locator(".sms-counter").inner_text()
        server = encoding_of(text)
        parts = "SMS" if server.segments == 1 else "SMS parts"
        assert shown == f"{len(text)} characters, {server.name}, {server.segments} {parts}", text


# Every main page of the console, as an operator opens it at 1280 px: one heading, full
# breadcrumbs, nothing wider than the window, no markup shown as text. Screenshots of each
# go to var/screenshots/ (GATEWAY_SCREENSHOTS to choose another folder).
# What scrolls sideways: the page itself, or a box inside it (Django's changelist puts its
# table in one, which hides the columns past its edge).
SIDEWAYS = """() => [document.documentElement, ...document.querySelectorAll('#content *')]
  .filter(e => e === document.documentElement ? e.scrollWidth > window.innerWidth
    : e.scrollWidth > e.clientWidth + 1
      && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
  .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className}: ${e.scrollWidth} px in ${e.clientWidth}`)"""
SHOWN_MARKUP = re.compile(
    r"&(lt|gt|amp|quot|#\d+);|</?(a|td|tr|th|table|span|div|strong|p|br|ul|li)\b"
)


def _console_data(superuser: Any) -> dict[str, Any]:
    from contacts import services as contacts
    from devices import handoff, pools
    from devices import services as devices
    from devices.models import Device, PoolMember, SimSlot
    from messaging import problems
    from messaging import services as messaging
    from messaging.models import WebhookEndpoint, WebhookEvent

    account = superuser.account
    phone = Device.objects.create(
        account=account,
        title="Samsung Galaxy A52s 5G (the shop's second phone)",
        imei="358240051111110",
        number="+4915752982212",
        delay_between_sms=0,
    )
    SimSlot.objects.bulk_create([SimSlot(device=phone, slot=0), SimSlot(device=phone, slot=1)])
    devices.pair_with_login(account, devices.DeviceDetails(imei=phone.imei))
    pool = pools.create_pool(account, "Both SIMs", is_default=True)
    PoolMember.objects.bulk_create(PoolMember(pool=pool, sim=sim) for sim in phone.sims.all())
    body = (
        "Your order <b>#4711</b> & the invoice are ready: https://shop.example.com/orders/4711/"
        "invoice?download=1&format=pdf - reply STOP to opt out " * 2
    )
    ids = messaging.submit(
        account,
        [messaging.OutgoingSms(phone.pk, f"+49 157 529822{i:02d}", body, i % 2) for i in range(30)],
    )
    leased = handoff.poll(phone, [0])
    handoff.confirm(phone, [m.id for m in leased.messages], leased.lease_id)
    handoff.receive(
        phone, [messaging.IncomingSms("in-1", "+4915752982299", "STOP <please> & thanks")]
    )
    tag = contacts.save_tag(account, "Customers & friends")
    for i in range(5):
        contacts.save_contact(account, f"+43664123456{i}", name=f"Müller <{i}>", tag_ids=[tag.pk])
    newsletter = contacts.create_newsletter(
        account, title="December offers", device_id=phone.pk, sim=0, body="Hi & welcome",
        tag_ids=[tag.pk],
    )  # fmt: skip
    endpoint = WebhookEndpoint.objects.create(
        account=account,
        kind="status",
        url="https://hooks.example.com/a/rather/long/path/for/status/updates?source=sms-gateway",
    )
    WebhookEvent.objects.create(endpoint=endpoint, kind="sms.status", body='{"sms_id": 1}')
    problems.sweep(timezone.now() + timedelta(minutes=20))
    return {
        "device": phone.pk,
        "pool": pool.pk,
        "message": ids[0],
        "incoming": Message.objects.get(status=Status.INCOMING).pk,
        "newsletter": newsletter.pk,
        "endpoint": endpoint.pk,
        "tag": tag.pk,
    }


def test_the_consoles_main_pages_fit_1280_px_with_one_heading_and_full_breadcrumbs(
    live_server, browser, make_user, make_account
):
    account = make_account(name="Shop")
    user = make_user(
        "walk@example.com", "a-long-passphrase", account=account, is_staff=True, is_superuser=True
    )
    ids = _console_data(user)
    folder = Path(os.environ.get("GATEWAY_SCREENSHOTS") or Path("var") / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    page = log_in(browser, live_server, "walk@example.com", "a-long-passphrase")
    page.set_viewport_size({"width": 1280, "height": 900})
    # (path, breadcrumb links expected before the page's own name)
    pages = [
        ("/admin/", 0),
        ("/admin/dashboard/", 1),
        ("/admin/devices/device/", 2),
        (f"/admin/devices/device/{ids['device']}/change/", 3),
        ("/admin/devices/device/add/", 3),
        ("/admin/devices/pool/", 2),
        (f"/admin/devices/pool/{ids['pool']}/change/", 3),
        ("/admin/messaging/message/", 2),
        (f"/admin/messaging/message/{ids['message']}/change/", 3),
        (f"/admin/messaging/message/{ids['incoming']}/change/", 3),
        ("/admin/messaging/message/send/", 3),
        ("/admin/messaging/problem/", 2),
        ("/admin/messaging/webhookendpoint/", 2),
        ("/admin/messaging/webhookevent/", 2),
        ("/admin/contacts/contact/", 2),
        ("/admin/contacts/contact/import/", 3),
        ("/admin/contacts/tag/", 2),
        ("/admin/contacts/newsletter/", 2),
        (f"/admin/contacts/newsletter/{ids['newsletter']}/change/", 3),
        ("/admin/contacts/newsletter/add/", 3),
        ("/admin/gateway/apitoken/", 2),
        ("/admin/gateway/user/", 2),
    ]
    failures = []
    for path, links in pages:
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 200, path
        name = path.strip("/").replace("/", "_") or "admin"
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        for box in page.evaluate(SIDEWAYS):
            failures.append(f"{path}: scrolls sideways: {box}")
        headings = page.locator("h1").count()
        if headings != 1:
            failures.append(f"{path}: {headings} headings")
        crumbs = page.locator(".breadcrumbs a").count() if links else 0
        if crumbs != links:
            failures.append(f"{path}: {crumbs} breadcrumb links, expected {links}")
        shown = SHOWN_MARKUP.search(page.locator("#content").inner_text())
        if shown:
            failures.append(f"{path}: shows markup as text: {shown.group(0)!r}")
    # The move action's page, reached as an operator does: select, choose, go.
    page.goto(f"{live_server.url}/admin/messaging/message/")
    page.locator("input.action-select").first.check()
    page.select_option("select[name=action]", "move")
    page.click("button[name=index]")
    page.screenshot(path=str(folder / "admin_messaging_message_move.png"), full_page=True)
    if page.locator("h1").count() != 1 or page.locator(".breadcrumbs a").count() != 3:
        failures.append("move messages: heading or breadcrumbs")
    assert not failures, "\n".join(failures)
