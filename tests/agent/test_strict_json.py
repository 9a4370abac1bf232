"""The request body reader (``sensorsync_project.strict_json``) on compact JSON, as agents send it: such a body
takes the fast path (orjson reads it and must write it back byte for byte), which must refuse exactly what the
full reader refuses, with the same sentence."""

import pytest

from sensorsync_project.strict_json import JSONBodyError, _strict_json_loads, strict_json_loads

REFUSED = [
    (b'{"a":1,"a":2}', "Duplicate key 'a'"),
    (b'{"a":{"b":[{"c":1,"c":1}]}}', "Duplicate key 'c'"),
    (b'{"a":"x\\u0000y"}', "NUL character"),
    (b'{"a":1e400}', "out of range for a 64-bit float"),
    (b'{"a":-1e400}', "out of range for a 64-bit float"),
    (b'{"a":18446744073709551616}', "integer beyond 64 bits"),
    (b'{"a":-9223372036854775809}', "integer beyond 64 bits"),
    (b'{"a":"\\ud800"}', "lone UTF-16 surrogate"),
    (b'{"\\udc00":1}', "lone UTF-16 surrogate"),
    (b"[" * 255 + b"]" * 255, "nested too deeply"),
    (b'{"a":NaN}', "'NaN' is not valid JSON"),
    (b'{"a":Infinity}', "'Infinity' is not valid JSON"),
    (b'\xef\xbb\xbf{"a":1}', "not valid JSON"),
    (b'{"a":"\xff"}', "not UTF-8"),
]

ACCEPTED = [
    b'{"a":1}',
    b'{"a":[1,2.5,-3,true,false,null,"\\u00e9\\n"],"b":{}}',
    b'{"x":"\xc3\xa9","y":18446744073709551615,"z":-9223372036854775808}',
    b"[" * 254 + b"]" * 254,
    b'{"a": 1, "b": [1, 2]}',  # spaced: the full reader
    b'{"a":1.0,"b":1E2,"c":-0}',  # written back otherwise by orjson: the full reader
]


@pytest.mark.parametrize(("body", "sentence"), REFUSED, ids=[repr(b[:24]) for b, _ in REFUSED])
def test_compact_bodies_are_refused_as_the_full_reader_refuses_them(body, sentence):
    with pytest.raises(JSONBodyError, match=sentence.replace("(", r"\(")) as fast:
        strict_json_loads(body)
    with pytest.raises(JSONBodyError) as full:
        _strict_json_loads(body)
    assert str(fast.value) == str(full.value)


@pytest.mark.parametrize("body", ACCEPTED, ids=lambda b: repr(b[:24]))
def test_compact_and_spaced_bodies_read_as_the_full_reader_reads_them(body):
    value = strict_json_loads(body)
    assert value == _strict_json_loads(body)
    assert [type(v) for v in (value.values() if isinstance(value, dict) else value)] == [
        type(v) for v in (_strict_json_loads(body).values() if isinstance(value, dict) else _strict_json_loads(body))
    ]
