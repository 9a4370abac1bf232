"""The real agent's bodies that the benchmark sends (``bench.fleet``) take the product's no-op path: a plain report
and a metrics report of either agent generation, against the report the seed stores, are answered 'unchanged' in
the statements of an unchanged report (``tests/agent/test_query_counts.py``), a metrics report with one more to
store its facts: it must not reconcile."""

import uuid

import orjson
import pytest

from bench import fleet, seed
from reconciliation.agent_protocol import body_inflate
from tests.agent.test_query_counts import NO_OP_STATEMENTS
from tests.helpers import agent_headers

pytestmark = pytest.mark.django_db

REPORT_URL = "/api/v1/device/state"
# A metrics report stores its facts (one UPDATE of the device's facts) and reconciles nothing.
METRICS_STATEMENTS = NO_OP_STATEMENTS + 1


@pytest.fixture
def coalesced_liveness(settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600


def _fleet_device(blueprint: seed.Blueprint) -> tuple[fleet.DeviceState, list[tuple[bytes, bytes]]]:
    template = blueprint.template
    sensors = template.target_state.config["sensors"]
    names = [s["name"] for s in sensors]
    tails = [
        (fleet.gzip_member(fleet.tail_plain()), fleet.gzip_member(fleet.tail_metrics(blueprint.generation, names)))
    ]
    configs = tuple(fleet.gzip_member(fleet.config_part(fleet.variant_sensors(sensors, v))) for v in (0, 1))
    device = fleet.FleetDevice(
        str(template.uuid),
        blueprint.api_key,
        blueprint.generation,
        0,
        template.target_state.version,
        configs,  # type: ignore[arg-type]
    )
    return fleet.DeviceState(device), tails


def _send(agent, state: fleet.DeviceState, kind: str, tails) -> dict:
    body = fleet.http_body(state, kind, tails)
    headers = {**agent_headers(state.device.api_key), "Content-Encoding": "gzip"}
    answer = agent.generic("PATCH", REPORT_URL, data=body, content_type="application/json", headers=headers)
    assert answer.status_code == 200, answer.content[:500]
    return answer.json()[state.device.uuid]


@pytest.mark.usefixtures("coalesced_liveness")
def test_plain_and_metrics_reports_of_both_generations_are_no_ops(agent, superuser, django_assert_num_queries):
    name = "bench-fleet-{:02d}".format
    blueprints = seed.templates_create(count=2, sensors=4, name=name, user=superuser)
    assert [b.generation for b in blueprints] == [0, 1]

    for blueprint in blueprints:
        state, tails = _fleet_device(blueprint)
        assert _send(agent, state, fleet.REPORT, tails)["outcome"] == "unchanged"  # liveness written: now coalesced
        for kind, statements in ((fleet.REPORT, NO_OP_STATEMENTS), (fleet.METRICS, METRICS_STATEMENTS)):
            with django_assert_num_queries(statements):
                assert _send(agent, state, kind, tails)["outcome"] == "unchanged", (blueprint.generation, kind)


def test_a_changed_report_after_a_new_target_is_applied_in_sync(agent, superuser):
    from events.choices import EventSourceChoices
    from events.context import audit_context
    from reconciliation.services.targets import target_state_update

    blueprint = seed.templates_create(count=2, sensors=3, name="bench-change-{:02d}".format, user=superuser)[1]
    state, tails = _fleet_device(blueprint)
    sensors = blueprint.template.target_state.config["sensors"]
    with audit_context(source=EventSourceChoices.COMMAND, actor="command:bench-changer"):
        target_state_update(
            uuid=state.device.uuid, user=superuser, config={"sensors": fleet.variant_sensors(sensors, 1)}
        )

    state.on_event(fleet.POLL_CHANGED)
    state.on_event(fleet.CHANGED)
    answer = _send(agent, state, fleet.CHANGED, tails)

    assert answer["outcome"] == "applied"
    sent = orjson.loads(body_inflate(fleet.http_body(state, fleet.CHANGED, tails), "gzip", limit=10**6))
    assert sent[state.device.uuid]["version"] == blueprint.template.target_state.version + 1
    assert uuid.UUID(state.device.uuid)
