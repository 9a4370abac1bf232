"""One JSON reader for every request body: strict UTF-8, no duplicate keys, no NaN or Infinity, nothing the
server could not store or send back.

A duplicate key is ambiguous (parsers disagree on which one wins, so a proxy and this server could read two
different requests from the same bytes); it is refused rather than silently resolved. Values the rest of the
system cannot carry are refused here too, with a 400, instead of failing later: a NUL character (PostgreSQL text
and jsonb cannot hold it), and what orjson, which writes every stored document and every answer, cannot write: a
lone UTF-16 surrogate, an integer outside 64 bits, nesting deeper than 254 levels. orjson itself is the gate (in C,
~6 us for a 7 KB report); when it refuses a value, ``_first_problem`` finds which of those the value holds, in
document order, by looking: nothing depends on the wording of orjson's errors. Measured on a 20-sensor report
(7 KB): ~100 us, against 38 us for orjson alone, which cannot see duplicates.
"""

import json
import math
import re
from typing import Any, NoReturn

import orjson

# What orjson (3.x, pinned in pyproject.toml) cannot write: integers outside -2**63 .. 2**64 - 1, nesting past 254
# levels, and lone surrogates (no UTF-8 text can hold one).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
MAX_DEPTH = 254
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a parsed str, a surrogate is always a lone one

TOO_DEEP = f"The JSON is nested too deeply (more than {MAX_DEPTH} levels)."
INT_TOO_BIG = "The JSON contains an integer beyond 64 bits, which cannot be stored."
LONE_SURROGATE = "The JSON contains a lone UTF-16 surrogate, which cannot be stored."

# A JSON \u0000 escape, not preceded by an escaped backslash (which would make it the text "\u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class JSONBodyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONBodyError(f"Duplicate key '{key}' in a JSON object.")
            seen.add(key)
    return obj


def _no_constants(name: str) -> NoReturn:
    raise JSONBodyError(f"'{name}' is not valid JSON.")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but no double: Python reads it as infinity, which no JSON column can store.
    value = float(text)
    if not math.isfinite(value):
        raise JSONBodyError(f"The number {text[:40]} is out of range for a 64-bit float.")
    return value


def _first_problem(value: Any, level: int = 0) -> str | None:
    """Why orjson cannot write ``value``: the first of its limits the value breaks, in document order (the order
    orjson writes it in: a key before its value), as a sentence; None if it breaks none."""
    if isinstance(value, (dict, list)):
        if level + 1 > MAX_DEPTH:
            return TOO_DEEP
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str) and _LONE_SURROGATE.search(key):
                return LONE_SURROGATE
            problem = _first_problem(item, level + 1)
            if problem is not None:
                return problem
    elif type(value) is int and not INT_MIN <= value <= INT_MAX:
        return INT_TOO_BIG
    elif isinstance(value, str) and _LONE_SURROGATE.search(value):
        return LONE_SURROGATE
    return None


def strict_json_loads(body: bytes) -> Any:
    """Parse a request body, or raise ``JSONBodyError`` with a sentence naming the problem.

    Fast path, for compact JSON as agents write it (``JSON.stringify``): orjson reads the body (refusing invalid
    UTF-8, NaN and Infinity), and if orjson writes the value back as exactly the same bytes, the body held nothing
    this reader refuses: a duplicate key would be missing from what orjson writes, and what it cannot write (an
    integer beyond 64 bits, too deep a nesting, a float beyond 64 bits read as infinity) differs or fails. A NUL
    escape is looked for first (orjson takes it). ~30 us for a 20-sensor report against ~90 us below; any other
    body (spaced, reordered, refused) takes the reader below, which finds the problem and names it."""
    if b"\\u0000" not in body:
        try:
            value = orjson.loads(body)
            if orjson.dumps(value) == body:
                return value
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
    return _strict_json_loads(body)


def _strict_json_loads(body: bytes) -> Any:
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
        orjson.dumps(value)  # what the server will have to store and send back
    except orjson.JSONEncodeError as exc:
        raise JSONBodyError(_first_problem(value) or "The JSON holds a value that cannot be stored.") from exc
    return value
