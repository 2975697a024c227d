"""The storefront half: klaviyo.js tags (``templatetags/klaviyo.py``), the server-side
browse-events endpoint (``views``), visitor identity (``identity``) and signed cart-restore
links (``cartlinks``). See docs/storefront.md."""
