"""Human-readable output of the read-back views: short, aligned, terminal-sized."""

from __future__ import annotations

import click

from roar.cli.output import human_size as _size
from roar.query.links import describe


def _hash(h) -> str:
    return h[:16] if h else "-"


def _files(title: str, files: list[dict]) -> None:
    click.echo(f"{title} ({len(files)}):")
    if not files:
        return
    for f in files:
        note = "" if f.get("status") in ("ok", None) else f"  [{f['status']}]"
        if f["kind"] == "remote":
            note = f"  @{f['version'] or '?'}" + (f" (hash from {f['hash_source']})"
                                                 if f.get("hash_source") else "")
        click.echo(f"  {_hash(f['hash']):<16}  {_size(f.get('size')):>7}  {f['kind']:<4}  "
                   f"{f['path']}{note}")


def env_outputs(files: list[dict], run_id: str | None = None) -> None:
    """What a run wrote into environment locations, one line per place."""
    if not files:
        return
    from roar.query.views import env_groups

    click.echo(f"environment outputs ({len(files)} files):")
    for g in env_groups(files):
        pk = g["packages"]
        what = (f"installed {', '.join(f'{k} {v}' for k, v in list(pk.items())[:4])}"
                + (f" (+{len(pk) - 4})" if len(pk) > 4 else "")) if pk else g["why"]
        click.echo(f"  {g['files']:>5} files {_size(g['size']):>7}  into {g['root']}  ({what})")
    if run_id:
        click.echo(f"  (each file: roar outputs {run_id[:10]} --all, or --json)")


def explain(doc: dict) -> None:
    """`roar show --explain`: why each file got its kind (and role)."""
    if "files" not in doc:  # one path
        click.echo(f"{doc['path']}: {doc['kind']}, because {doc['why']}")
        return
    roles = {}
    for f in doc["files"]:
        roles.setdefault(f["role"], f["role_why"])
        click.echo(f"{f['role']:<9} {f['kind']:<6} {f['path']}  ({f['why']})")
    for rule in doc["rules"]:
        click.echo(f"rule     {rule['kind']:<6} {rule['pattern']}  ({rule['source']})")
    for role, why in roles.items():
        click.echo(f"role     {role:<9} {why}")


def run(doc: dict) -> None:
    git = doc.get("git")
    state = "complete" if doc["complete"] else "INCOMPLETE"
    click.echo(f"run      {doc['id']}" + (f"  ({doc['name']})" if doc.get("name") else ""))
    click.echo(f"status   {doc['status']}, exit {doc['exit_code']}"
               + (f" (signal {doc['signal']})" if doc.get("signal") else "") + f", {state}")
    for r in doc.get("incomplete_reasons") or []:
        click.echo(f"         - {r}")
    for a in doc.get("alerts") or []:
        click.echo(f"alert    {a['ts'][11:23]} {a['action']} {a['rule']}: {a['detail']}")
    hp = doc.get("hash_progress")
    if hp:
        pct = 100 * hp["bytes_done"] // max(hp["bytes"], 1)
        click.echo(f"         hashing {hp['path']} ({hp['file']}/{hp['files']}): {pct}% of "
                   f"{_size(hp['bytes'])}")
    click.echo(f"command  {' '.join(doc['command'] or [])}")
    click.echo(f"cwd      {doc['cwd']}")
    click.echo(f"who      {doc['user']}@{doc['host']}  {doc['started_at']} -> "
               f"{doc.get('ended_at') or '...'}")
    if git:
        dirty = " (dirty: patch stored)" if git.get("dirty") else ""
        click.echo(f"git      {(git.get('commit') or 'no commit')[:12]} "
                   f"{git.get('branch') or '(detached)'}{dirty}")
    pk = doc.get("packages") or {}
    if pk:
        shown = ", ".join(f"{k}=={v}" for k, v in list(pk.items())[:8])
        click.echo(f"packages {shown}" + (f" (+{len(pk) - 8} more)" if len(pk) > 8 else ""))
    pk = doc.get("installed") or {}
    if pk:
        shown = ", ".join(f"{k}=={v}" for k, v in list(pk.items())[:8])
        click.echo(f"installed {shown}" + (f" (+{len(pk) - 8} more)" if len(pk) > 8 else ""))
    if doc.get("gpus"):
        click.echo("gpus     " + ", ".join(g["name"] for g in doc["gpus"]))
    if doc.get("request"):
        flag = "  DATASET MISMATCH: the data read is not the version filed" \
            if doc.get("dataset_mismatch") else ""
        click.echo(f"request  {doc['request']}{flag}")
    if doc.get("reproduces"):
        click.echo(f"reproduces run {doc['reproduces']}")
    for link in doc.get("links") or []:
        click.echo(f"link     {describe(link)}")
    click.echo(f"procs    {len(doc['processes'])}")
    _files("inputs", doc["inputs"])
    _files("outputs", doc["outputs"])
    env_outputs(doc.get("env_outputs") or [], doc["id"])
    for f in doc.get("logs") or []:
        click.echo(f"log      {f['path']}  (wrote {_size(f.get('bytes_written'))})")
    blind = (doc.get("remote") or {}).get("uninspected") or []
    if blind:
        click.echo("uninspected network I/O: " + ", ".join(
            f"{e['address']}:{e['port']}" for e in blind[:10]))
    if doc.get("connects"):
        eps = sorted({f"{c['address']}:{c['port']}" if c.get("port") else c["address"]
                      for c in doc["connects"]})
        click.echo("network  " + ", ".join(eps[:10]))


