"""CLI behaviour a user meets first: clear one-line errors, never tracebacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import one_line_error


def test_show_without_store(cli):
    line = one_line_error(cli("show", "abc", check=False))
    assert "no roar store" in line


def test_log_json_without_store_is_empty(cli):
    assert cli.json("log") == []


def test_unknown_ref_and_missing_args(cli):
    from roar.record.store import Store

    Store(cli.home).close()
    assert "is not a run id" in one_line_error(cli("show", "nothing-here", check=False))
    assert "no run matches" in one_line_error(cli("trace", "ZZZZ", check=False))
    p = cli("run", check=False)
    assert p.returncode == 125 and "Traceback" not in p.stderr


def test_corrupt_store_refuses_before_starting_the_workload(cli):
    (cli.home / "store").mkdir(parents=True)
    (cli.home / "store" / "data.mdb").write_bytes(os.urandom(8192))
    marker = cli.cwd / "started"
    line = one_line_error(cli("run", "--", "touch", str(marker), check=False))
    assert "cannot open the roar store" in line and not marker.exists()


def test_non_root_without_daemon_fails_fast(cli, foreign_python, other_user):
    exe, path = foreign_python
    home = Path(tempfile.mkdtemp(prefix="roar-user-", dir="/tmp"))
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    env = cli.env(ROAR_HOME=str(home / ".roar"), PYTHONPATH=path, HOME=str(home))
    p = subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}",
                        f"--regid={other_user.pw_gid}", "--clear-groups", exe, "-m", "roar",
                        "run", "--", "true"],
                       cwd=home, env=env, capture_output=True, text=True, timeout=60)
    shutil.rmtree(home)
    line = one_line_error(p)
    assert "no roar daemon is running" in line and "roar daemon start" in line


def test_doctor_runs(cli):
    p = cli("doctor", check=False)
    assert "Traceback" not in p.stderr and "kernel" in p.stdout


RUN_ARGVS = [
    ["--", "python", "train.py", "--lr", "3"],
    ["python", "train.py", "--name", "x"],
    ["--name", "v3", "--", "sh", "-c", "true"],
    ["--name=v3", "--allow-dirty", "true"],
    ["--allow-dirty", "--linger", "2.5", "--request", "R1", "--", "true", "--", "x"],
    ["--no-git", "--name", "n", "true"],
    ["--linger=0", "--name", "--allow-dirty", "true"],  # the name is "--allow-dirty"
    ["--name", "a", "--name", "b", "-", "x"],
    ["--name=", "--", "--not-an-option"],
    ["--request", "R", "ls", "-la"],
    ["--group", "job-7", "--", "python", "train.py"],
    ["--group=g", "--name", "n", "true"],
]
CLICK_DECIDES = [
    [], ["--"], ["--name"], ["--linger", "soon", "true"], ["-h"], ["--help", "true"],
    ["--unknown", "true"], ["-x", "true"], ["--allow-dirty=1", "true"], ["--group"],
]


def test_fast_run_parser_agrees_with_click():
    """`roar run` is parsed without click (start-up cost); both must agree, and
    what the fast parser is unsure of goes to click."""
    from roar.__main__ import parse_run
    from roar.cli.main import run

    for argv in RUN_ARGVS:
        ctx = run.make_context("run", list(argv))
        want = dict(ctx.params, command=list(ctx.params["command"]))
        assert parse_run(argv) == want, argv
    for argv in CLICK_DECIDES:
        assert parse_run(argv) is None, argv
