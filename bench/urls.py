"""URLs of the benchmark settings: the admin and the webhook endpoints."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("klaviyo/", include("django_klaviyo.urls")),
]
