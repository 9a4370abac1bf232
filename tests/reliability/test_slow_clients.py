"""Issue 13, item 9: four slow clients froze the server. gunicorn's sync workers each serve one connection from its
first byte to its last, so clients that send a header line a second hold every worker, and /healthz times out. The
production front (deploy/nginx/sensorsync.conf: nginx reads each request completely, with short timeouts, before
gunicorn sees it) fixes that.

Real processes, on loopback only: gunicorn with gunicorn.conf.py and 2 workers, and Debian's nginx running the shipped
file (templated with free ports, a throwaway certificate and a temp directory for its pid, logs and temp files; as the
current user, in the foreground). Without nginx installed these tests skip, saying so; CI (.ci/run) installs it.
"""

import contextlib
import gzip
import http.client
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from devices.models import DeviceCurrentState
from tests.helpers import IS_POSTGRES, REPORT_URL, device_with, events_url, report_body, target_sensors, target_version
from tests.servers import ServerProcesses, free_port

SITE = Path(settings.BASE_DIR) / "deploy" / "nginx" / "sensorsync.conf"
WORKERS = 2
SLOW_CLIENTS = WORKERS + 2
DIRECT_TIMEOUT = 3.0  # how long /healthz straight to gunicorn is given under the attack
FRONT_LIMIT = 1.0  # how fast /healthz through nginx must answer under the same attack


