"""Classification of paths (roar/record/classify.py): one test per rule, and
which reads are worth hashing at open (needs_hash)."""

from __future__ import annotations

import os

import pytest

from roar.record.classify import (
    CODE,
    DATA,
    ENV,
    PSEUDO,
    classify,
    in_venv,
    is_environment,
    needs_hash,
)

ROOT = "/repo"
TRACKED = {"train.py", "conf/base.yaml", "data/labels.csv"}


@pytest.mark.parametrize("path", ["/proc/self/status", "/sys/fs/cgroup/x", "/dev/null",
                                  "/dev/nvidia0", "/proc", "/sys", "/dev"])
def test_pseudo_filesystems(path):
    assert classify(path, ROOT, TRACKED) == PSEUDO and not needs_hash(path)


def test_dev_shm_holds_real_files():
    assert classify("/dev/shm/batch-0.npy") == DATA and needs_hash("/dev/shm/batch-0.npy")
    assert classify("/devices/x") == DATA  # only the /dev/ tree is pseudo


@pytest.mark.parametrize("path", [
    "/repo/.venv/lib/python3.11/site-packages/numpy/__init__.py",   # site-packages
    "/usr/lib/python3/dist-packages/bcc/__init__.py",               # dist-packages
    "/repo/pkg/__pycache__/m.cpython-311.pyc",                      # byte code
    "/home/u/.pyenv/versions/3.11.7/lib/python3.11/os.py",          # a pyenv interpreter
    "/opt/miniconda/envs/train/lib/libcudart.so.12",                # a conda env
    "/repo/venv/bin/python3", "/repo/.env/lib/x", "/repo/env/include/y.h",
    "/repo/.venv/pyvenv.cfg",
    "/home/u/lib/python3.11/abc.py", "/x/lib64/python3/y.py",       # an interpreter's lib
    "/repo/build/m.pyc",
    "/repo/roar.egg-info/PKG-INFO",                                 # an editable install's
    "/opt/tools/lib/pkgs/attrs-23.2.0.dist-info/METADATA",          # installed metadata
])
def test_environment_by_its_parts(path):
    assert classify(path, ROOT, TRACKED) == ENV and is_environment(path, ROOT)
    assert not needs_hash(path)


@pytest.mark.parametrize("path", ["/usr/share/zoneinfo/UTC", "/lib/x86_64-linux-gnu/libc.so.6",
                                  "/lib64/ld-linux-x86-64.so.2", "/etc/hosts", "/bin/sh",
                                  "/sbin/ldconfig", "/var/lib/dpkg/status", "/run/x",
                                  "/opt/conda/lib/libz.so", "/nix/store/abc-x/lib/y",
                                  "/snap/core/1/lib/z", "/var/cache/ldconfig/aux-cache",
                                  "/lib32/x", "/libx32/y"])
def test_system_prefixes_are_environment(path):
    assert classify(path) == ENV and not needs_hash(path)


def test_shared_library_outside_the_work_tree_is_environment_but_hashed_when_read():
    assert classify("/data/ext/libcustom.so.1") == ENV
    assert classify("/data/ext/libcustom.so") == ENV
    assert needs_hash("/data/ext/libcustom.so.1")  # a library in a work tree is code
    assert classify("/data/ext/libcustom.so.txt") == DATA


def test_in_the_work_tree_a_shared_library_is_not_environment():
    assert classify("/repo/build/ext.so", ROOT, TRACKED) == DATA
    assert classify("/repo/build/ext.so", ROOT, {"build/ext.so"}) == CODE


def test_git_metadata_is_environment():
    assert classify("/repo/.git", ROOT, TRACKED) == ENV
    assert classify("/repo/.git/HEAD", ROOT, TRACKED) == ENV
    assert classify("/repo/.gitignore", ROOT, TRACKED) == DATA
    assert classify("/repo/.github/x.yml", ROOT, TRACKED) == CODE  # a code suffix


def test_tracked_files_are_code_whatever_their_suffix():
    assert classify("/repo/data/labels.csv", ROOT, TRACKED) == CODE
    assert classify("/repo/data/other.csv", ROOT, TRACKED) == DATA


