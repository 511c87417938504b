"""Job groups: the group a run records (roar/record/groups.py), the store's
group index, and the job view (`roar show group:G`, `roar log --group G`)."""

from __future__ import annotations

import calendar
import time

import pytest
from conftest import one_line_error

from roar.query.groups import group_view
from roar.record import groups
from roar.record.store import Store


def test_flag_wins_over_the_environment():
    env = {"SLURM_JOB_ID": "99", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}
    assert groups.detect(env, "mine") == {"id": "mine", "source": "flag", "rank": 3,
                                          "local_rank": 1, "world_size": 8}


def test_slurm_job_and_array_task():
    assert groups.detect({"SLURM_JOB_ID": "4242", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
                          "SLURM_NTASKS": "4"}) == {
        "id": "4242", "source": "slurm", "rank": 2, "local_rank": 0, "world_size": 4}
    g = groups.detect({"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242",
                       "SLURM_ARRAY_TASK_ID": "7"})
    assert g["id"] == "4242_7" and g["source"] == "slurm" and g["rank"] is None


def test_torchelastic_unless_none_then_master_window():
    env = {"TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "n1", "MASTER_PORT": "29500",
           "RANK": "0", "WORLD_SIZE": "2"}
    assert groups.detect(env)["id"] == "abc"
    assert groups.detect(env)["source"] == "torchelastic"
    env["TORCHELASTIC_RUN_ID"] = "none"  # torchrun's default rendezvous id
    t = calendar.timegm(time.strptime("2026-11-30T12:03:10", "%Y-%m-%dT%H:%M:%S"))
    a = groups.detect(env, started_s=t)
    b = groups.detect({**env, "RANK": "1"}, started_s=t + 30)  # the other rank, a bit later
    assert a["source"] == "master" and a["id"] == b["id"] == "n1:29500@20261130T120000Z"
    assert groups.detect(env, started_s=t + 3600)["id"] != a["id"]  # a later job, same port


def test_no_job_and_unparsable_numbers():
    assert groups.detect({"HOME": "/root"}) is None
    g = groups.detect({"SLURM_JOB_ID": "1", "RANK": "x", "SLURM_PROCID": "5"})
    assert g["rank"] is None  # present but not a number: unknown, not the next variable


def _run(rid, rank, world=3, host="n1", status="finished", complete=True, gid="G"):
    return {"id": rid, "host": host, "status": status, "complete": complete,
            "started_at": f"2026-11-30T00:00:0{rid[-1]}",
            "group": {"id": gid, "source": "flag", "rank": rank, "local_rank": 0,
                      "world_size": world}}


FILES = {
    "R1": [{"role": "input", "kind": "data", "path": "/d/a", "hash": "aa"},
           {"role": "input", "kind": "env", "path": "/usr/lib/x.so", "hash": None},
           {"role": "output", "kind": "data", "path": "/o/r0", "hash": "01"}],
    "R2": [{"role": "input", "kind": "data", "path": "/d/a", "hash": "aa"},
           {"role": "output", "kind": "data", "path": "/o/r1", "hash": "02"}],
    "R3": [{"role": "input", "kind": "data", "path": "/d/b", "hash": "bb"}],
}


def test_view_complete_and_missing():
    runs = [_run("R2", 1, host="n2"), _run("R1", 0), _run("R3", 2, host="n3")]
    v = group_view("G", runs, lambda r: FILES[r])
    assert v["complete"] and v["missing"] == [] and v["nodes"] == ["n1", "n2", "n3"]
    assert [(r["rank"], r["run"], r["host"]) for r in v["ranks"]] == [
        (0, "R1", "n1"), (1, "R2", "n2"), (2, "R3", "n3")]
    assert v["inputs"] == [{"path": "/d/a", "hash": "aa", "runs": ["R1", "R2"]},
                           {"path": "/d/b", "hash": "bb", "runs": ["R3"]}]
    assert [o["path"] for o in v["outputs"]] == ["/o/r0", "/o/r1"]
    v = group_view("G", runs[:2], lambda r: FILES[r])
    assert not v["complete"] and v["missing"] == [2]
    v = group_view("G", [*runs[:2], _run("R3", 2, status="interrupted")], lambda r: FILES[r])
    assert not v["complete"] and v["missing"] == []
    # a rank that was restarted: its latest run decides
    v = group_view("G", [*runs[:2], _run("R3", 2, complete=False), _run("R4", 2)],
                   lambda r: FILES.get(r, []))
    assert v["complete"] and len(v["ranks"]) == 4


def test_view_without_ranks():
    runs = [_run("R1", None, world=None), _run("R2", None, world=None, complete=False)]
    v = group_view("G", runs, lambda r: [])
    assert not v["complete"] and v["missing"] == [] and v["world_size"] is None
    assert group_view("G", runs[:1], lambda r: [])["complete"]


def test_store_index_and_cli(tmp_path, cli):
    store = Store(cli.home)
    for i, (gid, rank) in enumerate([("job-1", 0), ("job-10", 0), ("job-1", 1), (None, None)]):
        run = _run(f"01JRUN{i:020d}", rank, world=2, gid=gid)
        if gid is None:
            run["group"] = None
        run.update(command=["true"], name=None, exit_code=0, counts=None)
        store.finish_run(run, FILES.get(f"R{i + 1}", []), [])
    assert store.group_runs("job-1") == ["01JRUN" + "0" * 20, "01JRUN" + "0" * 19 + "2"]
    assert store.group_runs("job") == []
    store.close()
    doc = cli.json("show", "group:job-1")
    assert set(doc) >= {"group", "source", "ranks", "nodes", "inputs", "outputs", "complete",
                        "missing"}
    assert doc["complete"] and [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert [e["id"][-1] for e in cli.json("log", "--group", "job-1")] == ["2", "0"]
    assert cli("show", "group:job-1").stdout.split()[:2] == ["group", "job-1"]
    assert "no run of group" in one_line_error(cli("show", "group:nope", check=False))


def test_bad_group_flag_is_one_line(cli):
    assert "--group" in one_line_error(cli("run", "--group", " ", "--", "true", check=False))


@pytest.mark.capture
def test_ranks_of_a_job_recorded(roar):
    data = roar.cwd / "shard"
    data.write_text("shared input\n")
    for rank in (0, 1):
        env = roar.env(SLURM_JOB_ID="777", SLURM_PROCID=str(rank), SLURM_NTASKS="2",
                       SLURM_LOCALID=str(rank))
        p = roar("run", "--", "sh", "-c", f"cat shard > out{rank}", env=env)
        assert p.returncode == 0
    roar("run", "--group", "777", "--", "true")  # a flag naming the same job, no rank
    doc = roar.json("show", "group:777")
    assert doc["source"] in ("slurm", "flag") and doc["world_size"] == 2
    assert [r["rank"] for r in doc["ranks"]] == [0, 1, None] and doc["complete"]
    assert [i["path"] for i in doc["inputs"]] == [str(data)]
    assert len(doc["inputs"][0]["runs"]) == 2
    assert sorted(o["path"] for o in doc["outputs"]) == [str(roar.cwd / "out0"),
                                                         str(roar.cwd / "out1")]
    run = roar.json("show", doc["ranks"][1]["run"])
    assert run["id"] == doc["ranks"][1]["run"]
    assert len(roar.json("log", "--group", "777")) == 3