def _executable(name: str, debian_path: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return debian_path if os.access(debian_path, os.X_OK) else None


NGINX = _executable("nginx", "/usr/sbin/nginx")
OPENSSL = _executable("openssl", "/usr/bin/openssl")


def _nginx_version() -> tuple[int, ...]:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def render_site(text: str, **paths) -> str:
    """The shipped site with its production addresses and paths swapped for the test's: each swap must find its line
    exactly once, so a change to the shipped file that the test would silently miss fails here instead."""
    swaps = [
        ("    listen 80;\n", f"    listen 127.0.0.1:{paths['http_port']};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{paths['tls_port']} ssl;\n"),
        ("    listen [::]:443 ssl;\n", ""),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{paths['upstream_port']};"),
        ("/etc/letsencrypt/live/sensorsync.example.com/fullchain.pem", paths["cert"]),
        ("/etc/letsencrypt/live/sensorsync.example.com/privkey.pem", paths["key"]),
        ("/srv/sensorsync/staticfiles/", f"{paths['static_root']}/"),
        ("/var/log/nginx/sensorsync.access.log", paths["access_log"]),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, f"{SITE.name}: expected {old!r} once"
        text = text.replace(old, new)
    return text


def nginx_main_conf(work: Path) -> str:
    """A minimal nginx.conf around the site, everything nginx writes kept in ``work`` (no root needed)."""
    # As root, nginx's workers would switch to the compiled-in user (nobody), which cannot use the 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    return f"""daemon off;
master_process on;
worker_processes 1;
{user}pid {work}/nginx.pid;
lock_file {work}/nginx.lock;
error_log {work}/error.log notice;
events {{ worker_connections 256; }}
http {{
    {mime}
    default_type application/octet-stream;
    access_log {work}/access.log;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/sensorsync.conf;
}}
"""


def _tls_certificate(work: Path) -> tuple[Path, Path]:
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            *[OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
            *["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            *["-keyout", str(key), "-out", str(cert)],
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class Nginx:
    """nginx in the foreground (``daemon off``), in its own process group; stopped by its pid, then its group."""

    def __init__(self, work: Path, conf: Path):
        self.work = work
        command = [NGINX, "-p", f"{work}/", "-c", str(conf)]
        if _nginx_version() >= (1, 19, 5):
            command += ["-e", str(work / "error.log")]  # else it opens the compiled-in error log before the conf
        self.log = open(work / "nginx.out", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def logs(self) -> str:
        text = ""
        for name in ("nginx.out", "error.log"):
            path = self.work / name
            if path.exists():
                text += f"--- {name}\n" + path.read_text(errors="replace")[-3000:]
        return text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown, the master stops its worker
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)  # the group this test started (master and worker)
                self.process.wait(timeout=10)
        self.log.close()


def request(front, method: str, path: str, *, via: str = "nginx", body=None, headers=None, timeout: float = 10.0):
    """(status, headers, body, seconds) over loopback; status None when no answer came within ``timeout``."""
    if via == "nginx":
        conn = http.client.HTTPSConnection("127.0.0.1", front.tls_port, timeout=timeout, context=front.tls)
    elif via == "nginx-http":
        conn = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", front.gunicorn_port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.monotonic() - started
    except TimeoutError:
        return None, {}, b"", time.monotonic() - started
    finally:
        conn.close()


# What each slow client sends at once, then one piece a second, never finishing: a request line and one header
# line a second, never the blank line that ends the headers (slowloris); or complete headers announcing a form body
# that then comes a byte a second (Django's CSRF check reads the body of a POST form before answering).
SLOW_START = {
    "headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "body": b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 1000\r\n\r\n",
}


class SlowClients:
    """``count`` connections that each start a request and then send one more piece a second (``kind``: a header line
    or a body byte; ``SLOW_START``). Bounded: at most ``max_lines`` pieces each; closed on leaving the ``with``."""

    def __init__(
        self, port: int, count: int, *, kind: str = "headers", tls: ssl.SSLContext | None = None, max_lines: int = 20
    ):
        self.port, self.count, self.kind, self.tls, self.max_lines = port, count, kind, tls, max_lines
        self.sockets: list[socket.socket] = []
        self.lines_sent = 0  # rounds of one line to every connection
        self.waiting = count  # connections still open and not answered, at the last round
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SlowClients":
        try:
            for _ in range(self.count):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self.sockets.append(sock)
                if self.tls:
                    sock = self.sockets[-1] = self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
                sock.sendall(SLOW_START[self.kind])
        except BaseException:
            self._close()
            raise
        self._thread.start()
        return self

    def _still_waiting(self, sock: socket.socket) -> bool:
        """Open, and nothing (no answer, no close) came back: the server is still waiting for the headers."""
        if not select.select([sock], [], [], 0)[0]:
            return True
        sock.setblocking(False)
        try:
            return not sock.recv(1)  # TLS records with no data (session tickets) raise SSLWantReadError
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except OSError:
            return False
        finally:
            sock.settimeout(5)

    def _run(self) -> None:
        for line in range(self.max_lines):
            if self._stop.wait(1.0):
                return
            waiting = 0
            for sock in self.sockets:
                try:
                    if self._still_waiting(sock):
                        sock.sendall(f"X-Slow-{line}: {line}\r\n".encode() if self.kind == "headers" else b"x")
                        waiting += 1
                except OSError:
                    pass
            self.waiting = waiting
            self.lines_sent = line + 1

    def wait_lines(self, lines: int) -> None:
        deadline = time.monotonic() + lines + 5
        while self.lines_sent < lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.lines_sent >= lines, "the slow clients stopped sending"

    def _close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._close()


@pytest.fixture(scope="module")
def front(tmp_path_factory, django_db_setup):
    """gunicorn (gunicorn.conf.py, 2 sync workers) and nginx running deploy/nginx/sensorsync.conf in front of it."""
    if not NGINX:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)")
    if not OPENSSL:
        pytest.skip("openssl is not installed: the test's nginx needs a certificate (Debian: apt-get install openssl)")
    work = tmp_path_factory.mktemp("nginx-front")
    static_root = work / "static"
    (static_root / "probe").mkdir(parents=True)
    (static_root / "probe" / "probe.css").write_text("/* served by nginx */\n")
    env = {"GUNICORN_WORKERS": str(WORKERS), "GUNICORN_TIMEOUT": "60", "SENSORSYNC_AGENT_RATE_LIMIT": "off"}
    if not IS_POSTGRES:  # the suite's SQLite database lives in memory: the server gets a file of its own
        env["DATABASE_URL"] = f"sqlite:///{work / 'server.sqlite3'}"
    nginx = None
    with ServerProcesses(1, env=env, log_dir=work, server="gunicorn") as gunicorn:
        try:
            cert, key = _tls_certificate(work)
            front = SimpleNamespace(
                gunicorn_port=gunicorn.ports[0],
                http_port=free_port(),
                tls_port=free_port(),
                static_root=static_root,
                work=work,
                tls=ssl.create_default_context(cafile=str(cert)),
            )
            site = render_site(
                SITE.read_text(),
                http_port=front.http_port,
                tls_port=front.tls_port,
                upstream_port=front.gunicorn_port,
                cert=str(cert),
                key=str(key),
                static_root=str(static_root),
                access_log=str(work / "sensorsync.access.log"),
            )
            (work / "sensorsync.conf").write_text(site)
            (work / "nginx.conf").write_text(nginx_main_conf(work))
            nginx = Nginx(work, work / "nginx.conf")
            front.logs = lambda: nginx.logs() + gunicorn.logs()
            deadline = time.monotonic() + 15
            while True:
                assert nginx.process.poll() is None, f"nginx exited ({nginx.process.returncode}):\n{nginx.logs()}"
                try:
                    if request(front, "GET", "/healthz", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"nginx not answering /healthz:\n{front.logs()}"
                time.sleep(0.1)
            yield front
        finally:
            if nginx:
                nginx.stop()


@contextlib.contextmanager
def attack(port: int, tls: ssl.SSLContext | None = None):
    """The attack: SLOW_CLIENTS clients sending their headers slowly (the issue's), and as many sending a body
    slowly (what proxy_request_buffering is for)."""
    with (
        SlowClients(port, SLOW_CLIENTS, kind="headers", tls=tls) as headers,
        SlowClients(port, SLOW_CLIENTS, kind="body", tls=tls) as bodies,
    ):
        yield headers, bodies


@pytest.mark.django_db
def test_slow_clients_stall_gunicorn_directly_but_not_through_nginx(front):
    # Before: both answer at once.
    assert request(front, "GET", "/healthz", via="gunicorn", timeout=5)[0] == 200
    assert request(front, "GET", "/healthz", timeout=5)[0] == 200

    # The fix: the slow clients reach nginx, as they would in production. nginx holds their half-read requests;
    # gunicorn never sees them, and /healthz through nginx (and straight to gunicorn) answers at once.
    with attack(front.tls_port, front.tls) as groups:
        for group in groups:
            group.wait_lines(2)
        through_nginx = [request(front, "GET", "/healthz", timeout=5) for _ in range(3)]
        direct = request(front, "GET", "/healthz", via="gunicorn", timeout=5)
        still_attacking = [group.waiting for group in groups]
    seconds = [round(answer[3], 3) for answer in through_nginx]
    assert [answer[0] for answer in through_nginx] == [200] * 3, (seconds, front.logs())
    assert max(seconds) < FRONT_LIMIT, seconds
    assert direct[0] == 200 and direct[3] < FRONT_LIMIT, direct
    assert still_attacking == [SLOW_CLIENTS] * 2, "the slow clients were cut off before the measurement"

    # The defect: the same slow clients straight at gunicorn take both workers (the others wait in the backlog),
    # and /healthz gets no answer.
    with attack(front.gunicorn_port) as groups:
        for group in groups:
            group.wait_lines(1)
        stalled = request(front, "GET", "/healthz", via="gunicorn", timeout=DIRECT_TIMEOUT)
        assert [group.waiting for group in groups] == [SLOW_CLIENTS] * 2
    assert stalled[0] is None, f"gunicorn answered {stalled[0]} in {stalled[3]:.2f} s under the slow clients"

    # Once they leave, the workers are free again.
    recovered = request(front, "GET", "/healthz", via="gunicorn", timeout=10)
    assert recovered[0] == 200, front.logs()
    print(
        f"\n/healthz under {2 * SLOW_CLIENTS} slow clients ({WORKERS} workers): through nginx "
        f"{', '.join(f'{s * 1000:.0f} ms' for s in seconds)}; straight to gunicorn no answer in {stalled[3]:.1f} s"
    )


@pytest.mark.django_db
def test_nginx_front_serves_static_keeps_request_ids_and_refuses_oversized_bodies(front):
    # The client's request id reaches the app and comes back; without one, nginx's id is the app's too.
    status, headers, _, _ = request(front, "GET", "/healthz", headers={"X-Request-ID": "probe-42"})
    assert (status, headers.get("x-request-id")) == (200, "probe-42")
    status, headers, _, _ = request(front, "GET", "/healthz")
    generated = headers.get("x-request-id", "")
    assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", generated), headers
    deadline = time.monotonic() + 5  # nginx writes its access log line after the answer
    while f"rid={generated}" not in (front.work / "sensorsync.access.log").read_text():
        assert time.monotonic() < deadline, "nginx's access log does not carry the request id"
        time.sleep(0.05)

    # Static files come from the collected directory, not from a worker.
    status, headers, body, _ = request(front, "GET", "/static/probe/probe.css")
    assert (status, body) == (200, b"/* served by nginx */\n")
    assert headers["content-type"].startswith("text/css")

    # A body over the cap is refused by nginx before any worker reads it, in the app's error shape.
    conn = http.client.HTTPSConnection("127.0.0.1", front.tls_port, timeout=10, context=front.tls)
    try:
        conn.putrequest("PATCH", REPORT_URL)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(2 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read())["error"] == "payload_too_large"
    finally:
        conn.close()

    # Plain HTTP: /healthz answers (load balancers' checks), everything else goes to HTTPS.
    assert request(front, "GET", "/healthz", via="nginx-http")[0] == 200
    status, headers, _, _ = request(front, "GET", "/admin/", via="nginx-http")
    assert (status, headers.get("location")) == (301, "https://127.0.0.1/admin/")


def test_nginx_body_limits_match_the_apps_caps():
    """client_max_body_size: the app's largest cap plus gzip's framing, so the app answers every body near its limit
    itself; the buffer holds a whole body in memory."""
    site = SITE.read_text()

    def size(directive: str) -> int:
        (value,) = re.findall(rf"^\s*{directive}\s+(\d+)([km]?);", site, re.M)
        return int(value[0]) * {"": 1, "k": 1024, "m": 1024 * 1024}[value[1]]

    cap = max(settings.SENSORSYNC_MAX_REPORT_BYTES, settings.SENSORSYNC_MAX_BODY_BYTES)
    assert cap < size("client_max_body_size") <= cap + 64 * 1024
    assert size("client_body_buffer_size") >= size("client_max_body_size")
    assert re.search(r"^\s*proxy_request_buffering on;", site, re.M)
    assert re.search(r"^\s*client_header_timeout 10s;", site, re.M)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_agent_gzip_report_and_https_links_pass_through_nginx(front, staff_token):
    device = device_with("s-0", "s-1")
    version = target_version(device)
    body = gzip.compress(report_body(device, version, target_sensors(device), seq=1))
    headers = {"X-Device-API-Key": device.api_key, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    status, _, answer, _ = request(front, "PATCH", REPORT_URL, body=body, headers=headers)
    assert status == 200, (answer, front.logs())
    assert json.loads(answer)[str(device.uuid)]["inSync"] is True
    assert DeviceCurrentState.objects.get(device=device).version == version

    # X-Forwarded-Proto reached the app through gunicorn's loopback trust: the links it builds are https.
    auth = {"Authorization": f"Token {staff_token}"}
    status, _, answer, _ = request(front, "GET", f"{events_url()}?limit=1", headers=auth)
    assert status == 200, answer
    assert json.loads(answer)["next"].startswith("https://127.0.0.1/api/v1/events?"), answer
