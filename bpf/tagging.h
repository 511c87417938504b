/* tagging.h - which tasks are traced, and which life of their process they
 * are in: the run cgroups userspace tags, the per-process state (procs), and
 * traced_task(), which every program runs first.
 *
 * What traced_task() resolves (the run cgroup of the task, the epoch of its
 * process) is cached per CPU for the task that asked last, so a task making
 * syscalls back to back pays for the resolution once: a tagged read or write
 * then costs one hash lookup, its per-fd counters (fdstate.h). The cache is
 * exact, not a guess: an entry is used only in the same cgroup with no
 * tag/untag since (GEN_TAGS), which is all the run cgroup depends on (cgroup
 * ids are never reused and cgroups never change parent); an untagged entry
 * (run 0) then serves any task of that cgroup, a tagged one only the same
 * thread with no traced process born or dead since (GEN_PROCS: the epoch of
 * a reused pid). Callers read pid_tgid and epoch only when run is set.
 *
 * The same thread asking again skips even the cgroup id (a helper call and
 * four dependent loads, ~50 ns of a ~200 ns tagged read) while no task was
 * created and none changed cgroup anywhere since (GEN_MOVES): a task's cgroup
 * changes only by a migration, and its pid_tgid names another task only
 * after a new task took it.
 */
#ifndef ROAR_TAGGING_H
#define ROAR_TAGGING_H

#include "roar_event.h"

BPF_HASH(tagged, u64, u64, 4096);                 /* run cgroup id -> 1 */
/* bit L set: some run cgroup sits at level L. Run cgroups live below their
 * callers' own cgroups (a Slurm step, a pod, a systemd scope), so at any level */
BPF_ARRAY(tag_levels, u64, 1);
BPF_HASH(procs, u32, struct proc_state, 65536);   /* tgid -> state (struct in roar_event.h) */

/* Generation counters, each with one writer: a cached resolution made under
 * other values is stale. Indexes are in roar_event.h (userspace bumps one). */
BPF_ARRAY(generations, u64, GEN_MOVES + 1);

struct task_seen {
    u64 pid_tgid;  /* the thread resolved */
    u64 cgroup;    /* its own cgroup then */
    u64 tags;      /* generations[GEN_TAGS] then */
    u64 births;    /* generations[GEN_PROCS] then */
    u64 moves;     /* generations[GEN_MOVES] then */
    u64 run;       /* its run cgroup, 0 if untraced */
    u64 epoch;     /* procs[tgid].epoch, 0 if none (or untraced) */
};

BPF_PERCPU_ARRAY(task_cache, struct task_seen, 1);

/* A traced process was born or died (its procs epoch came or went). Call
 * after the procs change. */
static __always_inline void bump_generation(int i)
{
    u64 *g = generations.lookup(&i);
    if (g)
        __sync_fetch_and_add(g, 1);
}

static __always_inline void procs_changed(void)
{
    bump_generation(GEN_PROCS);
}

/* Every task on the host, traced or not: a new task (it may take the
 * pid_tgid of a dead one: fork, clone, CLONE_INTO_CGROUP) and a task moved to
 * another cgroup (cgroup.procs, cgroup.threads) make a cached resolution of a
 * thread by its pid_tgid alone stale. task_newtask fires in copy_process
 * before the new task first runs. cgroup_attach_task fires once the move is
 * done, before the write that asked for it returns: a task that moves itself
 * (as roar run's child does) is seen in its new cgroup from its next call; a
 * thread moved by another task while it makes syscalls (roar attach) is seen
 * there from the tracepoint on, microseconds after the kernel moved it, as if
 * those calls had come just before the move, which the mover cannot tell
 * apart. Nothing else changes a task's cgroup v2 cgroup (enabling controllers
 * moves tasks between css_sets of the same cgroup). */
TRACEPOINT_PROBE(task, task_newtask)
{
    bump_generation(GEN_MOVES);
    return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
    bump_generation(GEN_MOVES);
    return 0;
}

#if !HAVE_ANCESTOR_CGROUP_HELPER
/* Kernels whose tracepoint programs cannot call bpf_get_current_ancestor_cgroup_id
 * (Debian 11's 5.10): the same ids, read where that helper reads them, from the
 * task's default-hierarchy cgroup and its ancestor_ids[] (5.10 to 6.0), at the
 * offsets the running kernel's BTF gives (-DOFF_*, roar.capture.btf). Not through
 * the headers: BCC's own uapi bpf.h makes struct cgroup_bpf, and so the offset of
 * ancestor_ids[], larger than 5.10's. Compiled only there
 * (-DHAVE_ANCESTOR_CGROUP_HELPER=0, from roar.capture.features). */
