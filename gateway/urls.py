from django.contrib import admin
from django.urls import include, path

from gateway import views
from gateway.admin import dashboard_view
from messaging.api.compat import getdata

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("api/device/v1/", include("devices.api.urls")),
    # SMSGateway24 compatibility: both spellings routed, so no redirect ever breaks a POST.
    path("getdata/<str:method>", getdata, name="getdata"),
    path("getdata/<str:method>/", getdata),
]
