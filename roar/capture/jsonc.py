"""json.dumps and json.loads on the interpreter's own accelerator (`_json`),
without importing the json package: its modules and the six regular
expressions they compile at import are ~3 ms of every `roar run`'s start.

The output is json's, byte for byte: the same C encoder and scanner json
itself uses for these arguments (tests/test_jsonc.py compares them). Anything
else (indent, object hooks, odd input encodings) and every error goes to the
json package, imported then: its exceptions and messages are the ones raised.
"""

from __future__ import annotations

import _json

_WS = " \t\n\r"  # what json skips around a document (its WHITESPACE)


def _json_module():
    import json

    return json


class _Context:
    """What _json.make_scanner reads from json.JSONDecoder(): its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def _no_default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def dumps(obj, *, separators: tuple[str, str] | None = None, sort_keys: bool = False,
          ensure_ascii: bool = True, default=None) -> str:
    """json.dumps(obj, separators=..., sort_keys=..., ensure_ascii=..., default=...)."""
    item_sep, key_sep = separators if separators is not None else (", ", ": ")
    enc = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    if isinstance(obj, str):
        return enc(obj)
    try:
        encode = _json.make_encoder({}, default or _no_default, enc, None, key_sep, item_sep,
                                    sort_keys, False, True)
        return "".join(encode(obj, 0))
    except Exception:  # noqa: BLE001 - json raises its own error (and message) for it
        return _json_module().dumps(obj, separators=separators, sort_keys=sort_keys,
                                    ensure_ascii=ensure_ascii, default=default)


def loads(s: str | bytes | bytearray):
    """json.loads(s)."""
    if not isinstance(s, str):
        # json detects UTF-16/32 and a UTF-8 BOM; roar's documents are UTF-8
        if not isinstance(s, bytes | bytearray) or s[:3] == b"\xef\xbb\xbf" or b"\0" in s[:4]:
            return _json_module().loads(s)
        try:
            s = s.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _json_module().loads(s)
    n = len(s)
    try:
        i = 0
        while i < n and s[i] in _WS:
            i += 1
        obj, end = _scan(s, i)
        while end < n and s[end] in _WS:
            end += 1
        if end == n:
            return obj
    except Exception:  # noqa: BLE001, S110 - json raises its own error (and message) for it
        pass
    return _json_module().loads(s)


def load(f):
    """json.load(f)."""
    return loads(f.read())


def dump(obj, f, **kw) -> None:
    """json.dump(obj, f, ...) for dumps's arguments."""
    f.write(dumps(obj, **kw))
