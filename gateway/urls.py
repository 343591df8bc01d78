from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from gateway import admin_login, views
from gateway.admin import dashboard_view
from gateway.metrics import metrics_view
from messaging.api.compat import getdata
from messaging.api.smsgate.views import health_view as smsgate_health

# The admin's password forms count failures with the APIs' logins (gateway/admin_login.py).
admin.site.login_form = admin_login.AdminLoginForm

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/password_change/", admin.site.admin_view(admin_login.password_change)),
    path("admin/", admin.site.urls),
    path("api/device/v1/", include("devices.api.urls")),
    path("api/v1/", include("messaging.api.v1.urls")),
    path("api/mobile/v1/", include("devices.mobile.urls")),
    # SMSGate's integration API, at the private server's path and the cloud's.
    # (Any number of slashes after the base: an SDK given a base URL ending in / writes //.)
    re_path(r"^api/3rdparty/v1/+", include("messaging.api.smsgate.urls")),
    re_path(r"^3rdparty/v1/+", include("messaging.api.smsgate.urls")),
    re_path(r"^health/?$", smsgate_health),
    re_path(r"^health/(?P<probe>live|ready|startup)/?$", smsgate_health),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # SMSGateway24 compatibility: both spellings routed, so no redirect ever breaks a POST.
    path("getdata/<str:method>", getdata, name="getdata"),
    path("getdata/<str:method>/", getdata),
]

handler400 = "gateway.views.bad_request"
handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
