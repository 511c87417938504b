"""`roar run` stopped and continued (Ctrl-Z then fg, or a scheduler's
SIGSTOP/SIGCONT): a pause is not an interruption, the run stays complete."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.capture


def test_stop_and_continue_of_roar_run_leaves_a_clean_run(roar):
    w = roar.cwd
    client = subprocess.Popen([sys.executable, "-m", "roar", "run", "--", "sh", "-c",
                               "touch started; sleep 3; echo done > out.txt"],
                              cwd=w, env=roar.env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (w / "started").exists():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.05)
    for _ in range(3):
        client.send_signal(signal.SIGSTOP)
        time.sleep(0.4)
        client.send_signal(signal.SIGCONT)
        time.sleep(0.2)
    _, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    doc = roar.json("show", roar.json("log", "-n", "1")[0]["id"])
    assert doc["status"] == "finished" and doc["complete"], doc["incomplete_reasons"]
    assert sorted(o["path"] for o in doc["outputs"]) == [str(w / "out.txt"),
                                                         str(w / "started")]
