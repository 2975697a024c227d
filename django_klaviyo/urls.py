"""Webhook and storefront URLs. Mount under any prefix:
``path("klaviyo/", include("django_klaviyo.urls"))``."""

from django.urls import path

from django_klaviyo.catalog.views import BackInStockView
from django_klaviyo.webhooks.views import flow_webhook, klaviyo_webhook

urlpatterns = [
    path("webhooks/", klaviyo_webhook, name="klaviyo-webhook"),
    path("webhooks/flow/", flow_webhook, name="klaviyo-flow-webhook"),
    path("webhooks/flow/<str:name>/", flow_webhook, name="klaviyo-flow-webhook"),
    path("back-in-stock/", BackInStockView.as_view(), name="klaviyo-back-in-stock"),
]
