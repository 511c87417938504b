"""Pending hashes: the background job `roar run` starts when some hashes were
still pending at the end of a run (roar/record/pending.py) fills them in, then
pushes the completed run to the shared store, if one is configured; `roar
pending` lists the runs still waiting and `--resume` finishes them here. It
lives at the top because it joins the record layer (hashing) and the shared
layer (the push); the job is `python -m roar.cli.fill RUN_ID`."""

from __future__ import annotations

import sys

import click

from roar.cli.output import fail, hash_progress, human_size, print_json
from roar.record.pending import fill, pending_runs
from roar.record.store import RefError, Store, StoreError
from roar.shared.outbox import kick


def main() -> None:
    run_id = sys.argv[1]
    with Store() as store:
        print("filling", flush=True)  # started: roard waits for this line
        fill(store, run_id)
        kick(store.home)  # the late hashes re-queued the run


@click.command()
@click.argument("run_ref", required=False)
@click.option("--resume", is_flag=True,
              help="Hash what is pending now, here (runs whose background job is gone, e.g. "
                   "ended with a batch job); runs another job is hashing are left to it.")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: [{run, name, started_at, files, hashing, progress}].")
def pending(run_ref, resume, as_json):
    """Runs whose content hashes are still being computed (huge inputs or
    outputs), and whether a background job is at work on each."""
    def waiting() -> list[dict]:
        return [r for r in pending_runs(store) if rid is None or r["run"] == rid]

    try:
        store = Store()
        rid = store.resolve_run(run_ref) if run_ref else None
        runs = waiting()
    except (StoreError, RefError) as e:
        fail(str(e))
    if resume:
        progress = hash_progress()
        for r in runs:
            if r["hashing"]:
                continue
            try:
                r["filled"] = fill(store, r["run"], progress)
            except StoreError as e:
                fail(str(e))
            kick(store.home)
        if progress:
            progress.clear()
        runs = waiting()
    if as_json:
        print_json(runs)
        return
    if not runs:
        click.echo("no run has pending hashes")
        return
    for r in runs:
        state = "hashing now" if r["hashing"] else "no job at work: roar pending --resume"
        p = r.get("progress")
        if p:
            state += (f" ({p['file']}/{p['files']}: {human_size(p['bytes_done'])} of "
                      f"{human_size(p['bytes'])} of {p['path']})")
        click.echo(f"{r['run'][:10]}  {(r['started_at'] or '')[:19]}  {len(r['files'])} "
                   f"file(s)  {state}")
        for f in r["files"][:5]:
            click.echo(f"    {f['role']:<7} {f['path']}")
        if len(r["files"]) > 5:
            click.echo(f"    (+{len(r['files']) - 5} more)")


def register(cli: click.Group) -> None:
    cli.add_command(pending)


if __name__ == "__main__":
    main()
