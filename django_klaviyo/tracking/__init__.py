"""Tracked models: any model's status transitions as Klaviyo events, by settings
(``KLAVIYO["TRACKED_MODELS"]``, docs/mapping.md "Tracked models").

The same machinery as orders: the status loaded is remembered and compared at save
(``django_klaviyo.outbox.transitions``), the events are written in the save's
transaction with a dedupe key per object and transition, cleaned by the event rules, and
what is refused is a dead ``invalid_on_save`` row (``django_klaviyo.outbox.refused``);
never a broken save. Profile properties mirrored on the profile go out as a profile
upsert in the same transaction. ``manage.py check`` checks every path
(``django_klaviyo.E080``-``E086``, ``W080``); ``klaviyo_backfill tracked:<app.Model>``
enqueues the history.

Modules: ``config`` (the setting, read once), ``mapper`` (the default mapper: events and
the profile mirror), ``receivers`` (the save receivers), ``checks`` (the system checks).
"""