@pytest.mark.parametrize("name", ["x.py", "nb.ipynb", "run.sh", "k.cu", "conf.yaml", "c.toml",
                                  "Makefile", "Dockerfile", "q.sql", "m.R"])
def test_code_suffixes_in_the_work_tree(name):
    assert classify(f"/repo/src/{name}", ROOT, TRACKED) == CODE
    assert classify(f"/repo/src/{name}", ROOT, None) == CODE


def test_code_suffix_outside_the_work_tree_or_without_git_is_data():
    assert classify("/elsewhere/helper.py", ROOT, TRACKED) == DATA
    assert classify("/repo/helper.py") == DATA  # no git root known
    assert classify("/repo2/helper.py", ROOT, TRACKED) == DATA  # a sibling, not below


def test_git_root_with_a_trailing_slash():
    assert classify("/repo/train.py", "/repo/", TRACKED) == CODE
    assert classify("/repo/.git/HEAD", "/repo/", TRACKED) == ENV


def test_plain_data():
    assert classify("/data/imagenet/train/0001.jpg", ROOT, TRACKED) == DATA
    assert needs_hash("/data/imagenet/train/0001.jpg")


@pytest.mark.parametrize("path", [
    "/home/u/.pyenv/shims/python3", "/home/u/.pyenv/libexec/pyenv-exec",
    "/home/u/.pyenv/plugins/pyenv-virtualenv/bin/pyenv-sh-activate",
    "/home/u/.triton/cache/ab/kernel.cubin", "/home/u/.nv/ComputeCache/0/1/x",
    "/tmp/torchinductor_u/fx_graph_cache/y", "/home/u/.cache/pip/http/z",
    "/home/u/.cache/torch_extensions/py311/op.so",
    "/home/u/.rustup/toolchains/x/lib/libLLVM.so.22.1-rust-1.95.0-stable",
])
def test_tool_caches_pyenv_and_versioned_libraries_are_environment(path):
    assert classify(path, ROOT, TRACKED) == ENV


@pytest.mark.parametrize("path", [
    "/home/u/.cache/huggingface/datasets/x.arrow",  # a dataset cache is data
    "/home/u/.cache/torch/hub/checkpoints/resnet.pth",  # downloaded weights too
    "/tmp/torchinductor.txt", "/data/libsvm.so.txt",
])
def test_data_caches_stay_data(path):
    assert classify(path) == DATA


def test_a_virtualenv_is_found_by_its_pyvenv_cfg_whatever_its_name(tmp_path):
    venv = tmp_path / "my-tools-2024"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    exe = f"{venv}/bin/python3"
    assert classify(exe) == ENV and not needs_hash(exe)
    plain = tmp_path / "project"
    (plain / "bin").mkdir(parents=True)
    assert classify(f"{plain}/bin/tool") == DATA  # no pyvenv.cfg: not a venv


def test_a_virtualenv_is_looked_for_above_the_first_three_bin_lib_include_parts_only(tmp_path):
    # one stat per candidate directory, at most three per path: a venv nested below three
    # other bin/lib/include parts is not found (the cost of a read stays bounded)
    third = tmp_path / "a" / "lib" / "b" / "include" / "v3"
    fourth = tmp_path / "a" / "lib" / "b" / "include" / "c" / "lib" / "v4"
    for venv in (third, fourth):
        (venv / "bin").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert in_venv(f"{third}/bin/python3") is True
    assert classify(f"{third}/bin/python3") == ENV
    assert in_venv(f"{fourth}/bin/python3") is False
    assert classify(f"{fourth}/bin/python3") == DATA and needs_hash(f"{fourth}/bin/python3")


def test_in_venv_answers_a_bool():
    assert in_venv("/data/imagenet/train/0001.jpg") is False
    assert in_venv("/srv/a/lib/b/lib/c/lib/d/lib/e") is False  # past the three parts looked at


@pytest.mark.parametrize("root", ["/srv/repoX", "/srv/repoX/", "/srv/r/"])
def test_a_git_root_whose_name_ends_in_any_character(root):
    # only trailing slashes are stripped from the git root, nothing else
    base = root.rstrip("/")
    assert classify(f"{base}/train.py", root, None) == CODE
    assert classify(f"{base}/data/labels.csv", root, {"data/labels.csv"}) == CODE
    assert classify(f"{base}/.git/HEAD", root, None) == ENV
    assert classify(base, root, None) == DATA  # the work tree itself is not git metadata
    assert is_environment(f"{base}/.git/config", root)


