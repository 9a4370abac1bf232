"""The pages (the admin, /fleet/, the API's login form) during a database outage: a 503 with ``Retry-After`` and
a short HTML page, logged as a warning, as the API answers its JSON 503. An outage is not a server fault, and a
500 with a traceback per request would bury the one line that says what happened.

Which database errors are an outage is ``sensorsync_project.database.database_unavailable``'s decision, the
API's: a statement the database refuses (a bug, a limit) stays a 500 with its traceback.
"""

from django.db import DatabaseError, InterfaceError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.template.loader import render_to_string
from django.utils.log import log_response

from .database import database_unavailable
from .middleware import GetResponse

RETRY_AFTER_SECONDS = 5


class DatabaseOutageMiddleware:
    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # The API answers its own outages in JSON (its exception handler, the agent views). InterfaceError (the
        # connection was closed under us) is no DatabaseError in DB-API's hierarchy.
        if request.path_info.startswith("/api/") or not isinstance(exception, (DatabaseError, InterfaceError)):
            return None
        if not database_unavailable(exception):
            return None
        response = HttpResponse(
            render_to_string("503.html", {"retry_after": RETRY_AFTER_SECONDS}),  # no request: no context queries
            status=503,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        # Logged here, once, as a warning (Django would log any 5xx as an error).
        log_response(
            "Database unavailable, answered 503: %s (%s: %s)",
            request.path,
            type(exception).__name__,
            str(exception).strip()[:200],
            response=response,
            request=request,
            level="warning",
        )
        return response
