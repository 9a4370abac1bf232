"""Checks of plain input values that every app's validation shares (device names, sensor names, report fields)."""

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control_characters(text: str, *, allow: str = "") -> bool:
    """C0/C1 control characters (a terminal escape, a bell, a line break) have no place in a name."""
    return any(ch not in allow for ch in _CONTROL.findall(text))


def is_int(value: Any) -> bool:
    # JSON true/false are bools, which Python counts as ints; 5000.0 is a float: neither is an integer here.
    return type(value) is int
