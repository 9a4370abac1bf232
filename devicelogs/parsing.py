"""The agent's log upload, read leniently: one bad line is skipped and counted, never a reason to refuse the lines
around it (the agent re-sends a refused batch until it gives up and drops it).

The agent (``CloudLogBackend``) POSTs newline-delimited JSON, gzipped by default, one ``LogMessage`` a line:
``{"message", "timestamp" (ms since the epoch), "level" (debug|info|warn|error), "source": {"type", "name"},
"serviceName"?, "isStdErr"?, ...}``. A JSON array of the same objects (or ``{"logs": [...]}``) is read too. After an
outage it POSTs ``{"summaries": [...]}`` to ``logs/dropped-summaries``: what it had to drop, which is kept as one
line per summary so the gap shows in the device's log."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .choices import LogLevelChoices, LogSourceChoices

NAME_MAX = 100
SKIPPED_REASONS_MAX = 5
# Older than this, or further ahead of the server than CLOCK_AHEAD_MAX, a device's clock is wrong: the receipt time
# stands in for it (the line is kept).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_AHEAD_MAX = timedelta(days=1)

_LEVELS = {
    "debug": LogLevelChoices.DEBUG,
    "trace": LogLevelChoices.DEBUG,
    "verbose": LogLevelChoices.DEBUG,
    "info": LogLevelChoices.INFO,
    "notice": LogLevelChoices.INFO,
    "warn": LogLevelChoices.WARN,
    "warning": LogLevelChoices.WARN,
    "error": LogLevelChoices.ERROR,
    "err": LogLevelChoices.ERROR,
    "fatal": LogLevelChoices.ERROR,
    "critical": LogLevelChoices.ERROR,
    "crit": LogLevelChoices.ERROR,
    "alert": LogLevelChoices.ERROR,
    "emerg": LogLevelChoices.ERROR,
}
_SOURCES = {choice.value for choice in LogSourceChoices} - {LogSourceChoices.SERVER}


class LogBodyInvalid(ValueError):
    """Nothing in the body is a log line: the message says why."""


@dataclass(frozen=True)
class LogLine:
    logged_at: datetime
    message: str
    level: str = LogLevelChoices.INFO
    source: str = LogSourceChoices.MANAGER
    source_name: str = ""
    service_name: str = ""
    is_stderr: bool = False


@dataclass
class ParsedLogs:
    lines: list[LogLine] = field(default_factory=list)
    skipped: int = 0
    stored: int = 0  # how many of the lines were kept (set by the upload)
    reasons: list[str] = field(default_factory=list)  # the first few skipped lines' problems

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < SKIPPED_REASONS_MAX:
            self.reasons.append(reason)


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    # PostgreSQL's text cannot hold NUL; a container's binary output can.
    return text.replace("\x00", "\ufffd")[:limit]


def message_clip(message: str, limit: int) -> str:
    message = message.replace("\x00", "\ufffd")
    if len(message) <= limit:
        return message
    return message[: limit - 1] + "\u2026"


def moment_parse(value: Any, *, received_at: datetime) -> datetime:
    """The device's time for a line: milliseconds since the epoch (the agent), seconds, or ISO 8601; the receipt
    time when it is absent, unreadable or implausible."""
    moment: datetime | None = None
    if isinstance(value, bool):
        moment = None
    elif isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= 100_000_000_000 else value  # ms unless it reads as seconds
        try:
            moment = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            moment = None
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment is None or moment < EARLIEST or moment > received_at + CLOCK_AHEAD_MAX:
        return received_at
    return moment


def log_line_parse(item: Any, *, received_at: datetime, message_max: int) -> LogLine:
    """One of the agent's ``LogMessage`` objects; ValueError naming what is wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"a log line must be a JSON object, not {type(item).__name__}")
    message = item.get("message")
    if isinstance(message, bool) or not isinstance(message, str | int | float):
        raise ValueError("a log line needs 'message', a string")
    level = _LEVELS.get(str(item.get("level") or "").strip().lower(), LogLevelChoices.INFO)
    source: str = LogSourceChoices.MANAGER
    source_name = ""
    raw_source = item.get("source")
    if isinstance(raw_source, dict):
        kind = str(raw_source.get("type") or "").strip().lower()
        source = kind if kind in _SOURCES else LogSourceChoices.MANAGER
        source_name = _text(raw_source.get("name"), NAME_MAX)
    elif isinstance(raw_source, str):
        source_name = _text(raw_source, NAME_MAX)
    return LogLine(
        logged_at=moment_parse(item.get("timestamp"), received_at=received_at),
        message=message_clip(str(message), message_max),
        level=level,
        source=source,
        source_name=source_name,
        service_name=_text(item.get("serviceName"), NAME_MAX),
        is_stderr=item.get("isStdErr") is True,
    )


