"""``/health``: is the queue healthy? JSON, 200 when every check passes, else 503."""

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from django_fullctl.health import CHECKS, run_checks


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """``?exclude=a,b`` skips checks (also repeatable); ``?verbose`` adds each check's figures.

    Excluding every check gives a probe that touches no database (a liveness probe that an
    outage cannot fail).
    """
    exclude = {name for value in request.GET.getlist("exclude") for name in value.split(",")}
    unknown = exclude - set(CHECKS)
    if unknown:
        return JsonResponse(
            {"error": f"unknown check(s): {', '.join(sorted(unknown))}", "checks": sorted(CHECKS)},
            status=400,
        )
    verbose = "verbose" in request.GET
    results = run_checks(exclude)
    checks: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        entry = {"ok": result.ok, "message": result.message}
        if verbose or not result.ok:
            entry.update(result.details)
        checks[name] = entry
    ok = all(r.ok for r in results.values())
    body = {"status": "ok" if ok else "fail", "checks": checks}
    return JsonResponse(body, status=200 if ok else 503)