# -- the user's rules (roar/record/classify.py load_rules) ---------------------------------

from roar.record.classify import RulesError, explain, load_rules, rules_from_docs  # noqa: E402


def _rules(tmp_path, store: str | None = None, repo: str | None = None):
    home, tree = tmp_path / "home", tmp_path / "repo"
    home.mkdir(exist_ok=True)
    tree.mkdir(exist_ok=True)
    if store is not None:
        (home / "config.toml").write_text(store)
    if repo is not None:
        (tree / ".roar.toml").write_text(repo)
    return load_rules(home, str(tree)), str(tree), home


def test_rule_globs_directories_and_names_anywhere(tmp_path):
    rules, tree, home = _rules(tmp_path, store='[classify]\ndata = ["*.parquet", "/opt/x/"]\n'
                               'environment = ["/data/tools/**/bin/*"]\nignore = ["~/.locks/"]\n')
    assert classify("/usr/share/a/b.parquet", rules=rules) == DATA  # a name, at any depth
    assert classify("/opt/x/lib/libz.so", rules=rules) == DATA  # a directory: all below
    assert classify("/opt/xy/lib/libz.so", rules=rules) == ENV  # not a prefix match
    assert classify("/data/tools/a/b/bin/run", rules=rules) == ENV
    assert classify("/data/tools/a/b/run", rules=rules) == DATA
    import os
    assert classify(os.path.expanduser("~/.locks/1"), rules=rules) == PSEUDO
    kind, why = explain("/opt/x/lib/libz.so", rules=rules)
    assert why == f"data rule '/opt/x/' in {home / 'config.toml'}"


def test_repo_rules_are_relative_to_the_work_tree_and_win(tmp_path):
    rules, tree, home = _rules(tmp_path, store='[classify]\nenvironment = ["*.json"]\n',
                               repo='[classify]\ncode = ["conf/**/*.json"]\n')
    assert classify(f"{tree}/conf/a/b.json", tree, set(), rules) == CODE
    kind, why = explain(f"{tree}/conf/b.json", tree, set(), rules)
    assert (kind, why) == (CODE, f"code rule 'conf/**/*.json' in {tree}/.roar.toml")
    assert classify(f"{tree}/other/b.json", tree, set(), rules) == ENV  # the store's rule
    assert classify("/elsewhere/conf/b.json", tree, set(), rules) == ENV


def test_longest_pattern_wins_within_a_file(tmp_path):
    rules, _, _ = _rules(tmp_path, store='[classify]\nenvironment = ["/data/"]\n'
                         'data = ["/data/sets/"]\n')
    assert classify("/data/sets/x", rules=rules) == DATA
    assert classify("/data/other/x", rules=rules) == ENV


def test_rules_round_trip_through_the_run_record(tmp_path):
    rules, tree, _ = _rules(tmp_path, repo='[classify]\ndata = ["build/*.so"]\n')
    again = rules_from_docs([r.to_doc() for r in rules])
    assert again == rules
    assert classify(f"{tree}/build/x.so", tree, set(), again) == DATA


@pytest.mark.parametrize("text,message", [
    ("[classify\n", "is not valid TOML"),
    ("classify = 3\n", "classify must be a table"),
    ("[classify]\nbogus = ['x']\n", "[classify] has no 'bogus'"),
    ("[classify]\ndata = 'x'\n", "classify.data must be a list of non-empty globs"),
    ("[classify]\ndata = ['']\n", "classify.data must be a list of non-empty globs"),
])
def test_a_bad_rules_file_is_one_message_naming_it(tmp_path, text, message):
    with pytest.raises(RulesError) as e:
        _rules(tmp_path, store=text)
    assert message in str(e.value) and str(tmp_path / "home" / "config.toml") in str(e.value)


