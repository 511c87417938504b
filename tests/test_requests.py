"""Training requests: policy, filing, review by OS user (a second OS user made
here acts as reviewer), the gate `roar run --request` passes through, budget
stop, duplicates and the dataset check at resolution."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Roar, xxh128

from roar.record.store import Store
from roar.requests import training as requests
from roar.requests.training import RequestError

ISSUE_KEYS = ["id", "status", "requester", "datasets", "gpus", "gpu_type", "hours",
              "estimated_cost", "rationale", "reviews", "run", "cost", "outputs",
              "dataset_mismatch"]

POLICY = """
[cost]
default_gpu_type = "a100"
[cost.rates]
a100 = 2.0
h100 = 4.0

[auto_approve]
max_cost = 10
max_gpus = 1

[review]
users = ["root"]
groups = [{leads}]
"""


def write_policy(home: Path, text: str, leads: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "policy.toml").write_text(text.replace("{leads}", json.dumps(leads) if leads else ""))


@pytest.fixture
def req(tmp_path):
    """The CLI with a private store and no daemon (reviews use this process's
    OS user), in a work directory holding a small dataset."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "train.csv").write_text("x,y\n1,2\n")
    (work / "data" / "val.csv").write_text("x,y\n3,4\n")
    r = Roar(tmp_path / "home", None, work)
    write_policy(r.home, POLICY)
    return r


def create(r: Roar, *args, gpus=1, hours=1) -> dict:
    """File a request for ./data; args may end with `-- COMMAND...`."""
    p = r("request", "create", "--json", "--dataset", "data", "--gpus", gpus, "--hours", hours,
          "--rationale", "baseline for the new tokenizer", *args)
    return json.loads(p.stdout)


# -- policy and library (in-process) ------------------------------------------------


def test_policy_rejects_unknown_keys_and_wrong_types(tmp_path):
    write_policy(tmp_path, "[auto_approve]\nmax_cots = 5\n")
    with pytest.raises(RequestError, match="unknown key auto_approve.max_cots"):
        requests.load_policy(tmp_path)
    write_policy(tmp_path, "[runs]\nrequire_request = \"sometimes\"\n")
    with pytest.raises(RequestError, match="must be one of never, above_gpus, always"):
        requests.load_policy(tmp_path)
    write_policy(tmp_path, "[review]\nusers = \"bob\"\n")
    with pytest.raises(RequestError, match="review.users has the wrong type"):
        requests.load_policy(tmp_path)
    write_policy(tmp_path, "[review\n")
    with pytest.raises(RequestError, match="policy .*policy.toml"):
        requests.load_policy(tmp_path)


def test_repo_policy_only_tightens(tmp_path):
    home, repo = tmp_path / "home", tmp_path / "repo"
    write_policy(home, '[auto_approve]\nmax_cost = 10\n[datasets]\nallowed = ["/data"]\n'
                       '[budget]\non_exceed = "warn"\n')
    (repo / ".roar").mkdir(parents=True)
    (repo / ".roar" / "policy.toml").write_text(
        '[auto_approve]\nmax_cost = 50\nmax_gpus = 1\n[datasets]\nallowed = ["/data/v3"]\n'
        'review = ["pii"]\n[runs]\nrequire_request = "always"\n[budget]\non_exceed = "stop"\n'
        '[duplicates]\naction = "refuse"\n')
    p = requests.load_policy(home, str(repo))
    assert p.auto_approve == {"max_cost": 10, "max_gpus": 1}
    assert p.datasets_allowed == [["/data"], ["/data/v3"]]
    assert p.datasets_review == [str(repo / "pii")]
    assert (p.require_request, p.on_exceed, p.duplicates) == ("always", "stop", "refuse")
    # without store limits there is no auto-approval for a repo to switch on
    write_policy(home, "")
    assert requests.load_policy(home, str(repo)).auto_approve is None
    # reviewers and prices are the store's alone
    (repo / ".roar" / "policy.toml").write_text('[review]\nusers = ["me"]\n')
    with pytest.raises(RequestError, match=r"\[review\] may only be set in the store policy"):
        requests.load_policy(home, str(repo))


