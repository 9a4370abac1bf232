"""``manage.py check --deploy --fail-level WARNING`` passes with a production-like environment (DEBUG off, a long
secret key, real hosts, HTTPS settings from the environment), and fails without the HTTPS settings (so the check
really looks at them)."""

import json
import os
import secrets
import subprocess
import sys

from django.conf import settings

PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "sensorsync.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://sensorsync.example.com",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
    "DJANGO_SESSION_COOKIE_SECURE": "true",
    "DJANGO_CSRF_COOKIE_SECURE": "true",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
}
HTTPS_VARIABLES = [k for k in PRODUCTION if k.startswith(("DJANGO_SECURE_", "DJANGO_SESSION_", "DJANGO_CSRF_COOKIE"))]


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SENSORSYNC_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check_deploy(env: dict) -> subprocess.CompletedProcess:
    return _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)


def test_check_deploy_passes_with_a_production_environment():
    result = _check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_production_environment_is_what_the_settings_use():
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({"
        "'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'ssl_redirect': s.SECURE_SSL_REDIRECT, "
        "'hsts': s.SECURE_HSTS_SECONDS, 'hsts_sub': s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "'preload': s.SECURE_HSTS_PRELOAD, 'session_secure': s.SESSION_COOKIE_SECURE, "
        "'csrf_secure': s.CSRF_COOKIE_SECURE, 'proxy': list(s.SECURE_PROXY_SSL_HEADER or []), "
        "'origins': s.CSRF_TRUSTED_ORIGINS}))"
    )
    result = _run(["-c", code], PRODUCTION)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "debug": False,
        "hosts": ["sensorsync.example.com"],
        "ssl_redirect": True,
        "hsts": 31536000,
        "hsts_sub": True,
        "preload": True,
        "session_secure": True,
        "csrf_secure": True,
        "proxy": ["HTTP_X_FORWARDED_PROTO", "https"],
        "origins": ["https://sensorsync.example.com"],
    }


def test_check_deploy_fails_without_the_https_settings():
    result = _check_deploy({k: v for k, v in PRODUCTION.items() if k not in HTTPS_VARIABLES})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr, warning


def test_check_deploy_fails_with_a_weak_secret_key():
    result = _check_deploy({**PRODUCTION, "DJANGO_SECRET_KEY": "change-me-to-a-long-random-string"})
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = _check_deploy(env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_the_production_server_refuses_to_start_without_a_secret_key():
    """gunicorn loads wsgi.py at start (preload_app): it fails there, not at the first request that signs."""
    env = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = _run(["-c", "import sensorsync_project.wsgi"], env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off." in result.stderr


def test_tooling_runs_without_a_secret_key():
    """makemigrations and friends need no key: an unset one refuses to sign, it does not stop the tools."""
    env = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = _run(["manage.py", "makemigrations", "--check", "--dry-run"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    signing = _run(["-c", "import django; django.setup(); from django.core import signing; signing.dumps(1)"], env)
    assert signing.returncode != 0
    assert "SECRET_KEY" in signing.stderr
