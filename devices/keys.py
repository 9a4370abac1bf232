"""Device API keys: random, shown once, stored only as a SHA-256 digest.

A key carries 256 bits of entropy, so a plain (fast) digest cannot be brute-forced and keeps authentication to
one indexed lookup per request; a slow password hash per agent request would not survive a fleet.
"""

import hashlib
import secrets


def key_generate() -> str:
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
