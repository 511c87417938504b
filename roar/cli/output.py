"""What every CLI command prints the same way: one-line errors, JSON documents."""

from __future__ import annotations

import json
import sys

# `roar run` refused or failed before its command started (as env, timeout, nice)
RUN_REFUSED = 125


def fail(msg: str, code: int = 2):
    """A user error: one line on stderr, a non-zero exit, no traceback."""
    sys.stdout.flush()
    print(f"roar: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def print_json(obj) -> None:
    # ASCII-only: paths with bytes that are not UTF-8 (kept as surrogate
    # escapes) still make valid JSON, as \udcXX escapes
    print(json.dumps(obj, indent=2, ensure_ascii=True, default=str))
