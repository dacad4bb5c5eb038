"""The report's view, as it filed it, plus one warning line when it fails: the report's view says
nothing, and the lab reads the cause (libpq's words) from the log."""

import logging

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from roles.models import Role

logger = logging.getLogger(__name__)


class HealthCheckView(APIView):
    def get(self, request, *args, **kwargs):
        try:
            Role.objects.filter().count()
        except Exception as e:
            first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            logger.warning("health check failed: %s: %s", type(e).__name__, first)
            return Response(status=499)
        return Response(status=status.HTTP_200_OK)
