"""Device API keys: random, shown once, stored only as a SHA-256 digest.

A key carries 256 bits of entropy, so a plain (fast) digest cannot be brute-forced and keeps authentication to
one indexed lookup per request; a slow password hash per agent request would not survive a fleet.
"""

import hashlib
import math
import secrets
import zlib
from collections import Counter


def key_generate() -> str:
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


DEVICE_KEY_MIN_BITS = 128
DEVICE_KEY_MAX_LENGTH = 256
_PRINTABLE = frozenset(chr(c) for c in range(0x21, 0x7F))


def key_weakness(key: object) -> str | None:
    """Why a key a device chose for itself is too weak to authenticate it, or None.

    The real agent sends 32 random bytes as 64 hex characters (256 bits). A key is refused when it is not printable
    ASCII, when its length times the bits its alphabet carries per character is under DEVICE_KEY_MIN_BITS, or when
    it is predictable: few distinct characters (Shannon entropy under 2.5 bits a character), or a pattern that
    compresses to less than half its length."""
    if not isinstance(key, str) or not key:
        return "Required: a string."
    if len(key) > DEVICE_KEY_MAX_LENGTH or not set(key) <= _PRINTABLE:
        return f"Must be 1 to {DEVICE_KEY_MAX_LENGTH} printable ASCII characters, no spaces."
    alphabet = 16 if set(key.lower()) <= _HEX else 64 if set(key) <= _URLSAFE else 94
    bits = len(key) * math.log2(alphabet)
    if bits < DEVICE_KEY_MIN_BITS:
        return (
            f"Too short: {len(key)} characters carry at most {int(bits)} bits; at least {DEVICE_KEY_MIN_BITS} are "
            "needed (for example 32 random bytes as 64 hex characters)."
        )
    counts = Counter(key)
    shannon = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    compressed = len(zlib.compress(key.encode(), 9)) - _ZLIB_OVERHEAD
    if shannon < 2.5 or compressed < len(key) / 2:
        return "Too predictable: repeated characters or a repeating pattern. Use random bytes."
    return None


_HEX = frozenset("0123456789abcdef")
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_ZLIB_OVERHEAD = len(zlib.compress(b"", 9))