def test_dataset_version_pins_directory_content(tmp_path):
    d = tmp_path / "ds"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"a" * 100)
    (d / "sub" / "b.bin").write_bytes(b"b")
    v = requests.dataset_version(str(d))
    assert v.files == {"a.bin": xxh128(d / "a.bin"), "sub/b.bin": xxh128(d / "sub" / "b.bin")}
    from roar.query.lineage import dataset_version

    assert v.hash == dataset_version(v.files.items())  # the version `roar inputs` shows
    (d / "sub" / "b.bin").write_bytes(b"B")
    assert requests.dataset_version(str(d)).hash != v.hash
    (d / "sub" / "b.bin").write_bytes(b"b")
    assert requests.dataset_version(str(d)).hash == v.hash
    (d / "sub" / "b.bin").rename(d / "b.bin")
    assert requests.dataset_version(str(d)).hash != v.hash
    f = requests.dataset_version(str(d / "a.bin"))
    assert (f.hash, f.files) == (xxh128(d / "a.bin"), None)
    with pytest.raises(RequestError, match="does not exist"):
        requests.dataset_version(str(tmp_path / "nope"))


def test_dataset_check_names_the_wrong_version():
    filed = [{"path": "/d/train", "hash": "V1"}, {"path": "/d/labels.csv", "hash": "L1"}]
    manifests = {"V1": {"a": "h1", "b": "h2"}}

    def inp(path, h):
        return {"path": path, "hash": h, "role": "input", "kind": "data"}

    ok = [inp("/d/train/a", "h1"), inp("/d/labels.csv", "L1")]
    checks, bad = requests.check_datasets(filed, manifests, ok, True)
    assert not bad and [c["status"] for c in checks] == ["match", "match"]
    changed = [inp("/d/train/a", "h1"), inp("/d/train/b", "hX"), inp("/d/labels.csv", "L1")]
    checks, bad = requests.check_datasets(filed, manifests, changed, True)
    assert bad and checks[0]["status"] == "changed"
    assert checks[0]["changed"] == [{"path": "/d/train/b", "hash": "hX", "filed_hash": "h2"}]
    # the filed content read from another path counts; other data does not
    elsewhere = [inp("/copy/a", "h1"), inp("/d/v2/labels.csv", "L2")]
    checks, bad = requests.check_datasets(filed, manifests, elsewhere, True)
    assert bad and [c["status"] for c in checks] == ["match", "not_read"]
    # no verified hash, or an incomplete run that read nothing: unknown, never a false flag
    checks, bad = requests.check_datasets(filed, manifests, [inp("/d/train/a", None)], False)
    assert not bad and [c["status"] for c in checks] == ["unknown", "unknown"]


