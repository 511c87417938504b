"""Classification of accessed paths: data, code, environment, pseudo; and the
rules that decide it, built in or the user's own, each able to say why.

Environment files (interpreters, libraries, site-packages, system config)
are summarised as package versions, not listed as data inputs; pseudo files
(/proc, /sys, /dev) carry no content identity.

Users change the classification with globs in TOML (`[classify]` with
`data`, `code`, `environment` and `ignore` lists), read from, first match
wins: the work tree's `.roar.toml`, `$ROAR_HOME/config.toml`,
`/etc/roar/config.toml`; then the built-in rules below. Within one file the
most specific (longest) matching pattern wins. `ignore` files are kept as
pseudo files: no hash, never an input or output. The rules a run used are
stored on its record (`classify_rules`), so `roar show RUN --explain` gives
the reason each of its files got its kind.
"""

from __future__ import annotations

import functools
import os
import re
from collections import namedtuple
from collections.abc import Callable

DATA, CODE, ENV, PSEUDO = "data", "code", "env", "pseudo"

PSEUDO_PREFIXES = ("/proc/", "/sys/", "/dev/")
SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/",
                   "/etc/", "/var/lib/", "/var/cache/", "/run/", "/opt/conda/", "/nix/store/",
                   "/snap/")
# The built-in environment rules, each with the reason `--explain` gives. A rule
# is one or more (directory, name) patterns: it matches a path when, for one of
# them, the directory pattern is found in the path's directory (everything up to
# and including its last "/"; None: any directory) and the name pattern is the
# whole file name after that "/" (None: any name). A path's directory is looked
# at once per directory (_dir_facts), however many files of it a run reads; only
# the name patterns are matched per path.
_HOME = r"^(?:/root|/home/[^/]+)/"
_ENV_RULES = (
    ("installed Python packages (site-packages)",
     ((r"/(?:site-packages|dist-packages)/", None),)),
    ("Python byte code (.pyc)", ((r"/__pycache__/", None), (None, r".*\.pyc"))),
    # what pip reads to know what is installed, also an editable install's
    # PROJECT.egg-info in its own work tree
    ("an installed distribution's metadata (.egg-info, .dist-info)",
     ((r"/[^/]+\.(?:egg-info|dist-info)/", None),)),
    ("a pyenv interpreter", ((r"/\.pyenv/versions/", None),)),
    # pyenv's shims and its own scripts run before every pyenv python starts
    ("pyenv's shims and scripts", ((r"/\.pyenv/(?:shims|libexec|plugins)/", None),)),
    ("a conda environment", ((r"/envs/[^/]+/lib/", None),)),
    ("a virtualenv (env/, venv/)",
     ((r"/\.?v?env/(?:lib|lib64|bin|include)/", None), (None, r"pyvenv\.cfg"))),
    ("a Python interpreter's library", ((r"/lib(?:32|64)?/python\d+(?:\.\d+)?/", None),)),
    # compiler and GPU kernel caches: rebuilt from code, never training data
    ("a compiler, GPU kernel or tool cache",
     ((r"/\.triton/|/\.nv/ComputeCache/|^/tmp/torchinductor_[^/]+/"
       r"|/\.cache/(?:pip|triton|torch_extensions|fontconfig|matplotlib|numba|pycache)/",
       None),)),
    # a user's tool settings and toolchains: they change how programs behave,
    # they are not what the programs process
    ("a user's tool settings (~/.config, dotfiles, toolchains)",
     ((_HOME + r"(?:\.config|\.rustup|\.cargo|\.conda|\.npm|\.nvm|\.docker|\.aws|\.ssh"
       r"|\.terminfo)/", None),
      (_HOME + r"\Z", r"\.(?:condarc|gitconfig|netrc|pypirc|bashrc|zshrc|profile"
       r"|bash_profile|inputrc|curlrc|wgetrc)"))),
)
# The rules' patterns are compiled where first used (re caches them): a run that
# reads only system files needs few of them. Names match the whole name, which
# may hold any character but "/" (a newline too: re.S).
# Whether any rule matches by its directory alone (the common "no" at one search):
_ENV_DIRS = re.compile("|".join(f"(?:{d})" for _, alts in _ENV_RULES for d, n in alts
                                if d and not n))
