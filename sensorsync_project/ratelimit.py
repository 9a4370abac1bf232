"""Fixed-window rate limits: per device on the agent endpoints, per address and username on the admin login.

Counters live in Redis when ``SENSORSYNC_RATE_LIMIT_REDIS_URL`` is set (shared by every server process), else
in the process's memory. A limiter that cannot reach its store lets the request through and logs it: the budget
protects the service, it must not take it down.
"""

import functools
import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UsernameField
from django.core.cache import BaseCache, caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse

from .fields import concrete_field
from .middleware import GetResponse

logger = logging.getLogger("sensorsync.ratelimit")


@dataclass(frozen=True)
class Rate:
    count: int
    period: int  # seconds

    def __str__(self) -> str:
        return f"{self.count} per {self.period} s"


@functools.lru_cache(maxsize=32)
def rate_parse(text: str) -> Rate | None:
    """``"120/60"`` is 120 per 60 seconds; empty or ``"off"`` disables the limit."""
    if not text or text.strip().lower() == "off":
        return None
    count, _, period = text.partition("/")
    rate = Rate(int(count), int(period or 1))
    if rate.count < 1 or rate.period < 1:
        raise ValueError(f"Invalid rate '{text}': use COUNT/SECONDS with both positive.")
    return rate


@functools.lru_cache(maxsize=4)
def _redis(url: str) -> RedisCache:
    return RedisCache(url, {"KEY_PREFIX": "sensorsync"})


def _store() -> BaseCache:
    url = settings.SENSORSYNC_RATE_LIMIT_REDIS_URL
    return _redis(url) if url else caches["ratelimit"]


def _window(rate: Rate, now: float) -> tuple[int, int]:
    window = int(now // rate.period)
    retry_after = max(1, math.ceil((window + 1) * rate.period - now))
    return window, retry_after


def rate_limit_hit(key: str, rate: Rate | None) -> int | None:
    """Count one request against ``key``; the seconds to wait when over the limit, else None."""
    if rate is None:
        return None
    window, retry_after = _window(rate, time.time())
    cache_key = f"rl:{key}:{rate.period}:{window}"
    store = _store()
    try:
        try:
            count = store.incr(cache_key)
        except ValueError:  # first request of the window
            count = 1 if store.add(cache_key, 1, timeout=rate.period + 1) else store.incr(cache_key)
    except Exception:
        logger.warning("rate limit store unavailable; request let through", exc_info=True)
        return None
    return retry_after if count > rate.count else None


def rate_limit_count(key: str, rate: Rate) -> int:
    window, _ = _window(rate, time.time())
    try:
        return _store().get(f"rl:{key}:{rate.period}:{window}", 0)
    except Exception:
        logger.warning("rate limit store unavailable; request let through", exc_info=True)
        return 0


def rate_limit_clear(key: str, rate: Rate) -> None:
    window, _ = _window(rate, time.time())
    try:
        _store().delete(f"rl:{key}:{rate.period}:{window}")
    except Exception:
        logger.warning("rate limit store unavailable", exc_info=True)


@functools.cache
def _username_field() -> UsernameField:
    user_model = get_user_model()
    return UsernameField(max_length=concrete_field(user_model, user_model.USERNAME_FIELD).max_length)


def login_username(typed: str) -> str:
    """The username the login form hands the auth backend for what was typed: Django's own ``UsernameField``
    (surrounding whitespace stripped, then NFKC), not a copy of its rules. Case is kept: the user model looks the
    username up exactly, so "Ops" and "ops" are two accounts. A value the form refuses (too long) reaches no
    account; it is counted as typed."""
    try:
        return _username_field().clean(typed)
    except ValidationError:
        return typed


def login_throttle_key(request: HttpRequest) -> str:
    # Hashed: a username may hold spaces or control characters, which cache keys must not.
    username = login_username(str(request.POST.get("username", "")))
    digest = hashlib.sha256(username.encode(errors="surrogatepass")).hexdigest()[:32]
    return f"login:{request.META.get('REMOTE_ADDR', '-')}:{digest}"


class AdminLoginThrottleMiddleware:
    """After too many failed staff logins (the admin's and the browsable API's) for one account from one address,
    answer 429 until the window ends. Every spelling the login form normalizes to one username is one account.

    A failed login is the login form answered again (200); a successful one redirects and clears the count.
    """

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.login_paths = {reverse("admin:login"), reverse("rest_framework:login")}

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "POST" or request.path_info not in self.login_paths:
            return self.get_response(request)
        rate = rate_parse(settings.SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT)
        if rate is None:
            return self.get_response(request)
        key = login_throttle_key(request)
        if rate_limit_count(key, rate) >= rate.count:
            _, retry_after = _window(rate, time.time())
            refused = HttpResponse(
                f"Too many failed logins for this account from your address; try again in {retry_after} s.",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            refused["Retry-After"] = str(retry_after)
            return refused
        response = self.get_response(request)
        if response.status_code == 200:
            rate_limit_hit(key, rate)
        elif 300 <= response.status_code < 400:
            rate_limit_clear(key, rate)
        return response
