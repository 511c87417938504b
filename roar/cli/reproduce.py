"""`roar reproduce`, `roar links` and `roar export`: parse, ask roar.query.reproduce,
roar.query.links or roar.query.export, print.

Registered into the main command group by roar.cli.main at import.
"""

from __future__ import annotations

import os
import sys

import click

from roar.cli.output import fail, print_json
from roar.record.store import RefError, Store, StoreError

SOURCE_LABEL = {"git": "git", "patch": "patch", "local": "here", "in_place": "in place",
                "elsewhere": "ELSEWHERE", "missing": "MISSING", "empty": "empty",
                "unverified": "unverified", "remote": "remote"}
ACTION_LABEL = {"run": "run", "reuse": "reuse: what later steps need from it is here",
                "skip": "not needed: later steps reuse what they need"}
LISTED = 12  # input lines shown per step; --json has them all


def _p(path: str) -> str:
    here = os.getcwd().rstrip("/") + "/"
    return path.removeprefix(here)


def _target_line(t: dict) -> str:
    if t["kind"] == "run":
        name = f" ({t['name']})" if t.get("name") else ""
        return f"run {t['id'][:10]}{name}  {t['step']}"
    paths = ", ".join(_p(p) for p in t["paths"][:2]) or "(no recorded path)"
    return f"content {t['hash'][:16]}  {paths}"


def _env_line(s: dict) -> str:
    from roar.query.lineage import env_noise
    from roar.query.reproduce import IDENTITY_ENV, ROAR_ENV

    env = s["env"]
    differ = [k for k, v in sorted(env.items()) if isinstance(v, str)
              and k not in IDENTITY_ENV and k not in ROAR_ENV and not env_noise(k)
              and os.environ.get(k) != v]
    line = f"{len(env)} variables recorded"
    if differ:
        shown = ", ".join(f"{k}={env[k] if len(env[k]) <= 24 else env[k][:21] + '...'}"
                          for k in differ[:4])
        line += f"; recorded values that differ here: {shown}" + (f" (+{len(differ) - 4})"
                                                      if len(differ) > 4 else "")
    if s["redacted"]:
        marks = [f"{k} ({'set here' if k in os.environ else 'NOT SET: export it'})"
                 for k in s["redacted"]]
        line += "; secrets: " + ", ".join(marks)
    return line


