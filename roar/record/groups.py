"""Job groups: which distributed job a run belongs to, and its place in it.

A torchrun or Slurm job on several nodes is several `roar run`s (one per
rank, or one per node). Each run records a `group` object on its document:

    {"id": G, "source": "flag|slurm|torchelastic|master",
     "rank": r, "local_rank": l, "world_size": w}

found, first match wins, from: `roar run --group G`; SLURM_JOB_ID (an array
task is `<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>`, as Slurm names it);
TORCHELASTIC_RUN_ID (unless torchrun's default `none`); MASTER_ADDR:MASTER_PORT
with a start-time window (see master_group). rank / local_rank / world_size
come from the launcher's variables when present (None otherwise).
"""

from __future__ import annotations

import time

# a MASTER_ADDR:MASTER_PORT pair is reused by job after job: ranks of one job
# start within seconds of each other, so the pair plus the start time rounded
# down to this window names one job (ranks straddling a boundary split in two:
# pass --group when that matters)
MASTER_WINDOW_S = 600

# the first variable present wins (torchrun/torch.distributed, Slurm, Open MPI, MPICH/PMI)
RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK",
                   "MPI_LOCALRANKID")
WORLD_SIZE_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

SOURCES = ("flag", "slurm", "torchelastic", "master")


def _int(env: dict, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                return None  # present but not a number: unknown, never a guess
    return None


def master_group(addr: str, port: str, started_s: float) -> str:
    """The group id of a job known only by its rendezvous address."""
    window = int(started_s) // MASTER_WINDOW_S * MASTER_WINDOW_S
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(window))
    return f"{addr}:{port}@{stamp}"


def detect(env: dict, flag: str | None = None, started_s: float | None = None) -> dict | None:
    """The group object of a run started with environment `env` (None: no job)."""
    group_id, source = None, None
    if flag:
        group_id, source = flag, "flag"
    elif env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        group_id, source = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}", "slurm"
    elif env.get("SLURM_JOB_ID"):
        group_id, source = env["SLURM_JOB_ID"], "slurm"
    elif env.get("TORCHELASTIC_RUN_ID") and env["TORCHELASTIC_RUN_ID"] != "none":
        group_id, source = env["TORCHELASTIC_RUN_ID"], "torchelastic"
    elif env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        group_id = master_group(env["MASTER_ADDR"], env["MASTER_PORT"],
                                time.time() if started_s is None else started_s)
        source = "master"
    if group_id is None:
        return None
    return {"id": group_id, "source": source, "rank": _int(env, RANK_VARS),
            "local_rank": _int(env, LOCAL_RANK_VARS),
            "world_size": _int(env, WORLD_SIZE_VARS)}


def check_flag(value: str) -> str | None:
    """Why a --group value is refused (None: fine). Ids are store keys and
    `group:` references: printable, no NUL, not empty, bounded."""
    if not value.strip():
        return "--group needs a non-empty name"
    if len(value.encode()) > 200:
        return "--group names are at most 200 bytes"
    if any(not c.isprintable() for c in value):
        return "--group names must be printable"
    return None
