"""The `roar` command (and `python -m roar`).

`roar run` is parsed here, without click: importing click is ~40 ms of every
run's fixed cost on a small machine. Anything this parser is not sure of
(help, an option it does not know, a value that does not parse) goes to the
click CLI in roar/cli/main.py, which owns every message and every other command.
"""

from __future__ import annotations

import sys

from roar.cli.runargs import RUN_FLAGS, RUN_VALUES, parse_run  # noqa: F401 - tests use them here


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
