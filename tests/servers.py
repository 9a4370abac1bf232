"""Real server processes against the (committed) test database, and a plain HTTP client for them: for the
reliability and security suites that need more than the in-process test client."""

from django.conf import settings
from django.db import connection


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database (as the test process sees it) as a DATABASE_URL for a subprocess."""
    from urllib.parse import quote

    db = connection.settings_dict
    auth = quote(db["USER"] or "postgres") + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def manage_py(*args: str, **popen: object):
    """``manage.py <args>`` as a process of its own against the test database (a worker, a driver), with a clean
    environment and its output captured as text; the caller waits for it or terminates it."""
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings",
        "DJANGO_DEBUG": "true",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


class ServerProcesses:
    """``manage.py runserver --noreload`` processes on free 127.0.0.1 ports, against the test database; with
    ``server="gunicorn"``, the production server instead (``gunicorn -c gunicorn.conf.py``, its workers set by
    ``GUNICORN_WORKERS`` in ``env``).

    Use as a context manager (or call ``stop``): the processes are always terminated."""

    def __init__(self, count: int, *, env: dict | None = None, log_dir=None, server: str = "runserver"):
        assert server in ("runserver", "gunicorn"), server
        self.count = count
        self.extra_env = env or {}
        self.log_dir = log_dir
        self.server = server
        self.processes = []
        self.ports: list[int] = []

    def start(self) -> "ServerProcesses":
        import os
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        base = Path(settings.BASE_DIR)
        log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="sensorsync-servers-"))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SENSORSYNC_", "PYTEST"))},
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings",
            "DJANGO_SECRET_KEY": "reliability-test-secret-key-not-for-production-0123456789abcdef",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_DEBUG": "false",
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        try:
            for index in range(self.count):
                port = free_port()
                log = open(log_dir / f"server-{index}.log", "wb")  # noqa: SIM115 (closed with the process)
                if self.server == "gunicorn":
                    command = [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"]
                    server_env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
                else:
                    command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
                    server_env = env
                process = subprocess.Popen(
                    command,
                    cwd=base,
                    env=server_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                process.log = log
                self.processes.append(process)
                self.ports.append(port)
            for port, process in zip(self.ports, self.processes, strict=True):
                self._wait_ready(port, process)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, port: int, process, timeout: float = 60.0) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server on port {port} exited with {process.returncode}: {self.log_of(process)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server on port {port} not ready after {timeout} s: {self.log_of(process)}")

    @staticmethod
    def log_of(process) -> str:
        try:
            with open(process.log.name, "rb") as log:
                return log.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"--- server {i}\n{self.log_of(p)}" for i, p in enumerate(self.processes))

    def stop(self) -> None:
        import subprocess

        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            process.log.close()

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index % self.count]}{path}"

    def __enter__(self) -> "ServerProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def http(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None, timeout: float = 30.0):
    """(status, headers, body bytes) over plain HTTP; HTTP errors are answers, not exceptions."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None and "Content-Type" not in (headers or {}):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
