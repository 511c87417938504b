"""The run context: git state, environment (secrets redacted), host, GPUs and
the Python packages of the interpreters a run used."""

from __future__ import annotations

import os
import re

from roar.record import ids

TYPE_CHECKING = False  # typing costs every `roar run` ~3 ms to import
if TYPE_CHECKING:
    import subprocess

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH|DSN|^AWS_", re.I)
SECRET_VALUE = re.compile(
    r"^(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{16,}"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}|(?:AKIA|ASIA)[A-Z0-9]{16}|glpat-[A-Za-z0-9_\-]{20})$"
)


class GitError(Exception):
    """The working tree is not in a state a run may start from."""


GIT = ("git", "-c", "core.hooksPath=/dev/null")  # the user's hooks never run for roar


def git(cwd: str, *args: str, input: bytes | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """One git command, the way roar runs git everywhere (recording, lineage,
    reproduce): output captured as bytes, hooks off; raises OSError when git
    cannot be started and subprocess.TimeoutExpired past timeout."""
    import subprocess  # here: a run outside a git work tree starts no process

    return subprocess.run([*GIT, *args], cwd=cwd, input=input, capture_output=True,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          timeout=timeout, check=False)


def _git_many(cwd: str, *commands: tuple[str, ...],
              errors: list | None = None, meanwhile=None) -> list[str | None]:
    """Several read-only git commands started at once (each costs a process
    start; `roar run` waits for them before the workload starts). `errors`,
    when given, gets git's message for each command that failed (None where it
    did not, or where git is not installed). meanwhile(): called once they are
    started, before waiting for them (`roar run` does its imports then).
    Started with os.posix_spawnp, not subprocess (whose import, with selectors
    and warnings, is ~3 ms of every `roar run` in a work tree)."""
    shut = _inheritable_fds()
    procs = [_spawn_git(cwd, args, errors is not None, shut) for args in commands]
    if meanwhile is not None:
        meanwhile()
    _collect(procs)
    out: list[str | None] = []
    for args, p in zip(commands, procs, strict=True):
        if p is None:
            out.append(None)
            if errors is not None:
                errors.append(None)
            continue
        code, data, err = p["code"], p["out"], p["err"]
        if errors is not None:
            errors.append(None if code == 0 and data is not None else
                          " ".join((err or b"").decode(errors="replace").split())
                          or f"git {' '.join((*GIT[1:], *args))} exited {code}")
        out.append(data.decode(errors="surrogateescape")
                   if data is not None and code == 0 else None)
    return out


def _inheritable_fds() -> list[int]:
    """This process's fds above 2 without close-on-exec (what subprocess's
    close_fds keeps from git)."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                out.append(fd)
        except OSError:  # the listing's own fd, closed since
            pass
    return out


def _spawn_git(cwd: str, args: tuple[str, ...], stderr: bool,
               shut: list[int]) -> dict | None:
    """git started in cwd (`git -C`) with stdin from /dev/null, its stdout (and
    stderr, or /dev/null) on pipes and none of the fds in shut; None when it
    cannot be started."""
    import _signal as signal  # (signal.py's enums are not needed here)

    pipes: dict[int, int] = {}  # our end -> the child's fd
    acts = [(os.POSIX_SPAWN_CLOSE, fd) for fd in shut]
    acts.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    try:
        for fd in (1, 2) if stderr else (1,):
            r, w = os.pipe()
            pipes[r] = fd
            acts.append((os.POSIX_SPAWN_DUP2, w, fd))
            acts.append((os.POSIX_SPAWN_CLOSE, w))
        if not stderr:
            acts.append((os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0))
        # the signals Python ignores back to their defaults, as subprocess does
        pid = os.posix_spawnp(GIT[0], [GIT[0], "-C", cwd, *GIT[1:], *args], os.environ,
                              file_actions=acts, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError:
        for r in pipes:
            os.close(r)
        return None
    finally:  # the child's ends (the spawn duplicated them)
        for a in acts[len(shut):]:
            if a[0] == os.POSIX_SPAWN_CLOSE:
                os.close(a[1])
    return {"pid": pid, "pipes": pipes, "bufs": {fd: [] for fd in pipes.values()},
            "code": None, "out": None, "err": None}


def _collect(procs: list[dict | None], timeout: float = 60) -> None:
    """Read every started git's output to its end and wait for it; one that
    takes longer than timeout (all of them together) is killed."""
    import _signal as signal
    import select
    import time

    live = {r: p for p in procs if p is not None for r in p["pipes"]}
    poll = select.poll()
    for r in live:
        poll.register(r, select.POLLIN)
    deadline = time.monotonic() + timeout
    while live:
        left = deadline - time.monotonic()
        ready = poll.poll(max(0, left) * 1000) if left > 0 else []
        if not ready:  # timed out: what is still open is killed
            for r, p in live.items():
                poll.unregister(r)
                os.close(r)
                p["timeout"] = True
            break
        for r, _ in ready:
            p = live[r]
            chunk = os.read(r, 1 << 16)
            if chunk:
                p["bufs"][p["pipes"][r]].append(chunk)
                continue
            poll.unregister(r)
            os.close(r)
            del live[r]
    for p in procs:
        if p is None:
            continue
        if p.get("timeout"):
            try:
                os.kill(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(p["pid"], 0)
        p["code"] = os.waitstatus_to_exitcode(status)
        if p.get("timeout"):
            p["out"], p["err"] = None, f"git did not answer within {timeout:g} s".encode()
        else:
            p["out"] = b"".join(p["bufs"][1])
            p["err"] = b"".join(p["bufs"][2]) if 2 in p["bufs"] else None


def _git(cwd: str, *args: str) -> str | None:
    """One read-only git command's output; None if it failed."""
    return _git_many(cwd, args)[0]


def git_root(cwd: str) -> str | None:
    top = _git(cwd, "rev-parse", "--show-toplevel")
    return top.strip() if top else None


def _maybe_in_repo(cwd: str) -> bool:
    """Whether git could find a repository from cwd: git's environment names
    one, or a .git (or a bare repository) is in cwd or above it. False spares
    a run outside any repository git's five processes (~10 ms of its start)."""
    if any(k in os.environ for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR")):
        return True
    d = os.path.abspath(cwd)
    while True:
        if os.path.lexists(os.path.join(d, ".git")) or all(
                os.path.exists(os.path.join(d, x)) for x in ("HEAD", "objects", "refs")):
            return True
        parent = os.path.dirname(d)
        if parent == d:
            return False
        d = parent


def git_state(cwd: str, allow_dirty: bool, hash_file=None, meanwhile=None) -> dict | None:
    """Commit, branch, remote and dirtiness of the repo around cwd (None outside git).

    Raises GitError listing the changes when the tree is dirty and allow_dirty
    is false: a run must be reproducible from its commit. A git failure other
    than "not a repository" (dubious ownership, a broken index...) is refused
    with git's own reason too: the dirty-tree check must not be skipped
    silently; allow_dirty runs without git state then."""
    if not _maybe_in_repo(cwd):
        if meanwhile is not None:
            meanwhile()
        return None
    # porcelain status paths are relative to the top level whatever the cwd
    errors: list = []
    top, commit, branch, remote, status = _git_many(
        cwd, ("rev-parse", "--show-toplevel"), ("rev-parse", "--verify", "-q", "HEAD"),
        ("symbolic-ref", "--short", "-q", "HEAD"), ("remote", "get-url", "origin"),
        ("status", "--porcelain=v1", "-z", "--untracked-files=all"), errors=errors,
        meanwhile=meanwhile)
    # HEAD, the branch and the remote may rightly be missing; the top level
    # and the status may not, inside a repository
    failed = errors[0] if not top else errors[4] if status is None else None
    if failed and not (not top and "not a git repository" in failed):
        if allow_dirty:
            return None
        raise GitError(f"git failed in {cwd}: {failed} (fix it, or pass --allow-dirty or "
                       f"--no-git to run without git state)")
    if not top:
        return None
    root = top.strip()
    commit = commit.strip() if commit else None
    branch = branch.strip() if branch else None
    remote = url_without_credentials(remote.strip()) if remote else None
    status = status or ""
    entries = [e for e in status.split("\0") if e]
    changes, untracked = [], []
    skip_next = False
    for e in entries:
        if skip_next:  # rename source path follows a rename entry
            skip_next = False
            continue
        code, path = e[:2], e[3:]
        if code[0] in "RC":
            skip_next = True
        (untracked if code == "??" else changes).append(path)
    dirty = bool(changes or untracked)
    if dirty and not allow_dirty:
        listing = "\n".join([f"  modified: {p}" for p in changes[:20]]
                            + [f"  untracked: {p}" for p in untracked[:20]])
        more = len(changes) + len(untracked) - min(len(changes), 20) - min(len(untracked), 20)
        if more > 0:
            listing += f"\n  ... and {more} more"
        head = "has no commits yet" if commit is None else "has uncommitted changes"
        raise GitError(f"the git work tree at {root} {head}; commit them or pass "
                       f"--allow-dirty (the patch is then stored with the run):\n{listing}")
    patch = None
    untracked_hashes = None
    if dirty:
        patch = _git(root, "diff", "--binary", "HEAD") if commit else None
        untracked_hashes = {}
        for p in untracked:
            untracked_hashes[p] = hash_file(os.path.join(root, p)) if hash_file else None
    return {"root": root, "commit": commit, "branch": branch, "remote": remote,
            "dirty": dirty, "patch": patch, "untracked": untracked_hashes,
            "detached": commit is not None and branch is None}


def tracked_files(root: str) -> set[str]:
    out = _git(root, "ls-files", "-z")
    return set(out.split("\0")) - {""} if out else set()


def store_key(store) -> bytes:
    """The per-store key of keyed hashes of secrets (created once)."""
    key = store.meta_get("redaction_key")
    if key is None:
        key = os.urandom(32)
        store.meta_put("redaction_key", key)
    return key


def is_secret(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name) or SECRET_VALUE.match(value))


HASHED = r"^hmac-sha256:[0-9a-f]{64}$"


def redact(value: str, key: bytes) -> dict:
    """The keyed hash of a secret. A value that is such a hash already stays
    (redacting twice changes nothing: exports redact what they show again)."""
    from roar.record.sha256 import hmac_sha256

    if value.startswith("hmac-sha256:") and re.match(HASHED, value):
        return {"redacted": value}
    return {"redacted": "hmac-sha256:" + hmac_sha256(key, value.encode(errors="surrogateescape"))}


def _hidden(value: str, key: bytes) -> str:
    return redact(value, key)["redacted"]


# The patterns below are compiled where first used (re caches them), and only
# for text that may match: every `roar run` imports this module and redacts its
# environment, where most values hold no URL.
# the userinfo of a URL (scheme://USERINFO@host/...): up to the last @ before the
# path, so a password holding an @ is hidden whole
URL_USERINFO = r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/\s?#]*)@"
# a userinfo without a password that is a credential itself (https://TOKEN@host,
# a Sentry DSN's key): token-shaped, or a long run of letters and digits
TOKEN_USER = r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}$"