static __always_inline u64 read_kernel_u64(const void *base, u64 off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline const void *current_dfl_cgroup(int *depth)
{
    const void *task = (const void *)bpf_get_current_task();
    const void *cset = (const void *)read_kernel_u64(task, OFF_TASK_CGROUPS);
    const void *cgrp = cset ? (const void *)read_kernel_u64(cset, OFF_CSS_SET_DFL_CGRP) : 0;
    *depth = -1;
    if (cgrp)
        bpf_probe_read_kernel(depth, sizeof(*depth), (const char *)cgrp + OFF_CGROUP_LEVEL);
    return cgrp;
}
#endif

/* The run cgroup this task belongs to (itself or an ancestor), or 0: one
 * ancestor lookup per level in use. The deepest tagged ancestor wins: a run
 * started inside another run is recorded by the inner one. */
static __always_inline u64 resolve_run(u64 m)
{
#if !HAVE_ANCESTOR_CGROUP_HELPER
    int depth;
    const void *cgrp = current_dfl_cgroup(&depth);
#endif
#pragma unroll
    for (int level = ROAR_TAG_LEVELS - 1; level > 0; level--) {
        if (!(m & (1ULL << level)))
            continue;
#if HAVE_ANCESTOR_CGROUP_HELPER
        u64 cg = bpf_get_current_ancestor_cgroup_id(level);
#else
        u64 cg = level <= depth ? read_kernel_u64(cgrp, OFF_CGROUP_ANCESTOR_IDS + 8 * level) : 0;
#endif
        if (cg && tagged.lookup(&cg))
            return cg;
    }
    return 0;
}

/* The current task's run cgroup and process epoch, or 0 when no run is
 * traced anywhere (one array lookup). Must be the first thing every program
 * does; untagged tasks get run == 0. same_thread: take the shortcut of a
 * thread asking again (GEN_MOVES) - only the read/write family, the calls
 * made back to back: one more path through this function made the verifier
 * walk sched_process_exit's flush loop past its limit. */
static __always_inline struct task_seen *resolve_task(int same_thread)
{
    int zero = 0, t = GEN_TAGS, b = GEN_PROCS;
    u64 *mask = tag_levels.lookup(&zero);
    if (!mask || !*mask)
        return 0;
    u64 *tags = generations.lookup(&t);
    u64 *births = generations.lookup(&b);
    struct task_seen *c = task_cache.lookup(&zero);
    if (!tags || !births || !c)
        return 0;
    /* the generations are read before what they guard */
    u64 gt = *tags, gb = *births, gm = 0;
    u64 id = bpf_get_current_pid_tgid();
    if (same_thread) {
        /* the same thread, in the same cgroup (GEN_MOVES): no cgroup id to
         * read. c->moves is the GEN_MOVES read before the entry was last
         * resolved by a same_thread caller; the others leave it as it is,
         * which only ever makes it older: still safe. */
        int mv = GEN_MOVES;
        u64 *moves = generations.lookup(&mv);
        if (!moves)
            return 0;
        gm = *moves;
        if (c->pid_tgid == id && c->moves == gm && c->tags == gt &&
            (!c->run || c->births == gb))
            return c;
    }
    u64 cgid = bpf_get_current_cgroup_id();
    u64 run;
    if (c->cgroup == cgid && c->tags == gt) {
        /* The run depends on the cgroup and the tags only: an untagged
         * entry serves every task of its cgroup (a shell and its children
         * taking turns on a CPU, whatever traced process was born or died
         * meanwhile); a tagged one its own thread while no traced process
         * was born or died, and else gives its run to the next task of the
         * cgroup, which only has its epoch to look up. */
        if (!c->run || (c->pid_tgid == id && c->births == gb)) {
            if (same_thread) {  /* its next call takes the path above */
                c->pid_tgid = id;
                c->moves = gm;
            }
            return c;
        }
        run = c->run;
    } else {
        run = resolve_run(*mask);
    }
    u64 epoch = 0;
    if (run) {
        u32 tgid = id >> 32;
        struct proc_state *p = procs.lookup(&tgid);
        if (p)
            epoch = p->epoch;
    }
    c->pid_tgid = id;
    c->cgroup = cgid;
    c->tags = gt;
    c->births = gb;
    if (same_thread)
        c->moves = gm;
    c->run = run;
    c->epoch = epoch;
    return c;
}

static __always_inline struct task_seen *traced_task(void)
{
    return resolve_task(0);
}

/* The run cgroup this task belongs to, or 0 (untagged tasks return here). */
static __always_inline u64 tagged_cgroup(void)
{
    struct task_seen *c = traced_task();
    return c ? c->run : 0;
}

#endif
