"""Admin for django-klaviyo: the outbox dashboard, the mirror tables and the webhook log.

Staff with the model permissions only (the admin site's own rule). Every page is built for
big tables: select_related, raw id widgets, no full result count, aggregate dashboard
queries on indexed columns.
"""

from django_klaviyo.admin import coupons, outbox, profiles, remote, webhooks

__all__ = ["coupons", "outbox", "profiles", "remote", "webhooks"]