def _url_credentials(value: str, hide) -> str:
    def one(m: re.Match) -> str:
        user, colon, password = m[2].partition(":")
        if colon:
            return f"{m[1]}{user}:{hide(password)}@" if password else m[0]
        if SECRET_VALUE.match(user) or re.match(TOKEN_USER, user):
            return f"{m[1]}{hide(user)}@"
        return m[0]

    return re.sub(URL_USERINFO, one, value) if "://" in value else value


# a URL's query (scheme://host/path?QUERY), up to a fragment, space or quote
URL_QUERY = r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s?#'\"]*\?)([^\s#'\"]*)"


def _url_query_secrets(value: str, key: bytes) -> str:
    """The values of a URL's signing and credential query parameters (a
    presigned URL's X-Amz-Signature, a SAS token's sig, ?token=, ?api_key=:
    remote.SECRET_PARAM, the ones remote identities drop) as keyed hashes."""
    if "?" not in value or "://" not in value:  # no URL query: urllib is not imported
        return value
    from urllib.parse import unquote

    from roar.record.remote import SECRET_PARAM

    def one(m: re.Match) -> str:
        parts = []
        for part in m[2].split("&"):
            name, eq, v = part.partition("=")
            if eq and v and re.match(SECRET_PARAM, unquote(name)):
                part = f"{name}={_hidden(v, key)}"
            parts.append(part)
        return m[1] + "&".join(parts)

    return re.sub(URL_QUERY, one, value)


