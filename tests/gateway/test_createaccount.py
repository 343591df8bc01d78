from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway import services
from gateway.models import User


@pytest.mark.django_db
def test_createaccount_makes_an_operator_who_can_log_in_and_a_working_token():
    out = StringIO()
    call_command("createaccount", "Owner@Example.com", stdout=out)
    text = out.getvalue()
    password = text.split("password: ")[1].split()[0]
    token = text.split("token:    ")[1].split()[0]
    user = User.objects.get(email="owner@example.com")
    assert user.is_staff and user.is_superuser
    assert services.check_password_login("owner@example.com", password) == user
    assert services.authenticate_token(token).account_id == user.account_id


@pytest.mark.django_db
def test_createaccount_refuses_a_duplicate_and_a_bad_zone():
    call_command(
        "createaccount", "a@example.com", "--password", "pw-long-enough", stdout=StringIO()
    )
    with pytest.raises(CommandError, match="already exists"):
        call_command("createaccount", "A@example.com", stdout=StringIO())
    with pytest.raises(Exception, match="zone"):
        call_command(
            "createaccount", "b@example.com", "--time-zone", "Mars/Base", stdout=StringIO()
        )
    assert not User.objects.filter(email="b@example.com").exists()
