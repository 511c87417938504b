"""Every write is an output, wherever it lands (roar/record/recorder.py): a
shared library built outside any work tree, byte code, a pip install with its
write-then-rename files; grouped per place in human output, each file in
`roar outputs --all` and the JSON. Inherited stdout/stderr files are the run's
logs; shared memory the run made for itself is never an input or an output.
Real workloads under the real probes, checked against the files on disk."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import PY, roar_cmd, xxh128

pytestmark = pytest.mark.capture


def on_disk(root: Path, pattern: str = "**/*") -> dict[str, str]:
    return {str(p): xxh128(p) for p in root.glob(pattern) if p.is_file()}


def by_path(entries: list[dict]) -> dict[str, str]:
    assert all(e["status"] == "ok" for e in entries), [e for e in entries if e["status"] != "ok"]
    return {e["path"]: e["hash"] for e in entries}


# -- builds and byte code ---------------------------------------------------------------------


def test_shared_library_built_outside_a_work_tree_is_an_output(roar, tmp_path):
    """gcc -shared -o build/libx.so (no git anywhere): the library is an
    environment output with its hash, and `roar show build/libx.so` names the run."""
    w = roar.cwd
    (w / "x.c").write_text("int answer(void) { return 42; }\n")
    (w / "build").mkdir()
    _, doc = roar.run("gcc", "-shared", "-fPIC", "-o", "build/libx.so", "x.c")
    lib = w / "build" / "libx.so"
    assert by_path(doc["env_outputs"]) == {str(lib): xxh128(lib)}
    assert doc["counts"]["env_outputs"] == 1
    assert doc["complete"] is True, doc["incomplete_reasons"]
    art = roar.json("show", lib)
    assert [r["run"] for r in art["produced_by"]] == [doc["id"]]
    human = roar("show", doc["id"]).stdout
    assert f"into {w / 'build'}" in human and "shared library" in human


def test_compileall_every_pyc_is_an_output(roar):
    """python -m compileall of a source tree: every .pyc it wrote (each written
    to a temporary name, then renamed into place) is an output under its final
    name, with the hash of the file on disk; no temporary name is left."""
    w = roar.cwd
    for i in range(13):
        for sub in ("pkg", "pkg/a", "pkg/b"):
            (w / sub).mkdir(parents=True, exist_ok=True)
            (w / sub / f"m{i}.py").write_text(f"X = {i}\n")
    _, doc = roar.run(PY, "-m", "compileall", "-q", "pkg")
    pyc = on_disk(w / "pkg", "**/__pycache__/*.pyc")
    assert len(pyc) == 39
    assert by_path(doc["env_outputs"]) == pyc
    assert doc["outputs"] == [] and doc["complete"] is True, doc["incomplete_reasons"]
    human = roar("show", doc["id"]).stdout
    assert "39 files" in human and "byte code" in human


# -- pip install --------------------------------------------------------------------------------


def _wheel(out: Path, name: str, version: str, modules: int) -> Path:
    """A wheel built by hand (no network, no build backend)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             **{f"{name}/m{i}.py": f"X = {i}\n" for i in range(modules)},
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n",
             f"{dist}/top_level.txt": f"{name}\n"}
    record = []
    for p, c in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b"=")
        record.append(f"{p},sha256={digest.decode()},{len(c.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, c in files.items():
            z.writestr(p, c)
    return path


def test_pip_install_every_installed_file_is_an_output(roar, tmp_path):
    """pip install of three wheels into a virtualenv: every file its RECORDs
    list (sources, byte code, RECORD itself, written to a temporary name and
    renamed) is an output with the hash of the file on disk, nothing else is;
    the run says what it installed; human output is one line for the venv."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    whls = [_wheel(wheels, "alpha", "1.2.0", 5), _wheel(wheels, "beta_pkg", "0.3", 8),
            _wheel(wheels, "gamma", "2024.1", 3)]
    venv = tmp_path / "my-tools"  # not called venv: found by its pyvenv.cfg
    subprocess.run([PY, "-m", "venv", "--without-pip", venv], check=True)
    _, doc = roar.run(PY, "-m", "pip", "--python", venv / "bin" / "python", "install",
                      "--no-index", "--no-deps", "--no-cache-dir",
                      "--disable-pip-version-check", "-q", *whls)
    site = next(venv.glob("lib/python*/site-packages"))
    listed = set()
    for record in site.glob("*.dist-info/RECORD"):
        for line in record.read_text().splitlines():
            listed.add(str((site / line.split(",")[0]).resolve()))
    assert len(listed) == 59
    assert by_path(doc["env_outputs"]) == {p: xxh128(p) for p in listed}
    assert doc["installed"] == {"alpha": "1.2.0", "beta-pkg": "0.3", "gamma": "2024.1"}
    assert not set(doc["installed"]) & set(doc["packages"])  # installed, not imported
    assert doc["outputs"] == [] and doc["complete"] is True, doc["incomplete_reasons"]
    assert {e["path"] for e in doc["inputs"]} == {str(w) for w in whls}
    human = roar("show", doc["id"]).stdout
    assert "59 files" in human and f"into {venv}" in human
    assert "installed alpha 1.2.0, beta-pkg 0.3, gamma 2024.1" in human
    assert len(human.splitlines()) < 30
    every = roar("outputs", doc["id"], "--all").stdout
    assert all(p in every for p in listed)
    derived = roar.json("outputs", doc["id"])
    assert {e["path"] for e in derived["env_outputs"]} == listed


# -- logs ---------------------------------------------------------------------------------------


def _run_redirected(roar, cmd, out: Path, err: Path | None = None):
    with open(out, "wb") as o, open(err or out, "ab") as e:
        p = subprocess.run(roar_cmd("run", "--", *cmd), cwd=roar.cwd, env=roar.env(),
                           stdout=o, stderr=e, timeout=120, check=False)
    assert p.returncode == 0, (err or out).read_text()
    return roar.json("show", roar.json("log", "-n", "1")[0]["id"])


def test_stdout_and_stderr_files_are_the_runs_logs(roar):
    """`roar run -- cmd > train.log 2> err.log`: both files are the run's logs
    with the bytes it wrote, never versioned outputs; a file the command opens
    itself is an output."""
    w = roar.cwd
    doc = _run_redirected(roar, ["sh", "-c", "echo twelve bytes; echo oops >&2; "
                                 "echo data > made.txt"], w / "train.log", w / "err.log")
    assert by_path(doc["outputs"]) == {str(w / "made.txt"): xxh128(w / "made.txt")}
    logs = {f["path"]: f["bytes_written"] for f in doc["logs"]}
    assert logs == {str(w / "train.log"): 13, str(w / "err.log"): 5}
    assert doc["inputs"] == [] and doc["complete"] is True, doc["incomplete_reasons"]
    assert "log      " + str(w / "train.log") in roar("show", doc["id"]).stdout


# -- shared memory ------------------------------------------------------------------------------

WORKERS = 20
SHARDS = 40
LOADER = r"""
import mmap, multiprocessing as mp, os, socket
from multiprocessing import resource_tracker, shared_memory

def load(i):
    # a DataLoader worker: read a shard, hand the batch over in shared memory
    data = open(f"shards/{i:03d}.bin", "rb").read()
    shm = shared_memory.SharedMemory(create=True, size=len(data))
    shm.buf[:len(data)] = data
    name = shm.name
    resource_tracker.unregister(shm._name, "shared_memory")  # the consumer unlinks it
    shm.close()
    return name, len(data)

if __name__ == "__main__":
    total = 0
    with mp.get_context("fork").Pool(WORKERS) as pool:
        lock = mp.get_context("fork").Semaphore()  # a POSIX semaphore (sem_open)
        for name, n in pool.imap_unordered(load, range(SHARDS)):
            shm = shared_memory.SharedMemory(name=name)  # the main process maps it
            with lock:
                total += sum(shm.buf[:n])
            shm.close()
            shm.unlink()
    # the total travels once more: through a memfd and a named Unix socket
    fd = os.memfd_create("batch")
    os.write(fd, str(total).encode())
    view = mmap.mmap(fd, 0)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind("loader.sock")
    srv.listen()
    if os.fork() == 0:
        c = socket.socket(socket.AF_UNIX)
        c.connect("loader.sock")
        c.sendall(bytes(view[:]))
        os._exit(0)
    conn, _ = srv.accept()
    got = conn.recv(100)
    os.wait()
    open("result.txt", "w").write(f"{int(got)}\n")
    os.unlink("loader.sock")
""".replace("WORKERS", str(WORKERS)).replace("SHARDS", str(SHARDS))


def test_shared_memory_of_a_dataloader_is_never_an_input(roar):
    """A DataLoader-like job (20 worker processes handing 40 batches over in
    POSIX shared memory, a semaphore, then a memfd and a named Unix socket), run
    20 times (issue 19: 1 run in 7 was incomplete before): complete every time,
    its shards the only inputs, result.txt the only output, the segments IPC."""
    w = roar.cwd
    (w / "shards").mkdir()
    shards = {str(w / "shards" / f"{i:03d}.bin"): None for i in range(SHARDS)}
    for i, p in enumerate(shards):
        Path(p).write_bytes(bytes([i % 251]) * (4096 + i * 512))
        shards[p] = xxh128(p)
    (w / "loader.py").write_text(LOADER)
    shards[str(w / "loader.py")] = xxh128(w / "loader.py")
    for attempt in range(20):
        _, doc = roar.run(PY, "loader.py")
        assert doc["complete"] is True, (attempt, doc["incomplete_reasons"])
        assert by_path(doc["inputs"]) == shards, attempt
        assert by_path(doc["outputs"]) == {str(w / "result.txt"): xxh128(w / "result.txt")}
        files = roar.json("show", doc["id"], "--explain")["files"]
        shm = [f for f in files if f["path"].startswith("/dev/shm/")]
        assert len([f for f in shm if f["path"].startswith("/dev/shm/psm_")]) >= SHARDS
        assert {f["role"] for f in shm} == {"ipc"}, attempt
    expected = sum((i % 251) * (4096 + i * 512) for i in range(SHARDS))
    assert (w / "result.txt").read_text() == f"{expected}\n"


def test_a_shared_memory_file_there_before_the_run_is_an_input(roar):
    """A dataset staged in /dev/shm before the run and mapped by it is data."""
    path = Path(f"/dev/shm/roar-test-staged-{roar.cwd.parent.name}")
    path.write_bytes(b"staged in RAM\n" * 100)
    try:
        _, doc = roar.run(PY, "-c", f"import mmap; f = open({str(path)!r}, 'rb'); "
                                    f"m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); m[:5]")
        assert by_path(doc["inputs"]) == {str(path): xxh128(path)}
        assert doc["complete"] is True, doc["incomplete_reasons"]
    finally:
        path.unlink()


# -- rules and explanations -----------------------------------------------------------------------


def test_user_rules_classify_and_explain(roar, tmp_path):
    """A store rule makes a cache directory environment and a file in a
    site-packages tree data; `roar show --explain` names each rule and file."""
    cache = tmp_path / "toolcache"
    cache.mkdir()
    (cache / "settings.json").write_text("{}\n")
    odd = tmp_path / "site-packages" / "shipped" / "table.csv"
    odd.parent.mkdir(parents=True)
    odd.write_text("a,b\n")
    roar.home.mkdir(exist_ok=True)
    (roar.home / "config.toml").write_text(
        f'[classify]\nenvironment = ["{cache}/"]\ndata = ["**/shipped/*.csv"]\n')
    _, doc = roar.run("cat", cache / "settings.json", odd)
    assert by_path(doc["inputs"]) == {str(odd): xxh128(odd)}
    assert doc["complete"] is True, doc["incomplete_reasons"]
    why = {f["path"]: f["why"] for f in roar.json("show", doc["id"], "--explain")["files"]}
    assert why[str(cache / "settings.json")] == \
        f"environment rule '{cache}/' in {roar.home / 'config.toml'}"
    assert why[str(odd)] == f"data rule '**/shipped/*.csv' in {roar.home / 'config.toml'}"
    line = roar("show", "--explain", odd).stdout
    assert line.strip() == f"{odd}: data, because data rule '**/shipped/*.csv' in " \
                           f"{roar.home / 'config.toml'}"
    (roar.home / "config.toml").write_text("[classify]\nbogus = ['x']\n")
    p = roar("run", "--", "true", check=False)
    assert p.returncode == 125 and "[classify] has no 'bogus'" in p.stderr
    assert "Traceback" not in p.stderr