def _items(body: bytes) -> tuple[list[Any], ParsedLogs]:
    """The body's log objects (unparsed) and the lines that were not even JSON."""
    parsed = ParsedLogs()
    stripped = body.strip()
    if stripped[:1] in (b"[", b"{"):
        # A JSON document: an array of lines, {"logs": [...]}, or one line alone (NDJSON of one line reads the same).
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            document = None  # NDJSON of several lines, read below
        else:
            if isinstance(document, list):
                return document, parsed
            if isinstance(document, dict) and isinstance(document.get("logs"), list):
                return document["logs"], parsed
            return [document], parsed
    items: list[Any] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            parsed.skip(f"line {number}: not JSON ({exc})")
    return items, parsed


def log_body_parse(body: bytes, *, received_at: datetime, message_max: int) -> ParsedLogs:
    """Every readable line of an upload; LogBodyInvalid when there are lines and none is readable."""
    items, parsed = _items(body)
    for index, item in enumerate(items, start=1):
        try:
            parsed.lines.append(log_line_parse(item, received_at=received_at, message_max=message_max))
        except ValueError as exc:
            parsed.skip(f"line {index}: {exc}")
    if not parsed.lines and parsed.skipped:
        raise LogBodyInvalid(f"No log line could be read: {parsed.reasons[0]}.")
    return parsed


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def dropped_summary_line(summary: Any, *, received_at: datetime, message_max: int) -> LogLine:
    """One of the agent's ``DroppedLogSummary`` objects as a warning line of the device's log."""
    if not isinstance(summary, dict):
        raise ValueError(f"a summary must be a JSON object, not {type(summary).__name__}")
    total = _count(summary.get("totalCount"))
    reason = _text(summary.get("reason") or "unknown", 40)
    window = _object(summary.get("timeRange"))
    start = moment_parse(window.get("start"), received_at=received_at)
    end = moment_parse(window.get("end"), received_at=received_at)
    levels = _object(summary.get("levelCounts"))
    text = (
        f"The agent dropped {total} log line{'s' if total != 1 else ''} logged from {start:%Y-%m-%d %H:%M:%S} to "
        f"{end:%Y-%m-%d %H:%M:%S} UTC ({reason}): {_count(levels.get('error'))} errors, "
        f"{_count(levels.get('warn'))} warnings."
    )
    samples = summary.get("errorSamples")
    if isinstance(samples, list):
        first = [_text(sample.get("message"), 200) for sample in samples[:5] if isinstance(sample, dict)]
        if first:
            text += " First errors: " + " | ".join(first)
    return LogLine(
        logged_at=moment_parse(summary.get("droppedAt"), received_at=received_at),
        message=message_clip(text, message_max),
        level=LogLevelChoices.WARN,
        source=LogSourceChoices.SERVER,
        source_name="log upload",
    )


def dropped_summaries_parse(body: bytes, *, received_at: datetime, message_max: int) -> ParsedLogs:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise LogBodyInvalid(f"The body is not JSON: {exc}.") from exc
    summaries = document.get("summaries") if isinstance(document, dict) else None
    if not isinstance(summaries, list):
        raise LogBodyInvalid("The body needs 'summaries', a list of the agent's dropped-log summaries.")
    parsed = ParsedLogs()
    for index, summary in enumerate(summaries, start=1):
        try:
            parsed.lines.append(dropped_summary_line(summary, received_at=received_at, message_max=message_max))
        except ValueError as exc:
            parsed.skip(f"summary {index}: {exc}")
    return parsed