def _show_plan(doc: dict, ref: str) -> None:
    steps = doc["steps"]
    count = {a: sum(1 for s in steps if s["action"] == a) for a in ("run", "reuse", "skip")}
    click.echo(f"reproduce {_target_line(doc['target'])}")
    summary = f"{len(steps)} step(s): {count['run']} to run"
    if count["reuse"]:
        summary += f", {count['reuse']} reused"
    if count["skip"]:
        summary += f", {count['skip']} not needed"
    if doc["from_scratch"]:
        summary += " (from scratch)"
    click.echo(summary)
    for s in steps:
        name = f" ({s['name']})" if s.get("name") else ""
        click.echo(f"[{s['index']}] {s['step']}  run {s['run'][:10]}{name}  "
                   f"{ACTION_LABEL[s['action']]}")
        repo = s["repo"]
        if s["no_git"]:
            click.echo("    commit   (not recorded in a git work tree)")
        elif s["commit"]:
            patch = " + stored patch (dirty)" if s["patch"] else (" (dirty)" if s["dirty"] else "")
            where = repo["source"] or f"{repo['root']} (commit not found here)"
            click.echo(f"    commit   {s['commit'][:12]}{patch}  in {where}")
        click.echo(f"    cwd      {s['cwd']}")
        click.echo(f"    command  {' '.join(map(str, s['command']))}")
        click.echo(f"    env      {_env_line(s)}")
        interp = s["interpreter"]
        if interp["path"]:
            state = interp.get("version") or ("" if interp["present"] else "NOT HERE")
            click.echo(f"    python   {interp['path']} {state}".rstrip())
        if s["packages"]:
            line = f"{len(s['packages'])} recorded"
            if s["drift"]:
                line += "; DRIFT: " + ", ".join(
                    f"{d['package']} {d['recorded']} -> {d['installed'] or 'not installed'}"
                    for d in s["drift"][:4]) + (f" (+{len(s['drift']) - 4})"
                                                if len(s["drift"]) > 4 else "")
            click.echo(f"    packages {line}")
        by_source: dict[str, int] = {}
        for i in s["inputs"]:
            key = f"from step {i['step']}" if i["source"] == "step" else SOURCE_LABEL[i["source"]]
            by_source[key] = by_source.get(key, 0) + 1
        click.echo(f"    inputs   {len(s['inputs'])}: "
                   + ", ".join(f"{n} {k}" for k, n in by_source.items()))
        listed = [i for i in s["inputs"] if i["source"] not in ("git", "empty")]
        for i in listed[:LISTED]:
            label = f"step {i['step']}" if i["source"] == "step" else SOURCE_LABEL[i["source"]]
            extra = ""
            if i.get("local") and i["local"] != i["abs"]:
                extra = f"  (at {_p(i['local'])})"
            elif i["source"] == "remote":
                extra = f"  @ {i['version'] or 'unknown version'}"
            click.echo(f"      {label:<10} {(i['hash'] or '-')[:12]:<12}  {i['path']}{extra}")
        if len(listed) > LISTED:
            click.echo(f"      (+{len(listed) - LISTED} more; --json lists them all)")
        outs = [o["path"] for o in s["outputs"]]
        if outs:
            click.echo(f"    outputs  {len(outs)}: {', '.join(outs[:4])}"
                       + (f" (+{len(outs) - 4})" if len(outs) > 4 else ""))
    if doc["blockers"]:
        click.echo("cannot run yet:")
        for b in doc["blockers"]:
            click.echo(f"  - {b}")
    if doc["warnings"]:
        click.echo("warnings:")
        for w in doc["warnings"]:
            click.echo(f"  - {w}")
    if doc["runnable"]:
        click.echo(f"to run it: roar reproduce {ref} --run")


def _show_result(res: dict) -> None:
    from roar.cli.lineage import _show_diff

    ran = [r for r in res["steps"] if r["action"] == "run"]
    reused = sum(1 for r in res["steps"] if r["action"] == "reuse")
    n_out = sum(len(r.get("outputs", [])) for r in ran)
    if res["identical"]:
        click.echo(f"identical: all {n_out} rebuilt output(s) of {len(ran)} step(s) have their "
                   f"recorded content" + (f" ({reused} step(s) reused)" if reused else ""))
    else:
        if res["failed"]:
            f = res["failed"]
            click.echo(f"FAILED at step {f['index']}: {f['message']}")
        if res["differences"]:
            click.echo(f"DIFFERS: {len(res['differences'])} output(s):")
            for d in res["differences"]:
                rebuilt = (d["rebuilt"] or "")[:16] or "not written"
                click.echo(f"  step {d['index']} ({d['step']})  {d['path']}  recorded "
                           f"{(d['recorded'] or '-')[:16]}  rebuilt {rebuilt}")
    for r in ran:
        if r.get("extra"):
            click.echo(f"  step {r['index']} also wrote: {', '.join(r['extra'][:5])}")
    first = res["first_divergent"]
    if first:
        click.echo(f"first divergent step: [{first['index']}] {first['step']}: roar diff "
                   f"{first['run'][:10]} {first['reproduction'][:10]}")
        if first["nondeterministic"]:
            click.echo("  same inputs, arguments, code, packages and environment: this step "
                       "is not deterministic")
        _show_diff(res["diff"])
    if res["workdir"]:
        click.echo(f"work tree kept in {res['workdir']} (git worktree remove it when done)")


@click.command()
@click.argument("ref")
@click.option("--run", "execute", is_flag=True,
              help="Run the plan in a separate git worktree, under roar run, and compare.")
@click.option("--yes", is_flag=True, help="Do not ask before running.")
@click.option("--from-scratch", is_flag=True,
              help="Rebuild every step, even when its outputs are here already.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Where to make the work tree (kept); default a temporary directory.")
@click.option("--keep", is_flag=True, help="Keep the temporary work tree.")
@click.option("--repo", type=click.Path(exists=True, file_okay=False),
              help="A clone of the repository, when the recorded one is not here.")
