"""The roar command line. Commands are thin: parse, call the library, print.

roar's own messages go to stderr; the traced command owns stdout/stderr.
User errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from roar.cli.output import RUN_REFUSED, fail, print_json, query_progress
from roar.record.store import RefError, StoreError


def _store(local: bool = False):
    """The store queries read: the shared one when configured, unless --local."""
    from roar.shared.backend import query_store

    return query_store(local)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="roar")
def cli():
    """roar records what your ML runs read and wrote, by content, with eBPF."""


RUN_EPILOG = """\b
Exit status:
  the command's own status (128+N when it died of signal N);
  125  roar failed or refused before the command started (bad option,
       dirty git tree, store or daemon problem, refused training request);
  126  the command exists but cannot be executed;
  127  the command was not found.
\b
The command's environment gets ROAR_RUN_ID (this run's id): a tracker or
notebook can store it, and `roar links` / `roar log --link` find it back.
\b
Environment: ROAR_HOME (the store, default ~/.roar), ROAR_SOCKET (roard's
socket, default /run/roar/roard.sock), ROAR_HASH_WAIT (seconds the end of a
run waits for hashes before handing them to background hashing, default 5),
ROAR_TIMING (print start-up timings). See the README for every variable.
"""


class _RunCommand(click.Command):
    """`roar run`, whose own usage errors exit 125 (as env, timeout and nice
    do): a script can tell them from the command's exit status."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            e.exit_code = RUN_REFUSED
            raise


@cli.command(cls=_RunCommand, epilog=RUN_EPILOG,
             context_settings={"allow_interspersed_args": False})
@click.option("--name", help="A name for the run.")
@click.option("--allow-dirty", is_flag=True, help="Run from a dirty git tree; store the patch.")
@click.option("--no-git", is_flag=True,
              help="Record no git state (and do not refuse when git fails).")
@click.option("--linger", type=float, default=None,
              help="Seconds leftover processes may outlive the first one (default 5).")
@click.option("--request", "request_id", help="The approved training request this run fulfils.")
@click.option("--group", help="The distributed job this run is part of (default: from "
                              "SLURM_JOB_ID, TORCHELASTIC_RUN_ID or MASTER_ADDR:MASTER_PORT).")
@click.option("--audit", is_flag=True,
              help="Audit the session: alerts, secret reads, outside writes (roar audit RUN).")