def test_gate_warns_then_stops_at_the_budget(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("1\n")
    store = Store(tmp_path / "home")
    write_policy(store.home, POLICY)
    doc, _ = requests.create(store, ["d.csv"], 1, 0.01, "x", cwd=str(tmp_path))
    gate = requests.gate_run(store, doc["id"][:12], ["true"], None, "root")
    hours = 0.01 * 3600
    assert gate.check(0) == "ok"
    assert store.get_doc("requests", doc["id"])["status"] == "running"
    assert gate.check(0.79 * hours) == "ok"
    assert gate.check(0.85 * hours) == "warn"
    assert any("85% of the approved 0.01 GPU-hours" in m for m in gate.take_messages())
    assert capsys.readouterr().err == ""  # the gate says, roar run prints
    assert gate.check(1.01 * hours) == "stop"
    assert "budget" in gate.stopped and doc["id"] in gate.stopped
    # a second run of the same request is refused
    with pytest.raises(RequestError, match="in use by run"):
        requests.gate_run(store, doc["id"], ["true"], None, "root")


def test_gate_only_warns_when_the_policy_says_so(tmp_path):
    (tmp_path / "d.csv").write_text("1\n")
    store = Store(tmp_path / "home")
    write_policy(store.home, POLICY + '[budget]\non_exceed = "warn"\n')
    doc, _ = requests.create(store, ["d.csv"], 2, 0.01, "x", cwd=str(tmp_path))
    store.put_doc("requests", doc["id"], {**doc, "status": "approved"})
    gate = requests.gate_run(store, doc["id"], ["true"], None, "root")
    assert gate.check(0) == "ok"
    assert gate.check(2 * 36) == "warn" and gate.stopped is None


def test_visible_gpus(monkeypatch):
    for env, n in (("0,1,2", 3), ("", 0), ("-1", 0), ("GPU-5f1e", 1)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
        assert requests.visible_gpus() == n


# -- the CLI, no daemon --------------------------------------------------------------


def test_create_pins_datasets_and_auto_approves_within_limits(req):
    doc = create(req, "--command", "python train.py --lr 3e-4")
    assert list(doc)[:len(ISSUE_KEYS)] == ISSUE_KEYS
    assert doc["status"] == "approved" and doc["reviews"][0]["by"] == "policy"
    assert doc["requester"] == "root" and doc["gpu_type"] == "a100"
    assert doc["estimated_cost"] == 2.0 and doc["cost"] is None and doc["run"] is None
    assert doc["command"] == ["python", "train.py", "--lr", "3e-4"]
    [ds] = doc["datasets"]
    assert ds == {"path": str(req.cwd / "data"), "hash": requests.dataset_version(
        str(req.cwd / "data")).hash}
    shown = req.json("request", "show", doc["id"][:10])
    assert shown == doc
    assert req.json("request", "list") == [doc]
    human = req("request", "show", doc["id"]).stdout
    assert "1 x a100 for 1 h = 1 GPU-hours, est. 2.00 USD" in human


def test_over_the_limits_waits_for_review(req):
    doc = create(req, "--gpu-type", "h100", gpus=4, hours=2)
    assert doc["status"] == "pending" and doc["reviews"] == []
    assert doc["estimated_cost"] == 32.0
    human = req("request", "show", doc["id"]).stdout
    assert "cost 32 USD > 10" in human and "4 GPUs > 1" in human
    assert [d["id"] for d in req.json("request", "list", "--status", "pending")] == [doc["id"]]
    assert req.json("request", "list", "--status", "approved") == []


def test_create_refusals_are_one_line(req):
    write_policy(req.home, POLICY + '[datasets]\nallowed = ["/srv/datasets"]\n')
    p = req("request", "create", "--dataset", "data", "--gpus", 1, "--hours", 1,
            "--rationale", "r", check=False)
    assert p.returncode == 2 and "is not allowed by the policy" in p.stderr
    assert "Traceback" not in p.stderr
    write_policy(req.home, POLICY)
    for args, msg in ((["--gpu-type", "tpu"], "no rate for GPU type 'tpu'"),
                      (["--hours", "0"], "--hours must be more than 0")):
        p = req("request", "create", "--dataset", "data", "--gpus", 1, "--hours", 1,
                "--rationale", "r", *args, check=False)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr
    p = req("request", "create", "--dataset", "missing", "--gpus", 1, "--hours", 1,
            "--rationale", "r", check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    assert req.json("request", "list") == []


def test_dataset_rules_follow_links(req, tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    for name in ("ok.csv", "pii-users.csv"):
        (srv / name).write_text("1\n")
    (srv / "escape").symlink_to(req.cwd / "data")
    write_policy(req.home, POLICY + f'[datasets]\nallowed = ["{srv}"]\n'
                                    f'review = ["{srv}/pii-*"]\n')

    def file(path, check=True):
        return req("request", "create", "--json", "--dataset", path, "--gpus", 1, "--hours", 1,
                   "--rationale", "r", check=check)

    p = file(srv / "escape", check=False)
    assert p.returncode == 2 and "is not allowed by the policy" in p.stderr
    assert json.loads(file(srv / "ok.csv").stdout)["status"] == "approved"
    pii = json.loads(file(srv / "pii-users.csv").stdout)
    assert pii["status"] == "pending"
    assert "always needs review" in req("request", "show", pii["id"]).stdout


def test_near_duplicate_is_warned_then_refused_by_policy(req):
    first = create(req, "--", "python", "train.py")
    p = req("request", "create", "--dataset", "data", "--gpus", 1, "--hours", 1,
            "--rationale", "again", "--json", "--", "python", "train.py")
    assert f"near-duplicate of request {first['id']}" in p.stderr
    assert json.loads(p.stdout)["duplicates"][0]["id"] == first["id"]
    other = create(req, "--", "python", "train.py", "--lr", "1")  # other args: not a duplicate
    assert other["duplicates"] == []
    write_policy(req.home, POLICY + '[duplicates]\naction = "refuse"\n')
    p = req("request", "create", "--dataset", "data", "--gpus", 1, "--hours", 1,
            "--rationale", "again", "--", "python", "train.py", check=False)
    assert p.returncode == 2 and "refused by policy: near-duplicate" in p.stderr
    assert first["id"] in p.stderr


def test_pending_request_refused_before_the_command_starts(req):
    doc = create(req, gpus=8)
    assert doc["status"] == "pending"
    marker = req.cwd / "started"
    p = req("run", "--request", doc["id"], "--", "sh", "-c", f"touch {marker}", check=False)
    assert p.returncode == 125 and "is pending review" in p.stderr
    assert not marker.exists()
    p = req("run", "--request", "01NOSUCHREQUEST", "--", "touch", marker, check=False)
    assert p.returncode == 125 and "no training request" in p.stderr
    assert not marker.exists()


def test_policy_can_require_a_request_for_every_run(req):
    marker = req.cwd / "started"
    write_policy(req.home, POLICY + '[runs]\nrequire_request = "always"\n')
    p = req("run", "--", "touch", marker, check=False)
    assert p.returncode == 125 and "requires a training request for every run" in p.stderr
    write_policy(req.home, POLICY + '[runs]\nrequire_request = "above_gpus"\nabove_gpus = 1\n')
    p = req("run", "--", "touch", marker, check=False,
            env=req.env(CUDA_VISIBLE_DEVICES="0,1"))
    assert p.returncode == 125 and "can use 2 GPUs" in p.stderr
    assert not marker.exists()


def test_requester_cannot_approve_their_own_request(req):
    doc = create(req, gpus=8)
    p = req("request", "approve", doc["id"], check=False)
    assert p.returncode == 2
    assert "a requester can never review their own request" in p.stderr
    assert req.json("request", "show", doc["id"])["status"] == "pending"


def test_wait_times_out_while_pending(req):
    doc = create(req, gpus=8)
    t = time.monotonic()
    p = req("request", "wait", doc["id"], "--timeout", "1", check=False)
    assert p.returncode == 3 and "still pending after 1s" in p.stderr
    assert time.monotonic() - t < 10
    approved = create(req, "--", "other")
    assert req.json("request", "wait", approved["id"])["status"] == "approved"


# -- a team store shared with other OS users -----------------------------------------


@dataclass
class User:
    name: str
    uid: int
    gid: int


@dataclass
class Team:
    group: str
    leads: str
    reviewer: User
    outsider: User


def _user(name: str) -> User:
    import pwd

    pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


@pytest.fixture(scope="module")
def team():
    """A group sharing a store, a reviewer in a `leads` group, and an outsider
    who may use the store but not review: real OS users, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating OS users needs root")
    for tool in ("useradd", "userdel", "groupadd", "groupdel", "setpriv", "unshare"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    tag = os.urandom(3).hex()
    group, leads = f"rqteam{tag}", f"rqlead{tag}"
    reviewer, outsider = f"rqrev{tag}", f"rqout{tag}"
    users, groups = [], []
    try:
        for g in (group, leads):
            subprocess.run(["groupadd", g], check=True)
            groups.append(g)
        for name, extra in ((reviewer, ["-G", leads]), (outsider, [])):
            subprocess.run(["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                            "-g", group, *extra, name], check=True)
            users.append(name)
        yield Team(group, leads, _user(reviewer), _user(outsider))
    finally:
        for name in users:
            subprocess.run(["userdel", name], check=False)
        for g in groups:
            subprocess.run(["groupdel", g], check=False)


def _hidden_top(path: str) -> Path | None:
    """The highest ancestor of path that other users cannot search."""
    for parent in reversed(Path(path).resolve().parents):
        if parent != Path("/") and not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def as_user(user: User, argv: list[str], reach: tuple[str, ...] = ()) -> list[str]:
    """argv run as another OS user. Python here may live under a directory only
    root can enter (/root/.pyenv), and pytest's temporary directories are 0700:
    in a private mount namespace, such an ancestor is covered by an empty
    tmpfs and just the paths needed (directories or files, such as a socket)
    are mounted back."""
    drop = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--"]
    hidden: dict[Path, list[str]] = {}
    for p in (os.path.realpath(sys.prefix), *reach):
        top = _hidden_top(p)
        if top is not None:
            hidden.setdefault(top, []).append(p)
    if not hidden:
        return drop + argv
    lines = ["set -e"]
    for top, paths in hidden.items():
        for i, p in enumerate(paths):
            d = "-d" if os.path.isdir(p) else ""
            lines.append(f"k{i}=$(mktemp {d}); mount --bind {shlex.quote(p)} $k{i}")
        lines.append(f"mount -t tmpfs -o mode=755 roar-test {shlex.quote(str(top))}")
        for i, p in enumerate(paths):
            q = shlex.quote(p)
            make = f"mkdir -p {q}" if os.path.isdir(p) else \
                f"mkdir -p {shlex.quote(os.path.dirname(p))}; touch {q}"
            lines.append(f"{make}; mount --move $k{i} {q}; rm -d $k{i}")
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines),
            "sh", *drop, *argv]


class TeamRoar(Roar):
    """The CLI on a team store, as root or as another OS user."""

    def as_(self, user: User, *args, check=True):
        reach = (str(self.sock),) if self.sock else ()  # its directory is 0700
        p = subprocess.run(as_user(user, [sys.executable, "-m", "roar", *map(str, args)],
                                   reach), check=False, cwd=self.cwd, env=self.env(HOME="/tmp"),
                           capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"roar {args} as {user.name} exited {p.returncode}\n{p.stderr}")
        return p


@pytest.fixture
def team_store(team):
    """A fresh team store under /tmp (reachable by the team), made by `roar
    request init --group`, with the reviewers' policy."""
    top = Path(tempfile.mkdtemp(prefix="roar-team-"))
    os.chmod(top, 0o755)
    (top / "data").mkdir()
    (top / "data" / "train.csv").write_text("x,y\n1,2\n")
    r = TeamRoar(top / "home", None, top)
    r("request", "init", "--group", team.group)
    write_policy(r.home, POLICY, team.leads)
    yield r
    shutil.rmtree(top)


def test_team_store_is_group_writable_but_its_policy_is_not(team, team_store):
    home = team_store.home
    for d in (home, home / "store"):
        st = d.stat()
        assert stat.S_IMODE(st.st_mode) == 0o3770 and st.st_gid == _gid(team.group)
    for f in ("data.mdb", "lock.mdb"):
        st = (home / "store" / f).stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == _gid(team.group)
    assert stat.S_IMODE((home / "policy.toml").stat().st_mode) == 0o644
    # a member can neither rewrite the policy nor replace it (sticky directory)
    p = subprocess.run(as_user(team.outsider, ["sh", "-c", f"mv {home}/policy.toml {home}/x"]),
                       check=False, capture_output=True, text=True)
    assert p.returncode != 0 and (home / "policy.toml").exists()


def _gid(group: str) -> int:
    import grp

    return grp.getgrnam(group).gr_gid


def test_second_user_reviews_a_team_request(team, team_store):
    r = team_store
    doc = create(r, gpus=4)  # filed by root
    assert doc["status"] == "pending"
    p = r("request", "approve", doc["id"], check=False)
    assert p.returncode == 2 and "never review their own request" in p.stderr
    p = r.as_(team.outsider, "request", "approve", doc["id"], check=False)
    assert p.returncode == 2 and f"{team.outsider.name} may not review" in p.stderr
    assert f"group {team.leads}" in p.stderr
    p = r.as_(team.reviewer, "request", "approve", doc["id"], "--comment", "go", "--json")
    done = json.loads(p.stdout)
    assert done["status"] == "approved"
    assert done["reviews"] == [{"by": team.reviewer.name, "decision": "approved",
                                "at": done["reviews"][0]["at"], "via": "local",
                                "comment": "go"}]
    p = r.as_(team.reviewer, "request", "approve", doc["id"], check=False)
    assert p.returncode == 2 and "is approved, not pending" in p.stderr


def test_wait_returns_when_a_reviewer_decides(team, team_store):
    r = team_store
    first, second = create(r, gpus=4), create(r, gpus=3)
    waiting = subprocess.Popen([sys.executable, "-m", "roar", "request", "wait",
                                first["id"], "--json", "--timeout", "60"], cwd=r.cwd,
                               env=r.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        time.sleep(1.5)
        assert waiting.poll() is None
        r.as_(team.reviewer, "request", "approve", first["id"])
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "approved"
    r.as_(team.reviewer, "request", "deny", second["id"], "--reason", "use the v3 data")
    p = r("request", "wait", second["id"], check=False)
    assert p.returncode == 1 and "is denied" in p.stdout
    marker = r.cwd / "started"
    p = r("run", "--request", second["id"], "--", "touch", marker, check=False)
    assert p.returncode == 125 and "denied by" in p.stderr and "use the v3 data" in p.stderr
    assert not marker.exists()


@pytest.mark.capture
def test_reviews_go_through_the_daemon(team, team_store, roard):
    r = TeamRoar(team_store.home, roard, team_store.cwd)
    doc = create(r, gpus=4)
    p = r("request", "approve", doc["id"], check=False)  # root, via the daemon
    assert p.returncode == 2 and "never review their own request" in p.stderr
    p = r.as_(team.outsider, "request", "approve", doc["id"], check=False)
    assert p.returncode == 2 and "may not review" in p.stderr
    done = json.loads(r.as_(team.reviewer, "request", "approve", doc["id"], "--json").stdout)
    assert done["status"] == "approved"
    assert [(v["by"], v["via"]) for v in done["reviews"]] == [(team.reviewer.name, "roard")]


# -- real runs under the probes ---------------------------------------------------------


@pytest.mark.capture
def test_run_resolves_request_and_flags_the_wrong_dataset_version(roar):
    write_policy(roar.home, POLICY)
    data = roar.cwd / "data.csv"
    data.write_text("v1\n")
    cmd = ["sh", "-c", "cat data.csv > out.txt"]

    def file_request():
        return json.loads(roar("request", "create", "--json", "--dataset", "data.csv", "--gpus",
                               1, "--hours", 1, "--rationale", "r", "--", *cmd).stdout)

    first, second = file_request(), file_request()
    p = roar("run", "--request", first["id"], "--", *cmd)
    done = roar.json("request", "show", first["id"])
    run_id = done["run"]
    assert done["status"] == "resolved" and done["dataset_mismatch"] is False
    assert done["outputs"] == [{"path": str(roar.cwd / "out.txt"),
                                "hash": xxh128(roar.cwd / "out.txt")}]
    assert done["dataset_check"][0]["status"] == "match"
    assert 0 < done["duration_hours"] < 0.1
    assert done["cost"] == pytest.approx(done["gpu_hours"] * 2.0, abs=1e-3)
    with Store(roar.home, readonly=True) as s:
        run = s.get_run(run_id)
    assert run["request"] == first["id"] and run["dataset_mismatch"] is False
    assert f"request {first['id']} resolved by run {run_id}" in p.stderr
    # the same recipe filed again names the recorded run
    p = roar("request", "create", "--dataset", "data.csv", "--gpus", 1, "--hours", 1,
             "--rationale", "r", "--", *cmd)
    assert f"run {run_id}" in p.stderr and "near-duplicate" in p.stderr
    # the dataset changes before the second run: it read another version than filed
    data.write_text("v2\n")
    p = roar("run", "--request", second["id"], "--", *cmd)
    assert "DATASET MISMATCH" in p.stderr
    wrong = roar.json("request", "show", second["id"])
    assert wrong["dataset_mismatch"] is True
    [check] = wrong["dataset_check"]
    assert check["status"] == "changed" and check["changed"][0]["hash"] == xxh128(data)
    with Store(roar.home, readonly=True) as s:
        assert s.get_run(wrong["run"])["dataset_mismatch"] is True
    assert "MISMATCH" in roar("request", "show", second["id"]).stdout
    p = roar("run", "--request", second["id"], "--", *cmd, check=False)
    assert p.returncode == 125 and "already used by run" in p.stderr


@pytest.mark.capture
def test_budget_is_warned_then_the_run_stopped(roar):
    write_policy(roar.home, POLICY)
    (roar.cwd / "data").mkdir()
    (roar.cwd / "data" / "a.csv").write_text("1\n")
    doc = create(roar, gpus=1, hours=0.0005)  # 1.8 s of one GPU
    t = time.monotonic()
    p = roar("run", "--request", doc["id"], "--", "sleep", "30", check=False)
    took = time.monotonic() - t
    assert took < 15, p.stderr
    err = p.stderr
    assert "of the approved 0.0005 GPU-hours used" in err
    assert "was used up" in err and err.index("GPU-hours used") < err.index("was used up")
    done = roar.json("request", "show", doc["id"])
    assert done["status"] == "resolved"
    assert 0.0005 <= done["gpu_hours"] < 0.003
    run = roar.json("show", done["run"])
    assert run["status"] == "interrupted"
    assert any("budget" in r for r in run["incomplete_reasons"])
    assert done["dataset_mismatch"] is False  # stopped early: unknown, not a mismatch
    assert done["dataset_check"][0]["status"] == "unknown"