# shared libraries are environment wherever they live, unless in the work tree;
# versions may carry any suffix (libLLVM.so.22.1-rust-1.95.0-stable): a file name
_SHARED_LIB = r"(?s).*\.so(?:\.\d+)*|lib.*\.so\.\d.*"
# a virtualenv is wherever a pyvenv.cfg sits above bin/, lib/ or include/,
# whatever the directory is called
_VENV_PART = re.compile(r"/(?:bin|lib|lib64|include)/")
CODE_SUFFIXES = (".py", ".pyx", ".pxd", ".ipynb", ".sh", ".bash", ".c", ".cc", ".cpp", ".h",
                 ".hpp", ".cu", ".rs", ".go", ".js", ".ts", ".r", ".R", ".jl", ".lua", ".pl",
                 ".rb", ".java", ".scala", ".sql", ".toml", ".cfg", ".ini", ".yaml", ".yml",
                 "Makefile", "Dockerfile")

REPO_RULES = ".roar.toml"  # in the work tree's root
SYSTEM_RULES = "/etc/roar/config.toml"
RULE_KINDS = {"data": DATA, "code": CODE, "environment": ENV, "ignore": PSEUDO}


class RulesError(ValueError):
    """A rules file roar cannot use; the message names it."""


@functools.lru_cache(maxsize=4096)
def _is_venv(root: str) -> bool:
    return os.path.isfile(root + "/pyvenv.cfg")


def venv_root(path: str) -> str | None:
    """The virtualenv whose bin/, lib/ or include/ holds path (found by its
    pyvenv.cfg: one stat per directory, cached), or None."""
    for i, m in enumerate(_VENV_PART.finditer(path)):
        if i >= 3:
            break
        if m.start() > 0 and _is_venv(path[:m.start()]):
            return path[:m.start()]
    return None


def in_venv(path: str) -> bool:
    return venv_root(path) is not None


def is_pseudo(path: str) -> bool:
    # /dev/shm holds real files (datasets staged in RAM): not pseudo
    return (path.startswith(PSEUDO_PREFIXES) and not path.startswith("/dev/shm/")) or \
        path in ("/proc", "/sys", "/dev")


def _in_tree(path: str, git_root: str | None) -> str | None:
    """path relative to the work tree's root, when it is below it."""
    if git_root:
        root = git_root.rstrip("/")
        if path.startswith(root + "/"):
            return path[len(root) + 1:]
    return None


class _DirFacts:
    """What the built-in rules say of one directory (with its trailing "/"),
    whatever file of it is asked about: every pattern looked at here only
    matches text ending in "/" (or, for the home directory, the directory
    whole), so it matches a path exactly when it matches the path's directory."""

    __slots__ = ("env", "names", "any_name", "venv", "system")

    def __init__(self, d: str):
        self.env = None  # the first rule matching by the directory alone
        names = []  # (why, name pattern) of rules before it that a name may match here
        if _ENV_DIRS.search(d):
            self.env = next(why for why, alts in _ENV_RULES
                            if any(dp and not n and re.search(dp, d) for dp, n in alts))
        for why, alts in _ENV_RULES:
            if why == self.env:
                break
            names += [(why, n) for dp, n in alts if n and (dp is None or re.search(dp, d))]
        self.names = tuple(names)
        self.any_name = _names_re(tuple(n for _, n in names)) if names else None
        self.venv = venv_root(d)
        self.system = next((p for p in SYSTEM_PREFIXES if d.startswith(p)), None)


@functools.lru_cache(maxsize=64)
def _names_re(patterns: tuple[str, ...]) -> _Names:
    return _Names(re.compile("|".join(f"(?:{p})" for p in patterns), re.S),
                  needles(patterns))


try:  # the parser re compiles with (Python 3.11+; sre_parse before)
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]


