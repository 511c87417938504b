"""Run context: classification, redaction of secrets, git state."""

from __future__ import annotations

import pytest
from conftest import git

from roar.record import context
from roar.record.classify import CODE, DATA, ENV, PSEUDO, classify


def test_classify():
    root = "/repo"
    tracked = {"train.py", "conf/a.yaml"}
    assert classify("/repo/train.py", root, tracked) == CODE
    assert classify("/repo/conf/a.yaml", root, tracked) == CODE
    assert classify("/repo/data/x.csv", root, tracked) == DATA
    assert classify("/repo/.venv/lib/python3.11/site-packages/np/a.py", root, tracked) == ENV
    assert classify("/repo/.git/HEAD", root, tracked) == ENV
    assert classify("/usr/lib/x86_64-linux-gnu/libc.so.6") == ENV
    assert classify("/root/.pyenv/versions/3.11.7/lib/python3.11/os.py") == ENV
    assert classify("/proc/self/status") == PSEUDO and classify("/dev/null") == PSEUDO
    assert classify("/data/imagenet/train/0001.jpg") == DATA
    assert classify("/tmp/x/__pycache__/m.cpython-311.pyc") == ENV


def test_secret_env_values_are_keyed_hashes():
    key = b"k" * 32
    env = context.environment({"HF_TOKEN": "abc", "PATH": "/bin", "X": "ghp_" + "a" * 36,
                               "AWS_REGION": "eu"}, key)
    assert env["PATH"] == "/bin"
    for name in ("HF_TOKEN", "X", "AWS_REGION"):
        assert set(env[name]) == {"redacted"} and env[name]["redacted"].startswith("hmac")
    # same value, same key: comparable without revealing it
    assert context.environment({"HF_TOKEN": "abc"}, key)["HF_TOKEN"] == env["HF_TOKEN"]
    assert context.environment({"HF_TOKEN": "abc"}, b"j" * 32)["HF_TOKEN"] != env["HF_TOKEN"]


def test_secret_args_are_redacted():
    key = b"k" * 32
    out = context.redact_argv(["train.py", "--token=hf_" + "b" * 30, "sk-" + "c" * 40, "--lr",
                               "0.1"], key)
    assert out[0] == "train.py" and out[-2:] == ["--lr", "0.1"]
    assert "hf_" not in out[1] and out[1].startswith("--token=hmac")
    assert out[2].startswith("hmac")


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@e")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "train.py").write_text("print(1)\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def test_git_state_clean_and_dirty(repo):
    g = context.git_state(str(repo), allow_dirty=False)
    assert g["branch"] == "main" and len(g["commit"]) == 40 and not g["dirty"]
    (repo / "train.py").write_text("print(2)\n")
    (repo / "new.py").write_text("x")
    with pytest.raises(context.GitError) as e:
        context.git_state(str(repo), allow_dirty=False)
    assert "modified: train.py" in str(e.value) and "untracked: new.py" in str(e.value)
    g = context.git_state(str(repo), allow_dirty=True)
    assert g["dirty"] and "print(2)" in g["patch"] and "new.py" in g["untracked"]


def test_no_repo_and_repo_without_commits(tmp_path):
    assert context.git_state(str(tmp_path), False) is None
    git(tmp_path, "init", "-q")
    assert context.git_state(str(tmp_path), False)["commit"] is None
    (tmp_path / "a").write_text("a")
    with pytest.raises(context.GitError, match="no commits"):
        context.git_state(str(tmp_path), False)


def test_detached_head(repo):
    git(repo, "checkout", "-q", "--detach")
    g = context.git_state(str(repo), False)
    assert g["detached"] and g["branch"] is None


def test_venvs_and_shared_libraries_are_environment():
    assert classify("/opt/torch/.venv/pyvenv.cfg") == ENV
    assert classify("/opt/x/venv/lib/python3.12/site-packages/a.py") == ENV
    assert classify("/opt/roar-bcc/usr/lib/x86_64-linux-gnu/libffi.so.8") == ENV
    assert classify("/home/u/proj/build/ext.cpython-311-x86_64-linux-gnu.so") == ENV
    assert classify("/data/venv_results.csv") == DATA


def test_packages_are_what_was_imported(tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    for name, top in (("numpy-2.1.0", "numpy"), ("idle-1.0", "idle")):
        d = site / f"{name}.dist-info"
        d.mkdir(parents=True)
        (d / "top_level.txt").write_text(top + "\n")
        (d / "entry_points.txt").write_text("")
    used = [str(site / "numpy" / "__init__.py"),
            str(site / "idle-1.0.dist-info" / "entry_points.txt")]  # metadata scan only
    assert context.packages(used) == {"numpy": "2.1.0"}


def test_packages_from_site_dists_read_ahead_are_packages_read_at_the_end(tmp_path):
    """The recorder reads a site-packages directory's distributions while the run
    goes on (context.site_dists); at the end packages() takes them where the
    directory lists the same entries, else reads it again: the same answer as
    reading it all at the end, for top_level.txt, RECORD (a name in a RECORD that
    names none of the run's), a distribution added, and one removed since."""
    site = tmp_path / "lib" / "python3.11" / "site-packages"

    def dist(name, top=None, record=None):
        d = site / f"{name}.dist-info"
        d.mkdir(parents=True)
        if top is not None:
            (d / "top_level.txt").write_text(top + "\n")
        if record is not None:
            (d / "RECORD").write_text(record)

    dist("numpy-2.1.0", top="numpy")
    dist("six-1.16.0", record="six.py,sha256=x,1\nsix-1.16.0.dist-info/RECORD,,\n")
    dist("pkg_a-0.1", record="pkg_a/__init__.py,,\npkg_a/six_helpers.py,,\n")
    dist("nothing-1", record="")
    used = [str(site / "numpy" / "__init__.py"), str(site / "six.py"),
            str(site / "pkg_a" / "__init__.py"), "/usr/lib/libc.so.6"]
    assert context.site_of(used[0]) == str(site) and context.site_of(used[3]) is None
    ahead = {str(site): context.site_dists(str(site))}
    want = context.packages(used)
    assert want == {"numpy": "2.1.0", "pkg-a": "0.1", "six": "1.16.0"}
    assert context.packages(used, ahead) == want
    dist("torch-2.0", top="torch")  # installed since: read again
    assert context.packages([*used, str(site / "torch" / "x.py")], ahead) == {
        **want, "torch": "2.0"}
    import shutil

    shutil.rmtree(site / "six-1.16.0.dist-info")
    assert context.packages(used, ahead) == context.packages(used) == {
        "numpy": "2.1.0", "pkg-a": "0.1"}
    assert context.site_dists(str(tmp_path / "none")) is None
