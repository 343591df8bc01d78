from io import StringIO

import pytest
from django.core.management import call_command

from devices import services
from devices.models import PairingCode


@pytest.mark.django_db
def test_an_operator_gets_a_code_qr_and_command_from_the_admin(client, make_user):
    operator = make_user("ops@example.com", is_staff=True, is_superuser=True)
    client.force_login(operator)
    # Looking at the page makes no code: each click (a POST) makes one set.
    start = client.get("/admin/devices/pairingcode/add/").content.decode()
    assert "pairing-create" in start and "for 15 minutes" not in start
    assert not PairingCode.objects.exists()
    page = client.post("/admin/devices/pairingcode/add/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Valid once, for 15 minutes: until" in text
    # Served over plain http: said once, for both kinds of phone.
    assert "http://testserver" in text and text.count("Plain http: the SMSGate app") == 1
    assert PairingCode.objects.count() == 2  # one for the agent, one for the app
    code = text.split('class="pairing-code"')[1].split(">")[1].split("<")[0]
    assert len(code) == 9 and "<svg" in text
    assert f"--code {code}" in text and "http://testserver/api/device/v1/agent.py" in text
    device, _ = services.pair_with_code(code, services.DeviceDetails(title="scanned"))
    assert device.account == operator.account
    assert PairingCode.objects.get(device__isnull=False).device == device


@pytest.mark.django_db
def test_the_pairing_page_warns_when_phones_could_not_reach_the_address(
    client, make_user, settings
):
    client.force_login(make_user("ops@example.com", is_staff=True, is_superuser=True))
    settings.PUBLIC_URL = "http://127.0.0.1:8000"
    page = client.get("/admin/devices/device/add/").content.decode()
    assert "server-warning" in page and "not reachable from a phone" in page
    settings.PUBLIC_URL = "https://sms.example.com"
    page = client.post("/admin/devices/device/add/").content.decode()
    assert "https://sms.example.com/api/mobile/v1" in page and "server-warning" not in page


@pytest.mark.django_db
def test_pairdevice_command_prints_a_working_code(make_user):
    user = make_user("ops@example.com")
    out = StringIO()
    call_command(
        "pairdevice", "ops@example.com", "--server", "https://sms.example.com", "--qr", stdout=out
    )
    text = out.getvalue()
    code = text.split("Pairing code: ")[1].split()[0]
    assert "https://sms.example.com/api/device/v1/agent.py" in text
    assert services.pair_with_code(code, services.DeviceDetails())[0].account == user.account