def _needles_of(items, flags: int) -> frozenset[str] | None:
    """Literal strings one of which every string fully matched by the parsed
    sequence `items` contains; None when no such set is known. A run of
    literals in the sequence is in every match; so is, for a group, one of its
    own; for alternatives, one of any alternative's. Case-insensitive parts
    give nothing (their literals match in other cases)."""
    if flags & re.IGNORECASE:
        return None
    best: frozenset[str] | None = None

    def better(cand: frozenset[str] | None) -> None:
        nonlocal best
        if cand and (best is None or min(map(len, cand)) > min(map(len, best))):
            best = cand

    run: list[str] = []
    for op, av in items:
        if op is _sre_parse.LITERAL:
            run.append(chr(av))
            continue
        if run:
            better(frozenset(("".join(run),)))
            run = []
        if op is _sre_parse.SUBPATTERN:
            _group, add, _del, sub = av
            better(_needles_of(sub.data, flags | add))
        elif op is _sre_parse.BRANCH:
            alts = [_needles_of(a.data, flags) for a in av[1]]
            if all(alts):
                better(frozenset().union(*alts))
    if run:
        better(frozenset(("".join(run),)))
    return best


def needles(patterns: tuple[str, ...]) -> tuple[str, ...] | None:
    """Literal strings one of which every name fully matched by one of the
    patterns (compiled with re.S) contains: a name holding none matches none
    of them. None when some pattern gives no such set."""
    found: set[str] = set()
    for p in patterns:
        try:
            parsed = _sre_parse.parse(p, re.S)
        except Exception:
            return None
        got = _needles_of(parsed.data, parsed.state.flags)
        if not got:
            return None
        found |= got
    return tuple(sorted(found))


class _Names:
    """The name patterns of the built-in rules that apply in a directory, as one
    compiled pattern (`fullmatch`), with `needles`: literal strings one of which
    every name it matches contains (None: not known). The compiled model looks
    for the needles first and matches only names holding one."""

    __slots__ = ("pattern", "needles")

    def __init__(self, pattern: re.Pattern, needles: tuple[str, ...] | None):
        self.pattern = pattern
        self.needles = needles

    def fullmatch(self, name: str) -> re.Match | None:
        if self.needles is not None and not any(n in name for n in self.needles):
            return None
        return self.pattern.fullmatch(name)


class _NameKind:
    """kind_by_dir's answer for a directory whose files' kind depends on their
    name (the built-in rules by file name): data, unless a name rule or the
    shared-library pattern makes the name environment. `needles`: a name holding
    none of these is data (None: always ask)."""

    __slots__ = ("names", "needles")

    def __init__(self, names: _Names | None):
        self.names = names
        self.needles = None if names is not None and names.needles is None else \
            tuple(sorted({".so", *(names.needles if names is not None else ())}))

    def __call__(self, name: str) -> str:
        names = self.names
        if names is not None and names.fullmatch(name):
            return ENV
        return ENV if ".so" in name and re.fullmatch(_SHARED_LIB, name) else DATA


_DIRS: dict[str, _DirFacts] = {}
DIRS_KEPT = 65536  # directories remembered (a run's dataset may span many)


def _dir_facts(d: str) -> _DirFacts:
    f = _DIRS.get(d)
    if f is None:
        if len(_DIRS) >= DIRS_KEPT:
            _DIRS.clear()
        f = _DIRS[d] = _DirFacts(d)
    return f


def _split(path: str) -> tuple[_DirFacts, str]:
    """The facts of the path's directory, and its file name."""
    i = path.rfind("/") + 1
    return _dir_facts(path[:i]), path[i:]


def _env_rule(facts: _DirFacts, name: str) -> str | None:
    """Why a built-in environment rule makes this path environment, if one does."""
    if facts.any_name is not None and facts.any_name.fullmatch(name):
        return next(why for why, n in facts.names if re.fullmatch(n, name, re.S))
    return facts.env


def _builtin_env(path: str, git_root: str | None) -> str | None:
    """Why path is environment by the built-in rules (None: it is not)."""
    facts, name = _split(path)
    why = _env_rule(facts, name)
    if why is not None:
        return why
    if facts.venv:
        return f"the virtualenv {facts.venv} (it has a pyvenv.cfg)"
    rel = _in_tree(path, git_root)
    if rel is not None or (git_root and path == git_root.rstrip("/")):
        if rel == ".git" or (rel or "").startswith(".git/"):
            return "git's own files"
        return None  # in the work tree: never environment by location alone
    if facts.system:
        return f"a system location ({facts.system})"
    if ".so" in name and re.fullmatch(_SHARED_LIB, name):
        return "a shared library outside the work tree"
    return None


