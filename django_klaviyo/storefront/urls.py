"""Storefront URLs, included by ``django_klaviyo.urls`` under ``storefront/``."""

from django.urls import path

from django_klaviyo.storefront.cartlinks import restore_cart_view
from django_klaviyo.storefront.views import BrowseEventView

urlpatterns = [
    path("events/", BrowseEventView.as_view(), name="klaviyo-storefront-events"),
    path("cart/<str:signed>/", restore_cart_view, name="klaviyo-cart-restore"),
]
