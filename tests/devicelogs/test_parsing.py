"""Reading the agent's log upload: lenient per line, strict only when nothing can be read."""

from datetime import UTC, datetime

import orjson
import pytest

from devicelogs.parsing import LogBodyInvalid, dropped_summaries_parse, log_body_parse, moment_parse

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _ndjson(*items) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def _parse(body: bytes, message_max: int = 8000):
    return log_body_parse(body, received_at=NOW, message_max=message_max)


def test_the_agents_log_message_is_read_field_by_field():
    parsed = _parse(
        _ndjson(
            {
                "message": "Sensor temp-1 failed to connect",
                "timestamp": 1764936000123,
                "level": "error",
                "source": {"type": "container", "name": "modbus-adapter"},
                "serviceName": "sensors",
                "isStdErr": True,
                "containerId": "abc",
            }
        )
    )
    assert parsed.skipped == 0
    (line,) = parsed.lines
    assert line.message == "Sensor temp-1 failed to connect"
    assert line.logged_at == datetime(2025, 12, 5, 12, 0, 0, 123000, tzinfo=UTC)
    assert (line.level, line.source, line.source_name, line.service_name, line.is_stderr) == (
        "error",
        "container",
        "modbus-adapter",
        "sensors",
        True,
    )


def test_one_bad_line_is_skipped_and_named_the_others_kept():
    body = _ndjson({"message": "one", "level": "info"}) + b"{not json\n" + _ndjson(["a list"], {"message": "two"})
    parsed = _parse(body)
    assert [line.message for line in parsed.lines] == ["one", "two"]
    assert parsed.skipped == 2
    assert parsed.reasons[0].startswith("line 2: not JSON")
    assert "must be a JSON object" in parsed.reasons[1]


def test_a_body_with_nothing_readable_is_refused_with_the_reason():
    with pytest.raises(LogBodyInvalid, match="needs 'message'"):
        _parse(_ndjson({"level": "info"}, {"message": None}))


def test_an_empty_body_is_no_line_and_no_refusal():
    parsed = _parse(b"\n\n")
    assert (parsed.lines, parsed.skipped) == ([], 0)


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (orjson.dumps([{"message": "a"}, {"message": "b"}]), 2),
        (orjson.dumps({"logs": [{"message": "a"}]}), 1),
        (orjson.dumps({"message": "alone"}), 1),
    ],
)
def test_a_json_document_of_lines_is_read_too(body, count):
    assert len(_parse(body).lines) == count


@pytest.mark.parametrize(
    ("level", "expected"),
    [("warning", "warn"), ("WARN", "warn"), ("fatal", "error"), ("trace", "debug"), ("loud", "info"), (None, "info")],
)
def test_levels_are_mapped_to_the_four_the_agent_knows(level, expected):
    (line,) = _parse(_ndjson({"message": "m", "level": level})).lines
    assert line.level == expected


def test_long_messages_are_cut_and_nul_bytes_replaced():
    (line,) = _parse(_ndjson({"message": "x\x00" + "y" * 50}), message_max=10).lines
    assert line.message == "x\ufffdyyyyyyy\u2026"
    assert len(line.message) == 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1764936000000, datetime(2025, 12, 5, 12, 0, tzinfo=UTC)),  # the agent: ms
        (1764936000, datetime(2025, 12, 5, 12, 0, tzinfo=UTC)),  # seconds
        ("2025-12-05T12:00:00Z", datetime(2025, 12, 5, 12, 0, tzinfo=UTC)),
        (0, NOW),  # a device clock at the epoch: not believed
        (NOW.timestamp() * 1000 + 3 * 86_400_000, NOW),  # days ahead: not believed
        ("yesterday", NOW),
        (True, NOW),
        (None, NOW),
        (10**30, NOW),
    ],
)
def test_the_devices_time_is_kept_when_plausible(value, expected):
    assert moment_parse(value, received_at=NOW) == expected


def test_dropped_summaries_become_one_warning_line_each():
    body = orjson.dumps(
        {
            "deviceUuid": "x",
            "reportedAt": 1764936000000,
            "summaries": [
                {
                    "droppedAt": 1764935000000,
                    "timeRange": {"start": 1764930000000, "end": 1764934000000},
                    "totalCount": 120,
                    "levelCounts": {"error": 3, "warn": 10, "info": 100, "debug": 7},
                    "serviceCounts": {},
                    "errorSamples": [{"timestamp": 1, "serviceName": "s", "message": "boom"}],
                    "warningSamples": [],
                    "estimatedBytes": 12000,
                    "reason": "network_failure",
                },
                "not a summary",
            ],
        }
    )
    parsed = dropped_summaries_parse(body, received_at=NOW, message_max=8000)
    (line,) = parsed.lines
    assert parsed.skipped == 1
    assert line.level == "warn" and line.source == "server"
    assert line.message.startswith("The agent dropped 120 log lines logged from 2025-12-05 10:20:00 to")
    assert "(network_failure): 3 errors, 10 warnings. First errors: boom" in line.message


@pytest.mark.parametrize("body", [b"nope", orjson.dumps({"summaries": "x"}), orjson.dumps([1])])
def test_a_dropped_summaries_body_without_summaries_is_refused(body):
    with pytest.raises(LogBodyInvalid):
        dropped_summaries_parse(body, received_at=NOW, message_max=8000)
