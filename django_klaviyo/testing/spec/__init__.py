"""Klaviyo's OpenAPI spec, cut down to the operations django-klaviyo uses (data only).

See NOTICE.md for the source and licence; ``django_klaviyo.testing.openapi`` reads the JSON file.
"""
