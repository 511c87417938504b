"""The `roar` command (and `python -m roar`).

`roar run` is parsed here, without click: importing click is ~40 ms of every
run's fixed cost on a small machine. Anything this parser is not sure of
(help, an option it does not know, a value that does not parse) goes to the
click CLI in roar/cli/main.py, which owns every message and every other command.
"""

from __future__ import annotations

import sys

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


def main() -> None:
    # file names are bytes: one that is not UTF-8 reaches roar as surrogate
    # escapes (PEP 383) and is printed back as the same bytes, as ls does
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        parsed = parse_run(args[1:])
        if parsed is not None:
            # the start makes ~100,000 objects and none is garbage (modules, their
            # functions and constants): the cyclic collector would walk them ~25
            # times, ~5 ms of every run's fixed cost. It is back (with what is
            # there by then frozen) once the workload runs: roar/cli/run.py.
            import gc

            gc.disable()
            from roar.cli.run import cli_run

            cli_run(**parsed)
    from roar.cli.main import main as click_main

    click_main()


if __name__ == "__main__":
    main()
