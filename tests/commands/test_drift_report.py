import json

import pytest
from django.core.management import CommandError

from reconciliation.management.commands import drift_report as drift_command
from tests.helpers import device_with

from .conftest import agent_report, run


def test_all_in_sync(db):
    for _ in range(2):
        agent_report(device_with("temp-1"))

    out, err = run("drift_report")

    assert out == "All 2 devices are in sync.\n"
    assert err == ""


def test_table_lists_only_drifting_devices_in_aligned_columns(fleet):
    failing, silent = fleet["failing"], fleet["silent"]

    out, _ = run("drift_report")

    lines = out.splitlines()
    assert lines[0] == "2 of 3 devices are not in sync."
    header, first, second = lines[2:5]
    assert header.split() == ["DEVICE", "UUID", "TARGET", "REPORTED", "LAST", "SEEN", "STAGE", "DRIFTING"]
    assert first.startswith("failing ") and second.startswith("silent ")
    for column in ("UUID", "TARGET", "REPORTED", "STAGE"):
        start = header.index(column)
        assert first[start - 2 : start] == "  " and first[start] != " "
        assert second[start - 2 : start] == "  " and second[start] != " "
    assert str(failing.uuid) in first and "sensors_failed" in first and " v3 " in first
    assert str(silent.uuid) in second and "never_fetched" in second
    assert second.split()[3:6] == ["never", "never", "never_fetched"]  # reported, last seen, stage
    assert "synced" not in out

    details = "\n".join(lines[5:])
    assert "The agent applied version 3, but some sensors do not run as desired." in details
    assert "door-1  failed  no       connection refused" in details
    assert "temp-2  pending  no       -" in details
    assert "temp-1  pending" in details  # silent's sensors are all listed
    assert "temp-1  deployed" not in details  # deployed sensors are not drift


def test_json_is_a_list_of_objects(fleet):
    out, _ = run("drift_report", "--format", "json")

    records = json.loads(out)
    assert [record["name"] for record in records] == ["failing", "silent"]
    failing, silent = records
    assert failing == {
        "name": "failing",
        "uuid": str(fleet["failing"].uuid),
        "isActive": True,
        "targetVersion": 3,
        "reportedVersion": 3,
        "lastFetchedVersion": 3,
        "lastSeenAt": failing["lastSeenAt"],
        "stage": "sensors_failed",
        "reason": "The agent applied version 3, but some sensors do not run as desired.",
        "sensors": [
            {"name": "door-1", "status": "failed", "running": False, "error": "connection refused", "attempts": 1}
        ],
    }
    assert failing["lastSeenAt"] is not None
    assert (silent["reportedVersion"], silent["lastSeenAt"], silent["stage"]) == (None, None, "never_fetched")
    assert [s["status"] for s in silent["sensors"]] == ["pending", "pending"]


def test_json_with_nothing_drifting_is_an_empty_list(db):
    agent_report(device_with("temp-1"))

    out, _ = run("drift_report", "--format", "json")

    assert json.loads(out) == []


def test_stage_follows_the_agent(db):
    device = device_with("temp-1", name="cold-store")
    agent_report(device, version=1, running=[])  # an old version: the sensor's arrival is still in flight

    records = json.loads(run("drift_report", "--format", "json")[0])

    assert records[0]["stage"] == "not_applied"
    assert records[0]["reason"] == "The agent fetched version 2 but still reports running version 1."


def test_reads_every_page(db, monkeypatch):
    monkeypatch.setattr(drift_command, "CHUNK_SIZE", 2)
    for index in range(5):
        device_with("temp-1", name=f"d{index}")

    records = json.loads(run("drift_report", "--format", "json")[0])

    assert [record["name"] for record in records] == ["d0", "d1", "d2", "d3", "d4"]


def test_an_unknown_format_is_an_error(db):
    with pytest.raises(CommandError, match="invalid choice: 'xml'"):
        run("drift_report", "--format", "xml")
    with pytest.raises(CommandError, match="Unknown format 'xml'"):
        run("drift_report", format="xml")
