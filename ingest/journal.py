"""When an ingestion worker first received each message it holds, kept across reconnections and process kills.

The order of a device's reports across workers rests on each message's time of receipt (``Device.
last_report_received_us``). A message the worker did not acknowledge (it died, or its connection broke, before
the commit) comes back from the broker to the same client id with the same packet id, flagged DUP. Stamped with the
time it comes back, it could overwrite a newer report another worker applied meanwhile; stamped with a lower bound,
it could be dropped although it was the newest. So the worker keeps, for every message it received and has not
acknowledged, (packet id, digest of topic and payload) -> first receipt, and stamps a message that comes back with
that time: in memory across reconnections, and in a small journal file per client id across a restart or a kill.

The journal also keeps the last ``ACKNOWLEDGED_KEPT`` acknowledged messages: an acknowledgement lost with the
connection, or a broker restored from a persistence file older than the acknowledgement, brings the message back too.

The file is appended one line per receipt (``+ <packet id> <digest> <microseconds>``) and per acknowledgement
(``- <packet id> <digest>``), flushed to the operating system before the message is handed on: it survives the
process being killed at any point (a torn last line is ignored). It is not synced to disk per message, so a crash of
the machine itself may lose its last lines. It is rewritten with only what it holds when it grows, and it is locked:
a second worker with the same client id on this machine refuses to start (it would also take the first one's
session away on the broker).
"""

import fcntl
import hashlib
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TextIO

ACKNOWLEDGED_KEPT = 1024
DIGEST_SIZE = 16

Key = tuple[int, bytes]


class JournalLocked(RuntimeError):
    """Another process holds the journal of this client id."""


def message_digest(topic: str, payload: bytes) -> bytes:
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=DIGEST_SIZE).digest()


def journal_path(directory: Path, client_id: str) -> Path:
    """One file per client id; an id that is not a plain file name is made one (with a digest of the id)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", client_id)[:100]
    if safe != client_id:
        safe += "-" + hashlib.blake2b(client_id.encode(), digest_size=6).hexdigest()
    return Path(directory) / f"{safe}.receipts"


class ReceiptJournal:
    """First receipt, in microseconds, of the messages a worker holds (``pending``, at most ``capacity``, the
    oldest forgotten first) and of the last acknowledged ones. Thread-safe: the network thread records receipts,
    the main thread acknowledgements."""

    def __init__(self, path: Path, *, capacity: int) -> None:
        self.path = Path(path)
        self.capacity = capacity
        self.pending: OrderedDict[Key, int] = OrderedDict()
        self.acknowledged: OrderedDict[Key, int] = OrderedDict()
        self._mutex = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_suffix(".lock"), "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise JournalLocked(f"{self.path} is held by another worker with the same client id") from None
        self._load()
        self._file: TextIO = self._rewrite()

    def _load(self) -> None:
        try:
            lines = self.path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            parts = line.split()
            try:
                key = (int(parts[1]), bytes.fromhex(parts[2]))
                if parts[0] == "+" and len(parts) == 4:
                    self._receive(key, int(parts[3]))
                elif parts[0] == "-" and len(parts) == 3:
                    self._acknowledge(key)
            except (IndexError, ValueError):
                continue  # a line torn by a kill while it was written

    def _rewrite(self) -> TextIO:
        """Write what the journal holds to a new file, put it in place, and append to it from now on."""
        staged = self.path.with_name(self.path.name + ".new")
        with staged.open("w") as stream:
            for (mid, digest), received_us in self.acknowledged.items():
                stream.write(f"+ {mid} {digest.hex()} {received_us}\n- {mid} {digest.hex()}\n")
            for (mid, digest), received_us in self.pending.items():
                stream.write(f"+ {mid} {digest.hex()} {received_us}\n")
        os.replace(staged, self.path)
        self._lines = 2 * len(self.acknowledged) + len(self.pending)
        return self.path.open("a")

    def _append(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()
        self._lines += 1
        if self._lines > 4 * (self.capacity + ACKNOWLEDGED_KEPT):
            self._file.close()
            self._file = self._rewrite()

    def _receive(self, key: Key, received_us: int) -> None:
        self.acknowledged.pop(key, None)
        self.pending[key] = received_us
        self.pending.move_to_end(key)
        while len(self.pending) > self.capacity:
            self.pending.popitem(last=False)  # never redelivered (its session ended): nothing will ask for it

    def _acknowledge(self, key: Key) -> None:
        received_us = self.pending.pop(key, None)
        if received_us is None:
            return
        self.acknowledged[key] = received_us
        while len(self.acknowledged) > ACKNOWLEDGED_KEPT:
            self.acknowledged.popitem(last=False)

    def first_receipt(self, *, mid: int, digest: bytes) -> int | None:
        with self._mutex:
            key = (mid, digest)
            return self.pending.get(key, self.acknowledged.get(key))

    def receive(self, *, mid: int, digest: bytes, received_us: int) -> None:
        with self._mutex:
            self._receive((mid, digest), received_us)
            self._append(f"+ {mid} {digest.hex()} {received_us}\n")

    def acknowledge(self, *, mid: int, digest: bytes) -> None:
        with self._mutex:
            if (mid, digest) in self.pending:
                self._acknowledge((mid, digest))
                self._append(f"- {mid} {digest.hex()}\n")

    def clear(self) -> None:
        """Forget everything: the broker started a new session for this client id, so nothing comes back (and its
        packet ids start over)."""
        with self._mutex:
            self.pending.clear()
            self.acknowledged.clear()
            self._file.close()
            self._file = self._rewrite()

    def close(self, *, discard: bool = False) -> None:
        """Close the file; with ``discard``, delete it too (the session it served is gone)."""
        with self._mutex:
            self._file.close()
            if discard:
                self.path.unlink(missing_ok=True)
                Path(self._lock_file.name).unlink(missing_ok=True)
            self._lock_file.close()  # releases the lock
