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
