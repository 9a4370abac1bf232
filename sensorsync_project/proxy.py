"""The client's address behind the production front (``deploy/nginx/sensorsync.conf``).

Behind nginx every request comes from nginx's address, so the per-address limits (device registration, the admin
login throttle) would be one budget for the whole fleet and the audit log would name nginx for every request.
nginx appends the address it saw to ``X-Forwarded-For``; from a trusted proxy, the last entry is the client.
"""

from ipaddress import ip_address

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .middleware import GetResponse


def _trusted(address: str) -> bool:
    return address in settings.SENSORSYNC_TRUSTED_PROXIES


def forwarded_client(meta: dict) -> str | None:
    """The client address the trusted proxy saw, or None when the request did not come through one."""
    if not _trusted(meta.get("REMOTE_ADDR", "")):
        return None
    forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
    # The entries before the last are whatever the client sent: only the proxy's own entry is trusted.
    last = forwarded.rsplit(",", 1)[-1].strip()
    try:
        return str(ip_address(last))
    except ValueError:
        return None


class ForwardedForMiddleware:
    """``REMOTE_ADDR`` becomes the client's address when the request came through a trusted proxy; the proxy's
    own address is kept as ``PROXY_ADDR``. First in the chain, so every later reader sees the client."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        client = forwarded_client(request.META)
        if client is not None:
            request.META["PROXY_ADDR"] = request.META["REMOTE_ADDR"]
            request.META["REMOTE_ADDR"] = client
        return self.get_response(request)
