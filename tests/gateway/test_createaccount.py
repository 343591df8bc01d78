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
    # The owner uses the admin for their own account only; no superuser unless asked for.
    assert user.is_staff and not user.is_superuser
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


@pytest.mark.django_db
def test_a_superuser_exists_only_when_the_operator_asks_for_one():
    call_command("createaccount", "ops@example.com", "--superuser", stdout=StringIO())
    call_command("createaccount", "api@example.com", "--no-admin", stdout=StringIO())
    ops = User.objects.get(email="ops@example.com")
    api = User.objects.get(email="api@example.com")
    assert ops.is_staff and ops.is_superuser
    assert not api.is_staff and not api.is_superuser
    with pytest.raises(CommandError):
        call_command("createaccount", "x@example.com", "--superuser", "--no-admin")


@pytest.mark.django_db
def test_an_account_owner_sees_only_their_own_account_in_the_admin():
    from django.test import Client

    for email in ("alice@example.com", "bob@example.com"):
        call_command("createaccount", email, "--password", "pw-long-enough", stdout=StringIO())
    client = Client()
    assert client.login(email="alice@example.com", password="pw-long-enough")
    users = client.get("/admin/gateway/user/").content.decode()
    assert "alice@example.com" in users and "bob@example.com" not in users
    accounts = client.get("/admin/gateway/account/").content.decode()
    assert "bob@example.com" not in accounts
    bob = User.objects.get(email="bob@example.com")
    assert client.get(f"/admin/gateway/user/{bob.pk}/change/").status_code in (302, 404)


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_keeps_one_superuser_and_makes_the_other_owners_staff():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("gateway", "0002_account_time_zone_validator")]
    after = [("gateway", "0003_account_owners_are_not_superusers")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldAccount, OldUser = old.get_model("gateway", "Account"), old.get_model("gateway", "User")
    for email in ("first@example.com", "second@example.com", "third@example.com"):
        account = OldAccount.objects.create(name=email)
        OldUser.objects.create(
            email=email, account=account, is_staff=True, is_superuser=True, password="!"
        )
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # the rest of the schema, as it was
    roles = dict(User.objects.values_list("email", "is_superuser"))
    assert roles == {
        "first@example.com": True,
        "second@example.com": False,
        "third@example.com": False,
    }
    assert all(User.objects.values_list("is_staff", flat=True))
