"""Turning one run's event stream into its stored record: the run document,
its processes, and one file record per (path, role) with content hashes.

A path the run read before writing it is an input (hashed at the first
read-open, before anyone could change it); a path it wrote and left behind
is an output (hashed at the end), wherever it is: environment locations
too (a pip install, a built shared library, byte code), kept as kind env;
written then deleted is temporary; read back after the run itself wrote it
is internal. The files the run inherited as stdout and stderr are its logs;
shared memory it made for itself (/dev/shm) is IPC: never an input or an
output. Whatever could not be established for sure is named in the record's
incomplete_reasons.
"""

from __future__ import annotations

import gc
import os
import time
from collections import deque
from itertools import repeat

from roar.record import context, remote
from roar.record.classify import CODE, DATA, ENV, PSEUDO, classify, kind_by_dir, rules_from_docs
from roar.record.codes import Reason, RunStatus, message, messages, reason
from roar.record.hasher import OK, SPECIAL, VANISHED, Hasher, HashResult, birth_ns
from roar.record.ids import now_iso
from roar.record.runmodel import (
    COMPILED,
    NOT_BUILT,
    Ledger,
    Partial,
    gather_built,
    index_rows,
    keys_not_in,
    ledger_join,
    ledger_size,
    ledger_sort,
    ledger_sorted,
    ledger_spoil,
    new_model,
    partial_extend,
    partial_spoil,
    proc_files_built,
    proc_record_built,
    settled_input,
    settled_inputs,
    sizes_same,
    tally_records,
    written_or_created,
)
from roar.record.store import HASH_LEN, INDEXES, Store, encode_doc, index_entries
from roar.record.store import index_rows as store_index_rows
from roar.record.timing import mark

INTERRUPT_SIGNALS = {1, 2, 9, 15}  # HUP, INT, KILL, TERM: somebody stopped the run
# File timestamps come from a coarse clock (a jiffy or two behind the event
# clock): a file born within this much before the run's O_CREAT open counts as
# made by it.
CREATE_SLACK_NS = 20_000_000
# POSIX shared memory (shm_open) and named semaphores (sem_open) live here
SHM = "/dev/shm/"


# How long the end of `roar run` waits for content hashes still in progress
# (huge inputs or outputs); the rest are recorded as pending and filled in by
# a background job (roar/record/pending.py).
HASH_WAIT = float(os.environ.get("ROAR_HASH_WAIT", "5"))
PENDING = "pending"
# Records of settled paths are built while the run goes on, when the model has
# caught up with the events (idle), this many paths per look
PREBUILD_BATCH = 512
# paths looked at per look when C builds the settled inputs (~5 µs each): enough
# that a look keeps up with the paths seen since the last one, so an exited
# process's record (_prebuild_procs, after them) finds its files' entries built
PREBUILD_LOOKS_C = 8  # x budget
PREBUILD_TRIES = 8  # looks at a path not settled yet (still open, not yet read)
ENTRIES_KEPT = 4096  # process entries of files remembered by what they are made of
# the tests' check that each ledger entry counted at the end is still its path's
# clean built tuple (_cmodel.c ledger_sorted; recorder.py spoils the others), and
# that the end classified every path (it looks only at those prebuild did not take)
CHECK_LEDGER = bool(os.environ.get("ROAR_CHECK_LEDGER"))
# a running process with this many files has its record built ahead in part
# (_prebuild_partials: a data loader's one process, which exits last)
PARTIAL_MIN = 256
PARTIAL_PATIENCE = 3  # looks an entry not built ahead holds up its process's partial
PARTIAL_STEP = 64  # new files a process's partial waits for (a look every few files)
LEDGER_SORT_LEAST = 1024  # ledger entries a look merges into the ledger's order at least


def _version(base: dict, role: str, mode: str | None = None, *, res: HashResult | None = None,
             size: int | None = None, status: str | None = None,
             error: str | None = None) -> dict:
    """The one place a file record (a FileVersion's document, roar/record/records.py)
    is built: `base` holds the path, kind and byte counts; `res` a finished hash.
    Inputs and internal reads are mode r, everything else w unless given; an
    `error` key is present when a hash was attempted or a reason is given."""
    rec = {**base, "role": role, "mode": mode or ("r" if role in ("input", "internal") else "w"),
           "hash": None, "size": size, "status": status}
    if res is not None:
        rec.update(hash=res.hash, size=res.size, status=res.status, error=res.error)
    elif error is not None:
        rec["error"] = error
    return rec


def _bound_bytes(rec: dict) -> None:
    """Read sizes are what calls asked for; a single pass cannot move more
    than the file holds, so bound them by its size. Unknown stays unknown."""
    if not rec.pop("bytes_exact", True):
        rec["bytes_read"] = rec["bytes_written"] = None
        return
    size = rec.get("size")
    if size is not None and rec["bytes_read"] and rec["role"] == "input":
        rec["bytes_read"] = min(rec["bytes_read"], size)


LISTED = (DATA, CODE, remote.REMOTE)  # kinds counted as the run's inputs and outputs
HASHED = (OK, SPECIAL, PENDING)  # an input with another status makes the run incomplete


def tally(files: list[dict]) -> tuple[int, dict, int, int, list[str], list[str], list[str],
                                     list[str]]:
    """(unhashed, sizes, inputs, outputs, env_outputs, env_reads, pending,
    written) of file records: the inputs whose hash is not HASHED, each path's
    size (its last record with one), the inputs and outputs of a LISTED kind,
    the paths of the environment outputs (what the run installed) and reads
    (what it used), of the records whose hash is pending (chain.pending_paths,
    unsorted) and of the outputs and temporaries (what links.from_records
    scans), in order."""
    unhashed = n_in = n_out = 0
    sizes: dict[str, int] = {}
    env_out: list[str] = []
    env_read: list[str] = []
    pending: list[str] = []
    written: list[str] = []
    for f in files:
        if f.get("size") is not None:
            sizes[f["path"]] = f["size"]
        if f.get("status") == PENDING:
            pending.append(f["path"])
        role = f["role"]
        if role in ("output", "temporary") and f.get("path"):
            written.append(f["path"])
        if role == "input":
            if f["status"] not in HASHED:
                unhashed += 1
            if f["kind"] in LISTED:
                n_in += 1
        elif role == "output":
            if f["kind"] == ENV:
                env_out.append(f["path"])
            elif f["kind"] in LISTED:
                n_out += 1
        elif role == ENV:
            env_read.append(f["path"])
    return unhashed, sizes, n_in, n_out, env_out, env_read, pending, written


