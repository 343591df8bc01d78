from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.templatetags.static import static
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found

from gateway import health


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving. Touches nothing else."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachable: 200, otherwise 503 with what failed."""
    ready, report = health.readiness()
    return JsonResponse(report, status=200 if ready else 503)


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on every site: our icon, not a 404 in the logs."""
    return HttpResponsePermanentRedirect(static("gateway/favicon.svg"))


def _api_problem(status: int, title: str, detail: str) -> JsonResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JsonResponse(body, status=status, content_type="application/problem+json")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for any URL; under /api/ as a problem document like every other API error."""
    if request.path.startswith("/api/"):
        return _api_problem(404, "Not found", "No such resource")
    return page_not_found(request, exception or Http404())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Requests Django itself refuses (too many fields, a bad Host header, ...)."""
    if request.path.startswith("/api/"):
        return _api_problem(
            400, "Invalid request", "The request was refused: " + type(exception).__name__
        )
    return defaults.bad_request(request, exception or Exception())


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _api_problem(500, "Server error", "The request was not completed; please retry")
    return defaults.server_error(request)
