"""The agent's log upload: ``POST /api/v1/device/<uuid>/logs`` (its ``CloudLogBackend``) and
``POST /api/v1/device/<uuid>/logs/dropped-summaries``. Authenticated like the agent's other requests, counted
against their own rate limit, answered in the agent protocol's JSON error shape."""

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone

from devicelogs.parsing import LogBodyInvalid, ParsedLogs, dropped_summaries_parse, log_body_parse
from devicelogs.selectors import device_for_log_upload
from devicelogs.services import device_logs_store
from reconciliation.agent_protocol import ProtocolError, body_inflate
from sensorsync_project.api.agent import agent_endpoint, device_authenticate


def _upload(request, uuid, parse) -> ParsedLogs:
    device = device_authenticate(
        request,
        select=device_for_log_upload,
        uuid=uuid,
        budget=("logs", settings.SENSORSYNC_DEVICE_LOG_RATE_LIMIT, "log uploads"),
    )
    body = body_inflate(
        request.body,
        request.headers.get("Content-Encoding", ""),
        limit=settings.SENSORSYNC_DEVICE_LOG_MAX_BYTES,
        what="log upload",
    )
    received_at = timezone.now()
    try:
        parsed = parse(body, received_at=received_at, message_max=settings.SENSORSYNC_DEVICE_LOG_MESSAGE_MAX)
    except LogBodyInvalid as exc:
        raise ProtocolError(400, "invalid_logs", str(exc)) from exc
    parsed.stored = device_logs_store(device_id=device.pk, lines=parsed.lines, received_at=received_at)
    return parsed


def _answer(parsed: ParsedLogs):
    return JsonResponse({"stored": parsed.stored, "skipped": parsed.skipped, "problems": parsed.reasons})


@agent_endpoint("POST")
def device_logs(request, uuid):
    """Lines of the device's log, NDJSON (gzipped or not); bad lines are skipped and counted, never refused."""
    return _answer(_upload(request, uuid, log_body_parse))


@agent_endpoint("POST")
def device_logs_dropped(request, uuid):
    """What the agent had to drop during an outage: one warning line per summary, so the gap shows."""
    return _answer(_upload(request, uuid, dropped_summaries_parse))
