/* maps.h - shared state of the kernel side: which cgroups are traced, the
 * per-process and per-open-file dedup state, the ring buffer, loss counters,
 * and the helpers every program uses to filter and emit.
 *
 * Built by BCC with -DRINGBUF_PAGES=<pages>.
 */
#ifndef ROAR_MAPS_H
#define ROAR_MAPS_H

#include "roar_event.h"

/* fd state bits */
#define FD_READ 1
#define FD_WRITE 2
#define FD_MAP_READ 4
#define FD_MAP_WRITE 8

struct proc_state {
    u64 epoch;      /* changes whenever a tgid is (re)born: stale fd entries never match */
    u32 maxfd;      /* highest fd seen from open/dup: bounds the flush loop at exit */
    u32 exit_code;  /* from exit/exit_group */
    u32 signal;     /* fatal signal delivered with the default action */
    u32 state;      /* EVF_EXITED | EVF_SIGNALED */
};

struct fd_key {
    u32 tgid;
    s32 fd;
};

struct fd_state {
    u64 epoch;
    u64 rbytes;
    u64 wbytes;
    u32 rcalls;
    u32 wcalls;
    u32 bits;
    u32 inexact;
};

/* syscall arguments kept from enter to exit, keyed by thread id */
struct pending {
    u32 type;
    s32 fd;
    u64 a0;
    u64 a1;
    u64 a2;
    u64 a3;
};

/* one event with room for two paths, or a filename and an argv blob */
struct event_buf {
    struct roar_event ev;
    char data[ROAR_PATH_MAX + 2 * ROAR_ARGV_MAX];
};

BPF_HASH(tagged, u64, u64, 4096);                 /* run cgroup id -> 1 */
/* bit L set: some run cgroup sits at level L. Run cgroups live below their
 * callers' own cgroups (a Slurm step, a pod, a systemd scope), so at any level */
