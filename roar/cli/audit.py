"""`roar audit`, `roar attach`, `roar detach`, `roar watch` and `roar verify`:
agent sessions. Parse, call roar.query.audit / roar.record.audit /
roar.capture, print."""

from __future__ import annotations

import click

from roar.cli.output import fail, print_json
from roar.record.store import RefError, Store, StoreError


def _h(h) -> str:
    return h[:16] if h else "-"


@click.command("audit")
@click.argument("run_ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (complete).")
def audit_cmd(run_ref, as_json):
    """The audit report of a session: commands, reads, writes, secrets, network, alerts."""
    from roar.query.audit import report

    try:
        store = Store(readonly=True)
        doc = report(store, store.resolve_run(run_ref))
    except (StoreError, RefError) as e:
        fail(str(e))
    if as_json:
        print_json(doc)
        return
    _render(doc)


def _render(doc: dict) -> None:
    echo = click.echo
    state = "complete" if doc["complete"] else "INCOMPLETE"
    echo(f"session  {doc['run']} ({doc['kind']}), {doc['status']}, exit {doc['exit_code']}, "
         f"{state}; membership {doc['membership']}")
    for r in doc["incomplete_reasons"]:
        echo(f"         - {r}")
    if doc["workspace"]:
        echo(f"workspace {doc['workspace']}")
    if not doc["audited"]:
        echo("         (recorded without --audit: no alerts, pre-images or executable hashes)")
    echo(f"alerts ({len(doc['alerts'])}):")
    for a in doc["alerts"]:
        echo(f"  {a['ts'][11:23]}  {a['action']:<5}  {a['rule']:<20}  pid {a['pid']:<7} "
             f"{a['detail']}")
    if doc.get("kill"):
        k = doc["kill"]
        echo(f"killed by policy: {k['rule']} (decided {k['decided_ms']} ms after the syscall"
             + (f", session ended at {k['killed_ms']} ms" if k.get("killed_ms") else "") + ")")
    echo(f"commands ({len(doc['commands'])}):")
    for c in doc["commands"]:
        ex = f"exit {c['exit']}" if c["signal"] is None else f"signal {c['signal']}"
        argv = " ".join(c["argv"] or [])
        echo(f"  {c['pid']:>7}  {_h(c['exe_hash'])}  {ex:<9}  {argv[:100]}")
    echo(f"secret reads ({len(doc['secret_reads'])}):")
    for p in doc["secret_reads"]:
        echo(f"  {p}")
    echo(f"writes outside the workspace ({len(doc['outside_workspace'])}):")
    for p in doc["outside_workspace"]:
        echo(f"  {p}")
    echo(f"network ({len(doc['network'])}):")
    for n in doc["network"]:
        where = n["address"] if n["port"] is None else f"{n['address']}:{n['port']}"
        echo(f"  {n['family']:<5}  {where}")
    echo(f"reads ({len(doc['reads'])}):")
    for r in doc["reads"]:
        echo(f"  {_h(r['hash'])}  {r['path']}")
    echo(f"writes ({len(doc['writes'])}): before -> after")
    for w in doc["writes"]:
        echo(f"  {_h(w['before'])} -> {_h(w['after'])}  {w['path']}")
    for title in ("created", "deleted"):
        echo(f"{title} ({len(doc[title])}):")
        for p in doc[title]:
            echo(f"  {p}")
    echo(f"renamed ({len(doc['renamed'])}):")
    for r in doc["renamed"]:
        echo(f"  {r['from']} -> {r['to']}")
    g = doc["git"]
    for when in ("before", "after"):
        s = g.get(when)
        if s:
            echo(f"git {when:<6} {(s.get('commit') or 'no commit')[:12]} "
                 f"{s.get('branch') or '(detached)'}{' dirty' if s.get('dirty') else ''}")


@click.command("attach")
@click.argument("pid", type=int)
@click.option("--name", help="A name for the session's run.")
@click.option("--policy", type=click.Path(dir_okay=False), help="Audit policy (docs/audit.md).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines on stdout: attached (at once), ended.")
def attach_cmd(pid, name, policy, as_json):
    """Record a running process tree from now on (an agent session), audited."""
    from roar.cli.attach import cli_attach

    cli_attach(pid, name, policy, as_json)


@click.command("detach")
@click.argument("run_ref")
def detach_cmd(run_ref):
    """Stop recording an attached session; its processes go on untouched."""
    from roar.cli.attach import AttachError, detach

    try:
        run_id = detach(run_ref)
    except AttachError as e:
        fail(str(e))
    click.echo(f"roar: detached {run_id}", err=True)


@click.command("watch")
@click.argument("run_ref", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Every live audited session of this store.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (docs/audit.md).")
def watch_cmd(run_ref, all_runs, as_json):
    """Follow an audited session live: execs, files, connects, alerts."""
    import json

    from roar.query.audit import follow, live_streams

    try:
        store = Store(readonly=True)
        if all_runs:
            paths = live_streams(store.home)
        elif run_ref:
            paths = live_streams(store.home, store.resolve_run(run_ref))
        else:
            fail("give a run (or --all)")
    except (StoreError, RefError) as e:
        fail(str(e))
    if not paths:
        fail("no live audited session" + (f" {run_ref}" if run_ref else "") +
             " (roar export RUN --format jsonl gives a finished one's events)")
    try:
        for ev in follow(paths):
            if as_json:
                click.echo(json.dumps(ev, separators=(",", ":")))
            else:
                click.echo(_line(ev))
    except (BrokenPipeError, KeyboardInterrupt):
        pass


def _line(ev: dict) -> str:
    t = ev.get("ts", "")[11:23]
    run = (ev.get("run") or "")[:10]
    kind = ev["type"]
    if kind == "exec" or kind == "attached":
        what = " ".join(ev.get("argv") or [])
    elif kind == "file":
        what = f"{ev['op']:<7} {ev['path']}"
    elif kind == "connect":
        what = ev["address"] if ev.get("port") is None else f"{ev['address']}:{ev['port']}"
    elif kind == "alert":
        what = f"{ev['action'].upper()} {ev['rule']}: {ev['detail']}"
    elif kind == "skipped":
        what = f"{ev['count']} event(s) skipped (the record stays complete)"
    else:
        what = ""
    return f"{t}  {run}  {kind:<8} {ev.get('pid', ''):>7}  {what}"


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="{ok, checked, problems: [{run, problem}]}")
def verify_cmd(as_json):
    """Check the store against the tamper-evident chain roard keeps (exit 1 on problems)."""
    import sys

    from roar.record import chain

    try:
        store = Store(readonly=True)
        doc = chain.verify(store, chain.fetch_entries())
    except (StoreError, chain.ChainError) as e:
        fail(str(e))
    if as_json:
        print_json(doc)
    else:
        click.echo(f"{doc['checked']} run(s) checked against the chain: "
                   + ("ok" if doc["ok"] else f"{len(doc['problems'])} problem(s)"))
        for p in doc["problems"]:
            click.echo(f"  {p['run']}  {p['problem']}")
    sys.exit(0 if doc["ok"] else 1)


def register(cli: click.Group) -> None:
    for cmd in (audit_cmd, attach_cmd, detach_cmd, watch_cmd, verify_cmd):
        cli.add_command(cmd)