def _tally_c(files: list[dict]) -> tuple[int, dict, int, int, list[str], list[str], list[str],
                                         list[str]]:
    """tally, in one pass in C (_cmodel.c tally_records); tally itself for what
    that leaves to it."""
    got = tally_records(files, LISTED, HASHED)
    return tally(files) if got is None else got


def wall_offset(tries: int = 5) -> int:
    """time.time_ns() - time.monotonic_ns(): what turns the events' monotonic
    times into wall times, to compare with files' ctimes. The wall clock is read
    between two monotonic reads and the tightest of a few tries is kept: two
    bare reads split by a preemption of a few ms would shift every event that
    much earlier, and a file written just before the run opened it would look
    changed after the open."""
    best_gap, best = None, 0
    for _ in range(tries):
        m0 = time.monotonic_ns()
        w = time.time_ns()
        m1 = time.monotonic_ns()
        if best_gap is None or m1 - m0 < best_gap:
            best_gap, best = m1 - m0, w - (m0 + m1) // 2
        if best_gap < 20_000:
            break
    return best


class RunRecorder:
    """Owns one run while it is captured: model, hasher and the run document."""

    def __init__(self, store: Store, run: dict, root_pid: int, root_fds: dict[int, str],
                 workers: int = 2, start_ns: int | None = None, compiled: bool = True):
        self.store = store
        self.run = run
        # the files the caller handed the run as stdout and stderr (`> train.log`)
        # are its logs: the caller's, shared with roar (its summary lands on
        # stderr) and perhaps with other writers; recorded with the bytes the
        # run wrote, never as a versioned output. A file the run opens itself
        # (`sh -c 'step > out.csv'`) is an output as any other.
        self.stdio = {p for fd, p in root_fds.items() if fd in (1, 2)}
        self.wall_offset = wall_offset()
        # the user's classification rules, as `roar run` found them (classify.py)
        self.rules = rules_from_docs(run.get("classify_rules"))
        self.hasher = Hasher(store, workers=workers)
        self.deadline: float | None = None  # set at the end: bounds waits for hashes
        self.messages: list[str] = []  # for the user, printed by `roar run`
        self.pending = 0
        self.fill_via = None  # roard's socket (a Path): roard starts the pending-hash job
        self.kinds: dict[str, str] = {}  # path -> data|code|env|pseudo
        self._by_dir: dict[str, object] = {}  # directory -> classify.kind_by_dir's answer
        git = run.get("git")
        self._git_root = git["root"] if git else None
        self._tracked: frozenset | set | None = None  # git-tracked files, looked up once
        self._rid = run["id"].encode()
        # path -> (signature, records, their JSON, their index rows)
        self._built: dict[str, tuple] = {}
        self._pf_built: dict[int, tuple] = {}  # id(ProcFile) -> (signature, entry, JSON)
        # process records built while the run goes on, of processes that have
        # exited: id(Proc) -> (exit_code, signal, ((path, size), ...), doc, JSON)
        self._proc_built: dict[int, tuple] = {}
        self._procs_seen = 0  # model.procs[:n] looked at
        self._procs_ended = -1  # processes ended (len(procs) - len(live)) at that look
        self._procs_running: list = []  # looked at while still running: looked at again
        # running processes' records built ahead in part: id(Proc) -> _cmodel.Partial
        self._partials: dict[int, object] = {}
        self._partial_extend = partial_extend if COMPILED and compiled else None
        self._key: bytes | None = None  # the store's redaction key, asked once
        self._argvs: dict[tuple, list] = {}  # argv -> redacted (a spawn loop repeats one)
        # a process's entry for a file, by all it is made of -> (entry, JSON): the
        # processes of a spawn loop each read the same libraries the same way
        self._entries: dict[tuple, tuple] = {}
        self._clean: set[str] = set()  # built, and not touched by the model since
        self._todo: deque[tuple[str, int]] = deque()  # (path, looks so far)
        # paths prebuild left to the end, and paths no longer clean: with those
        # still in its queue, every path not clean (what the end looks at again)
        self._unsettled: set[str] = set()
        # site-packages directories the run used -> their distributions, read by a
        # look (context.site_dists; False: not listable) for context.packages
        self._sites: dict[str, object] = {}
        # paths made unclean (touched while clean) -> the last _unclean that did
        self._gone: dict[str, int] = {}
        self._uncleans = 0  # _unclean calls so far
        start_ns = time.monotonic_ns() if start_ns is None else start_ns
        self.start_wall = start_ns + self.wall_offset
        # the wall clock read just before the workload was released (run.py), when
        # known: what existed before the run is told from what it made by it (_is_ipc,
        # _created_by_run); and the kernel's coarse clock read just before that,
        # the clock file times come from (CLOCK_REALTIME_COARSE)
        self.released_wall_ns: int | None = None
        self.released_coarse_ns: int | None = None
        # path -> CLOCK_MONOTONIC ns by which a held O_CREAT open of the run found
        # the file there (the pre-image supervisor's Supervisor.existed)
        self.existed_at_open: dict[str, int] = {}
        # feed_raw(raw): one raw kernel record into the model (runmodel.py)
        self.model, self.feed_raw = new_model(root_pid, run["cwd"], run["command"], root_fds,
                                              start_ns, self.hasher)
        # the records of settled read-only inputs, built in C from the compiled
        # model's state (_cmodel.c settled_input; None: all built here, the reference)
        self._settled_input = settled_input if COMPILED and compiled else None
        self._settled_inputs = settled_inputs if COMPILED and compiled else None
        self._gather_built = gather_built if COMPILED and compiled else None
        # the settled inputs built in C, for the end (_cmodel.c Ledger; _gather,
        # the tally and index rows of every record are the reference)
        self._ledger = Ledger() if COMPILED and compiled else None
        self._files: list[dict] | None = None  # stored by finish (the files property)
        self._files_of = None
        # the ledger holding the sizes of its entries the end's tally left out
        # (_from_ledger): _process_records asks it for what sizes lacks
        self._sizes_ledger = None
        self.digests = None  # chain.StoredDigests of what finish stored
        self._keys_not_in = keys_not_in if COMPILED and compiled else None
        # the loops over a process's entries built ahead, and the check of its
        # record built ahead, in C (recorder.py's loops are the reference)
        self._proc_files_built = proc_files_built if COMPILED and compiled else None
        self._sizes_same = sizes_same if COMPILED and compiled else None
        # a process's whole record, in C, when every entry of it is built ahead or
        # remembered (a spawn loop's): None, and _proc_record builds it
        self._proc_record_built = proc_record_built if COMPILED and compiled else None
        # the end's pass over the file records, in C (tally is the reference)
        self._tally = _tally_c if COMPILED and compiled else tally
        self._written_or_created = written_or_created if COMPILED and compiled else None
        if NOT_BUILT:
            self.messages.append(NOT_BUILT)

    # -- the end ---------------------------------------------------------------

    def finish(self, status: int | None, interrupted: bool, lost: int,
               notes: list[str | dict] | None = None) -> dict:
        """Compute file records, hash outputs and store the finished run."""
        # Tens of thousands of records are made here and none is garbage: the
        # cyclic collector would only walk them again and again (~40 ms per
        # 20,000 files).
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._finish(status, interrupted, lost, notes)
        finally:
            if enabled:
                gc.enable()

    def _finish(self, status: int | None, interrupted: bool, lost: int,
                notes: list[str | dict] | None) -> dict:
        run = self.run
        model = self.model
        run["ended_at"] = now_iso()
        root = model.root
        if status is not None:
            if os.WIFSIGNALED(status):
                run["signal"] = os.WTERMSIG(status)
                run["exit_code"] = 128 + run["signal"]
            else:
                run["exit_code"] = os.WEXITSTATUS(status)
        elif root.signal is not None:  # rebuilt without waitpid: the kernel's word
            run["signal"], run["exit_code"] = root.signal, 128 + root.signal
        else:
            run["exit_code"] = root.exit_code
        root.exit_code = run.get("exit_code") if run.get("signal") is None else None
        root.signal = run.get("signal")
        if run.get("signal") in INTERRUPT_SIGNALS:
            interrupted = True
        run["status"] = (RunStatus.INTERRUPTED if interrupted else RunStatus.FINISHED).value

        git = run.get("git")
        git_root = git["root"] if git else None
        tracked = context.tracked_files(git_root) if git_root else None
        mark("finish: git ls-files")
        self.deadline = time.monotonic() + HASH_WAIT
        files, encoded, index, tallied, rows = self._file_records(git_root, tracked)
        # the records themselves, when made only if asked for (_from_ledger)
        files_of = files if callable(files) else None
        # one pass over the file records (tens of thousands): inputs not hashed,
        # sizes, counts, what the run installed (its environment outputs) and
        # what it used (environment reads); the remote records' added below.
        # (Made with the records, in C, when _file_records gathered them there.)
        unhashed, sizes, n_in, n_out, env_out, env_read, pending, written = (
            tallied if tallied is not None else self._tally(files))
        reasons = [reason(Reason.UNHASHED_INPUTS, n=unhashed)] if unhashed else []
        mark("finish: file records (waits for hashes)")
        procs, encoded_procs = self._process_records(git_root, tracked, sizes)
        mark("finish: process records")
        remote_files, remote_reasons = self._remote_records(files)
        if remote_files and files_of is not None:
            files, files_of = files_of(), None  # attach_hashes looked at them
        if remote_files:
            _, _, r_in, r_out, r_env_out, r_env_read, r_pending, r_written = tally(remote_files)
            n_in, n_out = n_in + r_in, n_out + r_out
            env_out, env_read = env_out + r_env_out, env_read + r_env_read
            pending, written = pending + r_pending, written + r_written
        if remote_files:
            files += remote_files
            if encoded.__class__ is bytes:  # the stored list (_from_ledger's): its parts
                encoded = [encoded[1:-1]] if len(encoded) > 2 else []
            encoded += [encode_doc(r) for r in remote_files]
        index += index_entries(self._rid, remote_files)

        # a note is a sentence, or a coded reason (codes.reason) from the session
        reasons = [reason(Reason.NOTE, text=n) if isinstance(n, str) else n
                   for n in notes or []] + reasons
        if self.pending:
            reasons.append(reason(Reason.HASH_PENDING, n=self.pending))
        if lost:
            reasons.insert(0, reason(Reason.LOST_EVENTS, n=lost))
        for what, n in sorted(model.problems.items()):
            reasons.append(reason(Reason.MODEL_PROBLEM, what=what, n=n))
        if model.io_uring:
            reasons.append(reason(Reason.IO_URING))
        if model.untraced_fds:
            reasons.append(reason(Reason.UNTRACED_FD, n=len(model.untraced_fds)))
        # processes whose exit was not seen left the run's cgroup; not said when
        # the exits may be among lost events, of an interrupted run, or of an
        # attached session (its processes go on after it)
        left = model.still_running()
        if left and not (lost or interrupted or run.get("mode") == "attached"):
            reasons.append(reason(Reason.LEFT_RUN, n=left))
        reasons += remote_reasons
        if self.hasher.failure:  # a damaged store: the hashes are right, the store is not
            reasons.append(reason(Reason.STORE_DAMAGED, why=self.hasher.failure))
            self.messages.append(message(reasons[-1]))
        if interrupted:
            reasons.append(reason(Reason.INTERRUPTED))
        run["lost_events"] = lost
        run["complete"] = not reasons
        run["reasons"] = reasons
        run["incomplete_reasons"] = messages(reasons)
        run["io_uring"] = model.io_uring
        run["connects"] = model.connects
        run["installed"] = context.installed(env_out)
        # what it installed is not what it used (pip reads back what it byte-compiles)
        # (the distributions of the site-packages directories read while the run
        # went on, where the run wrote nothing into the directory)
        wrote = {context.site_of(p) for p in env_out}
        known = {site: d for site, d in self._sites.items() if d and site not in wrote}
        run["packages"] = {k: v for k, v in context.packages(env_read, known).items()
                           if run["installed"].get(k) != v}
        run["counts"] = {
            "inputs": n_in,
            "outputs": n_out,
            "env_outputs": len(env_out),
            "processes": len(procs),
            "events": model.events,
        }
        run.pop("client_pid", None)
        self.hasher.shutdown(wait=not self.pending)
        # the new stat-cache entries, stored with the run (never into a store
        # found damaged)
        cache = None if self.hasher.failure else self.hasher.take_new_entries()
        if rows is not None:  # the rows gather_end made, with those of the rest
            made = index_rows(index, INDEXES, HASH_LEN, rows)
            rows = made if made is not None else tuple(
                sorted(set(a) | set(b)) for a, b in zip(store_index_rows(index), rows,
                                                        strict=True))
        elif self._tally is _tally_c:
            rows = index_rows(index, INDEXES, HASH_LEN)
        # the chain's digest of the stored bytes (no hash pending) is computed
        # while they are written and synced (roar run's chain request joins it)
        self.digests = None

        def meanwhile(files_raw: bytes, procs_raw: bytes) -> None:
            if not pending:
                from roar.record.chain import StoredDigests

                self.digests = StoredDigests(files_raw, procs_raw)

        stored = self.store.finish_run(run, files, procs, encoded_files=encoded,
                                       encoded_procs=encoded_procs, index=index, rows=rows,
                                       meanwhile=meanwhile, cache=cache)
        # what was stored, for the end of `roar run` (links, chain): not read back;
        # the paths of its pending hashes (chain.pending_paths) and of what it
        # wrote (links.from_records), from the pass above
        self._files, self._files_of = (None, files_of) if files_of is not None else (files, None)
        self.procs, self.stored = procs, stored
        self.pending_paths, self.written = sorted(pending), written
        mark("finish: store")
        if self.pending:
            from roar.record.pending import start_fill

            problem = start_fill(self.store.home, run["id"], self.fill_via)
            if problem:
                self.messages.append(problem)
        return run

    @property
    def files(self) -> list[dict]:
        """The file records stored (in path order, then remote objects'), made
        when first asked for where the end did not need them."""
        if self._files is None and self._files_of is not None:
            self._files, self._files_of = self._files_of(), None
        return self._files

    def _remote_records(self, files) -> tuple[list[dict], list[str]]:
        """Remote objects (record/remote.py) as file records of kind remote,
        with the run's remote summary; and what makes its remote inputs unsure:
        network peers whose traffic could not be read. files: the file
        records, or what makes them."""
        model = self.model
        remote_files, telemetry = model.remote.objects(remote.nondata_hosts())
        if remote_files:
            remote.attach_hashes(remote_files, files() if callable(files) else files)
        blind = remote.uninspected(model.connects, model.remote.exchanges)
        self.run["remote"] = {"objects": len(remote_files), "telemetry": telemetry,
                              "uninspected": blind}
        reasons = [reason(Reason.UNINSPECTED_NET, address=e["address"], port=e["port"])
                   for e in blind]
        return remote_files, reasons

    def _result(self, job) -> HashResult | None:
        """A hash job's result, waiting no later than the deadline (None: pending)."""
        if job is None:
            return None
        if self.deadline is None:
            return job.result()
        return job.result(max(0.0, self.deadline - time.monotonic()))

    def _pending(self, base: dict, role: str, bound_ns: int) -> dict:
        """A record whose hash is computed later; bound_ns: the content must
        not have changed after this (wall clock) for the late hash to count."""
        self.pending += 1
        return {**_version(base, role, status=PENDING), "pending_bound_ns": bound_ns}

    def _created_by_run(self, s, early: HashResult | None) -> bool:
        """Whether the run's own O_CREAT open made this file (so what it later
        read there is its own doing, not an input)."""
        if s.create_ts is None:
            return False
        seen = self.existed_at_open.get(s.path)
        if seen is not None and seen < s.create_ts:
            return False  # a held O_CREAT open found it there before the run's first access
        opened_wall = s.create_ts + self.wall_offset - CREATE_SLACK_NS
        born = early.born_ns if early is not None and early.born_ns else birth_ns(s.path)
        if born is not None:
            if born < opened_wall:
                return False
            if self.released_wall_ns is None or born > self.released_wall_ns:
                return True  # file times never run ahead of the wall clock
            return self._made_in_release_tick(s, early, born)
        if s.written and s.deleted and (early is None or early.status == VANISHED):
            # opened with O_CREAT, written and deleted by the run before it could be
            # looked at: a scratch file (a journal, a lock), not something it consumed
            return True
        # no birth time on this filesystem (ramfs; NFS and others may keep none):
        # empty and changed at the open or after it, not before the tick of the
        # release (see _made_in_release_tick), as the open's early hash saw it
        bound = opened_wall
        if self.released_coarse_ns is not None:
            bound = max(bound, self.released_coarse_ns)
        elif self.released_wall_ns is not None:
            bound = max(bound, self.released_wall_ns + 1)
        if s.early_hash is None and not s.written:
            # opened only to write, never written (touch, cp of an empty file): no
            # early hash, so as it is now; it is an output if the open made it
            try:
                st = os.stat(s.path)
            except OSError:
                return False
            return st.st_size == 0 and st.st_ctime_ns >= bound
        return bool(early and early.size == 0 and early.ctime_ns is not None
                    and early.ctime_ns >= bound)

    def _made_in_release_tick(self, s, early: HashResult | None, born: int) -> bool:
        """A file born at or before the wall clock read just before the release.
        File times come from the kernel's coarse clock, up to a tick (4 ms at
        HZ=250) behind the wall clock: one born before the coarse clock's reading
        then was there before the run (a dataset the previous command staged
        ~10 ms before a warm launcher's start); one born within that tick was
        made just before the release or just after it (`roar run -- touch f`
        makes f ~1 ms after it), and its time cannot tell which. Content the
        open's early hash read before the run wrote any says it was there (so
        does a held O_CREAT open that found it there first: `sort -o f f` on a
        file staged just before, asked first in _created_by_run). Otherwise it
        is the run's: a new file is never left out of the outputs."""
        if self.released_coarse_ns is None or born < self.released_coarse_ns:
            return False
        if (early is not None and early.status == OK and early.size
                and (s.modified_ts is None or early.finished_ns <= s.modified_ts)):
            return False
        return True

    # -- file records ------------------------------------------------------------
    #
    # A path's records depend only on its PathState, what each process did with
    # it (and, for renamed files, with its earlier names), its kind and its hash
    # results. Records of paths that look settled (read-only inputs whose hash is
    # done, environment and pseudo files) are built, JSON-encoded and turned into
    # index rows while the run is still going, in the model's thread (so the end
    # of a run over 20,000 files does not do it all then). At the end a record is
    # reused when the model has not touched its path since (RunModel.touched), or
    # when a signature of what it was built from is unchanged; any other path is
    # built then. The stored bytes are the same either way (tests/test_recorder.py).

    def _agg(self, path: str) -> dict:
        a = {"bytes_read": 0, "bytes_written": 0, "bytes_exact": True, "processes": []}
        for p, pf in self.model.by_path.get(path, ()):
            a["bytes_read"] += pf.bytes_read
            a["bytes_written"] += pf.bytes_written
            a["bytes_exact"] = a["bytes_exact"] and pf.bytes_exact
            a["processes"].append(p.key)
        return a

    @staticmethod
    def _sig(s, a: dict, kind: str) -> tuple:
        return (kind, s.first, s.read, s.written, s.deleted, s.modified_ts, s.create_ts,
                s.early_ts, tuple(s.renamed_from), a["bytes_read"], a["bytes_written"],
                a["bytes_exact"], len(a["processes"]))

    @staticmethod
    def _read_only(s) -> bool:
        """Only read by the run so far: nothing written, created, moved or deleted."""
        return (s.first == "read" and not s.written and not s.deleted
                and s.create_ts is None and not s.renamed_from)

    def _settled(self, s, kind: str) -> bool:
        """Whether this path's records can be built now, before the end: only
        the end can know about outputs, files the run created, renames and
        hashes still running."""
        if s.renamed_from:
            return False
        if kind == PSEUDO:
            return True
        if kind == ENV:
            return self._read_only(s)  # written: an output, hashed at the end
        job = s.early_hash
        return (s.read and self._read_only(s) and s.path not in self.stdio
                and job is not None and job.value is not None)

    def _build(self, path: str, s, kind: str, a: dict, created: dict,
               outputs: dict) -> tuple[list[dict], list[bytes], list]:
        """A path's records, their JSON and their hash-index rows."""
        recs = self._records_for(path, s, kind, a, created, outputs)
        return recs, [encode_doc(r) for r in recs], index_entries(self._rid, recs)

    def _build_settled(self, path: str, s, kind: str) -> bool:
        """The records of a settled read-only data or code input, built in C
        from the compiled model's state (_cmodel.c settled_input: the same
        records, JSON, signatures and index rows as _build and
        _prebuild_proc_files); False when it is not one C builds."""
        if self._settled_input is None:
            return False
        fast = self._settled_input(s, self.model.by_path.get(path, []), kind, self.wall_offset,
                                   self._rid)
        if fast is None:
            return False
        rec, raw, sig, entries, rows = fast
        self._set_built(path, (sig, [rec], [raw], rows))
        self._pf_built.update(entries)
        return True

    def prebuild(self, budget: int = PREBUILD_BATCH) -> int:
        """Build the records of up to `budget` settled paths seen so far
        (called from the model's thread when it has caught up with the run);
        returns how many were built."""
        model = self.model
        built = 0
        if self._tracked is None:
            self._tracked = (context.tracked_files(self._git_root) if self._git_root
                             else frozenset())
        self._unclean(model.touched)
        model.touched.clear()
        todo = self._todo
        todo.extend(zip(model.new_paths, repeat(0)))  # (path, 0) each
        model.new_paths = []
        looks = budget if self._settled_inputs is None else budget * PREBUILD_LOOKS_C
        if looks >= len(todo):
            batch = list(todo)
            todo.clear()
        else:
            batch = [todo.popleft() for _ in range(looks)]
        kinds = self.kinds
        if self._settled_inputs is not None:  # read-only inputs: built in C, the rest here
            # (C classifies what its directory's answer classifies: _classify's way;
            # a directory new to _by_dir is asked in C (_ask_dir) first, or a batch of
            # its files would all be classified by _classify)
            built, batch = self._settled_inputs(model, batch, kinds, self.stdio,
                                                self.wall_offset, self._rid, self._built,
                                                self._pf_built, self._clean, self._by_dir,
                                                self._ledger, self._ask_dir)
            todo_kinds = [(path, tries) for path, tries in batch if path not in kinds]
            for path, _ in todo_kinds:
                kinds[path] = self._classify(path, self._tracked)
            if todo_kinds:  # classified here: their first look in C (the kind is known now)
                more, left = self._settled_inputs(model, todo_kinds, kinds, self.stdio,
                                                  self.wall_offset, self._rid, self._built,
                                                  self._pf_built, self._clean, None,
                                                  self._ledger)
                built += more
                done = {path for path, _ in todo_kinds} - {path for path, _ in left}
                batch = [item for item in batch if item[0] not in done]
        else:
            for path, _ in batch:
                if path not in kinds:
                    kinds[path] = self._classify(path, self._tracked)
        sites = self._sites
        for path, tries in batch:
            s = model.paths[path]
            kind = kinds[path]
            if kind == ENV and "-packages/" in path:  # a site-packages directory
                site = context.site_of(path)
                if site is not None and site not in sites:
                    sites[site] = None  # read below
            if not self._settled(s, kind):
                if self._read_only(s):
                    if s.read and s.early_hash is not None:
                        todo.append((path, tries))  # its hash is running: look again
                        continue
                    if tries < PREBUILD_TRIES:
                        todo.append((path, tries + 1))  # still open: a few more looks
                        continue
                self._unsettled.add(path)  # left to the end
                continue
            if not (kind in (DATA, CODE) and self._build_settled(path, s, kind)):
                a = self._agg(path)
                parts = self._build(path, s, kind, a, {}, {})
                self._set_built(path, (self._sig(s, a, kind), *parts))
                self._prebuild_proc_files(path, kind, parts[0])
            self._clean.add(path)
            built += 1
        for site, dists in sites.items():
            if dists is None:  # its distributions read now, for the end (context.packages)
                sites[site] = context.site_dists(site) or False
        if self._ledger is not None:
            ledger_sort(self._ledger, LEDGER_SORT_LEAST)  # the end sorts only the rest
        self._prebuild_partials()
        return built + self._prebuild_procs(budget)

    def _set_built(self, path: str, val: tuple) -> None:
        """_built[path] = val, here (C's settled_inputs adds its own to the
        ledger): the path's ledger entry, if any, counts no more."""
        if self._ledger is not None:
            ledger_spoil(self._ledger, (path,))
        self._built[path] = val

    def _unclean(self, touched) -> None:
        """Paths the model touched are no longer clean (their records, built
        ahead, are checked again): their ledger entries and the runs of the
        partial records holding one that was are spoiled."""
        self._uncleans += 1
        if self._partials or self._ledger is not None:
            gone = self._clean & touched
            if gone:
                self._unsettled |= gone
                self._gone.update(dict.fromkeys(gone, self._uncleans))
                if self._ledger is not None:
                    ledger_spoil(self._ledger, gone)
                for pt in self._partials.values():
                    partial_spoil(pt, gone)
        self._clean.difference_update(touched)

    def _prebuild_partials(self) -> None:
        """Take the entries built ahead of each running process with many files
        into its partial record (_cmodel.c Partial): at the end, the record of
        a process that exits last splices them instead of taking each."""
        if self._partial_extend is None:
            return
        partials = self._partials
        for p in self.model.live.values():
            if len(p.files) < PARTIAL_MIN:
                continue
            pt = partials.get(id(p))
            if pt is None:
                pt = partials[id(p)] = Partial(p)
            elif len(p.files) - pt.state[0] < PARTIAL_STEP:
                continue  # a run of a few entries: at a later look
            self._partial_extend(pt, self.kinds, self._clean, self._pf_built, self._built,
                                 PARTIAL_PATIENCE, self._unsettled)

    def _prebuild_procs(self, budget: int) -> int:
        """Build the records of up to `budget` processes that have exited since
        the last look (an exited process's record can change only by its exit
        status, which a parent's reap or the end may still set, and by the sizes
        of its files: both checked at the end)."""
        model = self.model
        procs = model.procs
        ended = len(procs) - len(model.live)
        if ended == self._procs_ended:
            return 0
        self._procs_ended = ended
        if self._procs_seen < len(procs):
            self._procs_running.extend(procs[self._procs_seen:])
            self._procs_seen = len(procs)
        running, built = [], 0
        git_root, tracked = self._git_root, self._tracked
        sizes: dict[str, int | None] = {}  # of this look

        def size_of(path: str) -> int | None:
            if path in sizes:
                return sizes[path]
            size = sizes[path] = self._built_size(path)
            return size

        for p in self._procs_running:
            if p.end_ts is None or built >= budget:
                running.append(p)
                continue
            doc, raw, used = self._proc_record(p, git_root, tracked, size_of,
                                               (self._built, True))
            # the (path, size)s of its paths not clean now: the end checks those
            # sizes, and the others' only if one of them is made unclean since
            # (_process_records)
            clean = self._clean
            self._proc_built[id(p)] = (p.exit_code, p.signal, used, doc, raw,
                                       tuple(u for u in used if u[0] not in clean),
                                       self._uncleans)
            self._partials.pop(id(p), None)  # its record is built: its runs are not kept
            built += 1
        self._procs_running = running
        if running and built >= budget:
            self._procs_ended = -1  # more to do at the next look
        return built

    def _ask_dir(self, d: str) -> object:
        """_by_dir's answer for a directory new to it (C's settled_inputs asks)."""
        return kind_by_dir(d, self._git_root, self.rules) or False

    def _classify(self, path: str, tracked) -> str:
        """classify(path, the run's git root, tracked, rules), from what its
        directory says (classify.kind_by_dir, asked once per directory) when the
        answer does not depend on the work tree."""
        i = path.rfind("/") + 1
        by = self._by_dir.get(path[:i])
        if by is None:
            by = self._by_dir[path[:i]] = self._ask_dir(path[:i])
        if by is False:
            return classify(path, self._git_root, tracked, self.rules)
        return by if by.__class__ is str else by(path[i:])

    def _built_size(self, path: str) -> int | None:
        """The size the records built so far give a path (None: none yet)."""
        hit = self._built.get(path)
        if hit is None:
            return None
        return next((r["size"] for r in reversed(hit[1]) if r.get("size") is not None), None)

    def _file_records(self, git_root, tracked) -> tuple[list[dict], list[bytes], list,
                                                        tuple | None, tuple | None]:
        """(records, their JSON, index entries, tally, rows): the run's file
        records in path order. The JSON is a list of parts whose join with
        commas is the stored list's (a part may hold many records), or the
        stored list's bytes themselves (from the ledger); tally is
        tally(records) and rows the hash-index rows of the records not in index
        entries (for index_rows to add to), when C gathered them (gather_end),
        else None."""
        model = self.model
        again = tracked != self._tracked and (tracked or self._tracked)
        if again:
            # the work tree's tracked files changed: classify again, build everything now
            self.kinds, self._built, self._pf_built, self._clean = {}, {}, {}, set()
            self._proc_built, self._partials = {}, {}
            if self._ledger is not None:
                self._ledger = Ledger()
        kinds = self.kinds
        if self._keys_not_in is None:  # the reference: every path looked at
            unclassified = [path for path in model.paths if path not in kinds]
        elif again:
            unclassified = self._keys_not_in(model.paths, kinds)
        else:  # every path prebuild took from its queue is classified: not the rest
            unclassified = [path for path in (*(path for path, _ in self._todo),
                                              *model.new_paths) if path not in kinds]
        for path in unclassified:
            kinds[path] = self._classify(path, tracked)
        if CHECK_LEDGER and self._keys_not_in is not None and self._keys_not_in(model.paths,
                                                                                  kinds):
            raise RuntimeError("recorder: a path prebuild took is not classified")
        # created files and outputs are among the paths written or created (in
        # C for the compiled model: 20,000 read-only inputs not looked at here)
        flagged = self._written_or_created(model.paths) if self._written_or_created else None
        if flagged is None:
            flagged = [path for path, s in model.paths.items()
                       if s.written or s.create_ts is not None]
        paths = model.paths
        created = {path: self._created_by_run(s, self._result(s.early_hash))
                   for path, s in ((p, paths[p]) for p in flagged)
                   if s.create_ts is not None and kinds[path] in (DATA, CODE, ENV)}
        outputs = {}
        for path, s in ((p, paths[p]) for p in flagged):
            if ((s.written or created.get(path)) and not s.deleted and path not in self.stdio
                    and kinds[path] in (DATA, CODE, ENV)
                    and not self._is_ipc(path, s, created)):
                outputs[path] = self.hasher.submit(path)
        self._unclean(model.touched)
        clean = self._clean
        built = self._built
        if self._settled_inputs is not None:
            # the settled read-only inputs not built ahead (the consumer was behind,
            # or the model touched them since): in C, in one call, as prebuild does
            if self._keys_not_in is None:
                todo = [(path, 0) for path in model.paths if path not in clean]
            elif again:
                todo = [(path, 0) for path in self._keys_not_in(model.paths, clean)]
            else:  # not clean: still in prebuild's queue, or left or made unclean since
                todo = [(path, 0) for path in dict.fromkeys(
                    (*(path for path, _ in self._todo), *model.new_paths, *self._unsettled))
                    if path not in clean]
                if CHECK_LEDGER and not {p for p, _ in todo} >= set(
                        self._keys_not_in(model.paths, clean)):
                    raise RuntimeError("recorder: a path not clean is not looked at again")
            if todo:
                self._settled_inputs(model, todo, kinds, self.stdio, self.wall_offset,
                                     self._rid, built, self._pf_built, clean, None,
                                     self._ledger)
        if self._ledger is not None:
            got = self._from_ledger(created, outputs)
            if got is not None:
                return got
        return self._gather(sorted(model.paths), created, outputs)

    def _part(self, path: str, created: dict, outputs: dict) -> tuple:
        """(records, their JSON, their index entries) of a path at the end: as built
        ahead when its path is clean or what they were built from is unchanged,
        else built now."""
        if path in self._clean:  # unchanged since it was built
            return self._built[path][1:]
        s = self.model.paths[path]
        kind = self.kinds[path]
        a = self._agg(path)
        hit = self._built.get(path)
        if hit is not None and hit[0] == self._sig(s, a, kind):
            return hit[1:]
        if (kind in (DATA, CODE) and self._settled(s, kind)
                and self._build_settled(path, s, kind)):
            self._clean.add(path)
            return self._built[path][1:]  # not built ahead (or changed since): in C now
        return self._build(path, s, kind, a, created, outputs)

    def _gather(self, paths: list[str], created: dict, outputs: dict) -> tuple:
        """_file_records' loop over the paths in order (the reference)."""
        clean, built = self._clean, self._built
        records: list[dict] = []
        encoded: list[bytes] = []
        index: list[tuple[str, bytes, bytes]] = []
        gather, i, n = self._gather_built, 0, len(paths)
        while i < n:
            if gather is not None:  # a run of paths unchanged since built ahead: in C
                i = gather(paths, i, clean, built, records, encoded, index)
                if i == n:
                    break
            parts = self._part(paths[i], created, outputs)
            i += 1
            records.extend(parts[0])
            encoded.extend(parts[1])
            index.extend(parts[2])
        return records, encoded, index, None, None

    def _from_ledger(self, created: dict, outputs: dict) -> tuple | None:
        """_file_records from the ledger of the settled inputs built in C (a
        few objects touched per path, not each record: _cmodel.c ledger_sorted
        and ledger_join) and the rest's parts; the records themselves are made
        only when asked for (self.files). None: a record of the rest that
        tally_records does not take (_gather then does it all)."""
        model, built = self.model, self._built
        rest = (ledger_sorted(self._ledger, model.paths, self._clean, built) if CHECK_LEDGER
                else ledger_sorted(self._ledger, model.paths))
        rest.sort()
        state = [0, {}, 0, 0, [], [], [], []]
        rows: tuple[list[bytes], list[bytes]] = ([], [])
        index: list[tuple[str, bytes, bytes]] = []
        rest_json: list[list[bytes]] = []
        rest_records: dict[str, list[dict]] = {}
        pending = self.pending
        for path in rest:
            recs, raws, entries = self._part(path, created, outputs)
            if tally_records(recs, LISTED, HASHED, state) is None:
                self.pending = pending  # counted again by _gather
                return None
            rest_records[path] = recs
            rest_json.append(raws if raws.__class__ is list else list(raws))
            index.extend(entries)
        # the sizes of the entries stay in the ledger (ledger_size): the end's
        # process records ask for those of their files only
        body = ledger_join(self._ledger, rest, rest_json, state, rows, LISTED, HASHED, True,
                           True)
        self._sizes_ledger = self._ledger

        def records() -> list[dict]:
            return [rec for path in sorted(model.paths)
                    for rec in (rest_records[path] if path in rest_records else built[path][1])]

        return records, body, index, tuple(state), rows  # body: the stored list itself

    def _records_for(self, path: str, s, kind: str, a: dict, created: dict,
                     outputs: dict) -> list[dict]:
        """The records of one path (none, one, or two for read-then-rewrite)."""
        base = {"path": path, "kind": kind, **a}
        for old in s.renamed_from:  # written under a temporary name, then renamed
            prev = self._agg(old)
            if prev["processes"]:
                base["bytes_written"] += prev["bytes_written"]
                base["bytes_exact"] = base["bytes_exact"] and prev["bytes_exact"]
                base["processes"] = sorted(set(base["processes"]) | set(prev["processes"]))
        records = []
        written = s.written or created.get(path, False)
        mode = ("r" if s.read else "") + ("w" if s.written else "")
        if kind == PSEUDO:
            if mode:
                records.append(_version(base, kind, mode))
        elif self._is_ipc(path, s, created):
            records.append(_version(base, "ipc", mode or None))
        else:
            if kind == ENV:
                if s.read:  # summarised as packages
                    records.append(_version(base, ENV, "r"))
            elif s.read and s.first == "read" and not created.get(path):
                records.append(self._input_record(base, s))
            elif s.read and not written:
                records.append(_version(base, "internal"))
            if written and path in self.stdio:
                records.append(_version(base, "log"))
            elif written:  # an output wherever it is (an install, a build, byte code)
                records.append(self._written_record(base, path, s, outputs))
        for rec in records:
            _bound_bytes(rec)
        return records

    def _written_record(self, base: dict, path: str, s, outputs: dict) -> dict:
        """What the run wrote: temporary when it deleted it, else an output."""
        if s.deleted:
            return _version(base, "temporary")
        res = self._result(outputs[path])
        if res is None:
            return self._pending(base, "output", time.time_ns())
        return _version(base, "output", res=res)

    def _is_ipc(self, path: str, s, created: dict) -> bool:
        """Shared memory or a named semaphore the run made for itself: a
        /dev/shm file that its processes mapped (or a sem.* file), which did not
        exist before the run started. Such segments are created, mapped by
        workers and unlinked within milliseconds (a PyTorch DataLoader's
        batches): never inputs, never outputs, whatever was seen of them."""
        if not path.startswith(SHM):
            return False
        if not (path.startswith(SHM + "sem.")
                or any(pf.mapped for _, pf in self.model.by_path.get(path, ()))):
            return False  # written and read with read(2)/write(2): a file staged in RAM
        if created.get(path):
            return True
        early = self._result(s.early_hash) if s.early_hash is not None else None
        if self.released_wall_ns is not None:
            # file times never run ahead of the wall clock: one at or before its read
            # just before the workload's release is older than anything the run did.
            # No slack: a dataset staged there just before a fast start (the warm
            # launcher starts ~10 ms after the shell's previous command) is an input;
            # a segment the run made within a clock tick of its release may count as
            # one (an extra input, never a missed one)
            since = self.released_wall_ns + 1
        else:
            since = self.start_wall - CREATE_SLACK_NS
        if early is not None and early.ctime_ns is not None and early.ctime_ns < since:
            return False  # there, unchanged, before the run: a real input
        born = (early.born_ns if early is not None else None) or birth_ns(path)
        if born is not None:
            return born >= since
        return True  # gone before anyone could look at it, mapped by the run: its own

    def _input_record(self, base: dict, s) -> dict:
        if s.early_hash is None:
            # A read through an fd the run inherited, never opened by path here.
            res = self.hasher.hash_now(s.path) if s.modified_ts is None else None
        else:
            res = self._result(s.early_hash)
            if res is None:
                return self._pending(base, "input", s.early_ts + self.wall_offset)
        if res is None:
            return _version(base, "input", status="unverified",
                            error="changed by the run before it was hashed")
        if res.status == OK and s.modified_ts is not None and res.finished_ns > s.modified_ts:
            return _version(base, "input", size=res.size, status="unverified",
                            error="overwritten by the run before its first version was hashed")
        if (res.status == OK and s.early_ts is not None and res.ctime_ns is not None
                and res.ctime_ns > s.early_ts + self.wall_offset):
            # changed (by anyone) after the run opened it and before it was hashed
            return _version(base, "input", size=res.size, status="unverified",
                            error="changed after the run opened it, before it was hashed")
        return _version(base, "input", res=res)

    @staticmethod
    def _pf_sig(pf, kind: str, size: int | None) -> tuple:
        return (kind, size, pf.read, pf.written, pf.mapped, pf.bytes_read, pf.bytes_written,
                pf.read_calls, pf.write_calls, pf.bytes_exact)

    @staticmethod
    def _proc_file(pf, kind: str, size: int | None) -> dict:
        nread = pf.bytes_read if size is None else min(pf.bytes_read, size)
        exact = pf.bytes_exact
        return {"path": pf.path, "kind": kind, "mode": pf.mode,
                "bytes_read": nread if exact else None,
                "bytes_written": pf.bytes_written if exact else None,
                "read_calls": pf.read_calls, "write_calls": pf.write_calls}

    def _prebuild_proc_files(self, path: str, kind: str, recs: list[dict]) -> None:
        size = next((r["size"] for r in reversed(recs) if r.get("size") is not None), None)
        for _, pf in self.model.by_path.get(path, ()):
            d = self._proc_file(pf, kind, size)
            self._pf_built[id(pf)] = (self._pf_sig(pf, kind, size), d, encode_doc(d))

    def _process_records(self, git_root, tracked,
                         sizes: dict[str, int]) -> tuple[list[dict], list[bytes]]:
        out, encoded = [], []
        built, size_of = self._proc_built, sizes.get
        same = self._sizes_same
        ledger = self._sizes_ledger
        src = (sizes, False)
        if ledger is not None:  # sizes lacks those of the ledger's entries
            def size_of(path: str) -> int | None:
                return sizes[path] if path in sizes else ledger_size(ledger, path)

            src = ((sizes, ledger), 2)
        # when each process last used a path made unclean: a record built ahead
        # from paths clean then, none of them made unclean since, has the sizes
        # it was built with (a clean path's records are those it was built
        # with), so only those of its paths not clean then are checked
        suspect: dict[int, int] = {}
        if same is not None:
            by_path = self.model.by_path
            for path, when in self._gone.items():
                for q, _ in by_path.get(path, ()):
                    if suspect.get(id(q), 0) < when:
                        suspect[id(q)] = when
        for p in self.model.procs:
            hit = built.get(id(p))
            if (hit is not None and hit[0] == p.exit_code and hit[1] == p.signal
                    and (same(hit[5] if suspect.get(id(p), 0) <= hit[6] else hit[2], sizes,
                              *(() if ledger is None else (ledger,)))
                         if same is not None
                         else all(size_of(path) == size for path, size in hit[2]))):
                doc, raw = hit[3], hit[4]  # built while the run went on, still the same
                if CHECK_LEDGER and same is not None and not same(hit[2], sizes, *(
                        () if ledger is None else (ledger,))):
                    raise RuntimeError(f"recorder: process {p.key}'s sizes changed")
            else:
                doc, raw, _ = self._proc_record(p, git_root, tracked, size_of, src,
                                                want_used=False)
            encoded.append(raw)
            out.append(doc)
        return out, encoded

    def _proc_record(self, p, git_root, tracked, size_of,
                     sizes: tuple[dict, bool] | None = None,
                     want_used: bool = True) -> tuple[dict, bytes, tuple]:
        """One process's record, its JSON, and the (path, size) of each of its
        files it was built with (size_of(path): the size its file records give;
        sizes: the same as (sizes by path, False), ((sizes by path, the ledger
        holding the rest), 2) or (self._built, True), for C;
        want_used False: the end's, which does not keep them: () from C)."""
        if self._key is None:  # argv secrets are stored as keyed hashes only
            self._key = context.store_key(self.store)
        argv = tuple(p.argv)
        redacted = self._argvs.get(argv)
        if redacted is None:
            redacted = self._argvs[argv] = context.redact_argv(p.argv, self._key)
        kinds = self.kinds  # classified once by _file_records (or prebuild)
        clean = self._clean  # (after _file_records took out what changed)
        whole = self._proc_record_built if sizes is not None else None

        def one(pf) -> tuple[dict, bytes, tuple]:
            return self._proc_entry(pf, git_root, tracked, size_of)

        if whole is not None:  # in one pass in C, one() making the entries it does not
            got = whole(p, kinds, clean, self._pf_built, sizes[0], sizes[1], self._entries,
                        self._argvs, want_used, one, self._partials.get(id(p)))
            if got is not None:
                return got
        files, parts, used = [], [], []
        pfs = list(p.files.values())
        fast = self._proc_files_built if sizes is not None else None
        i, n = 0, len(pfs)
        while i < n:
            if fast is not None:  # a run of entries built ahead, their paths unchanged: in C
                i = fast(pfs, i, kinds, clean, self._pf_built, sizes[0], sizes[1], files, parts,
                         used)
                if i == n:
                    break
            entry, part, u = self._proc_entry(pfs[i], git_root, tracked, size_of)
            i += 1
            files.append(entry)
            parts.append(part)
            used.append(u)
        doc = {"key": p.key, "pid": p.pid, "ppid": p.ppid, "parent": p.parent,
               "argv": list(redacted), "exe": p.exe,
               "cwd": p.cwd, "exit_code": p.exit_code,
               "signal": p.signal, "threads": p.threads, "execs": p.execs,
               "argv_incomplete": p.argv_incomplete}
        # "files" last: the document's JSON is its head with the parts spliced in
        raw = encode_doc(doc)[:-1] + b',"files":[' + b",".join(parts) + b"]}"
        doc["files"] = files
        return doc, raw, tuple(used)

    def _proc_entry(self, pf, git_root, tracked, size_of) -> tuple[dict, bytes, tuple]:
        """A process's entry for one of its files (pf), its JSON and the (path,
        size) it was made with: as built ahead when its path is clean or it is
        unchanged, as remembered by what it is made of, or made now."""
        kinds = self.kinds
        kind = kinds.get(pf.path)
        if kind is None:
            kind = kinds[pf.path] = classify(pf.path, git_root, tracked, self.rules)
        hit = self._pf_built.get(id(pf))
        size = size_of(pf.path)
        u = (pf.path, size)
        if hit is not None and pf.path in self._clean:  # its path's records too
            return hit[1], hit[2], u
        pf_sig = self._pf_sig(pf, kind, size)
        if hit is not None and hit[0] == pf_sig:
            return hit[1], hit[2], u
        sig = (pf.path, *pf_sig)
        same = self._entries.get(sig)
        if same is None:
            d = self._proc_file(pf, kind, size)
            same = (d, encode_doc(d))
            if len(self._entries) >= ENTRIES_KEPT:
                self._entries.clear()
            self._entries[sig] = same
        return same[0], same[1], u
