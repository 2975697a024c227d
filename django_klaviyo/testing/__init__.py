"""Test tooling, outside the runtime import graph: the local Klaviyo sandbox
(``sandbox``), Klaviyo's OpenAPI spec (``spec``) and request validation against it
(``openapi``). Nothing a store runs imports this package; it needs the ``sandbox``
extra.
"""
