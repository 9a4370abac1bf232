"""The WSGI application: the agents' requests through a short middleware chain, everything else through the full one.

Agents make nearly all of the traffic (a poll and a report per device every minute), on four routes under
``/api/v1/device/`` (``reconciliation.api.urls.agent_urlpatterns``). Those views are plain Django views that read
no session, no user, no messages and send no HTML (so no CSRF token and no frame headers): on an unchanged report
the full ``MIDDLEWARE`` stack was a large share of the server's CPU. So ``application`` (``wsgi.py``) dispatches on
the path: ``AGENT_PATH_PREFIX`` goes to a handler built from ``SENSORSYNC_AGENT_MIDDLEWARE`` (the forwarded
address, security headers, request ids and the audit context, the outage answer, ``CommonMiddleware``), anything
else to Django's handler with ``MIDDLEWARE``.

Both are ``WSGIHandler``s: the same URLconf, signals (``request_started``/``request_finished``: connections are
closed or kept exactly as before), error answers (``handler404``/``handler500``), ``django.request`` logging and
metrics. ``sensorsync.E010`` (``checks.py``) keeps the short chain a subsequence of ``MIDDLEWARE``, in its order.
The suite's agent client runs on the same chain (``tests/conftest.py``); ``tests/observability/test_agent_handler.py``
calls ``application`` itself.
"""

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.utils.module_loading import import_string

AGENT_PATH_PREFIX = "/api/v1/device/"  # the agents' routes; the staff API is under /api/v1/devices/

StartResponse = Callable[..., Any]


class AgentMiddlewareMixin:
    """For a Django handler: ``SENSORSYNC_AGENT_MIDDLEWARE`` in place of ``MIDDLEWARE`` (sync only, as the server
    runs: gunicorn's sync workers). Also the test suite's agent client (``tests/conftest.py``)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE by name; this is its synchronous part, on the list.
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        handler = convert_exception_to_response(self._get_response)  # type: ignore[attr-defined]
        for middleware_path in reversed(settings.SENSORSYNC_AGENT_MIDDLEWARE):
            middleware = import_string(middleware_path)
            try:
                instance = middleware(handler)
            except MiddlewareNotUsed:
                continue
            if instance is None:
                raise ImproperlyConfigured(f"Middleware factory {middleware_path} returned None.")
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, instance.process_view)
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(instance.process_template_response)
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(instance.process_exception)
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler


class AgentWSGIHandler(AgentMiddlewareMixin, WSGIHandler):
    """Django's WSGI handler on the agents' middleware chain."""


class ProjectApplication:
    """``/api/v1/device/...`` to the agents' handler, every other path to the full one."""

    def __init__(self) -> None:
        self.full = WSGIHandler()
        self.agent = AgentWSGIHandler()

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(AGENT_PATH_PREFIX):
            return self.agent(environ, start_response)
        return self.full(environ, start_response)
