import re
import uuid

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from sensorsync_project.middleware import GetResponse

from .choices import EventSourceChoices
from .context import audit_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _source_for(path: str) -> str:
    if path.startswith("/admin/"):
        return EventSourceChoices.ADMIN
    if path.startswith("/api/v1/device/"):
        return EventSourceChoices.AGENT
    return EventSourceChoices.API


class RequestContextMiddleware:
    """Gives every request a request id (kept from a sane ``X-Request-ID``) and an audit context."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        # Django lets middleware hang attributes on the request; its stubs know only its own.
        request.request_id = request_id  # type: ignore[attr-defined]
        with audit_context(
            source=_source_for(request.path_info),
            request_id=request_id,
            client_ip=request.META.get("REMOTE_ADDR"),
            correlation_id=uuid.uuid4(),
        ):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
