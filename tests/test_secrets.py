"""Secrets in arguments and the environment never reach the store or output;
roard keeps no spool of a stored run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import (
    PY,
    last_run,
)

SECRETS = {
    "env": "hf_abcdefghijklmnopqrstuvwxyz12",
    "env_value": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "arg": "sk-abcdefghijklmnopqrstuvwxyz",
    "arg_value": "ghp_zyxwvutsrqponmlkjihgfedcba9876543210",
    "arg_split": "hf_zyxwvutsrqponmlkjihgfedcba98",
}


def secrets_found(home: Path) -> dict[str, list[str]]:
    """Which secrets occur anywhere in the files under home (bytes, any file)."""
    found: dict[str, list[str]] = {}
    for d, _, files in os.walk(home):
        for name in files:
            data = Path(d, name).read_bytes()
            for what, secret in SECRETS.items():
                if secret.encode() in data:
                    found.setdefault(what, []).append(name)
    return found


@pytest.mark.capture
def test_secrets_never_reach_the_store(roar):
    env = roar.env(HF_TOKEN=SECRETS["env"], INNOCENT_NAME=SECRETS["env_value"])
    args = [f"--api-key={SECRETS['arg']}", SECRETS["arg_value"], "--token", SECRETS["arg_split"]]
    p = roar("run", "--", "sh", "-c", 'echo "$@" | wc -c > n; ' + PY + ' -c "pass" "$@"', "sh",
             *args, env=env)
    assert p.returncode == 0
    doc = last_run(roar)
    assert doc["env"]["HF_TOKEN"]["redacted"].startswith("hmac-sha256:")
    assert doc["env"]["INNOCENT_NAME"]["redacted"].startswith("hmac-sha256:")
    shown = json.dumps([doc, roar.json("trace", doc["id"], "--all")])
    leaked = {what for what, s in SECRETS.items() if s in shown}
    assert not leaked, f"shown by roar show/trace: {leaked}"
    assert secrets_found(roar.home) == {}


@pytest.mark.capture
def test_roard_keeps_no_spool_of_a_stored_run(roar, roard):
    """roard spools a run's raw records (argv included) only until the client has
    stored the run, in a directory only root can read."""
    from roar.daemon import cgroup_prefix

    _, doc = roar.run("true")
    spool = roard.parent / "spool"
    assert spool.stat().st_mode & 0o077 == 0
    assert not (spool / f"{cgroup_prefix(roard)}{doc['id']}.spool").exists()


# secrets in the places issue 13 found stored and exported in clear
MORE = {
    "remote_token": "ghp_" + "R" * 36,
    "db_password": "dbPw-7x9q",
    "dsn_key": "0123456789abcdef0123456789abcdef",
    "mlflow_password": "mlPw-4k2z",
    "mysql_short": "myPw-8r1t",
    "script_mysql": "scPw-5u3w",
    "script_curl": "cuPw-2v6y",
    "script_option": "opPw-9m0n",
    "script_assign": "asPw-1b4c",
}


@pytest.mark.capture
def test_secrets_in_urls_short_options_and_scripts_never_reach_store_or_exports(roar):
    """A real run in a repo whose remote carries a token, with credentials in URL
    env values, `mysql -pSECRET` (a real program named mysql) and secrets inside
    an `sh -c` script: none of them is in the store, in `show`/`trace`, or in
    the OpenLineage and PROV exports; the rest stays readable."""
    from conftest import git

    s = MORE
    bin_dir = roar.cwd / "bin"
    bin_dir.mkdir()
    (bin_dir / "mysql").write_text('#!/bin/sh\necho "$@" | wc -c > mysql.out\n')
    (bin_dir / "mysql").chmod(0o755)
    (roar.cwd / ".gitignore").write_text("bin/\n*.out\n")
    git(roar.cwd, "init", "-q", "-b", "main")
    git(roar.cwd, "add", ".")
    git(roar.cwd, "commit", "-qm", "one")
    git(roar.cwd, "remote", "add", "origin",
        f"https://ci-bot:{s['remote_token']}@git.example.com/acme/repo.git")
    env = roar.env(PATH=f"{bin_dir}:{os.environ['PATH']}",
                   DATABASE_URL=f"postgres://alice:{s['db_password']}@db.example/runs",
                   SENTRY_DSN=f"https://{s['dsn_key']}@o1.ingest.sentry.io/42",
                   MLFLOW_TRACKING_URI=f"https://bob:{s['mlflow_password']}@ml.example.com")
    script = (f"mysql -uroot -p{s['script_mysql']} -e 'select 1'; "
              f"echo curl -u bob:{s['script_curl']} > curl.out; "
              f"echo --password {s['script_option']} && TOKEN={s['script_assign']} true")
    p = roar("run", "--", "mysql", f"-p{s['mysql_short']}", "db", env=env)
    assert p.returncode == 0, p.stderr
    p = roar("run", "--", "sh", "-c", script, env=env)
    assert p.returncode == 0, p.stderr
    doc = last_run(roar)
    # what is not secret stays readable
    assert doc["git"]["remote"] == "https://ci-bot@git.example.com/acme/repo.git"
    assert doc["env"]["DATABASE_URL"].startswith("postgres://alice:hmac-sha256:")
    assert doc["env"]["DATABASE_URL"].endswith("@db.example/runs")
    assert doc["command"][2].startswith("mysql -uroot -phmac-sha256:")
    assert "-e 'select 1'; echo curl -u bob:hmac-sha256:" in doc["command"][2]
    runs = roar.json("log")
    shown = json.dumps([[roar.json("show", r["id"]), roar.json("trace", r["id"], "--all")]
                        for r in runs])
    exports = "".join(roar("export", r["id"], "--format", fmt).stdout
                      for r in runs for fmt in ("openlineage", "prov"))
    assert "ci-bot@git.example.com/acme/repo.git" in exports  # the remote, less its token
    for what, text in (("show/trace", shown), ("export", exports)):
        leaked = {k for k, v in s.items() if v in text}
        assert not leaked, f"{what}: {leaked}"
    on_disk: dict = {}
    for d, _, files in os.walk(roar.home):
        for name in files:
            data = Path(d, name).read_bytes()
            on_disk.update({k: name for k, v in s.items() if v.encode() in data})
    assert on_disk == {}


def test_exports_redact_runs_stored_before_the_rules(tmp_path):
    """A run stored in clear (by a roar before these rules) is exported with its
    command and git remote redacted: exports only ever show redacted values."""
    from conftest import History

    from roar.query import export

    h = History(tmp_path / "home")
    h.store.meta_put("redaction_key", b"k" * 32)
    git = {"root": "/w", "commit": "a" * 40, "branch": "main", "dirty": False,
           "remote": f"https://bot:{MORE['remote_token']}@git.example.com/r.git"}
    rid = h.run(["sh", "-c", f"mysql -p{MORE['script_mysql']} db"],
                writes=[("/w/out", b"x")], git=git)
    text = (export.export(h.store, ("run", rid), "openlineage")
            + export.export(h.store, ("run", rid), "prov"))
    assert MORE["remote_token"] not in text and MORE["script_mysql"] not in text
    assert "https://bot@git.example.com/r.git" in text and "mysql -phmac-sha256:" in text


@pytest.mark.capture
def test_audit_alerts_and_events_carry_redacted_commands(roar):
    """An audited run whose exec rule fires on `mysql -pSECRET`: the alert's
    detail, the stored audit report and `export --format jsonl` show the
    command redacted (they quoted argv in clear)."""
    secret = MORE["mysql_short"]
    bin_dir = roar.cwd / "bin"
    bin_dir.mkdir()
    (bin_dir / "mysql").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "mysql").chmod(0o755)
    policy = roar.cwd / "p.toml"
    policy.write_text('[[rule]]\nname = "no-mysql"\nkind = "exec"\nmatch = ["*/mysql"]\n'
                      'action = "alert"\n')
    env = roar.env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    p = roar("run", "--policy", policy, "--", "sh", "-c", f"mysql -p{secret} db", env=env)
    assert p.returncode == 0, p.stderr
    run_id = roar.json("log", "-n", "1")[0]["id"]
    lines = [json.loads(x) for x in roar("export", run_id, "--format", "jsonl").stdout.split("\n")
             if x]
    [alert] = [x for x in lines if x["type"] == "alert"]
    assert alert["detail"].startswith(f"exec {bin_dir}/mysql mysql -phmac-sha256:")
    text = json.dumps([lines, roar.json("audit", run_id), roar.json("show", run_id)])
    assert secret not in text
    for d, _, files in os.walk(roar.home):
        for name in files:
            assert secret.encode() not in Path(d, name).read_bytes(), name
