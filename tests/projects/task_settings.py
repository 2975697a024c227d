"""The example shop in task-queue mode, for the end-to-end test's subprocesses: rows written
enqueue a flush task on django-tasks-db, and ``manage.py db_worker`` runs it."""

from shop_site.settings import *  # noqa: F403
from shop_site.settings import INSTALLED_APPS, KLAVIYO

try:
    import django.tasks  # noqa: F401
except ImportError:  # the django-tasks backport
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks"]
INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
KLAVIYO = {**KLAVIYO, "FLUSH_TASK_BACKEND": "default", "FLUSH_TASK_DEBOUNCE_SECONDS": 0.2}
