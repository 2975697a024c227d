"""The test URLs plus the example storefront and a local stand-in for klaviyo.js (tests
never fetch the real one: KLAVIYO_JS_URL points here)."""

from pathlib import Path

from django.http import HttpResponse
from django.urls import include, path

from tests.projects.urls import urlpatterns as base_urlpatterns

STUB = Path(__file__).resolve().parent / "klaviyo_js_stub.js"


def klaviyo_js_stub(request):
    return HttpResponse(STUB.read_text(), content_type="text/javascript")


urlpatterns = [
    *base_urlpatterns,
    path("store/", include("shop.urls")),
    path("stub/klaviyo.js", klaviyo_js_stub, name="klaviyo-js-stub"),
]
