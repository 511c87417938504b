"""`roar request ...`: file, list, show, review and wait on training requests.
Thin commands over roar.requests.training; user errors are one line and exit 2.
roar.requests.training is imported inside the commands: every roar command loads
this module, only these need that one."""

from __future__ import annotations

import os
import shlex
import sys

import click

from roar.cli.output import fail, print_json
from roar.record.store import Store, StoreError


def _store(readonly: bool = True) -> Store:
    try:
        return Store(readonly=readonly)
    except StoreError as e:
        fail(str(e))


def _money(value, currency) -> str:
    return "?" if value is None else f"{value:.2f} {currency or ''}".rstrip()


def _duration(hours: float) -> str:
    seconds = hours * 3600
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{hours:.2f} h"


def _compute(doc: dict) -> str:
    gpus = f"{doc['gpus']} x {doc['gpu_type'] or 'GPU'}" if doc["gpus"] else "no GPU"
    line = f"{gpus} for {doc['hours']:g} h"
    if doc["gpus"]:
        line += f" = {doc['gpus'] * doc['hours']:g} GPU-hours"
    return line + f", est. {_money(doc['estimated_cost'], doc.get('currency'))}"


def _show(doc: dict) -> None:
    click.echo(f"request  {doc['id']}  {doc['status']}")
    click.echo(f"by       {doc['requester']}@{doc.get('host')}  {doc['created_at'][:19]}")
    for i, d in enumerate(doc["datasets"]):
        files = "" if d.get("files") is None else f"  ({d['files']} files)"
        click.echo(f"{'datasets' if i == 0 else '':<8} {d['hash'][:16]}  {d['path']}{files}")
    click.echo(f"compute  {_compute(doc)}")
    click.echo(f"why      {doc['rationale']}")
    if doc.get("command"):
        at = f"  (commit {doc['commit'][:12]})" if doc.get("commit") else ""
        click.echo(f"command  {shlex.join(doc['command'])}{at}")
    for i, r in enumerate(doc["reviews"]):
        note = f"  {r['comment']}" if r.get("comment") else ""
        click.echo(f"{'reviews' if i == 0 else '':<8} {r['by']:<12} {r['decision']:<8} "
                   f"{r['at'][:19]}  via {r['via']}{note}")
    for why in doc.get("waiting_because") or []:
        if doc["status"] == "pending":
            click.echo(f"waiting  {why}")
    for d in doc.get("duplicates") or []:
        click.echo(f"similar  {d['kind']} {d['id']} ({d['status']}, {d['requester']})")
    if doc.get("run"):
        used = "" if doc.get("gpu_hours") is None else (
            f"  {_duration(doc['duration_hours'])}, {doc['gpu_hours']:.4g} GPU-hours, cost "
            f"{_money(doc['cost'], doc.get('currency'))}")
        click.echo(f"run      {doc['run']}{used}")
    for i, o in enumerate(doc.get("outputs") or []):
        click.echo(f"{'outputs' if i == 0 else '':<8} {o['hash'][:16]}  {o['path']}")
    for c in doc.get("dataset_check") or []:
        flag = "MISMATCH " if c["status"] in ("changed", "not_read") else ""
        click.echo(f"check    {flag}{c['status']:<8} {c['path']}  ({c['files_read']} file(s) "
                   f"read, {c['changed_count']} differ from the filed version)")


@click.group("request")
def request_group():
    """Training requests: file a run's datasets, compute, budget and rationale
    before it starts; a policy or a reviewer approves it."""


@request_group.command("create", context_settings={"allow_interspersed_args": False})
@click.option("--dataset", "datasets", multiple=True, required=True, metavar="PATH",
              help="A file or directory the run trains on (repeatable); pinned by content.")
