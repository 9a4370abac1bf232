from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from devices.models import Device, DeviceCurrentState
from devices.selectors import device_get
from reconciliation import selectors
from reconciliation.filtersets import DriftEpisodeFilterSet
from reconciliation.models import DriftEpisode
from reconciliation.services.projection import device_reconcile_now
from sensors.models import DeviceSensor

from .serializers import (
    CurrentStateSerializer,
    DriftEpisodeSerializer,
    DriftSerializer,
    DriftStatsQuerySerializer,
    ReconcileResultSerializer,
)


class CurrentStateView(APIView):
    """The last report the device's agent sent: what it says it runs."""

    queryset = DeviceCurrentState.objects.all()

    @extend_schema(responses=CurrentStateSerializer)
    def get(self, request, uuid):
        current = DeviceCurrentState.objects.select_related("device").get(device__uuid=uuid)
        return Response(CurrentStateSerializer(current).data)


class DriftView(APIView):
    """Why this device is not converged: last poll, last report, and every sensor that is not deployed."""

    queryset = Device.objects.all()

    @extend_schema(responses=DriftSerializer)
    def get(self, request, uuid):
        return Response(DriftSerializer(selectors.drift_explain(device=device_get(uuid=uuid))).data)


class ReconcileView(APIView):
    """Re-run reconciliation from the stored target and current state (repairs the read model)."""

    queryset = DeviceSensor.objects.all()

    def permission_for(self, request):
        return DeviceSensor, "change"

    @extend_schema(request=None, responses=ReconcileResultSerializer)
    def post(self, request, uuid):
        result = device_reconcile_now(uuid=uuid, user=request.user)
        return Response(ReconcileResultSerializer(result).data)


class DriftEpisodeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Stretches of time devices were not converged: when, why, which sensors, how long."""

    queryset = DriftEpisode.objects.all()
    serializer_class = DriftEpisodeSerializer
    filterset_class = DriftEpisodeFilterSet

    def get_queryset(self):
        return selectors.drift_episode_list()

    @extend_schema(parameters=[DriftStatsQuerySerializer], responses={200: dict})
    @action(detail=False, methods=["get"])
    def stats(self, request):
        """Time-to-converge and time in drift, overall and per protocol, for a window (default: last 24 h)."""
        query = DriftStatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        until = query.validated_data.get("until") or timezone.now()
        since = query.validated_data.get("since") or until - timedelta(hours=24)
        return Response(selectors.drift_stats(since=since, until=until, device_uuid=query.validated_data.get("device")))
