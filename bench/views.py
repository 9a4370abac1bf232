"""The framework ceiling: the least a Django view that reads the database can do (one indexed read).

No product path can be faster than this under the same server and middleware, so the agent paths are reported
as a fraction of it.
"""

from django.http import JsonResponse

from devices.models import Device


def ceiling(request, uuid):
    device_id = Device.objects.filter(uuid=uuid).values_list("id", flat=True).first()
    return JsonResponse({"id": device_id})