def test_explain_says_which_built_in_rule(tmp_path):
    assert explain("/proc/self/maps")[1].startswith("a pseudo filesystem")
    assert explain("/x/.venv/lib/python3.11/site-packages/a.py")[1] == \
        "installed Python packages (site-packages)"
    assert explain("/usr/bin/env") == (ENV, "a system location (/usr/)")
    assert explain("/root/.config/pip/pip.conf")[0] == ENV
    assert explain("/home/u/.gitconfig")[0] == ENV
    assert explain("/repo/train.py", "/repo", {"train.py"}) == (
        CODE, "tracked by git in the work tree /repo")
    assert explain("/repo/d.csv", "/repo", set())[0] == DATA
    assert explain("/data/d.csv") == (DATA, "outside the work tree and every environment "
                                             "location")


# -- the per-directory facts against the rules as one regex over the whole path -----------

# The built-in rules as they were written before they were split into directory and
# name patterns (roar/record/classify.py _ENV_RULES), searched over the whole path at
# every call: the reference the per-directory facts must agree with ("$" written
# "\Z": a file name may end in a newline).
_ORACLE_RULES = (
    (r"/(?:site-packages|dist-packages)/", "installed Python packages (site-packages)"),
    (r"/__pycache__/|\.pyc\Z", "Python byte code (.pyc)"),
    (r"/[^/]+\.(?:egg-info|dist-info)/", "an installed distribution's metadata "
     "(.egg-info, .dist-info)"),
    (r"/\.pyenv/versions/", "a pyenv interpreter"),
    (r"/\.pyenv/(?:shims|libexec|plugins)/", "pyenv's shims and scripts"),
    (r"/envs/[^/]+/lib/", "a conda environment"),
    (r"/\.?v?env/(?:lib|lib64|bin|include)/|/pyvenv\.cfg\Z", "a virtualenv (env/, venv/)"),
    (r"/lib(?:32|64)?/python\d+(?:\.\d+)?/", "a Python interpreter's library"),
    (r"/\.triton/|/\.nv/ComputeCache/|^/tmp/torchinductor_[^/]+/"
     r"|/\.cache/(?:pip|triton|torch_extensions|fontconfig|matplotlib|numba|pycache)/",
     "a compiler, GPU kernel or tool cache"),
    (r"^(?:/root|/home/[^/]+)/(?:\.config|\.rustup|\.cargo|\.conda|\.npm|\.nvm|\.docker"
     r"|\.aws|\.ssh|\.terminfo)/"
     r"|^(?:/root|/home/[^/]+)/\.(?:condarc|gitconfig|netrc|pypirc|bashrc|zshrc|profile"
     r"|bash_profile|inputrc|curlrc|wgetrc)\Z",
     "a user's tool settings (~/.config, dotfiles, toolchains)"),
)


def _oracle_env(path: str, git_root: str | None) -> str | None:
    import re

    from roar.record import classify as C

    for rx, why in _ORACLE_RULES:
        if re.search(rx, path):
            return why
    venv = C.venv_root(path)
    if venv:
        return f"the virtualenv {venv} (it has a pyvenv.cfg)"
    rel = C._in_tree(path, git_root)
    if rel is not None or (git_root and path == git_root.rstrip("/")):
        if rel == ".git" or (rel or "").startswith(".git/"):
            return "git's own files"
        return None
    if path.startswith(C.SYSTEM_PREFIXES):
        return f"a system location ({next(p for p in C.SYSTEM_PREFIXES if path.startswith(p))})"
    if re.search(r"\.so(?:\.\d+)*\Z|/lib[^/]*\.so\.\d[^/]*\Z", path):
        return "a shared library outside the work tree"
    return None


def _oracle_needs_hash(path: str) -> bool:
    from roar.record import classify as C

    return not (C.is_pseudo(path) or path.startswith(C.SYSTEM_PREFIXES)
                or any(__import__("re").search(rx, path) for rx, _ in _ORACLE_RULES)
                or C.in_venv(path))


