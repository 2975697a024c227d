"""Receiving Klaviyo webhooks: verify (signature, freshness, shape), store (delivery log and
per-item dedupe), dispatch (the ``klaviyo_webhook_event`` signal) and the built-in consent
handlers. ``views`` is the HTTP entry point on top of them."""