BPF_ARRAY(tag_levels, u64, 1);
BPF_HASH(lost, u64, u64, 4096);                   /* run cgroup id -> events lost */
BPF_HASH(procs, u32, struct proc_state, 65536);   /* tgid -> state */
BPF_TABLE("lru_hash", struct fd_key, struct fd_state, fdstate, 262144);
BPF_HASH(pending_args, u32, struct pending, 16384);
BPF_HASH(clone_flags, u32, u64, 16384);           /* tid -> flags of the clone in progress */
BPF_PERCPU_ARRAY(scratch, struct event_buf, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

#define HDR_SIZE (sizeof(struct roar_event))
#define FLUSH_MAX 256  /* fds flushed by one loop at exit or close_range */

/* The run cgroup this task belongs to (itself or an ancestor), or 0. Must be
 * the first thing every program does: untagged tasks return here, after one
 * array lookup and one ancestor lookup per level in use. The deepest tagged
 * ancestor wins: a run started inside another run is recorded by the inner one. */
static __always_inline u64 tagged_cgroup(void)
{
    int zero = 0;
    u64 *mask = tag_levels.lookup(&zero);
    if (!mask || !*mask)
        return 0;
    u64 m = *mask;
#pragma unroll
    for (int level = ROAR_TAG_LEVELS - 1; level > 0; level--) {
        if (!(m & (1ULL << level)))
            continue;
        u64 cg = bpf_get_current_ancestor_cgroup_id(level);
        if (cg && tagged.lookup(&cg))
            return cg;
    }
    return 0;
}

static __always_inline void count_lost(u64 cg)
{
    u64 one = 1;
    u64 *n = lost.lookup(&cg);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        lost.update(&cg, &one);
}

static __always_inline void fill_header(struct roar_event *ev, u64 cg, u16 type)
{
    u64 id = bpf_get_current_pid_tgid();
    ev->ts = bpf_ktime_get_ns();
    ev->cgroup = cg;
    ev->tgid = id >> 32;
    ev->tid = (u32)id;
    ev->type = type;
    ev->flags = 0;
    ev->fd = -1;
    ev->ret = 0;
    ev->a0 = 0;
    ev->a1 = 0;
    ev->a2 = 0;
    ev->len1 = 0;
    ev->len2 = 0;
}

/* Wake the consumer only once a batch is waiting: one wakeup per record
 * would cost the consumer a context switch per record. It polls with a short
 * timeout for whatever stays below the threshold. */
#define WAKE_EVERY 512  /* records; must be a power of two */
#define RB_NO_WAKEUP 1
#define RB_FORCE_WAKEUP 2

BPF_ARRAY(emitted, u64, 1);

static __always_inline u64 wake_flag(void)
{
    u32 zero = 0;
    u64 *n = emitted.lookup(&zero);
    if (!n)
        return 0;
    u64 seq = __sync_fetch_and_add(n, 1);
    return (seq & (WAKE_EVERY - 1)) == 0 ? RB_FORCE_WAKEUP : RB_NO_WAKEUP;
}

/* Emit a header-only event built on the stack. */
static __always_inline void emit_small_flags(struct roar_event *ev, u64 flags)
{
    if (events.ringbuf_output(ev, sizeof(*ev), flags) < 0)
        count_lost(ev->cgroup);
}

static __always_inline void emit_small(struct roar_event *ev)
{
    emit_small_flags(ev, wake_flag());
}

static __always_inline struct event_buf *get_buf(u64 cg, u16 type)
{
    u32 zero = 0;
    struct event_buf *b = scratch.lookup(&zero);
    if (!b) {
        count_lost(cg);
        return 0;
    }
    fill_header(&b->ev, cg, type);
    return b;
}

/* Read a NUL-terminated user string into dst (ROAR_PATH_MAX bytes). Returns
 * the length stored (with the NUL), and sets truncation/fault flags. */
static __always_inline u32 read_path(struct roar_event *ev, char *dst, const char *src)
{
    long n = bpf_probe_read_user_str(dst, ROAR_PATH_MAX, src);
    if (n < 0) {
        ev->flags |= EVF_FAULT;
        return 0;
    }
    if (n >= ROAR_PATH_MAX)
        ev->flags |= EVF_TRUNCATED;
    return (u32)n;
}

/* Emit a buffer event of hdr + n bytes of data. */
static __always_inline void emit_buf(struct event_buf *b, u32 n)
{
    u64 size = HDR_SIZE + (u64)n;
    /* keep the bound check: the compiler can prove it, the verifier cannot */
    asm volatile("" : "+r"(size));
    if (size > sizeof(*b))
        size = sizeof(*b);
    if (events.ringbuf_output(b, size, wake_flag()) < 0)
        count_lost(b->ev.cgroup);
}

static __always_inline u64 proc_epoch(u32 tgid)
{
    struct proc_state *p = procs.lookup(&tgid);
    return p ? p->epoch : 0;
}

static __always_inline void note_fd(u32 tgid, s32 fd)
{
    struct proc_state *p = procs.lookup(&tgid);
    if (p && fd > 0 && (u32)fd > p->maxfd)
        p->maxfd = fd;
}

/* Drop dedup state for an fd number that now names a new open file. */
static __always_inline void forget_fd(u32 tgid, s32 fd)
{
    struct fd_key k = {.tgid = tgid, .fd = fd};
    fdstate.delete(&k);
}

/* Emit the close summary of (tgid, fd) if it has dedup state; forget it. */
static __always_inline void flush_fd(u64 cg, u32 tgid, s32 fd, u64 epoch)
{
    struct fd_key k = {.tgid = tgid, .fd = fd};
    struct fd_state *s = fdstate.lookup(&k);
    if (!s)
        return;
    if (s->epoch == epoch) {
        struct roar_event ev = {};
        fill_header(&ev, cg, EV_CLOSE);
        ev.fd = fd;
        ev.a0 = s->rbytes;
        ev.a1 = s->wbytes;
        ev.a2 = ((u64)s->rcalls << 32) | s->wcalls;
        ev.ret = s->bits;
        if (s->inexact)
            ev.flags |= EVF_BYTES_UNKNOWN;
        /* flushes come in loops (exit, close_range): the caller's own event wakes */
        emit_small_flags(&ev, RB_NO_WAKEUP);
    }
    fdstate.delete(&k);
}

/* ---- enter/exit pairing: a syscall's arguments, kept until its exit ------ */

static __always_inline void stash(u32 type, s32 fd, u64 a0, u64 a1, u64 a2, u64 a3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct pending p = {.type = type, .fd = fd, .a0 = a0, .a1 = a1, .a2 = a2, .a3 = a3};
    pending_args.update(&tid, &p);
}

/* Take the stashed arguments of this thread's syscall; 0 if none. */
static __always_inline int unstash(struct pending *out)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct pending *p = pending_args.lookup(&tid);
    if (!p)
        return 0;
    __builtin_memcpy(out, p, sizeof(*out));
    pending_args.delete(&tid);
    return 1;
}

#endif