def is_environment(path: str, git_root: str | None = None) -> bool:
    """Interpreter, library and system files (no git knowledge needed)."""
    return _builtin_env(path, git_root) is not None


def needs_hash(path: str) -> bool:
    """Whether a read of this path may be a data or code input worth hashing
    (a shared library in the work tree is code: hashed too)."""
    if is_pseudo(path):
        return False
    facts, name = _split(path)
    return not (facts.system or facts.venv or _env_rule(facts, name))


# every pseudo prefix ends in "/": it starts d + name exactly when it starts the
# directory d (a file name holds no "/"), which needs_hash_dir relies on
_PSEUDO_BY_DIR = all(p.endswith("/") for p in (*PSEUDO_PREFIXES, "/dev/shm/"))


def needs_hash_dir(d: str) -> bool | _Names | None:
    """needs_hash(d + name) for the file names of the directory d (with its
    trailing "/"): True or False for every name; a pattern (`fullmatch`, and its
    `needles`, see _Names): True unless the name fully matches it (a rule by
    file name); None: ask needs_hash. The compiled model asks this once per
    directory."""
    if d == "/" or not d.endswith("/") or not _PSEUDO_BY_DIR:
        return None  # "/proc", "/sys" and "/dev" themselves are pseudo
    if d.startswith(PSEUDO_PREFIXES) and not d.startswith("/dev/shm/"):
        return False
    facts = _dir_facts(d)
    if facts.system or facts.venv or facts.env:
        return False
    return True if facts.any_name is None else facts.any_name


# -- the user's rules --------------------------------------------------------------


class Rule(namedtuple("Rule", ("kind", "pattern", "source", "regex"))):
    """One glob of a rules file: what it makes a path (kind: data | code | env |
    pseudo, the file's "ignore"), the glob as written (pattern), the file it is
    written in (source), and the glob anchored as a regular expression (regex).
    Immutable. (A named tuple: dataclasses cost `roar run` ~13 ms to import.)"""

    __slots__ = ()

    def matches(self, path: str) -> bool:
        return _compiled(self.regex).match(path) is not None

    def to_doc(self) -> dict:
        return {"kind": self.kind, "pattern": self.pattern, "source": self.source}


@functools.lru_cache(maxsize=1024)
def _compiled(regex: str) -> re.Pattern:
    return re.compile(regex)


def _glob_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return "".join(out)


def make_rule(kind: str, pattern: str, source: str, base: str | None) -> Rule:
    """A rule for one glob. `/...` and `~/...` are absolute; other patterns are
    relative to base (the work tree of a `.roar.toml`), or, in the store's and
    system's files, match at any depth (`*.parquet`, `scratch/**`). A pattern
    naming a directory covers everything below it."""
    glob = pattern.strip()
    if glob.startswith("~/") or glob == "~":
        glob = os.path.expanduser("~") + glob[1:]
    if not glob.startswith("/"):
        glob = (base.rstrip("/") + "/" if base else "**/") + glob
    glob = glob.rstrip("/") or "/"
    return Rule(kind, pattern, source, "^" + _glob_regex(glob) + "(?:/.*)?$")


