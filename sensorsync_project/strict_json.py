"""One JSON reader for every request body: strict UTF-8, no duplicate keys, no NaN or Infinity, nothing the
server could not store or send back.

A duplicate key is ambiguous (parsers disagree on which one wins, so a proxy and this server could read two
different requests from the same bytes); it is refused rather than silently resolved. Values the rest of the
system cannot carry are refused here too, with a 400, instead of failing later: a NUL character (PostgreSQL text
and jsonb cannot hold it), a lone UTF-16 surrogate, an integer beyond 64 bits, nesting deeper than orjson's 254
levels. Measured on a 20-sensor report (7 KB): ~110 us, against 38 us for orjson alone, which cannot see
duplicates.
"""

import json
import math
import re
from typing import Any

import orjson

# A JSON \u0000 escape, not preceded by an escaped backslash (which would make it the text "\u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class JSONBodyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise JSONBodyError(f"Duplicate key '{duplicate}' in a JSON object.")
    return obj


def _no_constants(name: str):
    raise JSONBodyError(f"'{name}' is not valid JSON.")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but no double: Python reads it as infinity, which no JSON column can store.
    value = float(text)
    if not math.isfinite(value):
        raise JSONBodyError(f"The number {text[:40]} is out of range for a 64-bit float.")
    return value


def strict_json_loads(body: bytes) -> Any:
    """Parse a request body, or raise ``JSONBodyError`` with a sentence naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONBodyError(f"The body is not UTF-8 JSON: invalid byte at position {exc.start}.") from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise JSONBodyError("The JSON contains a NUL character (\\u0000), which cannot be stored.")
    try:
        value = json.loads(
            text, object_pairs_hook=_unique_keys, parse_constant=_no_constants, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise JSONBodyError(f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from exc
    except RecursionError as exc:
        raise JSONBodyError("The JSON is nested too deeply.") from exc
    try:
        # What the server will have to store and send back: 64-bit integers, no lone surrogates, bounded nesting.
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        reason = str(exc)
        if "Integer" in reason:
            raise JSONBodyError("The JSON contains an integer beyond 64 bits, which cannot be stored.") from exc
        if "Recursion" in reason:
            raise JSONBodyError("The JSON is nested too deeply (more than 254 levels).") from exc
        raise JSONBodyError("The JSON contains a lone UTF-16 surrogate, which cannot be stored.") from exc
    return value
