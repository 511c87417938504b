"""`roar inputs`, `roar outputs` and `roar diff`: parse, ask roar.query.lineage, print.

Registered into the main command group by roar.cli.main at import.
"""

from __future__ import annotations

import os
import sys

import click

from roar.cli.output import fail, print_json, query_progress
from roar.record.store import RefError, Store, StoreError

# `roar inputs --contains ... --exit-code`: 2 is left to errors (fail())
ANSWER_EXIT = {"yes": 0, "no": 1, "unknown": 3}


def _resolve(store: Store, ref: str, progress=None) -> tuple[str, str]:
    from roar.query.views import resolve

    return resolve(store, ref, progress)


def _target(ref: str, local: bool = False, progress=None) -> tuple[Store, tuple[str, str]]:
    from roar.shared.backend import query_store

    store = query_store(local)
    return store, _resolve(store, ref, progress)


# -- human output helpers ----------------------------------------------------------


def _p(path: str | None) -> str:
    """A path as the user would type it from here."""
    if not path:
        return "-"
    here = os.getcwd().rstrip("/") + "/"
    return path.removeprefix(here)


def _h(h: str | None) -> str:
    return h[:16] if h else "-"


def _size(n) -> str:
    from roar.cli.output import human_size

    return human_size(n)


def _val(v) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, dict) and "redacted" in v:
        return "<redacted " + v["redacted"].split(":")[-1][:8] + ">"
    if isinstance(v, list):
        v = " ".join(map(str, v))
    s = str(v)
    if len(s) == 32 and all(c in "0123456789abcdef" for c in s):
        return s[:12]
    return s if len(s) <= 40 else s[:37] + "..."


def _target_line(t: dict) -> str:
    if t["kind"] == "run":
        name = f" ({t['name']})" if t.get("name") else ""
        return f"run {t['id'][:10]}{name}  {t['step']}  {' '.join(t['command'] or [])}"
    paths = ", ".join(_p(p) for p in t["paths"][:3]) or "(no recorded path)"
    made = ", ".join(r[:10] for r in t["produced_by"]) or "no recorded run"
    return f"content {_h(t['hash'])}  {paths}  (written by {made})"


def _target_short(t: dict) -> str:
    if t["kind"] == "run":
        return f"run {t['id'][:10]} ({t['step']})"
    return _p(t["paths"][0]) if t["paths"] else f"content {_h(t['hash'])}"


def _state(doc: dict, what: str) -> None:
    n = len(doc.get("runs", []))
    if doc["complete"]:
        click.echo(f"{what:<9}{n} run(s), capture complete")
        return
    click.echo(f"{what:<9}{n} run(s), INCOMPLETE:")
    for r in doc["reasons"]:
        click.echo(f"           - {r}")


# -- inputs ----------------------------------------------------------------------


def _show_inputs(doc: dict, files: bool) -> None:
    click.echo(f"target   {_target_line(doc['target'])}")
    _state(doc, "upstream")
    sets = doc["datasets"]
    if sets:
        click.echo(f"datasets ({len(sets)}):")
        for ds in sets:
            made = ", ".join(r[:10] for r in ds["produced_by"][:2]) or "-"
            if len(ds["produced_by"]) > 2:
                made += f" +{len(ds['produced_by']) - 2}"
            if 0 < ds["produced"] < ds["count"]:
                made += f" ({ds['produced']} of {ds['count']})"
            click.echo(f"  depth {ds['depth']:<2} {_h(ds['version'])}  {ds['count']:>5} files "
                       f"{_size(ds['size']):>7}  made by {made:<10}  {_p(ds['path'])}/")
            if files:
                for m in ds["members"]:
                    click.echo(f"             {_h(m['hash'])}  {_size(m['size']):>7}  "
                               f"{m['path']}")
    rest = [e for e in doc["inputs"] if not e["dataset"]]
    hidden = len(doc["inputs"]) - len(rest)
    note = f"  (+{hidden} in datasets{'' if files else '; --files lists them'})" if hidden else ""
    click.echo(f"inputs ({len(rest)}){note}:")
    if rest:
        click.echo(f"  {'DEPTH':<5}  {'CONTENT':<16}  {'SIZE':>7}  {'MADE BY':<10}  PATH")
    for e in rest:
        extra = ""
        if e["kind"] != "data":
            extra += f"  ({e['kind']})"
        if len(e["paths"]) > 1:
            extra += f"  (also as {', '.join(_p(p) for p in e['paths'][1:3])})"
        if e.get("status"):
            extra += f"  [{e['status']}]"
        made = (e["produced_by"] or "-")[:10]
        click.echo(f"  {e['depth']:<5}  {_h(e['hash']):<16}  {_size(e['size']):>7}  "
                   f"{made:<10}  {_p(e['path'])}{extra}")