def _url_passwords(value: str, key: bytes) -> str:
    """The password (or token) of each URL in value, and its credential query
    parameters, replaced by keyed hashes; the rest of the URL stays readable."""
    return _url_query_secrets(_url_credentials(value, lambda s: _hidden(s, key)), key)


def url_without_credentials(url: str) -> str:
    """A URL with the password or token of its userinfo removed (a git remote:
    it names the repository, and rotating a token must not make it differ)."""
    def one(m: re.Match) -> str:
        user, colon, _ = m[2].partition(":")
        if colon:
            return f"{m[1]}{user}@" if user else m[1]
        return m[1] if SECRET_VALUE.match(user) or re.match(TOKEN_USER, user) else m[0]

    return re.sub(URL_USERINFO, one, url) if "://" in url else url


def environment(env: dict[str, str], key: bytes) -> dict:
    """The environment as stored: secret-named and token-shaped values as keyed
    hashes, URL passwords hidden, and a value holding spaces (JAVA_OPTS, a
    command line) read with the argument rules word by word."""
    return {k: (redact(v, key) if is_secret(k, v) else _url_passwords(_script(v, key, 0), key))
            for k, v in sorted(env.items())}


# Programs whose short option takes a password: "attached" only as -pSECRET
# (mysql's `-p NAME` names a database and `-p` alone prompts), "both" also as
# `-p SECRET`, "userpass" a USER:PASSWORD whose password part is the secret.
# psql's -p is a port (its password comes from PGPASSWORD, a secret-named
# variable) and is not listed; neither is any program not named here.
_MYSQL = ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mysqlshow",
          "mysqlslap", "mysqlpump", "mysqlbinlog", "mariadb", "mariadb-dump", "mariadb-admin",
          "mariadb-import", "mariadb-check", "mariadb-show", "mariadb-slap", "mariadb-binlog")
