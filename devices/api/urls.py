from django.urls import path

from devices.api import views

urlpatterns = [
    path("pair", views.PairView.as_view(), name="device-pair"),
    path("heartbeat", views.HeartbeatView.as_view(), name="device-heartbeat"),
    path("poll", views.PollView.as_view(), name="device-poll"),
    path("confirm", views.ConfirmView.as_view(), name="device-confirm"),
    path("report", views.ReportView.as_view(), name="device-report"),
    path("incoming", views.IncomingView.as_view(), name="device-incoming"),
    path("agent.py", views.agent_download, name="device-agent"),
]
