from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from devices.models import Device, DeviceCurrentState
from devices.selectors import device_get
from reconciliation import selectors, services
from sensors.models import DeviceSensor

from .serializers import CurrentStateSerializer, DriftSerializer, ReconcileResultSerializer


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
        result = services.device_reconcile_now(uuid=uuid, user=request.user)
        return Response(ReconcileResultSerializer(result).data)
