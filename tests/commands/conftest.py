"""The management command tests' fleet, and two helpers of their own: run a command as a script would, and play
the agent through the services."""

from io import StringIO

import pytest
from django.core.management import call_command

from devices.selectors import device_get
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import ReportVerdict, state_report_apply, target_state_fetched
from tests.helpers import device_with


def run(name: str, *args, **options) -> tuple[str, str]:
    """Run a command; return (stdout, stderr). A failing command raises ``CommandError`` as it would exit."""
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def agent_report(device, *, running: list[str] | None = None, health: dict | None = None, version=None):
    """Poll, then report as the agent does (wire dict -> ``report_parse`` -> ``state_report_apply``): by default
    it runs exactly the current target."""
    target_state_fetched(device=device_get(uuid=device.uuid))
    device = device_get(uuid=device.uuid)
    target = device.target_state
    sensors = [s for s in target.config["sensors"] if running is None or s["name"] in running]
    report = report_parse(
        {
            "version": target.version if version is None else version,
            "config": {"sensors": sensors},
            "sensor_health": health or {},
        }
    )
    verdict: ReportVerdict = state_report_apply(device=device, report=report)
    assert verdict.outcome == "applied"
    return verdict


@pytest.fixture
def fleet(db):
    """Three devices, one of each kind an operator meets: in sync, a failed sensor, never reported."""
    synced = device_with("temp-1", "flow-1", name="synced")
    agent_report(synced)
    failing = device_with("temp-1", "door-1", name="failing")
    agent_report(failing, running=["temp-1"], health={"door-1": {"healthy": False, "lastError": "connection refused"}})
    silent = device_with("temp-1", "temp-2", name="silent")
    return {"synced": synced, "failing": failing, "silent": silent}
