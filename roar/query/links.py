"""Experiment-tracker links of a run: the W&B, MLflow, TensorBoard and Hugging
Face Hub records a run made, found in the files it wrote and in its output.

A link is a dict with stable keys: `tracker` (wandb | mlflow | tensorboard |
huggingface), `id`, `url`, `project`, `path` (a local directory), `source`
(where it was found), plus tracker-specific keys (`entity`, `offline`,
`experiment`, `experiment_id`, `tracking_uri`, `run_name`, `repo_type`,
`revision`). Unknown values are None. Links are stored on the run record
(`links`) by attach_links().

A back-link is the other direction: the tracker's record naming the roar run
(the workload's environment has ROAR_RUN_ID; a W&B config or an MLflow tag
that stores it). `backlink` is the file of the tracker's record holding the
run id, or None.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from roar.capture import jsonc

TRACKERS = ("wandb", "mlflow", "tensorboard", "huggingface")
KEYS = ("tracker", "id", "url", "project", "path", "source")
TEXT_LIMIT = 4 << 20  # bytes of one file or log scanned: its first and last halves

# Patterns, compiled where first used (re caches them): most runs print and
# write no tracker link, and every `roar run` imports this module.
_ANSI = r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07"
_WANDB_URL = (
    r"https?://(?:[\w-]+\.)*wandb\.ai/(?P<entity>[\w.-]+)/(?P<project>[\w.-]+)/runs/(?P<id>[\w-]+)")
# self-hosted W&B servers print the same line with their own host
_WANDB_VIEW = (
    r"View run\b.*?\bat:?\s+(?P<url>https?://[^\s#]+?/(?P<entity>[\w.-]+)/(?P<project>[\w.-]+)"
    r"/runs/(?P<id>[\w-]+))")
_MLFLOW_URL = (
    r"(?P<uri>https?://[^\s/#]+(?:/[^\s#]*?)?)/?#/experiments/(?P<exp>\w+)/runs/(?P<id>[0-9a-f]{32})")
_HF_URL = (
    r"https://huggingface\.co/(?:(?P<type>datasets|spaces)/)?(?P<repo>[\w.-]+/[\w.-]+)"
    r"(?:/(?P<kind>commit|tree|blob|resolve)/(?P<rev>[\w.%-]+))?")
_HF_PUSH_WORDS = r"(?i)push|upload|commit"

_WANDB_DIR = (
    r"^(?P<dir>.*/wandb/(?P<offline>offline-)?run-(?P<ts>\d{8}_\d{6})-(?P<id>[^/]+))(?:/|$)")
_MLFLOW_DIR = r"^(?P<root>.*/mlruns)/(?P<exp>[^/.][^/]*)/(?P<id>[0-9a-f]{32})(?:/|$)"
_HF_UPLOAD = "/.cache/huggingface/upload/"
_TFEVENTS = "events.out.tfevents."


def _link(tracker: str, source: str, **fields) -> dict:
    out = {k: None for k in KEYS}
    out.update(tracker=tracker, source=source, **fields)
    return out


# -- text: stdout, stderr, log files -------------------------------------------------


def scan_text(text: str, source: str = "output") -> list[dict]:
    """Links printed in a run's output: W&B "View run at" lines and run URLs,
    MLflow run URLs, Hugging Face Hub pushes (commit URLs, or hub URLs on a line
    that says push/upload/commit; downloads are not pushes)."""
    text = re.sub(_ANSI, "", text) if "\x1b" in text else text
    found = []
    for line in text.splitlines():
        if "http" not in line:
            continue
        for m in re.finditer(_WANDB_VIEW, line):
            found.append(_link("wandb", source, id=m["id"], url=m["url"], entity=m["entity"],
                               project=m["project"]))
        for m in re.finditer(_WANDB_URL, line):
            found.append(_link("wandb", source, id=m["id"], url=m.group(0), entity=m["entity"],
                               project=m["project"]))
        for m in re.finditer(_MLFLOW_URL, line):
            found.append(_link("mlflow", source, id=m["id"], url=m.group(0),
                               experiment_id=m["exp"], tracking_uri=m["uri"].rstrip("/")))
        for m in re.finditer(_HF_URL, line):
            if m["kind"] == "resolve":
                continue  # a download
            if m["kind"] != "commit" and not re.search(
                    _HF_PUSH_WORDS, line.replace(m.group(0), "")):
                continue
            repo_type = {"datasets": "dataset", "spaces": "space"}.get(m["type"], "model")
            repo = m["repo"].rstrip(".")
            found.append(_link("huggingface", source, id=repo, url=m.group(0).rstrip("."),
                               project=repo, repo_type=repo_type,
                               revision=m["rev"].rstrip(".") if m["kind"] == "commit" else None))
    return merge(found)


def read_text(path: str, start: int = 0, end: int | None = None) -> str:
    """The text of path[start:end], at most TEXT_LIMIT bytes (its first and last
    halves when longer): a log can be huge, links sit at its start and end."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            end = size if end is None else min(end, size)
            if end - start <= TEXT_LIMIT:
                f.seek(start)
                data = f.read(max(0, end - start))
            else:
                f.seek(start)
                head = f.read(TEXT_LIMIT // 2)
                f.seek(end - TEXT_LIMIT // 2)
                data = head + b"\n" + f.read(TEXT_LIMIT // 2)
    except OSError:
        return ""
    return data.decode(errors="replace")


def scan_log(path: str, start: int = 0, end: int | None = None) -> list[dict]:
    """scan_text() of a log file (or the part of it a run wrote: start..end)."""
    return scan_text(read_text(path, start, end), source=f"log:{path}")


# -- files the run wrote ---------------------------------------------------------------


def _yaml_scalars(path: str) -> dict[str, str]:
    """Top-level `key: value` scalars of a small YAML file (MLflow meta.yaml)."""
    out = {}
    for line in read_text(path).splitlines():
        if not line or line[0] in " \t#-" or ":" not in line:
            continue
        k, _, v = line.partition(":")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _wandb_link(m: re.Match, source: str) -> dict:
    d = m["dir"]
    link = _link("wandb", source, id=m["id"], path=d, offline=bool(m["offline"]), entity=None)
    meta = os.path.join(d, "files", "wandb-metadata.json")
    if os.path.isfile(meta):
        try:
            doc = jsonc.loads(read_text(meta))
        except ValueError:
            doc = {}
        if isinstance(doc, dict):
            for k in ("entity", "project", "url"):
                if isinstance(doc.get(k), str):
                    link[k] = doc[k]
    # the run URL is in the console output W&B keeps beside the run
    for rel in ("files/output.log", "logs/debug.log", "logs/debug-internal.log"):
        p = os.path.join(d, rel)
        if os.path.isfile(p):
            for t in scan_text(read_text(p)):
                if t["tracker"] == "wandb" and t["id"] == link["id"]:
                    link.update({k: v for k, v in t.items() if v is not None and k != "source"})
    return link


def _mlflow_link(m: re.Match, source: str) -> dict:
    root, exp, run_id = m["root"], m["exp"], m["id"]
    run_meta = _yaml_scalars(os.path.join(root, exp, run_id, "meta.yaml"))
    exp_meta = _yaml_scalars(os.path.join(root, exp, "meta.yaml"))
    return _link("mlflow", source, id=run_id, path=os.path.join(root, exp, run_id),
                 project=exp_meta.get("name"), experiment=exp_meta.get("name"),
                 experiment_id=run_meta.get("experiment_id") or exp,
                 run_name=run_meta.get("run_name") or None, tracking_uri="file://" + root)


BACKLINK_FILES = 200  # files of one tracker record searched for the run id
BACKLINK_SIZE = 1 << 20  # bytes of each


def find_backlink(folder: str, run_id: str) -> str | None:
    """The file under a tracker's run folder that stores `run_id` (a W&B
    config.yaml, an MLflow tag or param file...), or None."""
    needle = run_id.encode()
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            seen += 1
            if seen > BACKLINK_FILES:
                return None
            p = os.path.join(dirpath, name)
            try:
                with open(p, "rb") as f:
                    if needle in f.read(BACKLINK_SIZE):
                        return p
            except OSError:
                continue
    return None


def scan_paths(paths: Iterable[str], run_id: str | None = None) -> list[dict]:
    """Links from the paths a run wrote (and what those directories hold now);
    with `run_id`, each W&B or MLflow link says where its record stores it."""
    found = []
    seen: set[str] = set()
    for p in sorted(set(paths)):
        source = f"file:{p}"
        m = re.match(_WANDB_DIR, p) if "/wandb/" in p else None
        if m and m["dir"] not in seen:
            seen.add(m["dir"])
            found.append(_wandb_link(m, source))
        m = re.match(_MLFLOW_DIR, p) if "/mlruns/" in p else None
        if m and m.group(0) not in seen:
            seen.add(m.group(0))
            found.append(_mlflow_link(m, source))
        name = os.path.basename(p)
        if name.startswith(_TFEVENTS) and os.path.dirname(p) not in seen:
            seen.add(os.path.dirname(p))
            found.append(_link("tensorboard", source, path=os.path.dirname(p)))
        if _HF_UPLOAD in p:
            folder = p.split(_HF_UPLOAD, 1)[0]
            if folder not in seen:
                seen.add(folder)
                found.append(_link("huggingface", source, path=folder, kind="upload"))
    if run_id:
        for link in found:
            if link["tracker"] in ("wandb", "mlflow") and link.get("path"):
                link["backlink"] = find_backlink(link["path"], run_id)
    return found


def merge(links: Iterable[dict]) -> list[dict]:
    """One link per tracker record (by id, else url, else path); a later
    sighting fills in what an earlier one did not know."""
    out: dict[tuple, dict] = {}
    for link in links:
        key = (link["tracker"], link.get("id") or link.get("url") or link.get("path"))
        if key in out:
            known = out[key]
            for k, v in link.items():
                if known.get(k) is None and v is not None:
                    known[k] = v
        else:
            out[key] = dict(link)
    return list(out.values())


def from_records(files: Iterable[dict], logs: Iterable = (), text: str | None = None,
                 run_id: str | None = None, written: list[str] | None = None) -> list[dict]:
    """The links of a run from its file records (what it wrote: outputs and
    temporaries; written: their paths, when the caller has them), log files (a
    path, or (path, start, end) for the part of a log the run wrote) and output
    text."""
    if written is None:
        written = [f["path"] for f in files
                   if f.get("role") in ("output", "temporary") and f.get("path")]
    found = scan_paths(written, run_id)
    for log in logs:
        found += scan_log(*log) if isinstance(log, tuple) else scan_log(log)
    if text:
        found += scan_text(text)
    return merge(found)


def run_links(store, run_id: str, logs: Iterable = (), text: str | None = None) -> list[dict]:
    """from_records() of a stored run."""
    return from_records(store.run_files(run_id), logs, text, run_id)


def attach_links(store, run_id: str, logs: Iterable = (), text: str | None = None
                 ) -> list[dict]:
    """Compute a finished run's links and store them on its record (`links`).
    Called at the end of `roar run`, and by `roar links --rescan`."""
    links = run_links(store, run_id, logs, text)
    store.set_links(run_id, links)
    return links


def matches(run: dict, query: str) -> bool:
    """Whether a run has a link of tracker `query`, or one whose id, url,
    project or path contains it (`roar log --link`)."""
    q = query.lower()
    for link in run.get("links") or []:
        if link.get("tracker") == q:
            return True
        for k in ("id", "url", "project", "path"):
            v = link.get(k)
            if isinstance(v, str) and q in v.lower():
                return True
    return False


def describe(link: dict) -> str:
    """One short line for a link (roar show, roar links)."""
    parts = [link["tracker"]]
    if link.get("url"):
        parts.append(link["url"])
    else:
        what = link.get("id") or ""
        if link["tracker"] == "mlflow" and link.get("experiment"):
            what = f"experiment {link['experiment']} run {what}"
        if what:
            parts.append(what)
        if link.get("path"):
            parts.append(f"({link['path']})")
    if link.get("offline"):
        parts.append("[offline]")
    if link.get("backlink"):
        parts.append(f"[links back: {link['backlink']}]")
    if link.get("tracker") == "mlflow" and link.get("tracking_uri") and not link.get("url"):
        parts.append(f"tracking {link['tracking_uri']}")
    return "  ".join(parts)