_MONGO = ("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport",
          "mongostat", "mongotop", "mongofiles")
PASSWORD_OPTIONS: dict[str, dict[str, str]] = {
    **{p: {"-p": "attached"} for p in _MYSQL},
    **{p: {"-p": "both"} for p in _MONGO},
    "sshpass": {"-p": "both"},
    "redis-cli": {"-a": "both"},
    "zip": {"-P": "both"}, "unzip": {"-P": "both"},
    "7z": {"-p": "attached"}, "7za": {"-p": "attached"}, "7zr": {"-p": "attached"},
    "curl": {"-u": "userpass", "-U": "userpass", "--user": "userpass",
             "--proxy-user": "userpass"},
}
HEADER_OPTIONS = ("-H", "--header")  # curl, wget: a secret-named header's value is hidden
SECRET_HEADER = r"(?i)AUTH|TOKEN|KEY|SECRET|COOKIE|PASSWORD"
ASSIGNMENT = r"(?s)^([A-Za-z_][A-Za-z0-9_]*)=(.+)$"
SHELL_OPERATORS = set(";&|()<>\n")
# a long option written with one dash (-password, Go's -api-key / -api_key): its
# secret-named ones take the next word as their value
SINGLE_DASH_NAME = r"^-[A-Za-z][A-Za-z0-9_\-]{2,}$"
SHELL_SPACE = " \t\r\n"  # what shlex splits words on (its `whitespace`)
_SHELL_SPACE = frozenset(SHELL_SPACE)
_MAX_DEPTH = 8  # sh -c "bash -c 'mysql -pX'" nests; deeper strings are hashed whole


