"""Liveness writes are coalesced (PERF_NOTES item 6): a device seen less than SENSORSYNC_LIVENESS_WRITE_SECONDS
ago is not written again by a no-op request, but a fetch of a new version is always recorded."""

from datetime import timedelta

import pytest

from devices.models import Device
from tests.helpers import poll, report, sensors_url, target_sensors, verdict

pytestmark = pytest.mark.django_db


@pytest.fixture
def reported(agent, device):
    """A device that fetched version 1 and reported it."""
    assert poll(agent, device).status_code == 200
    verdict(report(agent, device, 1, [], seq=1), device)
    return device


def _seen(device) -> Device:
    return Device.objects.get(pk=device.pk)


def test_a_no_op_within_the_interval_writes_nothing(agent, reported, settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600
    before = _seen(reported)

    assert verdict(report(agent, reported, 1, [], uptime=99), reported)["outcome"] == "unchanged"  # no clock
    assert poll(agent, reported, etag='"1"').status_code == 304

    after = _seen(reported)
    assert (after.last_seen_at, after.uptime, after.last_report_seq) == (
        before.last_seen_at,
        before.uptime,
        before.last_report_seq,
    )


def test_a_no_op_with_a_newer_clock_records_it_within_the_interval(agent, reported, settings):
    """An older report that arrives later must be stale: the newest clock seen is written even when nothing else
    is (with liveness, in the same UPDATE)."""
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600

    assert verdict(report(agent, reported, 1, [], seq=2, uptime=99), reported)["outcome"] == "unchanged"

    after = _seen(reported)
    assert (after.last_report_seq, after.uptime) == (2, 99)


def test_a_no_op_after_the_interval_refreshes_liveness(agent, reported, settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 30
    long_ago = _seen(reported).last_seen_at - timedelta(seconds=31)
    Device.objects.filter(pk=reported.pk).update(last_seen_at=long_ago)

    assert verdict(report(agent, reported, 1, [], seq=2, uptime=99), reported)["outcome"] == "unchanged"

    after = _seen(reported)
    assert after.last_seen_at > long_ago
    assert (after.uptime, after.last_report_seq) == (99, 2)


def test_fetching_a_new_version_is_recorded_even_within_the_interval(agent, admin_client, reported, settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600
    assert _seen(reported).last_fetched_version == 1
    admin_client.post(
        sensors_url(reported.uuid),
        {"name": "s1", "protocol": "can", "connection": {"bus": "can0"}},
        format="json",
    )

    response = poll(agent, reported, etag='"1"')

    assert response.status_code == 200
    assert _seen(reported).last_fetched_version == 2
    assert len(target_sensors(reported)) == 1
