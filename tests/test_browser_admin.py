"""The operator's path through the admin in a real headless browser (Debian's chromium).

Log in, add a device (pairing code with its QR code), pair the simulated agent with that
code, send an SMS from the admin, and see it delivered.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from devices.agent import sms_agent
from messaging.models import Message, Status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(monkeypatch):
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (scripts/test.sh installs Debian's package)")
        pytest.skip("chromium is not installed")
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
