"""How a delivery is signed, and how a receiver checks it (README "Webhooks" shows the same in a few lines).

``X-SensorSync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." followed by the body, keyed by the
endpoint's secret>``, as Stripe signs: the timestamp is signed with the body, so a receiver that rejects old
timestamps also rejects a replayed delivery. A receiver compares in constant time and accepts any ``v1`` that
matches (there is one today; a rotation may someday send two)."""

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-SensorSync-Signature"
SECRET_PREFIX = "whsec_"
# How old a signature's timestamp a receiver should accept (seconds): room for clock skew and a slow network.
DEFAULT_TOLERANCE_SECONDS = 300


def webhook_secret_generate() -> str:
    """A new endpoint secret: 256 random bits, recognisable by its prefix in a receiver's configuration."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature_compute(*, secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` sent now (or at ``timestamp``)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature_compute(secret=secret, timestamp=timestamp, body=body)}"


def signature_verify(
    *,
    secret: str,
    body: bytes,
    header: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does: the header parses, its timestamp is within ``tolerance`` of now, and a ``v1`` is the
    HMAC of this body."""
    timestamp, signatures = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature_compute(secret=secret, timestamp=timestamp, body=body)
    return any(hmac.compare_digest(expected, signature) for signature in signatures)
