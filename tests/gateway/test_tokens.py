from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from gateway import services
from gateway.models import ApiToken


def _all_stored_text() -> str:
    """Everything the token table holds, as one string."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_apitoken")
        return repr(cursor.fetchall())


def test_api_token_secret_is_not_stored_only_its_hash(account):
    token, secret = services.create_api_token(account, "billing system")
    assert secret.startswith("sgw_") and len(secret) > 40
    assert secret not in _all_stored_text()
    assert token.token_hash == services.hash_token(secret)
    assert services.authenticate_token(secret).pk == token.pk


def test_an_account_has_several_named_tokens_each_revocable(account):
    first, first_secret = services.create_api_token(account, "shop")
    _second, second_secret = services.create_api_token(account, "crm")
    services.revoke_token(account, first.pk)
    assert services.authenticate_token(first_secret) is None
    assert services.authenticate_token(second_secret).name == "crm"
    # revoking twice is harmless
    services.revoke_token(account, first.pk)


def test_a_token_is_loaded_with_its_account_as_the_orm_loads_them(account, settings):
    """authenticate_token writes its one statement itself: the token and its account come
    back as the ORM reads them (aware times on every backend), in one query."""
    from django.test.utils import CaptureQueriesContext

    settings.TOKEN_LAST_USED_RESOLUTION_SECONDS = 3600
    token, secret = services.create_api_token(account, "shop")
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        found = services.authenticate_token(secret)
        assert found is not None
        loaded_account = found.account
    assert len(queries) == 1
    expected = ApiToken.objects.select_related("account").get(pk=token.pk)
    for field in ApiToken._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(expected, field.attname), field.name
    for field in type(account)._meta.concrete_fields:
        value = getattr(loaded_account, field.attname)
        assert value == getattr(expected.account, field.attname), field.name
    assert timezone.is_aware(found.created_at) and timezone.is_aware(loaded_account.created_at)
    assert found._state.adding is False and found._state.db == "default"


def test_unknown_and_malformed_tokens_do_not_authenticate(account):
    assert services.authenticate_token("") is None
    assert services.authenticate_token("x" * 500) is None
    assert services.authenticate_token("sgw_not-a-real-token") is None


def test_last_used_time_is_recorded_but_not_on_every_request(account, settings):
    settings.TOKEN_LAST_USED_RESOLUTION_SECONDS = 60
    token, secret = services.create_api_token(account, "shop")
    services.authenticate_token(secret)
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first_use is not None
    services.authenticate_token(secret)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=5))
    services.authenticate_token(secret)
    refreshed = ApiToken.objects.get(pk=token.pk).last_used_at
    assert refreshed is not None and refreshed >= first_use


def test_compat_token_is_32_hex_and_the_same_on_every_call(account):
    first = services.compat_token(account)
    assert len(first) == 32 and int(first, 16) >= 0
    assert services.compat_token(account) == first
    assert services.compat_token(type(account).objects.get(pk=account.pk)) == first
    assert first not in _all_stored_text()
    assert services.authenticate_token(first).account_id == account.pk
    assert ApiToken.objects.filter(account=account, kind="compat").count() == 1


def test_compat_tokens_differ_between_accounts(make_account):
    assert services.compat_token(make_account()) != services.compat_token(make_account())


def test_revoking_the_compat_token_makes_gettoken_answer_a_fresh_one(account):
    old = services.compat_token(account)
    token = ApiToken.objects.get(account=account, kind="compat", revoked_at=None)
    services.revoke_token(account, token.pk)
    assert services.authenticate_token(old) is None
    fresh = type(account).objects.get(pk=account.pk)  # as the next request loads it
    new = services.compat_token(fresh)
    assert new != old
    assert services.authenticate_token(new).account_id == account.pk
    assert services.compat_token(type(account).objects.get(pk=account.pk)) == new
    # rotating again works the same way
    services.revoke_token(account, ApiToken.objects.get(account=account, revoked_at=None).pk)
    newest = services.compat_token(type(account).objects.get(pk=account.pk))
    assert newest not in (old, new) and services.authenticate_token(newest) is not None


def test_a_compat_token_revoked_before_this_fix_is_replaced_on_the_next_gettoken(account):
    # Databases where the revoke only marked the row (the salt stayed): still a fresh token.
    old = services.compat_token(account)
    ApiToken.objects.filter(account=account, kind="compat").update(revoked_at=timezone.now())
    new = services.compat_token(type(account).objects.get(pk=account.pk))
    assert new != old and services.authenticate_token(new) is not None


def test_revoking_the_compat_token_over_rest_and_in_the_admin_rotates_it(make_user):
    from django.test import Client

    user = make_user("owner@example.com", "owner-password", is_staff=True)
    client = Client()
    old = client.post(
        "/getdata/gettoken", {"email": "owner@example.com", "pass": "owner-password"}
    ).json()["token"]
    compat = ApiToken.objects.get(account=user.account, kind="compat")
    _, api_secret = services.create_api_token(user.account, "ops")
    revoked = client.post(
        f"/api/v1/tokens/{compat.pk}/revoke", HTTP_AUTHORIZATION=f"Bearer {api_secret}"
    )
    assert revoked.status_code in (200, 204), revoked.content
    second = client.post(
        "/getdata/gettoken", {"email": "owner@example.com", "pass": "owner-password"}
    ).json()["token"]
    assert second != old
    assert client.get("/getdata/getallsms", {"token": old}).json()["error"] == 1
    assert client.get("/getdata/getallsms", {"token": second}).json()["error"] == 0
    # the admin's revoke action
    client.force_login(user)
    live = ApiToken.objects.get(account=user.account, kind="compat", revoked_at=None)
    client.post(
        "/admin/gateway/apitoken/",
        {"action": "revoke", "_selected_action": [live.pk]},
    )
    third = client.post(
        "/getdata/gettoken", {"email": "owner@example.com", "pass": "owner-password"}
    ).json()["token"]
    assert third not in (old, second)
    assert client.get("/getdata/getallsms", {"token": third}).json()["error"] == 0


def test_a_new_server_secret_changes_the_compat_token_and_revokes_the_old(account, settings):
    old = services.compat_token(account)
    settings.SECRET_KEY = "another-secret-key-of-sufficient-length-0123456789"
    new = services.compat_token(account)
    assert new != old
    assert services.authenticate_token(old) is None
    assert services.authenticate_token(new) is not None


def test_password_login_is_by_email_case_insensitively(make_user):
    user = make_user("Owner@Example.com", "s3cret-pass-phrase")
    assert services.check_password_login("owner@example.COM", "s3cret-pass-phrase") == user
    assert services.check_password_login("owner@example.com", "wrong") is None
    assert services.check_password_login("nobody@example.com", "s3cret-pass-phrase") is None


def test_inactive_users_cannot_log_in(make_user):
    make_user("gone@example.com", "pw-123456789", is_active=False)
    assert services.check_password_login("gone@example.com", "pw-123456789") is None


def test_a_foreign_token_cannot_be_revoked(make_account):
    mine, theirs = make_account(), make_account()
    token, secret = services.create_api_token(theirs, "theirs")
    with pytest.raises(services.TokenNotFound):
        services.revoke_token(mine, token.pk)
    assert services.authenticate_token(secret) is not None


def test_a_user_without_an_account_gets_one(make_user):
    user = make_user("solo@example.com")
    assert user.account.name == "solo@example.com"
    assert user.account.time_zone == "UTC"
    assert user.account.created_at <= timezone.now()
