"""Admin for django-klaviyo: the outbox dashboard, the mirror tables and the webhook log.

Staff with the model permissions only (the admin site's own rule); every action declares
the permission it needs (``permissions=``), so view-only staff are offered none
(tests/security/test_admin_permissions.py walks them all). Every page is built for
big tables: select_related, raw id widgets, no full result count, aggregate dashboard
queries on indexed columns.
"""

from django_klaviyo.admin import coupons, marketing, outbox, profiles, remote, segments, webhooks

__all__ = ["coupons", "marketing", "outbox", "profiles", "remote", "segments", "webhooks"]