def _show_contains(doc: dict, what: str) -> None:
    target = _target_short(doc["target"])
    if doc["answer"] == "yes":
        click.echo(f"yes: {what} was read upstream of {target}")
        for e in doc["evidence"]:
            click.echo(f"  depth {e['depth']:<2} run {e['run'][:10]}  {_p(e['path'])}")
        return
    if doc["answer"] == "no":
        click.echo(f"no: {what} was not read by any run upstream of {target} "
                   f"(capture complete)")
    else:
        click.echo(f"unknown: {what} was not found upstream of {target}, but the capture "
                   f"there is incomplete:")
        for r in doc["reasons"]:
            click.echo(f"  - {r}")
    for o in doc.get("other_versions") or []:
        click.echo(f"  note: run {o['run'][:10]} read other content of this path "
                   f"({_h(o['hash'])})")


def _show_contains_dir(doc: dict) -> None:
    click.echo(f"{doc['answer']}: {doc['reached']} of {doc['total']} file(s) of "
               f"{_p(doc['dir'])}/ reached {_target_short(doc['target'])}")
    for f in doc["files"]:
        where = ""
        if f["evidence"]:
            e = f["evidence"][0]
            where = f"  (run {e['run'][:10]}: {_p(e['path'])})"
        elif f.get("other_versions"):
            where = f"  (other content of it read by run {f['other_versions'][0]['run'][:10]})"
        elif f.get("error"):
            where = f"  ({f['error']})"
        click.echo(f"  {f['answer']:<8} {f['path']}{where}")
    if doc["answer"] != "yes" and doc["reasons"]:
        click.echo("unknown because the capture upstream is incomplete:")
        for r in doc["reasons"]:
            click.echo(f"  - {r}")


@click.command()
@click.argument("ref")
@click.option("--files", is_flag=True, help="List the files of each dataset.")
@click.option("--contains", "contains", metavar="FILE|HASH",
              help="Was this content (a file, hashed now, or a content hash) read upstream? "
                   "yes / no / unknown.")
@click.option("--contains-dir", metavar="DIR",
              help="Which files of DIR (by content) were read upstream.")
