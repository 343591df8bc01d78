import pytest
from django.contrib import admin


@pytest.mark.django_db
def test_every_registered_model_has_working_list_and_add_pages(client, make_user):
    operator = make_user("root@example.com", is_staff=True, is_superuser=True)
    client.force_login(operator)
    assert client.get("/admin/").status_code == 200
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        url = f"/admin/{meta.app_label}/{meta.model_name}/"
        assert client.get(url).status_code == 200, url
        if model_admin.has_add_permission(type("R", (), {"user": operator})()):
            assert client.get(url + "add/").status_code == 200, url + "add/"


@pytest.mark.django_db
def test_admin_login_is_by_email(client, make_user):
    make_user("ops@example.com", "a-long-passphrase", is_staff=True)
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "OPS@example.com", "password": "a-long-passphrase"},
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