@click.option("--emit-requirements", "requirements_file", type=click.Path(dir_okay=False),
              help="Write a requirements file pinned to the recorded package versions.")
@click.option("--no-packages", is_flag=True, help="Do not ask the interpreters what is installed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reproduce(ref, execute, yes, from_scratch, workdir, keep, repo, requirements_file,
              no_packages, as_json):
    """Rebuild REF (an artifact path, content hash or run id) from its record:
    print the plan, or run it with --run and compare every output by content."""
    from roar.query import reproduce as rp
    from roar.query.views import resolve

    try:
        store = Store(readonly=True)
        target = resolve(store, ref)
        doc = rp.plan(store, target, from_scratch=from_scratch, repo=repo,
                      check_packages=not no_packages)
    except (StoreError, RefError, rp.ReproduceError) as e:
        fail(str(e))
    if requirements_file:
        text = rp.requirements(doc)
        with open(requirements_file, "w") as f:
            f.write(text)
        click.echo(f"roar: wrote {text.count(chr(10)) - 1} pinned package(s) to "
                   f"{requirements_file}", err=True)
    if not execute:
        if as_json:
            print_json(doc)
        else:
            _show_plan(doc, ref)
        return
    try:
        rp.check_runnable(doc)
    except rp.ReproduceError as e:
        fail(str(e))
    if not as_json:
        _show_plan(doc, ref)
    n = sum(1 for s in doc["steps"] if s["action"] == "run")
    if not yes:
        click.confirm(f"run {n} step(s) under roar run in a separate git worktree?",
                      abort=True, err=True)
    try:
        # with --json, stdout carries the document: the steps' own output goes to stderr
        res = rp.execute(store, doc, workdir=workdir, keep=keep,
                         stdout=sys.stderr if as_json else None,
                         echo=lambda msg: click.echo(f"roar: {msg}", err=True))
    except (StoreError, rp.ReproduceError) as e:
        fail(str(e))
    if as_json:
        print_json({"plan": doc, "result": res})
    else:
        _show_result(res)
    sys.exit(0 if res["identical"] else 1)


@click.command()
@click.argument("run_ref")
@click.option("--rescan", is_flag=True, help="Scan the run's files again and store the links.")
@click.option("--log", "logs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also scan this saved output (stdout/stderr) of the run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def links(run_ref, rescan, logs, as_json):
    """Experiment-tracker links of a run: W&B, MLflow, TensorBoard, Hugging Face."""
    from roar.query import links as lk

    try:
        store = Store(readonly=True)
        run_id = store.resolve_run(run_ref)
        run = store.get_run(run_id)
        found = run.get("links")
        if rescan or logs or found is None:
            found = lk.attach_links(store, run_id, logs=logs)
    except (StoreError, RefError) as e:
        fail(str(e))
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo(f"run {run_id[:10]}: no tracker links")
    for link in found:
        click.echo(lk.describe(link))


@click.command("export")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["openlineage", "prov", "dot", "svg", "jsonl"]),
              required=True, help="openlineage (JSON lines), prov (PROV-JSON), dot, svg, or "
                                  "jsonl (a session's events and alerts, one a line).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not stdout.")
@click.option("--namespace", default="roar", show_default=True,
              help="OpenLineage job namespace.")
def export_cmd(ref, fmt, output, namespace):
    """Export the upstream DAG of REF (a run, an artifact path or a content hash)."""
    from roar.query import export as ex
    from roar.query.views import resolve

    try:
        store = Store(readonly=True)
        text = ex.export(store, resolve(store, ref), fmt, namespace)
    except (StoreError, RefError, ex.ExportError) as e:
        fail(str(e))
    if output:
        try:  # paths that are not UTF-8 are written as their bytes, as on stdout
            with open(output, "w", errors="surrogateescape") as f:
                f.write(text)
        except OSError as e:
            fail(f"cannot write {output}: {e.strerror}")
    else:
        click.echo(text, nl=False)


def register(cli: click.Group) -> None:
    for cmd in (reproduce, links, export_cmd):
        cli.add_command(cmd)
