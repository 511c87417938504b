"""The deployment files (deploy/): the systemd unit loads, the DaemonSet parses
and asks for what roard needs (docs/deploy.md)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "roard.service"
DAEMONSET = REPO / "deploy" / "roard-daemonset.yaml"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_says_what_roard_needs():
    svc = _unit()["Service"]
    assert svc["Delegate"] == "yes" and svc["Restart"] == "on-failure"
    assert svc["RuntimeDirectory"] == "roar"
    assert "ROAR_SOCKET=/run/roar/roard.sock" in svc["Environment"] or any(
        "ROAR_SOCKET=/run/roar/roard.sock" in line for line in UNIT.read_text().splitlines())
    assert svc["ExecStart"].split()[0].endswith("/roard")
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_loads_in_systemd(tmp_path):
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed here")
    roard = Path(sys.executable).parent / "roard"
    if not roard.exists():
        pytest.skip(f"no roard entry point next to {sys.executable} (pip install -e .)")
    unit = tmp_path / "roard.service"  # the unit as shipped, pointed at this checkout's roard
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={roard}", UNIT.read_text(),
                           flags=re.M))
    p = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    # systemd-analyze verify can fail: a broken directive is an error
    bad = tmp_path / "roard.service"
    bad.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    p = subprocess.run([exe, "verify", str(bad)], capture_output=True, text=True, timeout=120)
    assert "restart specifier" in p.stderr


def _load_manifest() -> dict:
    try:
        import yaml
    except ImportError:
        return _structural(DAEMONSET.read_text())
    return yaml.safe_load(DAEMONSET.read_text())


def _structural(text: str) -> dict:
    """Without PyYAML: the few facts the test needs, read line by line (each at
    its own key; indentation checked to be consistent)."""
    for n, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" "))
        assert "\t" not in line and indent % 2 == 0, f"line {n}: bad indentation"
    get = lambda key: re.findall(rf"^\s*-?\s*{key}:\s*(.+)$", text, re.M)  # noqa: E731
    paths = get("path")
    return {"kind": get("kind")[0], "apiVersion": get("apiVersion")[0],
            "_hostPID": get("hostPID")[0], "_privileged": get("privileged")[0],
            "_paths": paths, "_mounts": get("mountPath")}


def test_daemonset_parses_and_mounts_what_roard_needs():
    m = _load_manifest()
    assert m["kind"] == "DaemonSet" and m["apiVersion"] == "apps/v1"
    if "_paths" in m:  # structural check only
        assert m["_hostPID"] == "true" and m["_privileged"] == "true"
        host_paths, mounts = set(m["_paths"]), set(m["_mounts"])
    else:
        spec = m["spec"]["template"]["spec"]
        assert spec["hostPID"] is True
        assert m["spec"]["selector"]["matchLabels"] == m["spec"]["template"]["metadata"][
            "labels"]
        (c,) = spec["containers"]
        assert c["securityContext"]["privileged"] is True
        assert "nsenter" in c["command"] and "--cgroup" in c["command"]
        assert c["command"][-1] == "roard"
        assert {"name": "ROAR_SOCKET", "value": "/run/roar/roard.sock"} in c["env"]
        volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
        mounted = {v["name"]: v["mountPath"] for v in c["volumeMounts"]}
        assert set(mounted) == set(volumes)
        assert all(volumes[n] == mounted[n] for n in volumes)  # host paths at the same place
        host_paths, mounts = set(volumes.values()), set(mounted.values())
    need = {"/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/kernel/debug", "/lib/modules",
            "/run/roar"}
    assert need <= host_paths and need <= mounts
