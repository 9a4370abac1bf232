"""The signature a receiver checks (README "Webhooks"): pure functions, no database."""

import hashlib
import hmac
from pathlib import Path

from django.conf import settings

from webhooks.signing import SECRET_PREFIX, signature_header, signature_verify, webhook_secret_generate

BODY = b'{"id":"e1","type":"device.config_drift"}'


def test_the_header_is_a_timestamp_and_the_hmac_of_timestamp_dot_body():
    header = signature_header(secret="whsec_test", body=BODY, timestamp=1_760_000_000)
    expected = hmac.new(b"whsec_test", b"1760000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1760000000,v1={expected}"
    assert signature_verify(secret="whsec_test", body=BODY, header=header, now=1_760_000_100)


def test_a_changed_body_another_secret_or_an_old_timestamp_do_not_verify():
    header = signature_header(secret="whsec_test", body=BODY, timestamp=1_760_000_000)
    now = 1_760_000_000
    assert not signature_verify(secret="whsec_test", body=BODY + b" ", header=header, now=now)
    assert not signature_verify(secret="whsec_other", body=BODY, header=header, now=now)
    assert not signature_verify(secret="whsec_test", body=BODY, header=header, now=now + 301)  # a replay
    assert signature_verify(secret="whsec_test", body=BODY, header=header, now=now + 3600, tolerance=3600)


def test_any_matching_v1_verifies_and_a_malformed_header_does_not():
    good = signature_header(secret="whsec_test", body=BODY, timestamp=100).split(",")[1]
    assert signature_verify(secret="whsec_test", body=BODY, header=f"t=100,v1=00ff,{good}", now=100)
    for header in ("", "v1=abc", "t=100", "t=abc,v1=00", f"t=-100,{good}"):
        assert not signature_verify(secret="whsec_test", body=BODY, header=header, now=100)


def test_secrets_are_random_and_recognisable():
    first, second = webhook_secret_generate(), webhook_secret_generate()
    assert first != second
    assert first.startswith(SECRET_PREFIX) and len(first) >= len(SECRET_PREFIX) + 43


def test_the_readmes_receiver_verification_accepts_a_delivery_and_refuses_a_forgery():
    """The check README "Webhooks" gives receivers, run as written."""
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    snippet = readme.split("refuses old timestamps (replays):\n\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(snippet, namespace)
    verified = namespace["verified"]

    header = signature_header(secret="whsec_test", body=BODY)
    assert verified("whsec_test", BODY, header)
    assert not verified("whsec_test", BODY + b"x", header)
    assert not verified("whsec_other", BODY, header)
    assert not verified("whsec_test", BODY, signature_header(secret="whsec_test", body=BODY, timestamp=1_000))
