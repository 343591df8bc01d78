"""``/api/mobile/v1/``: the exact paths the SMSGate app calls, no trailing slash and no
redirect; a doubled slash (a server URL typed with a trailing slash) is tolerated."""

from django.urls import re_path

from devices.mobile import views

urlpatterns = [
    re_path(r"^(?:/)?device$", views.device, name="mobile-device"),
    re_path(r"^(?:/)?message$", views.message, name="mobile-message"),
    re_path(r"^(?:/)?webhooks$", views.webhooks, name="mobile-webhooks"),
    re_path(r"^(?:/)?settings$", views.settings_view, name="mobile-settings"),
    re_path(r"^(?:/)?user/code$", views.user_code, name="mobile-user-code"),
    re_path(r"^(?:/)?user/password$", views.user_password, name="mobile-user-password"),
    re_path(r"^(?:/)?hook$", views.hook, name="mobile-hook"),
]