@click.option("--local", is_flag=True, help="This node's store only, not the shared store.")
@click.option("--exit-code", is_flag=True,
              help="With --contains/--contains-dir: exit 0 for yes, 1 for no, 3 for unknown "
                   "(2 stays an error).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inputs(ref, files, contains, contains_dir, local, exit_code, as_json):
    """Every input that fed REF (a run, an artifact path or a content hash),
    through every upstream run, by content."""
    from roar.query import lineage
    from roar.shared.backend import qualify

    if contains and contains_dir:
        fail("give --contains or --contains-dir, not both")
    if exit_code and not (contains or contains_dir):
        fail("--exit-code answers --contains or --contains-dir")
    # hashing a big file or a directory: a progress line on a terminal
    with query_progress(StoreError, RefError) as progress:
        store, target = _target(ref, local, progress)
        if contains:
            from roar.query.views import content_ref

            h, path = content_ref(store, contains, progress)
            doc = lineage.contains(store, target, h, path)
        elif contains_dir:
            doc = lineage.contains_dir(store, target, contains_dir, progress)
        else:
            doc = lineage.inputs(store, target)
        doc = qualify(store, doc)
    if as_json:
        print_json(doc)
    elif contains:
        _show_contains(doc, f"{_p(doc['path']) if doc['path'] else _h(doc['hash'])}")
    elif contains_dir:
        _show_contains_dir(doc)
    else:
        _show_inputs(doc, files)
    if exit_code:
        sys.exit(ANSWER_EXIT[doc["answer"]])


# -- outputs ---------------------------------------------------------------------


@click.command()
@click.argument("ref")
@click.option("--all", "all_files", is_flag=True,
              help="List every file written into environment locations (installs, builds, "
                   "byte code), not one line per place.")
@click.option("--local", is_flag=True, help="This node's store only, not the shared store.")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output (environment outputs under env_outputs).")
def outputs(ref, all_files, local, as_json):
    """Everything derived from REF, transitively: the runs that read it and
    what they wrote, the runs that read that, and so on."""
    from roar.query import lineage
    from roar.shared.backend import qualify

    with query_progress(StoreError, RefError) as progress:
        store, target = _target(ref, local, progress)
        doc = qualify(store, lineage.outputs(store, target))
    if as_json:
        print_json(doc)
        return
    click.echo(f"target   {_target_line(doc['target'])}")
    _state(doc, "derived")
    out = doc["outputs"]
    click.echo(f"outputs ({len(out)}):")
    if out:
        click.echo(f"  {'DEPTH':<5}  {'CONTENT':<16}  {'SIZE':>7}  {'RUN':<10}  PATH")
    for e in out:
        extra = f"  [{e['status']}]" if e.get("status") else ""
        click.echo(f"  {e['depth']:<5}  {_h(e['hash']):<16}  {_size(e.get('size')):>7}  "
                   f"{e['run'][:10]:<10}  {_p(e['path'])}{extra}")
    env = doc["env_outputs"]
    if env and all_files:
        click.echo(f"environment outputs ({len(env)}):")
        for e in env:
            extra = f"  [{e['status']}]" if e.get("status") not in ("ok", None) else ""
            click.echo(f"  {e['depth']:<5}  {_h(e['hash']):<16}  {_size(e.get('size')):>7}  "
                       f"{e['run'][:10]:<10}  {_p(e['path'])}{extra}")
    elif env:
        from roar.cli.render import env_outputs

        env_outputs(env)
        click.echo("  (each file: --all, or --json)")


# -- diff ------------------------------------------------------------------------


def _change_line(c: dict) -> str:
    kind, key = c["kind"], c["key"]
    if kind in ("step_added", "step_removed"):
        run = c["b"] if kind == "step_added" else c["a"]
        side = "only in b" if kind == "step_added" else "only in a"
        return f"{'step':<9}{c['step']:<18} {side}: run {run[:10]}  {' '.join(c['command'] or [])}"
    label = _p(key) if kind in ("data", "code") else str(key)
    detail = ""
    if c.get("dataset"):
        label += "/ (dataset)"
        parts = [f"{len(c[k])} {k}" for k in ("changed", "added", "removed") if c[k]]
        detail = f"  {', '.join(parts)} of {c['count_a']} -> {c['count_b']} files"
        examples = (c["changed"] + c["added"] + c["removed"])[:3]
        if examples:
            detail += f" (e.g. {', '.join(examples)})"
    if c.get("renamed_from"):
        detail += f"  (was {_p(c['renamed_from'])})"
    if c.get("lines"):
        detail += f"  ({c['lines']})"
    if c.get("derived"):
        detail += "  (made upstream)"
    return f"{kind:<9}{c['step']:<18} {label:<24} {_val(c['a'])} -> {_val(c['b'])}{detail}"


def _show_diff(doc: dict) -> None:
    for side in ("a", "b"):
        t = doc[side]
        state = "" if t["complete"] else "  [upstream capture INCOMPLETE]"
        click.echo(f"{side}  {_target_line(t)}{state}")
    steps = doc["steps"]
    aligned = [s for s in steps if s["a"] and s["b"]]
    shared = sum(1 for s in aligned if s["a"] == s["b"])
    click.echo(f"steps: {len(aligned)} aligned ({shared} shared), "
               f"{sum(1 for s in steps if not s['b'])} only in a, "
               f"{sum(1 for s in steps if not s['a'])} only in b")
    changes = doc["changes"]
    noise = [c for c in changes if c["kind"] == "env" and c.get("noise")]
    shown = [c for c in changes if c not in noise]
    if not changes:
        click.echo("no changes")
        return
    click.echo(f"changes ({len(changes)}):")
    for c in shown:
        click.echo("  " + _change_line(c))
    if noise:
        names = sorted({c["key"] for c in noise})
        click.echo(f"  {'env':<9}{'(shell noise)':<18} {', '.join(names[:8])}"
                   + (f" (+{len(names) - 8})" if len(names) > 8 else ""))


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--local", is_flag=True, help="This node's store only, not the shared store.")
@click.option("--exit-code", is_flag=True,
              help="Exit 1 when A and B differ (shell-noise environment variables aside), "
                   "0 when they do not, as git diff --exit-code.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff(a, b, local, exit_code, as_json):
    """What changed between A and B (runs or artifacts) across their upstream
    DAGs: data, args, code, command, exit status, packages, environment."""
    from roar.query import lineage

    try:
        store, target_a = _target(a, local)
        doc = lineage.diff(store, target_a, _resolve(store, b))
    except (StoreError, RefError) as e:
        fail(str(e))
    if as_json:
        print_json(doc)
    else:
        _show_diff(doc)
    if exit_code:
        differ = any(not (c["kind"] == "env" and c.get("noise")) for c in doc["changes"])
        sys.exit(1 if differ else 0)


def register(cli: click.Group) -> None:
    for cmd in (inputs, outputs, diff):
        cli.add_command(cmd)
