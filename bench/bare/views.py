"""One indexed read of the devices table (its unique ``uuid`` index), as JSON."""

from django.db import connection
from django.http import JsonResponse


def device_id(request, uuid):
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM devices_device WHERE uuid = %s LIMIT 1", [uuid])
        row = cursor.fetchone()
    return JsonResponse({"id": row[0] if row else None})
