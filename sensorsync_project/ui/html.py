"""Small pieces of HTML the staff pages share: values and JSON as a page shows them, sensor badges, versions, and
how long ago something happened. Every value is escaped (``format_html``)."""

import json
from datetime import datetime

from django.contrib.admin.utils import display_for_value
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.html import format_html

from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.choices import DeviceSensorHealthStatusChoices as Health

EMPTY_VALUE_DISPLAY = "-"


def shown_value(value) -> str:
    """A value as the admin's lists show it (read-only methods get no formatting of their own)."""
    return display_for_value(value, EMPTY_VALUE_DISPLAY)


# What a page shows of one JSON value. Anything the API accepts may end up on a page (nesting up to 254 levels, a
# megabyte of report), and indenting by level multiplies it: a 200-level report once made a 67 MB device page.
JSON_SHOWN_BYTES = 64 * 1024
JSON_INDENTED_LEVELS = 16  # deeper values are written on one line: indentation stops costing more with depth
_compact_json = DjangoJSONEncoder(ensure_ascii=False, separators=(", ", ": "))


def _json_chunks(value, level: int = 0):
    """``value`` as JSON indented by two spaces per level, lazily, piece by piece."""
    if level >= JSON_INDENTED_LEVELS or not isinstance(value, (dict, list)) or not value:
        yield from _compact_json.iterencode(value)  # pure-Python and lazy: a huge value is never encoded whole
        return
    inner = "\n" + "  " * (level + 1)
    if isinstance(value, dict):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield f"{',' if index else ''}{inner}{_compact_json.encode(str(key))}: "
            yield from _json_chunks(item, level + 1)
        yield "\n" + "  " * level + "}"
    else:
        yield "["
        for index, item in enumerate(value):
            yield f"{',' if index else ''}{inner}"
            yield from _json_chunks(item, level + 1)
        yield "\n" + "  " * level + "]"


def json_text(value, *, limit: int = JSON_SHOWN_BYTES) -> str:
    """``value`` as indented JSON, cut after ``limit`` bytes with a note giving its whole size (as compact JSON,
    measured by the C encoder, which is fast): the API serves the whole value."""
    shown, size = [], 0
    for chunk in _json_chunks(value):
        shown.append(chunk)
        size += len(chunk.encode())
        if size > limit:
            break
    else:
        return "".join(shown)
    text = "".join(shown).encode()[:limit].decode(errors="ignore")
    whole = len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), cls=DjangoJSONEncoder).encode())
    return f"{text}\n… truncated: {whole:,} bytes in all; see the API for the whole value."


def pretty_json(value) -> str:
    if value is None:
        return EMPTY_VALUE_DISPLAY
    return format_html("<pre>{}</pre>", json_text(value))


DEPLOYED_OFFLINE_TITLE = "Deployed as desired, but its adapter reports it offline (it cannot reach its device)"
UNREPORTED_TITLE = "The agent did not report these fields of the running sensor: the row shows the desired values"


def status_badge(status: str, *, health: str = "") -> str:
    """A sensor's deployment status as a coloured badge (pending, reconciling, deployed, failed). A deployed
    sensor whose adapter reports it offline is a state of its own, "deployed · offline": it runs as desired and
    still does not work."""
    label = Status(status).label.lower() if status in Status.values else status
    if status == Status.DEPLOYED and health == Health.OFFLINE:
        return format_html(
            '<span class="ss-badge ss-badge--deployed_offline" title="{}">{} · offline</span>',
            DEPLOYED_OFFLINE_TITLE,
            label,
        )
    return format_html('<span class="ss-badge ss-badge--{}">{}</span>', status, label)


def health_badge(health: str) -> str:
    """The adapter's health of a sensor (online, offline, disabled); nothing when the agent reported none."""
    if not health:
        return ""
    label = Health(health).label.lower() if health in Health.values else health
    return format_html(
        '<span class="ss-health ss-health--{}" title="Adapter health, as the agent reported it">{}</span>',
        health,
        label,
    )


def error_parts(*, deployment_error: str, health_status: str, health_error: str) -> tuple[str, str]:
    """(deployment error, adapter error) as a row shows them. The adapter's own error stands apart where it says
    something of its own: not when the adapter is online (its last error is then history), nor when it is the
    deployment error itself (a failed sensor that does not run). Where the deployment error quotes it at its end
    (a failed sensor that runs another configuration), the quote is left to the adapter's part."""
    if not health_error or health_status == Health.ONLINE or health_error == deployment_error:
        return deployment_error, ""
    if deployment_error.endswith(f" {health_error}"):
        deployment_error = deployment_error[: -len(health_error) - 1]
    return deployment_error, health_error


def unreported_note(fields: list[str]) -> str:
    """A muted note naming the fields of the running sensor the agent did not report."""
    if not fields:
        return ""
    return format_html(
        '<span class="ss-quiet ss-unreported" title="{}">not reported by the agent: {}</span>',
        UNREPORTED_TITLE,
        ", ".join(fields),
    )


def ago(moment: datetime | None, *, never: str = "never") -> str:
    """ "12 s ago", "3 min ago", "5 h ago", "2 d ago": how long ago, as precisely as a glance needs."""
    if moment is None:
        return never
    seconds = max(0, int((timezone.now() - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def version_chip(version: int | None, target: int | None) -> str:
    """A version next to the target it should reach: amber when behind it, quiet when there is none."""
    if version is None:
        return format_html('<span class="ss-ver ss-ver--never" title="{}">{}</span>', "never", EMPTY_VALUE_DISPLAY)
    behind = target is not None and version < target
    return format_html(
        '<span class="ss-ver{}" title="{}">v{}</span>',
        " ss-ver--behind" if behind else "",
        f"behind target version {target}" if behind else "at the target version",
        version,
    )