def read_rules(path: str | os.PathLike, base: str | None) -> list[Rule]:
    """The rules of one TOML file ([classify] with data/code/environment/ignore
    lists); none when the file or its section is absent."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise RulesError(f"cannot read {path}: {e.strerror}") from None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        section = tomllib.loads(raw.decode()).get("classify")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RulesError(f"{path} is not valid TOML: {e}") from None
    if section is None:
        return []
    if not isinstance(section, dict):
        raise RulesError(f"{path}: classify must be a table ([classify])")
    rules = []
    for key, globs in section.items():
        if key not in RULE_KINDS:
            raise RulesError(f"{path}: [classify] has no '{key}' (use "
                             f"{', '.join(RULE_KINDS)})")
        if not isinstance(globs, list) or not all(isinstance(g, str) and g.strip()
                                                  for g in globs):
            raise RulesError(f"{path}: classify.{key} must be a list of non-empty globs")
        rules += [make_rule(RULE_KINDS[key], g, str(path), base) for g in globs]
    return rules


def rule_files(home: str | os.PathLike | None,
               git_root: str | None) -> list[tuple[str, str | None]]:
    """The rules files, first match wins, each with its base for relative globs."""
    files: list[tuple[str, str | None]] = []
    if git_root:
        files.append((os.path.join(git_root, REPO_RULES), git_root))
    if home is not None:
        files.append((os.path.join(home, "config.toml"), None))
    files.append((SYSTEM_RULES, None))
    return files


def load_rules(home: str | os.PathLike | None, git_root: str | None) -> list[Rule]:
    """Every user rule, in precedence order (RulesError on a bad file)."""
    rules: list[Rule] = []
    for path, base in rule_files(home, git_root):
        rules += read_rules(path, base)
    return rules


def rules_from_docs(docs: list[dict] | None) -> list[Rule]:
    """The rules stored on a run record (Rule.to_doc), rebuilt."""
    out = []
    for d in docs or []:
        base = None
        if d["source"].endswith("/" + REPO_RULES):
            base = d["source"][: -len(REPO_RULES) - 1]
        out.append(make_rule(d["kind"], d["pattern"], d["source"], base))
    return out


def _user_rule(path: str, rules: list[Rule]) -> Rule | None:
    """The rule that decides path: the first file with a match, and in it the
    most specific (longest) pattern."""
    best = None
    for r in rules:
        if best is not None and r.source != best.source:
            break
        if r.matches(path) and (best is None or len(r.pattern) > len(best.pattern)):
            best = r
    return best


# -- the decision ---------------------------------------------------------------------


def explain(path: str, git_root: str | None = None, tracked: set[str] | None = None,
            rules: list[Rule] | None = None) -> tuple[str, str]:
    """(kind, why) for an absolute path: the kind and the rule that gave it."""
    if is_pseudo(path):
        return PSEUDO, "a pseudo filesystem (/proc, /sys, /dev other than /dev/shm)"
    if rules:
        r = _user_rule(path, rules)
        if r is not None:
            name = next(k for k, v in RULE_KINDS.items() if v == r.kind)
            return r.kind, f"{name} rule '{r.pattern}' in {r.source}"
    why = _builtin_env(path, git_root)
    if why is not None:
        return ENV, why
    rel = _in_tree(path, git_root)
    if rel is not None:
        if tracked is not None and rel in tracked:
            return CODE, f"tracked by git in the work tree {git_root.rstrip('/')}"
        if path.endswith(CODE_SUFFIXES):
            suffix = next(s for s in CODE_SUFFIXES if path.endswith(s))
            return CODE, f"a code or configuration file ({suffix}) in the work tree"
        return DATA, "in the work tree, neither tracked by git nor a code file"
    return DATA, "outside the work tree and every environment location"


def kind_by_dir(d: str, git_root: str | None = None,
                rules: list[Rule] | None = None) -> str | Callable[[str], str] | None:
    """classify(d + name, git_root, tracked, rules) for the file names of the
    directory d (with its trailing "/"), whatever is tracked: one kind for every
    name, or a function of the name (the built-in rules by file name), or None:
    ask classify (the user's rules, the work tree and its root's directory, "/")."""
    if rules or d == "/" or not d.endswith("/") or not _PSEUDO_BY_DIR:
        return None
    if d.startswith(PSEUDO_PREFIXES) and not d.startswith("/dev/shm/"):
        return PSEUDO
    if git_root:
        root = git_root.rstrip("/")
        # below the root, or the root itself one of d's names
        if d.startswith(root + "/") or root.startswith(d):
            return None
    facts = _dir_facts(d)
    if facts.env or facts.venv or facts.system:
        return ENV
    return _NameKind(facts.any_name)


def classify(path: str, git_root: str | None = None, tracked: set[str] | None = None,
             rules: list[Rule] | None = None) -> str:
    """data | code | env | pseudo for an absolute path."""
    return explain(path, git_root, tracked, rules)[0]