def _secret_value(how: str, value: str, key: bytes) -> str:
    if how == "userpass":
        user, colon, password = value.partition(":")
        return f"{user}:{_hidden(password, key)}" if colon and password else value
    if how == "header":
        name, colon, rest = value.partition(":")
        return f"{name}: {_hidden(rest.strip(), key)}" \
            if colon and rest.strip() and re.search(SECRET_HEADER, name) else value
    return _hidden(value, key)


def _tokens(argv: list[str], key: bytes, depth: int) -> list[str]:
    """The argument rules over one command's words (an argv, or one command of a
    shell script); returns the words with the secrets hidden."""
    out = list(argv)
    program = None  # the last word naming a program of PASSWORD_OPTIONS
    take = None  # how the next word is a secret (after --token, -p, -H ...)
    for i, a in enumerate(argv):
        how, take = take, None
        if how and not a.startswith("-"):
            out[i] = _secret_value(how, a, key)
            continue
        base = os.path.basename(a)
        if base in PASSWORD_OPTIONS:
            program = base
            continue
        options = PASSWORD_OPTIONS.get(program, {})
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if eq:
                if not value:
                    continue
                if is_secret(name, value):
                    out[i] = f"{name}={_hidden(value, key)}"
                elif name in HEADER_OPTIONS or options.get(name) == "userpass":
                    out[i] = f"{name}={_secret_value(options.get(name, 'header'), value, key)}"
                else:
                    out[i] = f"{name}={_script(value, key, depth)}"
                continue
            if a in HEADER_OPTIONS:
                take = "header"
            elif a in options:
                take = options[a] if options[a] != "attached" else None
            elif a[:2] in options and len(a) > 2 and not a.startswith("--"):
                out[i] = a[:2] + _secret_value(options[a[:2]].replace("both", "attached"),
                                               a[2:], key)
            elif (a.startswith("--") or re.match(SINGLE_DASH_NAME, a)) and SECRET_NAME.search(a):
                take = "secret"  # --token VALUE, -password VALUE
            continue
        m = re.match(ASSIGNMENT, a) if "=" in a else None
        if m and is_secret(m[1], m[2]):  # TOKEN=x (a shell or `env` assignment)
            out[i] = f"{m[1]}={_hidden(m[2], key)}"
        elif SECRET_VALUE.match(a):
            out[i] = _hidden(a, key)
        else:
            out[i] = _script(a, key, depth)
    return out


def _script(text: str, key: bytes, depth: int) -> str:
    """A word holding spaces (sh -c's script, ssh's remote command, a header, an
    env value) read as a shell command line: each of its commands gets the
    argument rules, and each word found secret is replaced where it stands. A
    secret that cannot be found as written (escaped or quoted in pieces) hides
    the whole text."""
    # one word to a shell (a U+202F stays); looked for in C: a Python loop over the
    # text cost ~4 µs per argument, and xargs hands a process thousands of paths
    if _SHELL_SPACE.isdisjoint(text):
        return text
    if depth >= _MAX_DEPTH:
        return _hidden(text, key)
    import shlex

    try:
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = ""
        words = list(lex)
    except ValueError:  # unbalanced quotes: plain words
        words = text.split()
    commands: list[list[str]] = [[]]
    for w in words:
        if w and set(w) <= SHELL_OPERATORS:
            commands.append([])
        else:
            commands[-1].append(w)
    for cmd in commands:
        for before, after in zip(cmd, _tokens(cmd, key, depth + 1), strict=True):
            if before == after:
                continue
            where = re.compile(r"(?<![^\s'\";&|()<>`])" + re.escape(before)
                               + r"(?![^\s'\";&|()<>`])")
            if not where.search(text):
                return _hidden(text, key)
            text = where.sub(lambda _m, a=after: a, text)
    return text


