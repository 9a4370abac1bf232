"""The agent's hot paths run a fixed, small number of SQL statements whatever the number of sensors (SPEC
section 6; at most 8 per report).

Counts are exact. Where the endpoint opens a transaction, the counts include the SAVEPOINT and RELEASE of the
test's own transaction around it (in production that is BEGIN/COMMIT, which Django does not count), so the
production statement count is the number minus 2. A change to any number is a change to the hot path and must be
deliberate.
"""

import pytest

from .helpers import poll, put_target, report, sensor, target_sensors, verdict

pytestmark = pytest.mark.django_db

SIZES = [1, 20, 200, 1000]
SAVEPOINTS = 2  # the test transaction's SAVEPOINT + RELEASE around the endpoint's atomic block

# key lookup (device, target, stored report digest in one SELECT); lock the device by writing its liveness (UPDATE
# ... RETURNING); INSERT/UPDATE the current state; SELECT the sensor rows; one upsert of the changed rows; UPDATE
# the target (sync flag, cached statuses, drift); the drift episode (INSERT when drift starts, UPDATE when it
# ends); one INSERT of the events
DEPLOY_REPORT_STATEMENTS = 8  # a first report that converges the device: the episode is closed
DRIFT_REPORT_STATEMENTS = 8  # a changed report that makes every sensor fail: an episode is opened
STEADY_CHANGED_REPORT_STATEMENTS = 6  # a changed report whose statuses stay: no target or episode write
NO_OP_STATEMENTS = 1  # unchanged or stale report, 304 poll: the key lookup; liveness written within the interval
NO_OP_LIVENESS_DUE_STATEMENTS = 2  # ... and the liveness UPDATE when it was written longer ago


@pytest.fixture(params=SIZES, ids=lambda n: f"{n}-sensors")
def sized(request, admin_client, device):
    """A device whose target (v2) holds ``n`` sensors, set in one PUT; never reported."""
    n = request.param
    put_target(admin_client, device, [sensor(f"s{i:04}", pollInterval=1000 + i) for i in range(n)])
    device.n = n
    return device


@pytest.fixture
def coalesced_liveness(settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600


def test_a_first_report_deploying_every_sensor(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)

    with django_assert_num_queries(DEPLOY_REPORT_STATEMENTS + SAVEPOINTS):
        answer = verdict(report(agent, sized, 2, running, seq=1), sized)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is True
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"deployed"}


def test_a_changed_report_failing_every_sensor(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)
    assert verdict(report(agent, sized, 2, running, seq=1), sized)["inSync"] is True
    for item in running:
        item["pollInterval"] += 1  # every sensor now runs another config

    with django_assert_num_queries(DRIFT_REPORT_STATEMENTS + SAVEPOINTS):
        answer = verdict(report(agent, sized, 2, running, seq=2), sized)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is False
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"failed"}


def test_a_changed_report_rewriting_every_row_without_a_status_change(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)
    for item in running:
        item["metadata"] = {"lastValue": 21.5}  # the agent enriches metadata: every row shows new running config

    with django_assert_num_queries(STEADY_CHANGED_REPORT_STATEMENTS + SAVEPOINTS):
        answer = verdict(report(agent, sized, 2, running, seq=2), sized)

    assert answer["outcome"] == "applied"
    assert {s["status"] for s in answer["sensors"].values()} == {"deployed"}
    assert sized.sensors.filter(metadata={"lastValue": 21.5}).count() == sized.n


def test_an_unchanged_report(agent, sized, coalesced_liveness, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)

    with django_assert_num_queries(NO_OP_STATEMENTS):
        answer = verdict(report(agent, sized, 2, running, seq=2, uptime=7200), sized)

    assert answer["outcome"] == "unchanged"
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"deployed"}


def test_an_unchanged_report_refreshes_liveness_when_due(agent, sized, settings, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 0

    with django_assert_num_queries(NO_OP_LIVENESS_DUE_STATEMENTS):
        answer = verdict(report(agent, sized, 2, running, seq=2, uptime=7200), sized)

    assert answer["outcome"] == "unchanged"
    sized.refresh_from_db()
    assert (sized.uptime, sized.last_report_order) == (7200, 2)


def test_a_stale_report(agent, sized, coalesced_liveness, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=5), sized)

    with django_assert_num_queries(NO_OP_STATEMENTS):
        answer = verdict(report(agent, sized, 2, running[:1], seq=4), sized)

    assert answer["outcome"] == "stale"
    assert len(answer["sensors"]) == sized.n


def test_a_first_poll_answered_200(agent, sized, django_assert_num_queries):
    # The key lookup with the content, and the UPDATE recording the fetched version.
    with django_assert_num_queries(2):
        response = poll(agent, sized)

    assert response.status_code == 200
    assert len(response.json()[str(sized.uuid)]["config"]["sensors"]) == sized.n


def test_a_poll_for_a_new_version_answered_200(agent, sized, django_assert_num_queries):
    poll(agent, sized)
    # The lean key lookup (the agent sent the ETag it has), the content, and the new fetched version.
    with django_assert_num_queries(3):
        response = poll(agent, sized, etag='"1"')

    assert response.status_code == 200
    assert response["ETag"] == '"2"'


def test_a_poll_answered_304(agent, sized, coalesced_liveness, django_assert_num_queries):
    poll(agent, sized)

    with django_assert_num_queries(NO_OP_STATEMENTS):
        response = poll(agent, sized, etag='"2"')

    assert response.status_code == 304
