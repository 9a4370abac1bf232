"""The device page's read-only panels: why it is not converged (the convergence panel and the sensor table), the
agent's facts, and the target's history. Functions of a device (or of its facts) returning what the page shows;
``pages`` calls them from the ``DeviceAdmin``'s display methods and its change form."""

import json

from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from reconciliation.models import DriftEpisode
from reconciliation.selectors import drift_explain, offline_cutoff
from sensors.models import DeviceSensor
from sensorsync_project.ui.html import (
    EMPTY_VALUE_DISPLAY,
    ago,
    error_parts,
    health_badge,
    shown_value,
    status_badge,
    unreported_note,
)

from ..models import Device, DeviceTargetState, DeviceTargetStateVersion

TARGET_HISTORY_SHOWN = 20
# drift_explain's stages, as the panel's headline says them, and the colour that goes with each.
STAGE_LABELS = {
    "in_sync": ("In sync", "in_sync"),
    "sensors_failed": ("Sensors failing", "failed"),
    "never_fetched": ("Never fetched", "drifting"),
    "not_fetched": ("Waiting for the agent's poll", "drifting"),
    "never_reported": ("Never reported", "drifting"),
    "not_applied": ("Fetched, not applied yet", "drifting"),
}


# --- why the device is not converged ---


def retry_budget(target: DeviceTargetState) -> dict | None:
    """Where the device's retry budget stands, when there is anything to say (failed applies counted, or ran out)."""
    if target.retry_exhausted_at is not None:
        detail = f"ran out {ago(target.retry_exhausted_at)} at target version {target.retry_exhausted_version}; " + (
            f"it fell back to the last version it fully deployed (as v{target.retry_fallback_version})."
            if target.retry_fallback_version is not None
            else "not retried there until staff act (a new target version, or a reset)."
        )
        return {"exhausted": True, "detail": detail}
    if target.failed_applies:
        budget = settings.SENSORSYNC_RETRY_BUDGET
        return {
            "exhausted": False,
            "detail": f"{target.failed_applies} of {budget} failed applies of target version "
            f"{target.failed_applies_version} used.",
        }
    return None


def sensor_rows(device: Device) -> list[DeviceSensor]:
    """The device's rows, each with what the page's sensor table shows of it beside its fields (``since``,
    ``status_html``, ``health_html``, ``health_since``, ``shown_error``, ``adapter_error``, ``unreported_html``:
    attributes for the template, not the model's)."""
    rows = list(DeviceSensor.objects.filter(device=device).order_by("name"))
    for row in rows:
        shown_error, adapter_error = error_parts(
            deployment_error=row.deployment_error, health_status=row.health_status, health_error=row.health_error
        )
        shown = {
            "since": ago(row.status_changed_at),
            "status_html": status_badge(row.deployment_status, health=row.health_status),
            "health_html": health_badge(row.health_status),
            "health_since": ago(row.health_changed_at) if row.health_status and row.health_changed_at else "",
            "shown_error": shown_error,
            "adapter_error": adapter_error,
            "unreported_html": unreported_note(row.unreported_fields),
        }
        for name, value in shown.items():
            setattr(row, name, value)
    return rows


def convergence(device: Device) -> dict:
    """drift_explain, laid out for the device page: a headline, the version steps, the failing sensors, and
    the deployed sensors whose adapter is offline."""
    explained = drift_explain(device=device)
    target = explained["targetVersion"]
    fetched, reported = explained["lastFetchedVersion"], explained["reportedVersion"]
    label, tone = STAGE_LABELS.get(explained["stage"], (explained["stage"], "drifting"))
    episode = None
    if not explained["inSync"]:
        episode = DriftEpisode.objects.filter(device=device, ended_at__isnull=True).only("started_at").first()
    total = getattr(device, "sensor_count", None)
    drifting = len(explained["sensors"])
    for sensor in explained["sensors"]:
        sensor["since"] = ago(sensor["statusChangedAt"])
        sensor["healthHtml"] = health_badge(sensor["healthStatus"])
        sensor["shownError"], sensor["adapterError"] = error_parts(
            deployment_error=sensor["deploymentError"],
            health_status=sensor["healthStatus"],
            health_error=sensor["healthError"],
        )
    for sensor in explained["deployedOfflineSensors"]:
        sensor["offlineSince"] = ago(sensor["healthChangedAt"], never="-")
        sensor["lastSeen"] = ago(sensor["healthLastSeen"], never="never")

    def step_state(version):
        if version is None:
            return "bad"
        return "ok" if version >= target else "behind"

    offline = device.last_seen_at is None or device.last_seen_at < offline_cutoff()
    offline_count = len(explained["deployedOfflineSensors"])
    return {
        **explained,
        "retry": retry_budget(device.target_state),
        "label": label,
        "tone": tone,
        "offline": offline,
        "last_seen": ago(device.last_seen_at),
        "drifting_since": ago(episode.started_at) if episode else None,
        "steps": [
            {
                "label": "Target",
                "value": f"v{target}",
                "state": "target",
                "detail": f"set {ago(explained['targetUpdatedAt'])}",
            },
            {
                "label": "Fetched by the agent",
                "value": f"v{fetched}" if fetched is not None else "never",
                "state": step_state(fetched),
                "detail": ago(explained["lastFetchedAt"], never="the agent has not polled yet"),
            },
            {
                "label": "Applied (reported)",
                "value": f"v{reported}" if reported is not None else "never",
                "state": step_state(reported),
                "detail": ago(explained["lastReportedAt"], never="no report yet"),
            },
            {
                "label": "Sensors deployed",
                "value": "-" if total is None else f"{total - drifting} of {total}",
                "state": "ok" if drifting == 0 else ("bad" if explained["stage"] == "sensors_failed" else "behind"),
                "detail": ("all as desired" if drifting == 0 else f"{drifting} not deployed")
                + (f"; {offline_count} offline" if offline_count else ""),
            },
        ],
    }


