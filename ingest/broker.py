"""The project's own Mosquitto broker: its configuration, rendered from ``deploy/mosquitto/sensorsync.conf``, and a
private broker process for the test suite, ``make run`` and ``manage.py mqtt_broker``.

The broker's state lives in one data directory: the rendered ``mosquitto.conf``, the dynamic-security plugin's
``dynamic-security.json`` (its clients, roles and password hashes: written here once, then only by the plugin), the
persistence file (queued QoS 1 messages, sessions; before each start the workers' shared subscription is written
back into it, see ``ingest.persistence``) and the log.
"""

import base64
import getpass
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from django.conf import settings

from .persistence import PersistenceUnreadable, shared_subscriptions_restore

logger = logging.getLogger("sensorsync.mqtt")

CONFIG_TEMPLATE = Path(settings.BASE_DIR) / "deploy" / "mosquitto" / "sensorsync.conf"
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)

# Roles the server relies on. A device's client has DEVICE_ROLE; ``%u`` is the connecting client's username, which
# for a device is its uuid, so one role serves the whole fleet. The admin account (the server's) has ADMIN_ROLE (the
# dynamic-security API) and INGEST_ROLE (the shared subscription the ingestion workers read).
DEVICE_ROLE = "sensorsync-device"
INGEST_ROLE = "sensorsync-ingest"
ADMIN_ROLE = "sensorsync-admin"
SHARE_GROUP = "sensorsync"
STATE_TOPIC_FILTER = "iot/device/+/state"
SHARED_SUBSCRIPTION = f"$share/{SHARE_GROUP}/{STATE_TOPIC_FILTER}"


def _acl(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


ROLES = {
    DEVICE_ROLE: [
        _acl("publishClientSend", "iot/device/%u/state"),
        _acl("subscribePattern", "iot/device/%u/#"),
        _acl("unsubscribePattern", "iot/device/%u/#"),
        _acl("publishClientReceive", "iot/device/%u/#"),
    ],
    INGEST_ROLE: [
        _acl("subscribePattern", SHARED_SUBSCRIPTION),
        _acl("subscribePattern", STATE_TOPIC_FILTER),
        _acl("unsubscribePattern", SHARED_SUBSCRIPTION),
        _acl("unsubscribePattern", STATE_TOPIC_FILTER),
        _acl("publishClientReceive", STATE_TOPIC_FILTER),
    ],
    ADMIN_ROLE: [
        _acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        _acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
        _acl("subscribePattern", "$CONTROL/dynamic-security/#"),
        _acl("unsubscribePattern", "$CONTROL/dynamic-security/#"),
    ],
}
# Everything not granted by a role is refused, receiving included.
DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": False,
}


class BrokerUnavailable(RuntimeError):
    """Mosquitto (or its dynamic-security plugin) is not installed, or the broker did not start."""


def mosquitto_executable() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def dynsec_plugin_path() -> str | None:
    return next((path for path in DYNSEC_PLUGIN_PATHS if os.path.exists(path)), None)


def missing_reason() -> str | None:
    """Why no private broker can run here, or None."""
    if mosquitto_executable() is None:
        return "Mosquitto is not installed (Debian: apt-get install mosquitto)"
    if dynsec_plugin_path() is None:
        return "Mosquitto's dynamic-security plugin was not found (" + ", ".join(DYNSEC_PLUGIN_PATHS) + ")"
    return None


