from django_klaviyo.models.backfill import BackfillCheckpoint
from django_klaviyo.models.coupons import KlaviyoCoupon, KlaviyoCouponCode
from django_klaviyo.models.jobs import KlaviyoCatalogObject, KlaviyoJob
from django_klaviyo.models.outbox import OutboxEvent
from django_klaviyo.models.profiles import Consent, KlaviyoList, KlaviyoProfileLink, ListMembership
from django_klaviyo.models.remote import KlaviyoCampaign, KlaviyoFlow
from django_klaviyo.models.reports import (
    KlaviyoCampaignReport,
    KlaviyoFlowReport,
    KlaviyoFlowSeries,
    KlaviyoReportFetch,
    KlaviyoRevenueDay,
    Marketing,
)
from django_klaviyo.models.segments import (
    KlaviyoSegment,
    KlaviyoSegmentMembership,
    KlaviyoSegmentSize,
)
from django_klaviyo.models.webhooks import WebhookDelivery, WebhookItem

__all__ = [
    "BackfillCheckpoint",
    "Consent",
    "KlaviyoCampaign",
    "KlaviyoCampaignReport",
    "KlaviyoCatalogObject",
    "KlaviyoCoupon",
    "KlaviyoCouponCode",
    "KlaviyoFlow",
    "KlaviyoFlowReport",
    "KlaviyoFlowSeries",
    "KlaviyoJob",
    "KlaviyoList",
    "KlaviyoProfileLink",
    "KlaviyoReportFetch",
    "KlaviyoRevenueDay",
    "KlaviyoSegment",
    "KlaviyoSegmentMembership",
    "KlaviyoSegmentSize",
    "ListMembership",
    "Marketing",
    "OutboxEvent",
    "WebhookDelivery",
    "WebhookItem",
]
