from django.apps import apps
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("klaviyo/", include("django_klaviyo.urls")),
]

if apps.is_installed("oscar"):
    # An oscar shop's own URLs: its products' get_absolute_url reverses them.
    urlpatterns.append(path("shop/", include(apps.get_app_config("oscar").urls[0])))