def redact_argv(argv: list[str], key: bytes) -> list:
    """argv with secrets replaced by keyed hashes: token-looking values, the value
    of a secret-named option (--token=X, --token X, -password X) or assignment
    (TOKEN=X), the passwords of PASSWORD_OPTIONS' programs (mysql -pX, curl -u
    U:P), secret-named headers (-H 'Authorization: ...'), the passwords and
    tokens of URLs; an argument holding spaces (sh -c SCRIPT) is read as a shell
    command line with the same rules."""
    return [_url_passwords(a, key) for a in _tokens(list(argv), key, 0)]


def host() -> dict:
    u = os.uname()
    return {"host": ids.hostname(), "boot_id": ids.boot_id(), "kernel": u.release,
            "machine": u.machine, "os": _os_release()}


def _os_release() -> str | None:
    try:
        with open("/etc/os-release") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def user() -> str:
    """What getpass.getuser() answers, without its imports (termios, contextlib:
    ~1 ms of every run's start): the login name the environment gives, else
    the password database's name of this uid."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if login := os.environ.get(name):
            return login
    import pwd

    return pwd.getpwuid(os.getuid())[0]


def which(cmd: str) -> str | None:
    """What shutil.which answers, without its imports (bz2, lzma: ~4 ms of every
    run's start)."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d or os.curdir, cmd)
        if os.access(p, os.F_OK | os.X_OK) and not os.path.isdir(p):
            return p
    return None


def gpus(smi: str | None = None) -> list[dict] | None:
    """The GPUs nvidia-smi (found on PATH, unless given) lists; None without it."""
    smi = smi or which("nvidia-smi")
    if not smi:
        return None
    import subprocess

    try:
        out = subprocess.run([smi, "--query-gpu=index,name,uuid,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            keys = ("index", "name", "uuid", "memory", "driver")
            rows.append(dict(zip(keys, parts, strict=True)))
    return rows


# nvidia-smi takes 0.1 s to seconds (the driver wakes up without its persistence
# daemon): a run within this many seconds of an earlier run's answer, on the same
# boot, driver and nvidia-smi, records that answer instead of asking again
GPU_CACHE_S = 600.0


def _gpu_key(smi: str) -> list:
    """What the GPU list depends on beyond the boot: the nvidia-smi binary and
    the loaded driver (its /sys/module directory is made anew by a reload)."""
    key: list = [ids.boot_id(), smi]
    for path in (smi, "/sys/module/nvidia"):
        try:
            st = os.stat(path)
            key += [st.st_ino, st.st_mtime_ns, st.st_size]
        except OSError:
            key += [None, None, None]
    return key


def gpus_cached(home: str | os.PathLike, smi: str) -> list[dict] | None:
    """The GPUs an earlier run of this user asked nvidia-smi for, when that
    answer is still good (GPU_CACHE_S); else None."""
    import json
    import time

    try:
        with open(os.path.join(home, "gpus.json")) as f:
            doc = json.load(f)
        if doc["key"] == _gpu_key(smi) and 0 <= time.time() - doc["at"] < GPU_CACHE_S \
                and isinstance(doc["gpus"], list):
            return doc["gpus"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def remember_gpus(home: str | os.PathLike, smi: str, rows: list[dict]) -> None:
    """Keep nvidia-smi's answer for the runs of the next GPU_CACHE_S seconds."""
    import json
    import time

    tmp = os.path.join(home, f".gpus.json.{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump({"key": _gpu_key(smi), "at": time.time(), "gpus": rows}, f)
        os.replace(tmp, os.path.join(home, "gpus.json"))
    except OSError:  # a cache: the next run asks nvidia-smi again
        try:
            os.unlink(tmp)
        except OSError:
            pass


_SITE = r"^(.*/(?:site|dist)-packages)/([^/]+)"  # compiled where first used
_DIST = r"^(.+?)-([^-]+)\.(?:dist-info|egg-info)$"


def _top_names(site: str, dist_dir: str, among: set[str] | None = None) -> set[str]:
    """Top-level import names a distribution installs (top_level.txt, else RECORD).
    among: only these names matter (packages() intersects with them): a RECORD
    in which none of them appears names none of them, and is not parsed (a
    venv's 84 distributions: ~4,600 lines at the end of every run in it)."""
    base = os.path.join(site, dist_dir)
    try:
        with open(os.path.join(base, "top_level.txt")) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        pass
    names = set()
    try:
        if among is not None:
            with open(os.path.join(base, "RECORD")) as f:
                text = f.read()
            if not any(name in text for name in among):
                return names  # each name below is a part of a line of this text
        with open(os.path.join(base, "RECORD")) as f:
            for line in f:
                first = line.split(",", 1)[0].split("/", 1)[0]
                if first and not first.endswith((".dist-info", ".data")) and first != "..":
                    names.add(first[:-3] if first.endswith(".py") else first)
    except OSError:
        pass
    return names


def site_of(path: str) -> str | None:
    """The site-packages directory a path is in (packages()'), or None."""
    m = re.match(_SITE, path) if "-packages/" in path else None
    return m.group(1) if m else None


def site_dists(site: str) -> tuple[tuple[str, ...], dict[str, frozenset]] | None:
    """What packages() reads in a site-packages directory, read now (while a run
    goes on, so that its end does not): the directory's entries, and the
    top-level names of each distribution in it; None if it cannot be listed."""
    try:
        names = os.listdir(site)
        return tuple(names), {n: frozenset(_top_names(site, n)) for n in names
                              if re.match(_DIST, n)}
    except (OSError, ValueError):  # (a RECORD not in UTF-8: the end reads it, as before)
        return None


def packages(paths, known: dict | None = None) -> dict[str, str]:
    """Name -> version of the distributions the run actually imported from.

    Site-packages directories and the top-level names used in them come from
    the files the run opened, so only what the traced interpreters loaded is
    reported, not everything installed beside it. known: site_dists() of some
    directories, read earlier: used where the directory still lists the same
    entries (a distribution installed or removed since is read again)."""
    used: dict[str, set[str]] = {}
    for p in paths:
        m = re.match(_SITE, p) if "-packages/" in p else None
        if m:
            top = m.group(2)
            if top.endswith((".py", ".so")):
                top = top.split(".", 1)[0]
            used.setdefault(m.group(1), set()).add(top)
    found: dict[str, str] = {}
    for site, tops in sorted(used.items()):
        try:
            names = os.listdir(site)
        except OSError:
            continue
        pre = known.get(site) if known else None
        if pre is not None and pre[0] != tuple(names):
            pre = None
        for n in names:
            m = re.match(_DIST, n)
            if not m:
                continue
            # only what was imported counts: importlib.metadata scans every
            # dist-info (entry points), which says nothing about use (a name
            # of tops among all the distribution's names is among those
            # _top_names gives for tops: it appears in the text it skips)
            if tops & (pre[1][n] if pre is not None else _top_names(site, n, tops)):
                found.setdefault(m.group(1).replace("_", "-").lower(), m.group(2))
    return dict(sorted(found.items()))


def installed(paths) -> dict[str, str]:
    """Name -> version of the distributions the run installed: those whose
    .dist-info (or .egg-info) it wrote files into (pip writes RECORD last)."""
    found: dict[str, str] = {}
    for p in paths:
        m = re.match(_SITE, p) if "-packages/" in p else None
        if m:
            d = re.match(_DIST, m.group(2))
            if d and p != m.group(0):
                found.setdefault(d.group(1).replace("_", "-").lower(), d.group(2))
    return dict(sorted(found.items()))