def password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> dict:
    """A password as the dynamic-security plugin stores it (PBKDF2-HMAC-SHA512, base64)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def dynsec_initial(*, admin_username: str, admin_password: str) -> dict:
    """The plugin's first state: the server's admin account, the roles, everything else refused."""
    return {
        "clients": [
            {
                "username": admin_username,
                "textName": "SensorSync server (dynamic-security admin, ingestion)",
                **password_hash(admin_password),
                "roles": [{"rolename": ADMIN_ROLE}, {"rolename": INGEST_ROLE}],
            }
        ],
        "groups": [],
        "roles": [{"rolename": name, "acls": acls} for name, acls in ROLES.items()],
        "defaultACLAccess": DEFAULT_ACL_ACCESS,
    }


def config_render(
    *,
    port: int,
    data_dir: Path,
    bind: str = "127.0.0.1",
    log_dest: str | None = None,
    max_queued: int = 100_000,
    user: str | None = None,
) -> str:
    plugin = dynsec_plugin_path() or DYNSEC_PLUGIN_PATHS[0]
    values = {
        "port": port,
        "user": user or getpass.getuser(),
        "bind": bind,
        "data_dir": str(data_dir),
        "dynsec_plugin": plugin,
        "dynsec_file": str(data_dir / "dynamic-security.json"),
        "max_queued": max_queued,
        "max_packet_size": settings.SENSORSYNC_MAX_REPORT_BYTES + 65_536,
        "log_dest": log_dest or f"file {data_dir / 'mosquitto.log'}",
    }
    # Only the known placeholders: the file's comments may hold braces of their own.
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m[1], m[0])), CONFIG_TEMPLATE.read_text())


def data_dir_prepare(
    *,
    data_dir: Path,
    port: int,
    admin_username: str,
    admin_password: str,
    bind: str = "127.0.0.1",
    user: str | None = None,
) -> Path:
    """Write the configuration (every time: the port may change) and, on first use only, the plugin's state."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(config_render(port=port, data_dir=data_dir, bind=bind, user=user))
    dynsec = data_dir / "dynamic-security.json"
    if not dynsec.exists():
        dynsec.write_text(json.dumps(dynsec_initial(admin_username=admin_username, admin_password=admin_password)))
        dynsec.chmod(0o600)
    return conf


def worker_subscriptions_restore(*, data_dir: Path, username: str) -> list[str]:
    """Before the broker starts: the ingestion workers' sessions get their shared subscription back (their client
    ids), so that no report published before they reconnect is lost (``ingest.persistence``). A file this cannot
    read (or write) is left alone, and said so: the broker then starts as Mosquitto alone would."""
    try:
        restored = shared_subscriptions_restore(data_dir=data_dir, username=username, topic=SHARED_SUBSCRIPTION)
    except (PersistenceUnreadable, OSError) as exc:
        logger.warning(
            "mqtt broker: shared subscriptions not restored (%s); reports published before a worker subscribes "
            "again are lost",
            exc,
        )
        return []
    if restored:
        logger.info("mqtt broker: shared subscription restored for %s", ", ".join(restored))
    return restored


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateBroker:
    """A Mosquitto process of our own on a loopback port, configured by the project's files.

    ``start`` gives the workers' sessions their shared subscription back, starts it and waits until it accepts
    connections; ``stop`` ends it cleanly (SIGTERM: it saves its persistence file), ``kill`` does not; ``start``
    again restarts it on the same port with the same state."""

    def __init__(
        self,
        data_dir: Path,
        *,
        admin_username: str,
        admin_password: str,
        port: int | None = None,
        bind: str = "127.0.0.1",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.admin_username = admin_username
        self.admin_password = admin_password
        self.port = port or free_port()
        self.bind = bind
        self.process: subprocess.Popen | None = None
        self.restored: list[str] = []  # the workers' sessions given their shared subscription back at the last start

    @property
    def url(self) -> str:
        return f"mqtt://{self.bind}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def start(self, timeout: float = 15.0) -> "PrivateBroker":
        reason, executable = missing_reason(), mosquitto_executable()
        if reason or executable is None:
            raise BrokerUnavailable(reason or "mosquitto is not installed")
        conf = data_dir_prepare(
            data_dir=self.data_dir,
            port=self.port,
            admin_username=self.admin_username,
            admin_password=self.admin_password,
            bind=self.bind,
        )
        self.restored = worker_subscriptions_restore(data_dir=self.data_dir, username=self.admin_username)
        self.process = subprocess.Popen(
            [executable, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise BrokerUnavailable(
                    f"mosquitto exited with {self.process.returncode}: {error.strip()}\n{self.log()}".strip()
                )
            try:
                socket.create_connection((self.bind, self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerUnavailable(f"mosquitto did not listen on {self.port} within {timeout} s") from None
                time.sleep(0.05)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> "PrivateBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
