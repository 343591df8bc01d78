from rest_framework.routers import DefaultRouter

from messaging.api.v1 import views

router = DefaultRouter(trailing_slash=False)
router.register("messages", views.MessageViewSet, basename="v1-message")
router.register("devices", views.DeviceViewSet, basename="v1-device")
router.register("pools", views.PoolViewSet, basename="v1-pool")
router.register("tags", views.TagViewSet, basename="v1-tag")
router.register("contacts", views.ContactViewSet, basename="v1-contact")
router.register("newsletters", views.NewsletterViewSet, basename="v1-newsletter")
router.register("webhooks", views.WebhookViewSet, basename="v1-webhook")
router.register("tokens", views.TokenViewSet, basename="v1-token")
router.register("problems", views.ProblemViewSet, basename="v1-problem")

urlpatterns = router.urls
