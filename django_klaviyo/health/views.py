"""The status endpoint: ``klaviyo_status``'s figures as JSON for monitors and probes.

Mounted by ``django_klaviyo.urls`` at ``status/``. Answers 200 when healthy and 503
otherwise (the body says why). Access: a staff user's session, or
``Authorization: Bearer <KLAVIYO["HEALTH_TOKEN"]>``; anyone else gets 403, and 403 for
everyone but staff while no token is set.
"""

from __future__ import annotations

import hmac

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_klaviyo import health
from django_klaviyo.conf import klaviyo_settings


class StaffOrHealthToken(BasePermission):
    message = "Staff login or the HEALTH_TOKEN bearer token is required."

    def has_permission(self, request: Request, view: object) -> bool:
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.is_staff:
            return True
        token = klaviyo_settings.HEALTH_TOKEN
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if not token or scheme.lower() != "bearer" or not given:
            return False
        return hmac.compare_digest(given.strip().encode(), str(token).encode())


class StatusView(APIView):
    # Session auth only: the token is checked by the permission, never stored.
    authentication_classes = [SessionAuthentication]
    permission_classes = [StaffOrHealthToken]
    renderer_classes = [JSONRenderer]

    def get(self, request: Request) -> Response:
        result = health.check()
        return Response(
            health.figures(result), status=200 if result.code == health.HEALTHY else 503
        )


status_view = StatusView.as_view()
