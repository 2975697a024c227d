"""What Klaviyo's reporting API said about the account (``manage.py klaviyo_sync reports``).

Each figure carries its account (``""``: the default one, as ``OutboxEvent.account``), and
each kind of report has one ``KlaviyoReportFetch`` row per account saying how true its
figures are: fresh, not computed yet, forbidden (the key lacks a scope), rate limited or
failed, with Klaviyo's words and when the next fetch is due. The admin's Marketing page
shows that state instead of a zero (docs/insights.md).
"""

from __future__ import annotations

from django.db import models

ACCOUNT_HELP = 'The Klaviyo account ("" is the default one).'


class KlaviyoReportFetch(models.Model):
    """One kind of report of one account: the last fetch, and progress of an unfinished one."""

    class Kind(models.TextChoices):
        CAMPAIGN_VALUES = "campaign_values", "Campaign performance"
        FLOW_VALUES = "flow_values", "Flow performance"
        FLOW_SERIES = "flow_series", "Flow revenue by day"
        REVENUE_BY_DAY = "revenue_by_day", "Placed Order revenue by day"

    class State(models.TextChoices):
        PENDING = "pending", "Not computed yet"
        FRESH = "fresh", "Fresh"
        FORBIDDEN = "forbidden", "Forbidden (missing scope)"
        RATE_LIMITED = "rate_limited", "Rate limited"
        ERROR = "error", "Error"

    account = models.CharField(max_length=64, blank=True, default="", help_text=ACCOUNT_HELP)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # Klaviyo's error code and detail (or our own words), never a secret.
    error_code = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True)
    # The conversion metric (Placed Order) the report was computed with.
    metric_id = models.CharField(max_length=64, blank=True)
    # The timeframe asked for: [timeframe_start, timeframe_end).
    timeframe_start = models.DateTimeField(null=True, blank=True)
    timeframe_end = models.DateTimeField(null=True, blank=True)
    # An unfinished run: the next piece of the timeframe to fetch (None: nothing pending).
    resume_from = models.DateTimeField(null=True, blank=True)
    attempted_at = models.DateTimeField(null=True, blank=True)
    # The last complete fetch: the figures shown are from then.
    fetched_at = models.DateTimeField(null=True, blank=True)
    # When the next run may fetch again (a Retry-After, or the refresh interval).
    refresh_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Klaviyo report fetch"
        verbose_name_plural = "Klaviyo report fetches"
        ordering = ["account", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["account", "kind"], name="klaviyo_report_fetch_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.account or 'default'}): {self.state}"


class Marketing(KlaviyoReportFetch):
    """The admin's Marketing page (``/admin/django_klaviyo/marketing/``): no table of its
    own, a proxy so the page sits in the app's admin index."""

    class Meta:
        proxy = True
        verbose_name = "Marketing"
        verbose_name_plural = "Marketing"


class _MessageFigures(models.Model):
    """A values report's statistics for one campaign or flow message."""

    account = models.CharField(max_length=64, blank=True, default="", help_text=ACCOUNT_HELP)
    message_id = models.CharField(max_length=64, blank=True)
    send_channel = models.CharField(max_length=32, blank=True)
    timeframe_start = models.DateTimeField()
    timeframe_end = models.DateTimeField()
    recipients = models.IntegerField(default=0)
    conversions = models.FloatField(default=0)
    conversion_value = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    open_rate = models.FloatField(null=True, blank=True)
    click_rate = models.FloatField(null=True, blank=True)
    revenue_per_recipient = models.DecimalField(
        max_digits=16, decimal_places=4, null=True, blank=True
    )
    fetched_at = models.DateTimeField()

    class Meta:
        abstract = True


class KlaviyoCampaignReport(_MessageFigures):
    campaign_id = models.CharField(max_length=64)

    class Meta:
        verbose_name = "Klaviyo campaign report"
        ordering = ["-conversion_value"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "campaign_id", "message_id", "send_channel"],
                name="klaviyo_campaign_report_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id}"


class KlaviyoFlowReport(_MessageFigures):
    flow_id = models.CharField(max_length=64)

    class Meta:
        verbose_name = "Klaviyo flow report"
        ordering = ["-conversion_value"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "flow_id", "message_id", "send_channel"],
                name="klaviyo_flow_report_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"flow {self.flow_id}"


class KlaviyoFlowSeries(models.Model):
    """One flow's figures on one day (its messages added up), from the flow series report."""

    account = models.CharField(max_length=64, blank=True, default="", help_text=ACCOUNT_HELP)
    flow_id = models.CharField(max_length=64)
    day = models.DateField()
    recipients = models.IntegerField(default=0)
    conversions = models.FloatField(default=0)
    conversion_value = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    fetched_at = models.DateTimeField()

    class Meta:
        verbose_name = "Klaviyo flow series point"
        verbose_name_plural = "Klaviyo flow series"
        ordering = ["flow_id", "day"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "flow_id", "day"], name="klaviyo_flow_series_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"flow {self.flow_id} on {self.day}"


class KlaviyoRevenueDay(models.Model):
    """Placed Order on one day (metric aggregates): the value summed and the orders counted,
    for the whole account (``group=""``) or attributed to one campaign message or flow."""

    class Group(models.TextChoices):
        TOTAL = "", "All orders"
        CAMPAIGN = "campaign", "Attributed to a campaign message"
        FLOW = "flow", "Attributed to a flow"

    account = models.CharField(max_length=64, blank=True, default="", help_text=ACCOUNT_HELP)
    day = models.DateField()
    group = models.CharField(max_length=16, choices=Group.choices, blank=True, default="")
    # The campaign message's or flow's Klaviyo id ("" for the total).
    group_id = models.CharField(max_length=64, blank=True, default="")
    value = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    orders = models.IntegerField(default=0)
    fetched_at = models.DateTimeField()

    class Meta:
        verbose_name = "Klaviyo revenue by day"
        verbose_name_plural = "Klaviyo revenue by day"
        ordering = ["day"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "day", "group", "group_id"], name="klaviyo_revenue_day_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day}: {self.value}"
