"""The scripting contract: exit codes a shell script can rely on (125 for
roar's own refusals of `roar run`, --exit-code answers), ROAR_RUN_ID in the
workload, roard's --help, doctor --json, one-line ROAR_HOME and git errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, History, one_line_error
from conftest import hash_of as _h
from test_lineage import RAW, _pipeline


def test_unknown_run_option_is_refused_not_run(cli):
    marker = cli.cwd / "ran"
    for argv in (["--nmae", "x", "--", "touch", marker], ["-x", "touch", marker],
                 ["--allow-dirty=1", "touch", marker], []):
        p = cli("run", *argv, check=False)
        assert p.returncode == 125, (argv, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and not marker.exists()
    assert "No such option '--nmae'" in cli("run", "--nmae", "x", "--", "true",
                                            check=False).stderr
    # the command's own options are its own
    from roar.__main__ import parse_run

    assert parse_run(["ls", "--nmae"])["command"] == ["ls", "--nmae"]


def test_run_help_documents_exit_codes_and_environment(cli):
    out = cli("run", "--help").stdout
    for word in ("125", "126", "127", "ROAR_RUN_ID", "ROAR_HOME", "ROAR_SOCKET",
                 "ROAR_HASH_WAIT", "--no-git"):
        assert word in out, word


@pytest.mark.parametrize("home", ["file", "file/sub", "/proc/1", "/proc/1/x", "/dev/null"])
def test_every_bad_roar_home_is_one_line(cli, tmp_path, home):
    (tmp_path / "file").write_text("not a directory\n")
    path = home if home.startswith("/") else str(tmp_path / home)
    env = cli.env(ROAR_HOME=path)
    marker = cli.cwd / "ran"
    for args, code in ((["run", "--", "touch", marker], 125), (["log"], 2),
                       (["show", "x"], 2), (["inputs", "x"], 2)):
        p = cli(*args, check=False, env=env)
        one_line_error(p)
        assert p.returncode == code, (args, p.returncode, p.stderr)
    assert not marker.exists()


def test_refusals_before_the_workload_exit_125(cli):
    (cli.home / "store").mkdir(parents=True)
    (cli.home / "store" / "data.mdb").write_bytes(os.urandom(8192))  # corrupt store
    p = cli("run", "--", "true", check=False)
    assert p.returncode == 125 and "cannot open the roar store" in one_line_error(p)
    shutil.rmtree(cli.home)
    assert cli("run", "--", "no-such-command-here", check=False).returncode == 127
    (cli.cwd / "script").write_text("#!/bin/sh\n")  # not executable
    assert cli("run", "--", "./script", check=False).returncode == 126


def _dubious_repo(tmp_path, other_user):
    repo = tmp_path / "theirs"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["chown", "-R", f"{other_user.pw_uid}:{other_user.pw_gid}", str(repo)],
                   check=True)
    return repo


def test_git_failure_refuses_with_gits_reason(cli, tmp_path, other_user):
    """A repository owned by someone else ("dubious ownership", common under
    sudo and in containers) must not silently skip the dirty-tree check."""
    from roar.record import context

    repo = _dubious_repo(tmp_path, other_user)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["HOME"] = str(tmp_path)  # no safe.directory from the real home
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with pytest.raises(context.GitError, match="dubious ownership"):
            context.git_state(str(repo), allow_dirty=False)
        assert context.git_state(str(repo), allow_dirty=True) is None
        assert context.git_state(str(tmp_path), allow_dirty=False) is None  # not a repository
    finally:
        os.environ.clear()
        os.environ.update(old)
    marker = repo / "ran"
    p = cli("run", "--", "touch", marker, check=False, cwd=repo, env=cli.env(HOME=str(tmp_path)))
    line = one_line_error(p)
    assert p.returncode == 125 and "dubious ownership" in line and "--no-git" in line
    assert not marker.exists()


def test_roard_help_and_version_start_nothing(tmp_path):
    sock = tmp_path / "roard.sock"
    env = {**os.environ, "ROAR_SOCKET": str(sock), "PYTHONPATH": str(REPO)}
    for arg, want in (("--help", "ROARD_IDLE_DETACH"), ("-h", "usage: roard"),
                      ("--version", "roard ")):
        p = subprocess.run([sys.executable, "-m", "roar.daemon", arg], env=env,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and want in p.stdout, p
    p = subprocess.run([sys.executable, "-m", "roar.daemon", "--bogus"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stderr.startswith("roard: unknown argument")
    assert not sock.exists() and not (tmp_path / "roard.pid").exists()


def test_doctor_json(cli):
    p = cli("doctor", "--json", check=False)
    doc = json.loads(p.stdout)
    assert p.returncode == (0 if doc["ok"] else 1)
    names = [c["check"] for c in doc["checks"]]
    assert "kernel" in names and "store" in names
    assert all(c["status"] in ("ok", "warn", "fail") for c in doc["checks"])


def test_diff_and_contains_exit_codes(cli):
    h = History(cli.home)
    pre, train, _ = _pipeline(h)
    unknown = h.run(["python3", "x.py"], reads=RAW, writes=[("/w/out/u", b"u")],
                    complete=False, reasons=["3 kernel events lost"])
    h.store.close()
    model = _h(b"model v1")
    assert cli("diff", pre, pre, "--exit-code", check=False).returncode == 0
    assert cli("diff", pre, train, "--exit-code", check=False).returncode == 1
    assert cli("diff", pre, train, check=False).returncode == 0  # without: 0 as before
    yes = cli("inputs", model, "--contains", _h(RAW[0][1]), "--exit-code", check=False)
    no = cli("inputs", model, "--contains", _h(b"never"), "--exit-code", check=False)
    unk = cli("inputs", unknown, "--contains", _h(b"never"), "--exit-code", "--json",
              check=False)
    assert (yes.returncode, no.returncode, unk.returncode) == (0, 1, 3)
    assert json.loads(unk.stdout)["answer"] == "unknown"
    assert cli("inputs", model, "--contains", _h(b"never"), check=False).returncode == 0
    assert cli("inputs", "nothing", "--contains", "x", "--exit-code",
               check=False).returncode == 2
    assert "--exit-code answers" in one_line_error(cli("inputs", model, "--exit-code",
                                                       check=False))


@pytest.mark.capture
def test_workload_knows_its_run_id_and_trackers_link_back(roar):
    run_dir = "mlruns/0/" + "ab" * 16
    script = (f"echo $ROAR_RUN_ID > id.txt; mkdir -p {run_dir}/tags; "
              f"printf 'name: exp\\n' > mlruns/0/meta.yaml; "
              f"printf \"$ROAR_RUN_ID\" > {run_dir}/tags/roar.run_id; "
              f"printf 'run_name: r\\n' > {run_dir}/meta.yaml")
    _, doc = roar.run("sh", "-c", script)
    assert (roar.cwd / "id.txt").read_text().strip() == doc["id"]
    [link] = roar.json("links", doc["id"])
    assert link["tracker"] == "mlflow"
    assert link["backlink"] == str(roar.cwd / run_dir / "tags" / "roar.run_id")
    assert "links back" in roar("links", doc["id"]).stdout


def test_every_environment_variable_roar_reads_is_documented():
    """README's table and `roar run --help` name every ROAR*/CUDA variable the
    code reads (os.environ.get / os.environ[...])."""
    import re

    read = set()
    for path in (REPO / "roar").rglob("*.py"):
        read |= set(re.findall(r"environ(?:\.get\(|\[)\"((?:ROAR|CUDA)[A-Z_]*)\"",
                               path.read_text()))
    assert {"ROAR_HOME", "ROAR_SOCKET", "ROAR_HASH_WAIT"} <= read
    readme = (REPO / "README.md").read_text()
    missing = sorted(v for v in read if f"`{v}`" not in readme)
    assert not missing, f"not in README's environment table: {missing}"
    from roar.cli.main import RUN_EPILOG

    for v in ("ROAR_HOME", "ROAR_SOCKET", "ROAR_HASH_WAIT", "ROAR_TIMING", "ROAR_RUN_ID"):
        assert v in RUN_EPILOG
