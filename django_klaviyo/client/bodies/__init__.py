"""Klaviyo JSON:API request bodies (revision 2026-07-15): one module per Klaviyo resource.

Every function here is pure: clean values in, a body ``dict`` out. No HTTP (that is
``client.transport``) and no value rules (those are ``django_klaviyo.rules``, which clean
a row when it is written and a client call's arguments before its body is built). The
only checks left are what a request as a whole must hold (how many items it carries, no
event twice), since those depend on how the items were grouped.

============================  ======================================================
module                        bodies
============================  ======================================================
``events``                    ``POST /api/events``, ``/api/event-bulk-create-jobs``
``profiles``                  ``/api/profile-import``, ``PATCH /api/profiles/{id}``,
                              ``/api/profile-bulk-import-jobs``
``consent``                   ``/api/profile-subscription-bulk-create-jobs`` and
                              ``-delete-jobs``
``lists``                     ``/api/lists``, ``/api/lists/{id}/relationships/profiles``
``privacy``                   ``/api/data-privacy-deletion-jobs``
``catalog``                   ``/api/catalog-{item,variant,category}-bulk-*-jobs``
``back_in_stock``             ``/api/back-in-stock-subscriptions``
``coupons``                   ``/api/coupons``, ``/api/coupon-code-bulk-create-jobs``
``webhooks``                  ``/api/webhooks``
``segments``                  ``/api/segment-series-reports``
``encoding``                  the bytes sent for a body, and the request size check
============================  ======================================================

The client's public methods clean their arguments with the rules and build with these;
the flusher's senders (``flush/senders/``) build with these from rows cleaned when
written. ``tests/client/test_payloads_spec.py`` holds every body to Klaviyo's spec.
"""
