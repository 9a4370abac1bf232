"""Who and what caused the writes of the current request or command, for event metadata.

A request or command opens one context; every event it appends shares its ``correlation_id``.
"""

import contextlib
import contextvars
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from .choices import EventSourceChoices

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

# Whom a service writes for: a request's user (signed in or anonymous), or no one (a command, an agent).
RequestUser: TypeAlias = "User | AnonymousUser | None"


@dataclass(frozen=True)
class AuditContext:
    source: str = EventSourceChoices.SYSTEM
    actor: str = ""  # who acts when no user does (a command: "command:reconcile")
    request_id: str = ""
    client_ip: str | None = None
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def metadata(self, actor: str) -> dict:
        return {
            "actor": actor,
            "source": self.source,
            "request_id": self.request_id,
            "client_ip": self.client_ip,
        }


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar("audit_context", default=None)


def current_context() -> AuditContext:
    ctx = _current.get()
    if ctx is None:
        # Writes outside a request or command (a shell, a test) still get one correlation id each.
        return AuditContext()
    return ctx


@contextlib.contextmanager
def audit_context(**values: Any) -> Iterator[AuditContext]:
    """Open a context for a request or command; values override the enclosing context's."""
    parent = _current.get()
    ctx = replace(parent, **values) if parent is not None else AuditContext(**values)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def actor_label(user: RequestUser) -> str:
    """How an actor is named in events and audit columns: the username, else the context's actor, else system."""
    author = signed_in_user(user)
    if author is None:
        return current_context().actor or "system"
    return author.get_username()


def signed_in_user(user: RequestUser) -> "User | None":
    """The user a row records as its author: a signed-in one, else none (anonymous, a command, an agent)."""
    return user if user is not None and user.is_authenticated else None