# path components the rules look for, and near misses
_PARTS = ["site-packages", "dist-packages", "__pycache__", "x.pyc", "a.py", "pyvenv.cfg",
          "m.egg-info", "n.dist-info", ".egg-info", ".pyenv", "versions", "shims", "libexec",
          "plugins", "envs", "t", "lib", "lib32", "lib64", "bin", "include", "env", "venv",
          ".venv", ".env", "vv", "python3", "python3.11", "pythonx", ".triton", ".nv",
          "ComputeCache", "tmp", "torchinductor_u", ".cache", "pip", "numba", "root", "home",
          "u", ".config", ".ssh", ".bashrc", ".gitconfig", ".profile", "usr", "etc", "var",
          "opt", "conda", "snap", "proc", "dev", "shm", "libfoo.so.1", "a.so", "libLLVM.so.2x",
          "b.so.1.2", ".so", "repo", ".git", "data", "f\n", "x.pyc\n", "\udcff", "", ".",
          "data.sorted", "x.so.txt"]


def _check_paths(paths, venvs=()):
    from roar.record import classify as C

    for path in paths:
        i = path.rfind("/") + 1
        for git_root in (None, "/repo", "/repo/", "/home/u", *venvs):
            assert C._builtin_env(path, git_root) == _oracle_env(path, git_root), (path, git_root)
            by = C.kind_by_dir(path[:i], git_root)  # as the recorder asks, per directory
            if by is not None:
                got = by if isinstance(by, str) else by(path[i:])
                assert got == C.classify(path, git_root, {"a.py", "data", "u"}), (path, git_root)
        assert C.needs_hash(path) == _oracle_needs_hash(path), path
        assert _by_dir(path) in (None, C.needs_hash(path)), path


def test_directory_facts_agree_with_the_rules_over_the_whole_path(tmp_path):
    """classify keeps what a directory's path says (environment locations, a
    virtualenv, system prefixes) per directory and matches only file names per
    path: the reasons and needs_hash must be those of the rules searched over the
    whole path, for generated paths (every component the rules look for, in any
    order, a virtualenv with its pyvenv.cfg among them) and for the real files of
    this interpreter and the system's libraries."""
    import sys

    from hypothesis import given, settings
    from hypothesis import strategies as st

    venv = tmp_path / "v"
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr\n")
    parts = st.lists(st.sampled_from(_PARTS + [str(venv)[1:]]), min_size=0, max_size=7)

    @settings(max_examples=1000, deadline=None)
    @given(parts)
    def generated(names):
        _check_paths(["/" + "/".join(names)], venvs=(str(venv),))

    generated()
    real = []
    for base in (sys.prefix, "/usr/lib", "/etc", "/root"):
        for dirpath, _dirnames, filenames in os.walk(base):
            real += [os.path.join(dirpath, f) for f in filenames[:20]]
            if len(real) > 8000:
                break
    assert len(real) > 1000
    _check_paths(real)



def _by_dir(path: str) -> bool | None:
    """needs_hash as the compiled model asks it: needs_hash_dir once per
    directory, then the file name against its pattern (None: needs_hash asked)."""
    from roar.record.classify import needs_hash_dir

    i = path.rfind("/") + 1
    ans = needs_hash_dir(path[:i])
    if ans is None or isinstance(ans, bool):
        return ans
    return ans.fullmatch(path[i:]) is None


def test_needs_hash_by_directory():
    """needs_hash_dir(d) answers for the files of d (with the pattern of the
    rules by file name that may match there): as needs_hash; None for "/", whose
    /proc, /sys and /dev are pseudo by name."""
    from roar.record.classify import needs_hash_dir

    assert needs_hash_dir("/proc/self/") is False and needs_hash_dir("/dev/") is False
    assert needs_hash_dir("/usr/lib/") is False
    assert needs_hash_dir("/repo/pkg/__pycache__/") is False
    assert needs_hash_dir("/") is None and needs_hash_dir("/data") is None
    assert _by_dir("/data/imagenet/train/0001.jpg") is True
    assert _by_dir("/data/x.pyc") is False and _by_dir("/data/pyvenv.cfg") is False
    assert _by_dir("/dev/shm/batch") is True
    for name in ("proc", "sys", "dev", "x.so.1", "a.pyc", "pyvenv.cfg", "data.csv", "a.pyc\n"):
        for d in ("/", "/data/", "/dev/", "/dev/shm/", "/repo/pkg/", "/usr/", "/repo/.venv/"):
            assert _by_dir(d + name) in (None, needs_hash(d + name)), d + name


