"""The agent's hot paths run a fixed number of SQL statements whatever the number of sensors (SPEC section 6).

Counts are exact and were measured once; they include the two SAVEPOINT statements of the test's own
transaction wrapping the endpoint's ``atomic`` block (in production that block is BEGIN/COMMIT, which Django
does not count). A change to any number is a change to the hot path and must be deliberate.
"""

import pytest

from .helpers import poll, put_target, report, sensor, target_sensors, verdict

pytestmark = pytest.mark.django_db

SIZES = [1, 20, 200]

# Agent reports, one sensor row each or all of them changing status:
DEPLOY_REPORT_QUERIES = 15  # key lookup, savepoint, lock the device row, read both states after the lock,
#                             INSERT current state, savepoint, SELECT rows, one upsert, UPDATE target, close the
#                             drift episode, release, UPDATE device, MAX(sequence), INSERT events, release
CHANGED_REPORT_QUERIES = 17  # as above with UPDATE current state, and a drift episode opened (SELECT, INSERT
#                              episode, INSERT its sensors) instead of closed
UNCHANGED_REPORT_QUERIES = 3  # key lookup, UPDATE device liveness, SELECT rows for the verdict
STALE_REPORT_QUERIES = 3  # same
POLL_QUERIES = 2  # key lookup (both states joined), UPDATE device (fetched version, liveness)


@pytest.fixture(params=SIZES, ids=lambda n: f"{n}-sensors")
def sized(request, admin_client, device):
    """A device whose target (v2) holds ``n`` sensors, set in one PUT; never reported."""
    n = request.param
    put_target(admin_client, device, [sensor(f"s{i:03}", pollInterval=1000 + i) for i in range(n)])
    device.n = n
    return device


def test_a_first_report_deploying_every_sensor(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)

    with django_assert_num_queries(DEPLOY_REPORT_QUERIES):
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

    with django_assert_num_queries(CHANGED_REPORT_QUERIES):
        answer = verdict(report(agent, sized, 2, running, seq=2), sized)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is False
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"failed"}


def test_an_unchanged_report(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)

    with django_assert_num_queries(UNCHANGED_REPORT_QUERIES):
        answer = verdict(report(agent, sized, 2, running, seq=2, uptime=7200), sized)

    assert answer["outcome"] == "unchanged"
    assert len(answer["sensors"]) == sized.n


def test_a_stale_report(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=5), sized)

    with django_assert_num_queries(STALE_REPORT_QUERIES):
        answer = verdict(report(agent, sized, 2, running[:1], seq=4), sized)

    assert answer["outcome"] == "stale"
    assert len(answer["sensors"]) == sized.n


def test_a_poll_answered_200(agent, sized, django_assert_num_queries):
    with django_assert_num_queries(POLL_QUERIES):
        response = poll(agent, sized)

    assert response.status_code == 200
    assert len(response.json()[str(sized.uuid)]["config"]["protocolAdapterDevices"]) == sized.n


def test_a_poll_answered_304(agent, sized, django_assert_num_queries):
    with django_assert_num_queries(POLL_QUERIES):
        response = poll(agent, sized, etag='"2"')

    assert response.status_code == 304