@click.option("--policy", type=click.Path(dir_okay=False),
              help="Audit policy (TOML, docs/audit.md); implies --audit.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(name, allow_dirty, no_git, linger, request_id, group, audit, policy, command):
    """Run COMMAND traced: roar run [--name N] -- python train.py ...

    Options go before the command (or before `--`); an option roar does not
    know is refused, never run as the command."""
    from roar.cli.run import cli_run

    cli_run(name=name, allow_dirty=allow_dirty, no_git=no_git, linger=linger,
            request_id=request_id, command=list(command), group=group, audit=audit,
            policy=policy)


@cli.command()
@click.option("-n", "limit", type=int, default=20, show_default=True, help="How many runs.")
@click.option("--link", "link", metavar="TRACKER|TEXT",
              help="Only runs with a tracker link (wandb, mlflow, tensorboard, huggingface) "
                   "or a link whose id, url, project or path contains TEXT.")
@click.option("--group", "group", metavar="G", help="Only the runs of job group G.")
@click.option("--local", is_flag=True, help="This node's store only, not the shared store.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def log(limit, link, group, local, as_json):
    """Recorded runs, newest first."""
    from roar.query.links import matches
    from roar.query.views import log_entry

    try:
        store = _store(local)
    except StoreError as e:
        if as_json and "no roar store" in str(e):
            print_json([])
            return
        fail(str(e))
    entries = []
    runs = store.iter_runs() if group is None else (
        store.get_run(rid) for rid in reversed(store.group_runs(group)))
    for run in runs:
        if len(entries) >= limit:
            break
        if link and not matches(run, link):
            continue
        entries.append(log_entry(run))
    if as_json:
        print_json(entries)
        return
    for e in entries:
        state = {True: "complete", False: "INCOMPLETE", None: ""}[e["complete"]]
        c = e.get("counts") or {}
        io = f"{c.get('inputs', '?')} in / {c.get('outputs', '?')} out" if c else ""
        cmd = " ".join(e["command"] or [])
        if len(cmd) > 60:
            cmd = cmd[:57] + "..."
        click.echo(f"{e['id'][:10]}  {e['started_at'][:19]}  {e['status']:<11}  "
                   f"exit {str(e['exit_code']):<4} {io:<16} {state:<10}  "
                   f"{(e['name'] or '')[:16]:<16} {cmd}")


@cli.command()
@click.argument("ref")
@click.option("--local", is_flag=True, help="This node's store only, not the shared store.")
@click.option("--explain", is_flag=True,
              help="Why each file of the run (or this path) got its kind and role: the rule "
                   "and where it is written.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(ref, local, explain, as_json):
    """The record of a run (id or prefix), an artifact (path or content hash)
    or a distributed job (group:G)."""
    from roar.cli import render
    from roar.query import views
    from roar.record.remote import is_url

    if explain:
        try:
            store = _store(local)
            if os.path.lexists(ref) or ref.startswith("/"):
                doc = views.explain_path(store, ref)
            else:
                doc = views.explain_run(store, store.resolve_run(ref))
        except (StoreError, RefError) as e:
            fail(str(e))
        if as_json:
            print_json(doc)
        else:
            render.explain(doc)
        return

    if ref.startswith("group:"):
        from roar.query.groups import local_group

        try:
            doc = local_group(_store(local), ref[len("group:"):])
        except (StoreError, RefError) as e:
            fail(str(e))
        if as_json:
            print_json(doc)
        else:
            render.group(doc)
        return
    # `roar show BIGFILE` hashes it: a progress line on a terminal
    with query_progress(StoreError, RefError) as progress:
        store = _store(local)
        if is_url(ref):
            kind, key = views.resolve_remote(store, ref)
            doc = views.remote_view(store, key)
        else:
            kind, key = views.resolve(store, ref, progress)
            doc = views.run_view(store, key) if kind == "run" else views.artifact_view(
                store, key, ref)
    if as_json:
        print_json(doc)
    elif kind == "run":
        render.run(doc)
    elif kind == "remote":
        render.remote(doc)
    else:
        render.artifact(doc)


@cli.command()
@click.argument("run_ref")
@click.option("--all", "all_files", is_flag=True, help="Include environment and pseudo files.")
@click.option("--local", is_flag=True, help="This node's store only, not the shared store.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trace(run_ref, all_files, local, as_json):
    """The process tree of a run and what each process touched."""
    from roar.cli import render
    from roar.query import views

    try:
        store = _store(local)
        doc = views.trace_view(store, store.resolve_run(run_ref), all_files)
    except (StoreError, RefError) as e:
        fail(str(e))
    if as_json:
        print_json(doc)
    else:
        render.trace(doc)


@cli.command()
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: {ok, checks: [{check, status, detail, fix}]}.")
def doctor(as_json):
    """Check everything roar needs on this machine, one line each (exit 1 if
    something roar needs is missing)."""
    from roar.cli import doctor as d

    if as_json:
        ok, found = d.checks()
        print_json({"ok": ok, "checks": found})
    else:
        ok = d.run_checks()
    sys.exit(0 if ok else 1)


@cli.group()
def daemon():
    """Manage roard, the privileged tracing daemon."""


@daemon.command("start")
def daemon_start():
    """Start roard in the background."""
    from roar import daemon as d

    try:
        pid = d.start_background()
    except d.DaemonError as e:
        fail(str(e))
    click.echo(f"roard running (pid {pid}, socket {d.socket_path()})", err=True)


@daemon.command("stop")
def daemon_stop():
    """Stop roard."""
    from roar import daemon as d

    try:
        d.stop()
    except d.DaemonError as e:
        fail(str(e))
    click.echo("roard stopped", err=True)


@daemon.command("status")
@click.option("--json", "as_json", is_flag=True)
def daemon_status(as_json):
    """Whether roard is running (exit 0) or not (exit 1)."""
    from roar.capture.session import daemon_status as status

    st = status()
    if as_json:
        print_json(st)
    elif st is None:
        click.echo("roard is not running", err=True)
    else:
        click.echo(f"roard running: pid {st['pid']}, {st['active_runs']} active run(s), probes "
                   f"{'attached' if st['attached'] else 'detached'}, up {st['uptime']:.0f}s")
    sys.exit(0 if st else 1)


def _register_feature_commands() -> None:
    """Commands that live in their own modules (lineage queries, requests)."""
    import importlib

    for module in ("roar.cli.lineage", "roar.cli.requests", "roar.cli.reproduce",
                   "roar.cli.audit", "roar.cli.sync", "roar.cli.fill"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(cli)


_register_feature_commands()


def main():
    import lmdb

    try:
        cli(standalone_mode=True, prog_name="roar")
    except KeyboardInterrupt:
        sys.exit(130)
    except lmdb.Error as e:  # random bytes in data.mdb show only when LMDB reads them
        fail(f"the roar store is damaged ({type(e).__name__}: {e}); it cannot be read "
             f"(roar doctor)", 1)


if __name__ == "__main__":
    main()