# --- writes, all through the services ---


# --- the agent's facts ---


def duration_words(seconds: float | None) -> str:
    """ "45 s", "12 min", "5 h 3 min", "3 d 4 h": an uptime as a person reads it."""
    if seconds is None:
        return EMPTY_VALUE_DISPLAY
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def megabytes(value) -> str:
    if value is None:
        return EMPTY_VALUE_DISPLAY
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:g} MB"


def used_of(used, total) -> str:
    """ "2.7 GB of 23.5 GB (11 %)": a usage in MB next to its total."""
    if used is None and total is None:
        return EMPTY_VALUE_DISPLAY
    if total is None:
        return megabytes(used)
    share = f" ({100 * used / total:.0f} %)" if used is not None and total else ""
    return f"{megabytes(used)} of {megabytes(total)}{share}"


def number(value, unit: str) -> str:
    return EMPTY_VALUE_DISPLAY if value is None else f"{round(value, 1):g} {unit}"


def network_interfaces(interfaces: list[dict]) -> str:
    """The agent's network interfaces as a table."""
    if not interfaces:
        return EMPTY_VALUE_DISPLAY

    def flags(interface: dict) -> str:
        return ", ".join(flag for flag in ("default", "virtual") if interface.get(flag)) or "-"

    rows = format_html_join(
        "",
        "<tr><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                interface.get("name", "-"),
                interface.get("type", "-"),
                interface.get("operstate", "-"),
                interface.get("ip4") or "-",
                interface.get("ip6") or "-",
                interface.get("mac") or "-",
                flags(interface),
            )
            for interface in interfaces
        ),
    )
    return format_html(
        '<table class="ss-table ss-facts-table" id="network-interfaces"><thead><tr><th>Name</th><th>Type</th>'
        "<th>State</th><th>IPv4</th><th>IPv6</th><th>MAC</th><th>Flags</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


def top_processes(processes: list[dict]) -> str:
    """The agent's busiest processes as a table."""
    if not processes:
        return EMPTY_VALUE_DISPLAY
    rows = format_html_join(
        "",
        '<tr><td class="ss-num">{}</td><td>{}</td><td class="ss-num">{}</td><td class="ss-num">{}</td></tr>',
        (
            (
                process.get("pid", "-"),
                process.get("name", "-"),
                number(process.get("cpu"), "%"),
                number(process.get("mem"), "%"),
            )
            for process in processes
        ),
    )
    return format_html(
        '<table class="ss-table ss-facts-table" id="top-processes"><thead><tr><th class="ss-num">PID</th>'
        '<th>Name</th><th class="ss-num">CPU</th><th class="ss-num">Memory</th></tr></thead><tbody>{}</tbody>'
        "</table>",
        rows,
    )


# --- the target's history ---


def target_history(device: Device) -> str:
    """The last versions of the device's target, newest first, each with a rollback link where the user may roll
    back (``device.can_roll_back``, set by the page)."""
    target = device.target_state
    versions = DeviceTargetStateVersion.objects.filter(device=device).select_related("created_by")[
        :TARGET_HISTORY_SHOWN
    ]

    def action(version: DeviceTargetStateVersion) -> str:
        if version.version == target.version:
            return mark_safe('<span class="ss-badge ss-badge--quiet">current</span>')
        if version.config == target.config and version.apps == target.apps:
            return mark_safe('<span class="ss-quiet">same as current</span>')
        if not getattr(device, "can_roll_back", False):
            return ""
        url = reverse("admin:devices_device_rollback", args=[device.pk, version.version])
        return format_html(
            '<a class="ss-button" href="{}" title="Asks for confirmation first">Roll back to v{}</a>',
            url,
            version.version,
        )

    rows = format_html_join(
        "",
        '<tr class="{}"><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td class="ss-history__change">{}</td>'
        "<td>{}</td></tr>",
        (
            (
                "ss-history__current" if version.version == target.version else "",
                version.version,
                shown_value(version.created_at),
                version.created_by or "-",
                version.source,
                change_text(version.change),
                action(version),
            )
            for version in versions
        ),
    )
    return format_html(
        '<table class="ss-history"><thead><tr><th>Version</th><th>Created at</th><th>By</th><th>Source</th>'
        "<th>Change</th><th></th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


def change_text(change: dict) -> str:
    """A history row's change summary as a person reads it: "added a, b; removed c; rollback to v3"."""
    if not change:
        return "-"
    parts = []
    if change.get("created"):
        parts.append("device created")
    for key in ("added", "updated", "removed"):
        if change.get(key):
            parts.append(f"{key} {', '.join(change[key])}")
    if change.get("apps"):
        parts.append("apps changed")
    if change.get("rollback_to"):
        parts.append(f"rollback to v{change['rollback_to']}")
    known = {"created", "added", "updated", "removed", "apps", "rollback_to"}
    parts += [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in change.items() if key not in known]
    return "; ".join(parts)
