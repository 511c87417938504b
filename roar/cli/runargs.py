"""`roar run`'s arguments as click would parse them, without click (the
Python entry, roar/__main__.py, and the warm recorder, roar/cli/warm.py,
parse them alike)."""

from __future__ import annotations

# `roar run`'s options, as declared on the click command in roar/cli/main.py
# (tests/test_cli.py checks both parse alike).
RUN_VALUES = {"--name": "name", "--linger": "linger", "--request": "request_id",
              "--group": "group", "--policy": "policy"}
RUN_FLAGS = {"--allow-dirty": "allow_dirty", "--audit": "audit", "--no-git": "no_git"}


def parse_run(args: list[str]) -> dict | None:
    """The arguments of `roar run` as click would parse them, or None when
    click should decide (help, unknown options, bad values, no command)."""
    opts: dict = {"name": None, "allow_dirty": False, "no_git": False, "linger": None,
                  "request_id": None, "group": None, "audit": False, "policy": None}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break  # the command starts here; what follows is its own
        flag, eq, value = arg.partition("=")
        if flag in RUN_FLAGS and not eq:
            opts[RUN_FLAGS[flag]] = True
            i += 1
            continue
        if flag not in RUN_VALUES:
            return None
        if eq:
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            return None
        opts[RUN_VALUES[flag]] = value
    if i >= len(args):
        return None
    if opts["linger"] is not None:
        try:
            opts["linger"] = float(opts["linger"])
        except ValueError:
            return None
    return {**opts, "command": args[i:]}