def remote(doc: dict) -> None:
    click.echo(f"remote   {doc['url']}")
    click.echo(f"versions ({len(doc['versions'])}):")
    for v in doc["versions"]:
        click.echo(f"  {v['version'] or '(unknown version)'}")
        for role, what in (("written_by", "written by"), ("read_by", "read by")):
            if v[role]:
                click.echo(f"    {what:<10} " + ", ".join(r[:10] for r in v[role]))


def artifact(doc: dict) -> None:
    click.echo(f"content  {doc['hash']}")
    for p in doc["paths"]:
        click.echo(f"path     {p}")
    click.echo(f"produced by ({len(doc['produced_by'])}):")
    for r in doc["produced_by"]:
        click.echo(f"  {r['run'][:10]}  {r.get('name') or '':<12} {' '.join(r['command'] or [])}")
    click.echo(f"read by ({len(doc['read_by'])}):")
    for r in doc["read_by"]:
        click.echo(f"  {r['run'][:10]}  {r.get('name') or '':<12} {' '.join(r['command'] or [])}")


def trace(doc: dict) -> None:
    procs = doc["processes"]
    children: dict = {}
    keys = {p["key"] for p in procs}
    roots = []
    for p in procs:
        if p["parent"] in keys:
            children.setdefault(p["parent"], []).append(p)
        else:
            roots.append(p)

    def show(p, depth):
        pad = "  " * depth
        end = f"signal {p['signal']}" if p.get("signal") else f"exit {p['exit_code']}"
        click.echo(f"{pad}[{p['pid']}] {' '.join(p['argv'] or [p.get('exe') or '?'])}  ({end})")
        for f in p["files"]:
            nbytes = []
            if f["bytes_read"] is None and f["bytes_written"] is None:
                nbytes.append("bytes unknown")
            if f["bytes_read"]:
                nbytes.append(f"read {_size(f['bytes_read'])}")
            if f["bytes_written"]:
                nbytes.append(f"wrote {_size(f['bytes_written'])}")
            click.echo(f"{pad}    {f['mode']:<3} {f['kind']:<6} {f['path']}"
                       + (f"  ({', '.join(nbytes)})" if nbytes else ""))
        for c in children.get(p["key"], []):
            show(c, depth + 1)

    for r in roots:
        show(r, 0)


def group(doc: dict) -> None:
    """`roar show group:G`: one line per rank's run, then the job's files."""
    world = doc.get("world_size")
    if doc["complete"]:
        state = "complete"
    elif doc["missing"]:
        state = "INCOMPLETE: missing rank(s) " + ", ".join(map(str, doc["missing"]))
    else:
        state = "INCOMPLETE"
    click.echo(f"group    {doc['group']}  ({doc['source']}; {len(doc['ranks'])} run(s) on "
               f"{len(doc['nodes'])} node(s)" + (f", world size {world}" if world else "")
               + f"), {state}")
    for r in doc["ranks"]:
        rank = "-" if r["rank"] is None else str(r["rank"])
        done = "complete" if r["complete"] else "INCOMPLETE"
        click.echo(f"  rank {rank:>4}  {r['run'][:10]}  {r['host'] or '?':<20}  "
                   f"{r['status'] or '?':<11}  {done}")
    for title, key in (("inputs", "inputs"), ("outputs", "outputs")):
        click.echo(f"{title} ({len(doc[key])}):")
        for f in doc[key]:
            click.echo(f"  {_hash(f['hash']):<16}  {len(f['runs'])} run(s)  {f['path']}")
