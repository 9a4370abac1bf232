"""The ingestion worker's receipt journal: what it remembers across a reopen (a restart, or a kill), what it
forgets, and that one client id runs once per machine."""

import pytest
from django.core.management import CommandError, call_command

from ingest import journal as journal_module
from ingest.journal import JournalLocked, ReceiptJournal, journal_path, message_digest

A, B = message_digest("iot/device/a/state", b"{}"), message_digest("iot/device/b/state", b"{}")


def _open(tmp_path, capacity: int = 8) -> ReceiptJournal:
    return ReceiptJournal(journal_path(tmp_path, "sensorsync-ingest-host-1"), capacity=capacity)


def test_a_first_receipt_outlives_the_process_and_its_acknowledgement(tmp_path):
    journal = _open(tmp_path)
    journal.receive(mid=7, digest=A, received_us=1_000)
    journal.receive(mid=8, digest=B, received_us=2_000)
    journal.acknowledge(mid=8, digest=B)
    journal.close()

    reopened = _open(tmp_path)
    assert reopened.first_receipt(mid=7, digest=A) == 1_000  # not acknowledged: the broker will redeliver it
    assert reopened.first_receipt(mid=8, digest=B) == 2_000  # acknowledged, yet kept: an acknowledgement can be lost
    assert reopened.first_receipt(mid=7, digest=B) is None  # same packet id, another message
    assert reopened.first_receipt(mid=9, digest=A) is None
    reopened.close()


def test_a_new_session_clears_it(tmp_path):
    journal = _open(tmp_path)
    journal.receive(mid=1, digest=A, received_us=1_000)
    journal.receive(mid=2, digest=B, received_us=2_000)
    journal.acknowledge(mid=2, digest=B)
    journal.clear()
    assert journal.first_receipt(mid=1, digest=A) is None and journal.first_receipt(mid=2, digest=B) is None
    journal.close()
    assert _open(tmp_path).first_receipt(mid=1, digest=A) is None


def test_a_line_torn_by_a_kill_is_ignored(tmp_path):
    journal = _open(tmp_path)
    journal.receive(mid=1, digest=A, received_us=1_000)
    journal.close()
    with journal_path(tmp_path, "sensorsync-ingest-host-1").open("a") as stream:
        stream.write(f"+ 2 {B.hex()[:9]}")  # the process died inside the write

    reopened = _open(tmp_path)
    assert reopened.first_receipt(mid=1, digest=A) == 1_000
    assert reopened.first_receipt(mid=2, digest=B) is None
    reopened.receive(mid=2, digest=B, received_us=3_000)
    reopened.close()
    assert _open(tmp_path).first_receipt(mid=2, digest=B) == 3_000


def test_it_is_bounded_and_forgets_the_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "ACKNOWLEDGED_KEPT", 3)
    journal = _open(tmp_path, capacity=4)
    for mid in range(1, 11):
        journal.receive(mid=mid, digest=A, received_us=mid)
    assert list(journal.pending) == [(mid, A) for mid in (7, 8, 9, 10)]
    for mid in (7, 8, 9, 10):
        journal.acknowledge(mid=mid, digest=A)
    assert not journal.pending and list(journal.acknowledged) == [(mid, A) for mid in (8, 9, 10)]

    # The file is rewritten with only what the journal holds once it grows.
    for mid in range(100, 400):
        journal.receive(mid=mid, digest=B, received_us=mid)
        journal.acknowledge(mid=mid, digest=B)
    journal.close()
    lines = journal_path(tmp_path, "sensorsync-ingest-host-1").read_text().splitlines()
    assert len(lines) <= 4 * (4 + 3) + 1
    reopened = _open(tmp_path, capacity=4)
    assert list(reopened.acknowledged) == [(mid, B) for mid in (397, 398, 399)]
    reopened.close()


def test_one_client_id_runs_once_on_a_machine(tmp_path, settings):
    journal = _open(tmp_path)
    with pytest.raises(JournalLocked):
        _open(tmp_path)

    settings.SENSORSYNC_MQTT_URL = "mqtt://127.0.0.1:1"
    settings.SENSORSYNC_MQTT_ADMIN_USERNAME, settings.SENSORSYNC_MQTT_ADMIN_PASSWORD = "admin", "secret"
    with pytest.raises(CommandError, match="running already"):
        call_command("mqtt_ingest", "--client-id", "sensorsync-ingest-host-1", "--journal-dir", str(tmp_path))
    journal.close()
    _open(tmp_path).close()  # free again


def test_every_client_id_has_a_file_of_its_own():
    assert journal_path("/j", "sensorsync-ingest-host-1").name == "sensorsync-ingest-host-1.receipts"
    odd = {journal_path("/j", client_id).name for client_id in ("a/b", "a b", "../a_b", "a_b")}
    assert len(odd) == 4 and all("/" not in name and " " not in name for name in odd)
