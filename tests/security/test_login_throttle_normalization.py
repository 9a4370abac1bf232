"""The staff login throttle counts failures per address and per *account*: every spelling of a username that
Django's login form turns into the same account (surrounding whitespace stripped, Unicode NFKC-normalized) spends
the same budget, so varying the spelling does not buy more guesses."""

import uuid

import pytest
from django.test import Client, override_settings

from sensorsync_project.ratelimit import login_username
from tests.factories import UserFactory

from .test_rate_limits import LOGIN_FORMS, PASSWORD, _assert_refused, _fresh_window, _logged_in, _login


def fullwidth(text: str) -> str:
    """The same letters and digits as full-width forms (U+FF01..U+FF5E), which NFKC maps back."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def spellings(username: str) -> list[str]:
    return [f" {username}", f"{username}\t", fullwidth(username), f"\u3000{fullwidth(username)} \n"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", LOGIN_FORMS)
@override_settings(SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT="3/300", SENSORSYNC_RATE_LIMIT_REDIS_URL="")
def test_spellings_that_log_into_the_same_account_share_one_budget(url):
    username = f"ops-{uuid.uuid4().hex[:8]}"
    UserFactory(username=username, is_superuser=True, password=PASSWORD)
    # Each spelling is the account: Django's login form normalizes it to the stored username.
    for index, spelling in enumerate(spellings(username)):
        other_address = Client()
        assert _login(other_address, url, spelling, PASSWORD, address=f"10.9.0.{index + 1}").status_code == 302
        assert _logged_in(other_address), spelling
    client = Client()
    _fresh_window(300, margin=5)

    for spelling in spellings(username)[:3]:
        failed = _login(client, url, spelling, "wrong password")
        assert failed.status_code == 200 and not _logged_in(client)

    _assert_refused(_login(client, url, spellings(username)[3], PASSWORD), client)
    _assert_refused(_login(client, url, username, PASSWORD), client)
    # Another address still logs in: the budget is per address and account.
    elsewhere = Client()
    assert _login(elsewhere, url, username, PASSWORD, address="10.0.0.2").status_code == 302


@pytest.mark.parametrize(
    ("typed", "looked_up"),
    [
        ("ops", "ops"),
        ("  ops\t\n", "ops"),
        ("\uff4f\uff50\uff53", "ops"),  # full-width letters
        ("\u3000ops\u2003", "ops"),  # ideographic and em spaces are whitespace too
        ("ﬁle", "file"),  # a ligature
        ("Ops", "Ops"),  # the user model compares case-sensitively, and so does the throttle
    ],
)
def test_login_username_is_what_the_login_form_looks_up(typed, looked_up):
    from django.contrib.auth.forms import AuthenticationForm

    form = AuthenticationForm(data={"username": typed, "password": "x"})
    assert form.fields["username"].clean(typed) == looked_up  # Django's own normalization, as the oracle
    assert login_username(typed) == looked_up
