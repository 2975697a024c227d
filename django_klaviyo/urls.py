"""Webhook, storefront and status URLs.

Mount under any prefix: ``path("klaviyo/", include("django_klaviyo.urls"))``.
"""

from django.urls import include, path

from django_klaviyo.catalog.views import BackInStockView
from django_klaviyo.health.views import status_view
from django_klaviyo.webhooks.views import flow_webhook, klaviyo_webhook

__all__ = ["urlpatterns"]

urlpatterns = [
    path("webhooks/", klaviyo_webhook, name="klaviyo-webhook"),
    path("webhooks/flow/", flow_webhook, name="klaviyo-flow-webhook"),
    path("webhooks/flow/<str:name>/", flow_webhook, name="klaviyo-flow-webhook"),
    # One per account of KLAVIYO["ACCOUNTS"], verified with that account's secrets.
    path("webhooks/<str:account>/", klaviyo_webhook, name="klaviyo-webhook"),
    path("storefront/", include("django_klaviyo.storefront.urls")),
    path("status/", status_view, name="klaviyo-status"),
    path("back-in-stock/", BackInStockView.as_view(), name="klaviyo-back-in-stock"),
]
