"""What a database error means for the client: retry later (the database is away or busy), or a server fault.

"The database is unavailable" sends operators looking for an outage, and tells clients to retry: it must be
true. A statement the database refuses for what it is (a limit it exceeds, a bug in our SQL) will fail the same
way on every retry; it is the server's fault, reported as one.
"""

from django.db import DatabaseError, InterfaceError, connection

# SQLSTATE classes and codes after which a retry can succeed: the connection failed or was cut (08, 57P0x: admin
# shutdown, crash, cannot connect now), the server ran out of resources (53), a lock or statement timeout (57014,
# 55P03), a serialization failure or deadlock (40).
_RETRYABLE_CLASSES = ("08", "53", "40")
_RETRYABLE_CODES = frozenset(("57P01", "57P02", "57P03", "57014", "55P03"))


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return state
    return None


def database_unavailable(exc: DatabaseError | InterfaceError) -> bool:
    """Whether ``exc`` says the database went away or is too busy (503, retry), rather than that it refused the
    statement (a server fault). Without an SQLSTATE (a client-side failure), the connection is asked."""
    state = _sqlstate(exc)
    if state is not None:
        return state[:2] in _RETRYABLE_CLASSES or state in _RETRYABLE_CODES
    if isinstance(exc, InterfaceError):
        return True
    if connection.vendor == "sqlite" and "locked" in str(exc):  # another writer holds SQLite's one write lock
        return True
    raw = connection.connection
    if raw is None or getattr(raw, "closed", False) or getattr(raw, "broken", False):
        return True  # psycopg saw the connection lost (a cut socket carries no SQLSTATE)
    try:
        return not connection.is_usable()
    except DatabaseError:
        return True
