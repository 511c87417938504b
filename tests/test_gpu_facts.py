"""The GPUs a run records (nvidia-smi's list, asked while the workload runs).
nvidia-smi takes 0.1 s to seconds: a run within GPU_CACHE_S of an earlier
run's answer, on the same boot, driver and nvidia-smi, records that answer
without asking again (roar/record/context.py, gpus_cached)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.capture

ROW = "0, NVIDIA H200, GPU-0b6e1d2c-aaaa-bbbb-cccc-0123456789ab, 143771 MiB, 570.86.15"
WANT = [{"index": "0", "name": "NVIDIA H200", "uuid": "GPU-0b6e1d2c-aaaa-bbbb-cccc-0123456789ab",
         "memory": "143771 MiB", "driver": "570.86.15"}]


def _fake_smi(bin_dir, calls, row: str) -> None:
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho called >> {calls}\nsleep 0.3\necho '{row}'\n")
    smi.chmod(0o755)


def test_gpus_are_recorded_and_asked_again_only_when_the_answer_is_stale(roar, tmp_path):
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    _fake_smi(bin_dir, calls, ROW)
    env = roar.env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def gpus_of_a_run() -> list:
        _, doc = roar.run("true", env=env)
        return doc["gpus"]

    def asked() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    assert gpus_of_a_run() == WANT and asked() == 1
    assert gpus_of_a_run() == WANT and asked() == 1  # the first answer, still good
    # another nvidia-smi (a driver upgrade): asked again, the new answer recorded
    _fake_smi(bin_dir, calls, ROW.replace("570.86.15", "575.51.03"))
    assert gpus_of_a_run() == [{**WANT[0], "driver": "575.51.03"}] and asked() == 2
    # an answer older than GPU_CACHE_S is asked again
    cache = roar.home / "gpus.json"
    os.utime(cache)  # the file's times do not matter: the time inside does
    import json

    doc = json.loads(cache.read_text())
    doc["at"] -= 3600
    cache.write_text(json.dumps(doc))
    assert gpus_of_a_run() == [{**WANT[0], "driver": "575.51.03"}] and asked() == 3
    # an nvidia-smi that fails records no GPUs and keeps nothing
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    assert gpus_of_a_run() == [] and asked() == 3


def test_no_nvidia_smi_no_gpus(roar):
    env = roar.env(PATH="/usr/bin:/bin")
    _, doc = roar.run("true", env=env)
    assert doc["gpus"] is None
    assert not (roar.home / "gpus.json").exists()
