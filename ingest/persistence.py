"""The ingestion workers' shared subscription, written back into Mosquitto's persistence file before it starts.

Mosquitto 2.0 restores each persistent session from its persistence file, with the session's queued messages and
its plain subscriptions, but not its shared ones: ``persist__subs_save`` writes only a topic node's ``subs``, never
its ``shared`` list (every release from 2.0.0 to 2.0.20, and the file persistence of the development branch). So
after a restart the workers' sessions come back without ``$share/sensorsync/iot/device/+/state``, and until a
worker subscribes again every report a device publishes is acknowledged to the device (PUBACK: an MQTT 3.1.1 client
such as the agent cannot tell "no subscriber") and dropped. The agent leaves out of each report what did not change
since the last one it sent (its sensors, their health), so what a lost report said is not sent again.

``shared_subscriptions_restore`` closes that window where it opens: before the broker starts, it appends to the
file a subscription record for each persistent session of the ingestion account, the record Mosquitto would have
written. Mosquitto reads it like any other (``persist__restore_sub`` -> ``sub__add``, which sees the ``$share/``
prefix), so the workers' sessions are members of the shared subscription before the broker accepts a connection:
what devices publish before the workers are back waits in their sessions, as it does while one worker restarts.
The project's broker runner (``PrivateBroker``: ``manage.py mqtt_broker``, ``make run``, the tests) does it on
every start; a broker started otherwise runs ``manage.py mqtt_broker --restore-subscriptions`` first (systemd
``ExecStartPre=``).

Why here: a catch-up session (a plain persistent subscription, which Mosquitto does restore) would have to exist
at every restart, so all the time: the broker would route every report to it too (twice the traffic, one reader
to elect, and it could not tell the reports the workers missed from those they took). Keeping devices out until a
worker subscribes cannot be done with 2.0's means: a publish the ACL refuses is PUBACKed to a 3.1.1 client and
dropped as well, and refusing their connections means disabling and enabling every device client, one
dynamic-security command and file save each. And the server cannot make the agent send its sensors again: it does
so only when their hash changes or it restarts. A record appended before the start costs nothing while the broker
runs.

The format is Mosquitto's own (``src/persist.h``, version 6: 2.0.x): a 15-byte magic, a CRC (unused) and the
version, then chunks of (type, length) in network byte order. A file of another version is left alone
(``PersistenceUnreadable``); the broker then starts as before, with the window open.
"""

import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PERSISTENCE_FILE = "mosquitto.db"  # in persistence_location; Mosquitto's default persistence_file
MAGIC = b"\x00\xb5\x00mosquitto db"
VERSION = 6
CHUNK_SUB, CHUNK_CLIENT = 5, 6
_HEADER = struct.Struct(">II")  # chunk type, body length
# struct PF_client: session_expiry_time (int64, the writer's byte order), session_expiry_interval, last_mid, id_len,
# listener_port, username_len (network order), 4 bytes of padding; then the client id and the username.
_CLIENT = struct.Struct("=q")
_CLIENT_REST = struct.Struct(">IHHHH4x")
# struct PF_sub: identifier, id_len, topic_len, qos, options, 2 bytes of padding; then the client id and the topic.
_SUB = struct.Struct(">IHHBB2x")


class PersistenceUnreadable(ValueError):
    """The persistence file is not one this module knows how to read (another Mosquitto version, or damaged)."""


@dataclass(frozen=True)
class PersistedSession:
    client_id: str
    username: str
    expires_at: int  # seconds since the epoch; 0 when the client was connected as the file was written


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise PersistenceUnreadable("the file ends inside a chunk")
    return data


def persisted_state(path: Path) -> tuple[list[PersistedSession], set[tuple[str, str]]]:
    """The sessions and the (client id, topic) subscriptions in a persistence file."""
    sessions: list[PersistedSession] = []
    subscriptions: set[tuple[str, str]] = set()
    with path.open("rb") as stream:
        head = stream.read(len(MAGIC) + 8)
        if head[: len(MAGIC)] != MAGIC:
            raise PersistenceUnreadable(f"{path} is not a Mosquitto persistence file")
        (version,) = struct.unpack(">I", head[len(MAGIC) + 4 :])
        if version != VERSION:
            raise PersistenceUnreadable(f"{path} has format version {version}; only {VERSION} (Mosquitto 2.0) is known")
        while header := stream.read(_HEADER.size):
            if len(header) != _HEADER.size:
                raise PersistenceUnreadable("the file ends inside a chunk header")
            kind, length = _HEADER.unpack(header)
            if kind == CHUNK_CLIENT:
                body = _read(stream, length)
                (expires_at,) = _CLIENT.unpack_from(body)
                _interval, _mid, id_len, _port, username_len = _CLIENT_REST.unpack_from(body, _CLIENT.size)
                start = _CLIENT.size + _CLIENT_REST.size
                client_id = body[start : start + id_len].decode()
                username = body[start + id_len : start + id_len + username_len].decode()
                sessions.append(PersistedSession(client_id, username, expires_at))
            elif kind == CHUNK_SUB:
                body = _read(stream, length)
                _identifier, id_len, topic_len, _qos, _options = _SUB.unpack_from(body)
                client_id = body[_SUB.size : _SUB.size + id_len].decode()
                subscriptions.add((client_id, body[_SUB.size + id_len : _SUB.size + id_len + topic_len].decode()))
            else:
                stream.seek(length, os.SEEK_CUR)
    return sessions, subscriptions


def subscription_chunk(*, client_id: str, topic: str, qos: int) -> bytes:
    client, filter_ = client_id.encode(), topic.encode()
    body = _SUB.pack(0, len(client), len(filter_), qos, 0) + client + filter_
    return _HEADER.pack(CHUNK_SUB, len(body)) + body


def shared_subscriptions_restore(
    *, data_dir: Path, username: str, topic: str, qos: int = 1, now: float | None = None
) -> list[str]:
    """Give every unexpired persistent session of ``username`` the subscription ``topic`` back (the client ids).

    Run only while the broker is stopped: the file is rewritten (a copy, then an atomic rename, keeping its owner
    and mode), so an interrupted run leaves the old file. A session whose expiry time has passed is left out: Mosquitto
    2.0.11 never expires a session it restored (fixed in 2.0.15), and a retired worker's session would otherwise take
    its share of the reports for ever."""
    path = Path(data_dir) / PERSISTENCE_FILE
    if not path.exists() or path.stat().st_size == 0:
        return []
    sessions, subscriptions = persisted_state(path)
    deadline = int(time.time() if now is None else now)
    members = [
        session.client_id
        for session in sessions
        if session.username == username
        and (session.expires_at == 0 or session.expires_at > deadline)
        and (session.client_id, topic) not in subscriptions
    ]
    if not members:
        return []
    staged = path.with_name(f".{path.name}.restoring")
    shutil.copyfile(path, staged)
    with staged.open("ab") as stream:
        for client_id in members:
            stream.write(subscription_chunk(client_id=client_id, topic=topic, qos=qos))
        stream.flush()
        os.fsync(stream.fileno())
    original = path.stat()
    os.chmod(staged, original.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(staged, original.st_uid, original.st_gid)
    os.replace(staged, path)
    return members