def test_kind_by_directory():
    """kind_by_dir(d) is classify's kind for the files of d (a kind, or a
    function of the file name) where the work tree and the user's rules have no
    say; None where they may (below the git root, the root's own directory, any
    user rule) and for "/"."""
    from roar.record.classify import Rule, kind_by_dir

    assert kind_by_dir("/proc/self/") == PSEUDO and kind_by_dir("/usr/lib/") == ENV
    by = kind_by_dir("/data/ext/")
    assert by("x.csv") == DATA and by("libcustom.so.1") == ENV and by("m.pyc") == ENV
    assert kind_by_dir("/dev/shm/")("batch") == DATA
    assert kind_by_dir("/repo/data/", "/repo") is None and kind_by_dir("/", None) is None
    assert kind_by_dir("/", "/repo") is None  # /repo itself is in it
    # a work tree's root is never environment by its name (libx.so.1 elsewhere would be)
    assert kind_by_dir("/data/", "/data/libx.so.1") is None
    assert classify("/data/libx.so.1", "/data/libx.so.1") == DATA
    assert kind_by_dir("/data/", None, [Rule("data", "*.csv", "f", ".*")]) is None
    for d, root in [("/data/", None), ("/data/", "/repo"), ("/repo2/", "/repo"),
                    ("/home/u/.cache/pip/", None), ("/usr/", "/usr/src/app")]:
        by = kind_by_dir(d, root)
        for name in ("x.csv", "a.py", "libz.so", "libz.so.1", "m.pyc", "pyvenv.cfg", "repo",
                     "data.sorted", "x.so.txt"):
            if by is not None:
                got = by if isinstance(by, str) else by(name)
                assert got == classify(d + name, root, {"a.py"}), d + name


def test_name_needles_are_in_every_name_the_rules_match():
    """The model tests a file name for its directory's needles (literal strings
    one of which every name matched by the rules by name contains) before it
    matches the rules: a name holding none is data and needs hashing, exactly as
    the rules say. Checked for every directory's rules in the generated paths,
    the home directory's, and patterns of each shape the parser gives (groups,
    alternatives, common prefixes, repeats, case-insensitive parts: no needles)."""
    import itertools
    import re

    from roar.record import _cmodel
    from roar.record.classify import kind_by_dir, needles, needs_hash_dir

    names = [a + b for a, b in itertools.product(_PARTS + ["rc", "pyc", "cfg", "so.1"],
                                                 ["", ".pyc", ".so", ".so.3", "rc", "x"])]
    dirs = ["/data/", "/home/u/", "/root/", "/data/pkg/", "/srv/x/"]
    checked = 0
    for d in dirs:
        by, nh = kind_by_dir(d), needs_hash_dir(d)
        assert by is not None and not isinstance(by, str) and by.needles is not None
        for name in names:
            if "/" in name:
                continue
            may = _cmodel.name_may_match(by, d + name, len(d))
            assert may == any(n in name for n in by.needles)
            if not may:
                assert by(name) == DATA == classify(d + name), d + name
                checked += 1
            if nh is not True:
                assert not (not _cmodel.name_may_match(nh, d + name, len(d))
                            and nh.pattern.fullmatch(name)), d + name
    assert checked > 100
    pats = [r".*\.pyc", r"pyvenv\.cfg", r"\.(?:condarc|gitconfig)", r"abc|abd", r"x(?:foo|ba+r)y",
            r"(?s).*\.so(?:\.\d+)*|lib.*\.so\.\d.*", r"a(?=b)c", r"q[a-z]+(?:\.tar)?\.gz"]
    for p in pats:
        got = needles((p,))
        assert got, p
        for name in names + ["xfooy", "xbaaary", "abc", "abd", "q.gz", "qab.tar.gz", "libz.so.1"]:
            if re.fullmatch(p, name, re.S):
                assert any(n in name for n in got), (p, name)
    for p in (r"(?i)abc", r"a|b", r".*", r"(?i:x)y?", r"[ab]c*"):
        assert needles((p,)) is None, p
    assert needles((r"ab", r"(?i)c")) is None
