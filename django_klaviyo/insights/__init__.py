"""What Klaviyo knows, read back into the store: segments (``segments.py``,
``segment_sync.py``) and reports (``reports.py``)."""