@click.option("--gpus", type=int, required=True, help="How many GPUs.")
@click.option("--gpu-type", help="GPU type, as named in the policy's rates.")
@click.option("--hours", type=float, required=True, help="Wall-clock hours requested.")
@click.option("--rationale", required=True, help="Why this run is needed.")
@click.option("--command", "command_line", metavar="CMD",
              help="The command the run will execute (or give it after --).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create(datasets, gpus, gpu_type, hours, rationale, command_line, as_json, command):
    """File a request: roar request create --dataset data/ --gpus 2 --hours 4 --rationale ..."""
    from roar.requests import training as requests

    if command_line and command:
        fail("give the command either with --command or after --, not both")
    argv = shlex.split(command_line) if command_line else list(command)
    store = _store(readonly=False)
    try:
        doc, warnings = requests.create(store, list(datasets), gpus, hours, rationale,
                                        gpu_type=gpu_type, command=argv or None)
    except requests.RequestError as e:
        fail(str(e))
    for w in warnings:
        click.echo(f"roar: warning: {w}", err=True)
    if as_json:
        print_json(requests.public(doc))
    else:
        _show(doc)


@request_group.command("list")
@click.option("--status", help="Only this status (pending, approved, denied, running, "
                                "resolved).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_requests(status, as_json):
    """Requests, newest first."""
    from roar.requests import training as requests

    if status and status not in requests.STATUSES:
        fail(f"unknown status '{status}' (one of {', '.join(requests.STATUSES)})")
    try:
        store = Store(readonly=True)
    except StoreError as e:
        if as_json and "no roar store" in str(e):
            print_json([])
            return
        fail(str(e))
    docs = [d for d in requests.iter_requests(store) if not status or d["status"] == status]
    docs.reverse()
    if as_json:
        print_json([requests.public(d) for d in docs])
        return
    for d in docs:
        flag = "  DATASET MISMATCH" if d.get("dataset_mismatch") else ""
        click.echo(f"{d['id'][:10]}  {d['created_at'][:19]}  {d['status']:<8}  "
                   f"{d['requester'][:12]:<12}  {_compute(d)}  {d['rationale'][:40]}{flag}")


@request_group.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(request_id, as_json):
    """One request: datasets, budget, reviews and, once run, its result."""
    from roar.requests import training as requests

    store = _store()
    try:
        doc = requests.find(store, request_id)
    except requests.RequestError as e:
        fail(str(e))
    if as_json:
        print_json(requests.public(doc))
    else:
        _show(doc)


def _review(request_id: str, decision: str, text: str | None, as_json: bool) -> None:
    from roar.requests import training as requests

    store = _store()
    try:
        doc = requests.review_via_daemon(store.home, request_id, decision, text)
        if doc is None:  # no daemon: the OS user of this process decides
            doc = requests.review(store, request_id, decision, text, os.getuid(), "local")
    except requests.RequestError as e:
        fail(str(e))
    _print_status(doc, as_json)


def _print_status(doc: dict, as_json: bool) -> None:
    from roar.requests import training as requests

    if as_json:
        print_json(requests.public(doc))
    else:
        click.echo(f"request {doc['id']} is {doc['status']}")


@request_group.command("approve")
@click.argument("request_id")
@click.option("--comment", help="A note kept with the review.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def approve(request_id, comment, as_json):
    """Approve a request (reviewers named in the policy; never its requester)."""
    _review(request_id, "approve", comment, as_json)


@request_group.command("deny")
@click.argument("request_id")
@click.option("--reason", required=True, help="Why, for the requester.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deny(request_id, reason, as_json):
    """Deny a pending or approved (not yet run) request."""
    _review(request_id, "deny", reason, as_json)


@request_group.command("wait")
@click.argument("request_id")
@click.option("--until", type=click.Choice(["decided", "resolved"]), default="decided",
              show_default=True, help="Wait for the review, or for the run's result too.")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 3).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def wait(request_id, until, timeout, as_json):
    """Block until a request is decided: exit 0 approved (or resolved), 1 denied,
    3 on timeout."""
    from roar.requests import training as requests

    store = _store()
    try:
        doc = requests.wait(store, request_id, until, timeout)
    except requests.WaitTimeout as e:
        fail(str(e), 3)
    except requests.RequestError as e:
        fail(str(e))
    _print_status(doc, as_json)
    sys.exit(1 if doc["status"] == "denied" else 0)


@request_group.command("init")
@click.option("--group", help="Share the store with this OS group (a team store).")
def init(group):
    """Create the store and a starter policy ($ROAR_HOME/policy.toml)."""
    from roar.record.store import default_home
    from roar.requests import training as requests

    try:
        done = requests.init_store(default_home(), group)
    except (requests.RequestError, StoreError) as e:
        fail(str(e))
    for line in done or [f"{default_home()} is ready (policy and store already there)"]:
        click.echo(line, err=True)


def register(cli) -> None:
    cli.add_command(request_group)
