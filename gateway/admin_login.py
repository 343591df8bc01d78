"""The admin's password forms, behind the same login limits as the APIs.

The admin's sign-in and its "change password" page (which asks for the current password)
check passwords through ``services.login_with_limits``, so a wrong password here and a wrong
one for ``gettoken``, ``smstosend`` or device pairing count together, per account and per
client address. Wired in gateway/urls.py.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.forms import AdminPasswordChangeForm as BasePasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import reverse

from gateway import services
from gateway.clients import client_address

TOO_MANY = "Too many failed logins for this account or from this address; try again in 15 minutes."


def _checked_login(request: HttpRequest | None, email: str, password: str) -> Any:
    """The user with this email and password, or None; TooManyFailures as a form error."""
    address = client_address(request) if request is not None else ""
    try:
        return services.login_with_limits(email, password, address)
    except services.TooManyFailures:
        raise ValidationError(TOO_MANY, code="too_many_attempts") from None


class AdminLoginForm(AdminAuthenticationForm):
    def clean(self) -> dict[str, Any]:
        email = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if email is not None and password:
            self.user_cache = _checked_login(self.request, email, password)
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class AdminPasswordChangeForm(BasePasswordChangeForm):
    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        self.request = request
        super().__init__(*args, **kwargs)

    def clean_old_password(self) -> str:
        old_password: str = self.cleaned_data["old_password"]
        user = _checked_login(self.request, self.user.email, old_password)
        if user is None or user.pk != self.user.pk:
            raise ValidationError(
                self.error_messages["password_incorrect"], code="password_incorrect"
            )
        return old_password


class _PasswordChangeView(PasswordChangeView):
    form_class = AdminPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}


def password_change(request: HttpRequest) -> HttpResponseBase:
    """The admin's "change password" page (as AdminSite.password_change), with the form
    above. Routed at admin/password_change/ ahead of the admin's own URLs."""
    site = admin.site
    request.current_app = site.name
    view = _PasswordChangeView.as_view(
        success_url=reverse("admin:password_change_done", current_app=site.name),
        extra_context=site.each_context(request),
    )
    return view(request)
