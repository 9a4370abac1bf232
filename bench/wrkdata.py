"""Files the wrk Lua script reads (``bench/lua/agent.lua``). Plain formats, written here and read there.

Device file (binary-safe, one record per device, in fleet order)::

    SSBENCH1\\n
    <count>\\n
    <uuid> <api key> <etag> <uptime at start> <len A> <len B>\\n<A bytes><B bytes>   (count times)

A and B are the gzip-compressed report prefixes of variants 0 and 1 (``bench.reports``).

State file: one line of ``0``/``1`` characters, the variant each device's stored report is (so an "unchanged"
report sends that one and a "changed" report the other). Paths file: one request path per line.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"SSBENCH1"


@dataclass(frozen=True)
class DeviceRecord:
    uuid: str
    api_key: str
    etag: str
    uptime: int
    prefixes: tuple[bytes, bytes]  # gzip prefixes of variants 0 and 1


def _check_token(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be non-empty without whitespace: {value!r}")
    return value


def write_devices(path: Path, records: Iterable[DeviceRecord]) -> int:
    records = list(records)
    with open(path, "wb") as out:
        out.write(MAGIC + b"\n%d\n" % len(records))
        for r in records:
            fields = (_check_token(r.uuid, "uuid"), _check_token(r.api_key, "key"), _check_token(r.etag, "etag"))
            a, b = r.prefixes
            out.write(f"{' '.join(fields)} {r.uptime:d} {len(a):d} {len(b):d}\n".encode("ascii"))
            out.write(a)
            out.write(b)
    return len(records)


def read_devices(path: Path) -> Iterator[DeviceRecord]:
    """The reader the Lua script implements, in Python (tests, checks)."""
    with open(path, "rb") as data:
        if data.readline().rstrip(b"\n") != MAGIC:
            raise ValueError(f"{path} is not a benchmark device file")
        count = int(data.readline())
        for _ in range(count):
            uuid, key, etag, uptime, len_a, len_b = data.readline().decode("ascii").split()
            a, b = data.read(int(len_a)), data.read(int(len_b))
            yield DeviceRecord(uuid, key, etag, int(uptime), (a, b))


def write_states(path: Path, variants: Iterable[int]) -> None:
    text = "".join("1" if v else "0" for v in variants)
    path.write_text(text + "\n", encoding="ascii")


def read_states(path: Path) -> list[int]:
    return [int(c) for c in path.read_text(encoding="ascii").strip()]


def write_paths(path: Path, paths: Iterable[str]) -> int:
    lines = [_check_token(p, "path") for p in paths]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return len(lines)
