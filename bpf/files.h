/* files.h - file access: opens, the read/write/mmap/transfer families (enter
 * only, deduplicated per open file), close, dup, rename/link/unlink/truncate,
 * and the working directory.
 */
#ifndef ROAR_FILES_H
#define ROAR_FILES_H

#include "tagging.h"
#include "emit.h"
#include "stash.h"
#include "fdstate.h"
#include "http.h"
#include "untraced.h"

#define O_WRONLY_ 01
#define O_RDWR_ 02
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define MAP_SHARED_ 0x01
#define MAP_ANONYMOUS_ 0x20
#define PROT_READ_ 0x1
#define PROT_WRITE_ 0x2
#define F_DUPFD_ 0
#define F_SETFD_ 2
#define F_DUPFD_CLOEXEC_ 1030
#define FD_CLOEXEC_ 1
#define AT_FDCWD_ -100

/* ---- first access per open file ---------------------------------------- */

/* Record an access of kind `bit` through fd by the current task (resolved by
 * traced_task: its run cgroup and process epoch). Only the first access of
 * each kind emits an event; later ones add to the counters: one hash lookup. */
/* inexact: the call's size is not what it moved (vectored or transfer calls) */
static __always_inline void on_access(struct task_seen *me, s32 fd, u32 bit, u64 bytes,
                                      u32 inexact)
{
    if (fd < 0)
        return;
    u64 cg = me->run, epoch = me->epoch;
    u32 tgid = me->pid_tgid >> 32;
    struct fd_key k = {.tgid = tgid, .fd = fd};
    struct fd_state *s = fdstate.lookup(&k);
    u32 named;  /* FD_NAMED, told with the first event of each kind */
    if (s && s->epoch == epoch) {
        named = s->bits & FD_NAMED;
        /* no atomic add of a constant 0 (the transfer calls' enter): clang
         * turns that into an atomic OR, which 5.10's verifier refuses */
        int add = !(__builtin_constant_p(bytes) && bytes == 0);
        if (bit == FD_READ) {
            if (add)
                __sync_fetch_and_add(&s->rbytes, bytes);
            s->rcalls += 1;
        } else if (bit == FD_WRITE) {
            if (add)
                __sync_fetch_and_add(&s->wbytes, bytes);
            s->wcalls += 1;
        }
        if (inexact)
            s->inexact = 1;
        if (s->bits & bit)
            return;
        s->bits |= bit;
    } else {
        /* first use of this fd by this process: what kind of file it is */
        named = first_use(cg, fd);
        struct fd_state n = {.epoch = epoch, .bits = bit | named, .inexact = inexact};
        if (bit == FD_READ) {
            n.rbytes = bytes;
            n.rcalls = 1;
        } else if (bit == FD_WRITE) {
            n.wbytes = bytes;
            n.wcalls = 1;
        }
        fdstate.update(&k, &n);
        note_fd(tgid, fd);  /* inherited fds count for the exit flush too */
    }
    /* A read, or a read-only mapping, is reported by the close summary (or
     * the flush at exec or exit), which carries the access bits: no event of
     * its own for the fds those flushes cover (the dynamic loader maps
     * ld.so.cache and every library of every process). Writes are reported
     * at once: their time bounds input hashes. */
    if ((bit == FD_READ || bit == FD_MAP_READ) && fd < FLUSH_MAX)
        return;
    struct roar_event ev = {};
    u16 type = EV_READ;
    if (bit == FD_WRITE)
        type = EV_WRITE;
    else if (bit & (FD_MAP_READ | FD_MAP_WRITE))
        type = EV_MMAP;
    fill_header(&ev, cg, type);
    ev.fd = fd;
    ev.a0 = bit | named;
    emit_small(&ev);
}

/* The first thing of every read/write-like program: the current task if it is
 * traced (else the program returns). */
#define TRACED_OR_RETURN(me)                                  \
    struct task_seen *me = traced_task();                     \
    if (!me || !me->run)                                      \
        return 0;

/* The same for the read/write family: a thread's calls back to back skip the
 * cgroup id (tagging.h) */
#define TRACED_RW_OR_RETURN(me)                               \
    struct task_seen *me = resolve_task(1);                   \
    if (!me || !me->run)                                      \
        return 0;

#define READ_PROBE(name, count_expr, vec)                     \
    TRACEPOINT_PROBE(syscalls, sys_enter_##name)              \
    {                                                         \
        TRACED_RW_OR_RETURN(me)                               \
        on_access(me, args->fd, FD_READ, count_expr, vec);    \
        return 0;                                             \
    }

#define WRITE_PROBE(name, count_expr, vec)                    \
    TRACEPOINT_PROBE(syscalls, sys_enter_##name)              \
    {                                                         \
        TRACED_RW_OR_RETURN(me)                               \
        on_access(me, args->fd, FD_WRITE, count_expr, vec);   \
        return 0;                                             \
    }

/* Sizes of a vectored call: the first IOV_MAX_SUMMED iovecs are added up
 * (struct iovec is UAPI: base, len); calls with more are counted as inexact. */
#define IOV_MAX_SUMMED 8
#define IOV_SUM(vec, vlen) iov_sum((const u64 *)(vec), (vlen))
#define IOV_INEXACT(vlen) ((vlen) > IOV_MAX_SUMMED)

static __always_inline u64 iov_sum(const u64 *vec, u64 vlen)
{
    u64 total = 0;
    for (int i = 0; i < IOV_MAX_SUMMED; i++) {
        KEEP_LOOP_BOUND(i);
        if (i >= vlen)
            break;
        u64 len = 0;
        bpf_probe_read_user(&len, sizeof(len), &vec[2 * i + 1]);
        total += len;
    }
    return total;
}

READ_PROBE(read, args->count, 0)
READ_PROBE(pread64, args->count, 0)
READ_PROBE(readv, IOV_SUM(args->vec, args->vlen), IOV_INEXACT(args->vlen))
READ_PROBE(preadv, IOV_SUM(args->vec, args->vlen), IOV_INEXACT(args->vlen))
READ_PROBE(preadv2, IOV_SUM(args->vec, args->vlen), IOV_INEXACT(args->vlen))
WRITE_PROBE(write, args->count, 0)
WRITE_PROBE(pwrite64, args->count, 0)
WRITE_PROBE(writev, IOV_SUM(args->vec, args->vlen), IOV_INEXACT(args->vlen))
WRITE_PROBE(pwritev, IOV_SUM(args->vec, args->vlen), IOV_INEXACT(args->vlen))
WRITE_PROBE(pwritev2, IOV_SUM(args->vec, args->vlen), IOV_INEXACT(args->vlen))

/* The same ten calls through one raw tracepoint program on sys_enter, where
 * asked and the kernel allows it (ROAR_RAW_SYSCALLS=1, x86_64 with BTF:
 * -DROAR_RAW_RW=1 from roar.capture.features, and roar.capture.probes then
 * loads this instead of the ten programs above, or those when this one is
 * refused). Opt-in: with the whole kernel side attached the floor did not
 * measurably drop (docs/bench.md, "The untagged floor"). Why: a
 * syscalls:* program runs behind perf_syscall_enter (a perf buffer taken, every
 * argument copied) for each call of its syscall on the host, tagged or not;
 * a raw sys_enter program runs for every syscall but is called directly:
 * measured on 6.18 (scripts/bench_floor.py, untagged dd bs=1) ~165-210 ns per
 * call for an empty syscalls:sys_enter_read program, ~50-110 ns for an empty
 * raw one. The other syscalls keep their tracepoints.
 *
 * Same semantics as above: the tag check first; then 32-bit (compat, int 0x80)
 * calls, which number syscalls differently and which the syscalls:*
 * tracepoints skip on x86_64, are skipped too (TS_COMPAT in the task's
 * thread_info.status, at its BTF offset); then the arguments from the user
 * registers (x86_64: di, si, dx = fd, buf or iovec, count or iovcnt). */
#ifndef ROAR_RAW_RW
#define ROAR_RAW_RW 0
#endif

#if ROAR_RAW_RW
#define TS_COMPAT_ 0x0002  /* arch/x86/include/asm/thread_info.h */

static __always_inline u64 reg_read(const char *regs, u64 off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), regs + off);
    return v;
}

RAW_TRACEPOINT_PROBE(sys_enter)
{
    u64 nr = ctx->args[1];
    u32 bit = FD_WRITE;
    int vec = 1;
    switch (nr) {  /* x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl) */
    case 0:   /* read */
    case 17:  /* pread64 */
        bit = FD_READ;
        vec = 0;
        break;
    case 19:  /* readv */
    case 295: /* preadv */
    case 327: /* preadv2 */
        bit = FD_READ;
        break;
    case 1:   /* write */
    case 18:  /* pwrite64 */
        vec = 0;
        break;
    case 20:  /* writev */
    case 296: /* pwritev */
    case 328: /* pwritev2 */
        break;
    default:
        return 0;
    }
    TRACED_RW_OR_RETURN(me)
    u32 status = 0;
    bpf_probe_read_kernel(&status, sizeof(status),
                          (const char *)bpf_get_current_task() + OFF_TASK_THREAD_INFO +
                              OFF_THREAD_INFO_STATUS);
    if (status & TS_COMPAT_)
        return 0;
    const char *regs = (const char *)ctx->args[0];
    s32 fd = (s32)reg_read(regs, OFF_REGS_DI);
    u64 count = reg_read(regs, OFF_REGS_DX);  /* bytes, or iovecs */
    if (!vec)
        on_access(me, fd, bit, count, 0);
    else
        on_access(me, fd, bit, IOV_SUM(reg_read(regs, OFF_REGS_SI), count),
                  IOV_INEXACT(count));
    return 0;
}
#endif

/* Transfer calls (sendfile, splice, copy_file_range) ask for "up to len",
 * and callers pass huge lengths (coreutils' cat asks copy_file_range for
 * 2^62 bytes to copy a 3-byte file): the size asked is no count. The enter
 * marks the access (a write is reported at once: its time bounds input
 * hashes) and keeps both fds; the exit adds what the kernel says it moved. */
#define XFER_PENDING 0x10000  /* a pending.type no event type uses */

static __always_inline void add_bytes(s32 fd, u32 bit, u64 bytes)
{
    if (fd < 0)
        return;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct fd_key k = {.tgid = tgid, .fd = fd};
    struct fd_state *s = fdstate.lookup(&k);
    if (!s)
        return;
    if (bit == FD_READ)
        __sync_fetch_and_add(&s->rbytes, bytes);
    else
        __sync_fetch_and_add(&s->wbytes, bytes);
}

static __always_inline int xfer_enter(s32 fd_in, s32 fd_out)
{
    TRACED_OR_RETURN(me)
    on_access(me, fd_in, FD_READ, 0, 0);
    on_access(me, fd_out, FD_WRITE, 0, 0);
    stash(XFER_PENDING, fd_in, (u64)(s64)fd_out, 0, 0, 0);
    return 0;
}

static __always_inline int xfer_exit(long ret)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct pending p;
    if (!unstash(&p) || p.type != XFER_PENDING || ret <= 0)
        return 0;
    add_bytes(p.fd, FD_READ, (u64)ret);
    add_bytes((s32)p.a0, FD_WRITE, (u64)ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64) { return xfer_enter(args->in_fd, args->out_fd); }
TRACEPOINT_PROBE(syscalls, sys_enter_splice) { return xfer_enter(args->fd_in, args->fd_out); }
TRACEPOINT_PROBE(syscalls, sys_enter_copy_file_range)
{
    return xfer_enter(args->fd_in, args->fd_out);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64) { return xfer_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_splice) { return xfer_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_copy_file_range) { return xfer_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_mmap)
{
    /* anonymous maps first (malloc's, every process's): no task to resolve */
    if ((s64)args->fd < 0 || (args->flags & MAP_ANONYMOUS_))
        return 0;
    TRACED_OR_RETURN(me)
    u32 bit = 0;
    if (args->prot & PROT_READ_)
        bit |= FD_MAP_READ;
    if ((args->prot & PROT_WRITE_) && (args->flags & MAP_SHARED_))
        bit |= FD_MAP_WRITE;
    if (bit == FD_MAP_READ)
        on_access(me, args->fd, FD_MAP_READ, 0, 0);
    else if (bit == FD_MAP_WRITE)
        on_access(me, args->fd, FD_MAP_WRITE, 0, 0);
    else if (bit) {
        on_access(me, args->fd, FD_MAP_READ, 0, 0);
        on_access(me, args->fd, FD_MAP_WRITE, 0, 0);
    }
    return 0;
}

/* ---- opens --------------------------------------------------------------- */

/* Where the kernel lets a tracepoint program find the task's saved user
 * registers (bpf_task_pt_regs, 5.15+, x86_64 with BTF: OPEN_FROM_REGS=1 from
 * roar.capture.features), an open's exit reads its arguments there, as the
 * kernel took them (nothing changes them before the exit but the return
 * value in ax), and the open family's enters have no program at all: every
 * open on the host skips a syscalls:* hook, and a traced one the stash's
 * lookup and copy. Else (5.10) the enters stash them for the exit. */
#ifndef OPEN_FROM_REGS
#define OPEN_FROM_REGS 0
#endif

/* The flags as the kernel takes them (an int, widened with its sign) and the
 * mode (a umode_t): a register's upper bits are the caller's and count for
 * nothing (the enter tracepoints' fields carry the whole register). */
#define OPEN_FLAGS(v) ((u64)(s64)(s32)(v))

#define OPEN_SYS_OPEN 0
#define OPEN_SYS_CREAT 1
#define OPEN_SYS_OPENAT 2
#define OPEN_SYS_OPENAT2 3

#if !OPEN_FROM_REGS
TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_OPEN, AT_FDCWD_, (u64)args->filename, OPEN_FLAGS(args->flags), (u16)args->mode, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_creat)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_OPEN, AT_FDCWD_, (u64)args->pathname, O_CREAT_ | O_WRONLY_ | O_TRUNC_, (u16)args->mode,
          0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_OPEN, args->dfd, (u64)args->filename, OPEN_FLAGS(args->flags), (u16)args->mode, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    if (!tagged_cgroup())
        return 0;
    u64 how[2] = {};  /* struct open_how starts with u64 flags, u64 mode (UAPI) */
    bpf_probe_read_user(&how, sizeof(how), args->how);
    stash(EV_OPEN, args->dfd, (u64)args->filename, how[0], how[1], 0);
    return 0;
}
#endif

/* The open's arguments as a stash of them would hold: fd the directory fd,
 * a0 the path, a1 the flags, a2 the mode. 0 when there are none (stash
 * mode: no enter of this thread's call was seen). */
static __always_inline int open_args(struct pending *p, int sys)
{
#if OPEN_FROM_REGS
    /* x86_64's pt_regs at BTF offsets, loaded directly (the verifier checks
     * each against the kernel's struct pt_regs: no helper call; a copy by
     * bpf_probe_read_kernel cost ~40 ns more an open, bench_hotpath) */
    const char *regs = (const char *)bpf_task_pt_regs(bpf_get_current_task_btf());
    u64 di = *(const u64 *)(regs + OFF_REGS_DI), si = *(const u64 *)(regs + OFF_REGS_SI);
    u64 dx = *(const u64 *)(regs + OFF_REGS_DX), r10 = *(const u64 *)(regs + OFF_REGS_R10);
    p->type = EV_OPEN;
    if (sys == OPEN_SYS_OPEN) {
        p->fd = AT_FDCWD_;
        p->a0 = di;
        p->a1 = OPEN_FLAGS(si);
        p->a2 = (u16)dx;
    } else if (sys == OPEN_SYS_CREAT) {
        p->fd = AT_FDCWD_;
        p->a0 = di;
        p->a1 = O_CREAT_ | O_WRONLY_ | O_TRUNC_;
        p->a2 = (u16)si;
    } else if (sys == OPEN_SYS_OPENAT) {
        p->fd = (s32)di;
        p->a0 = si;
        p->a1 = OPEN_FLAGS(dx);
        p->a2 = (u16)r10;
    } else {  /* struct open_how starts with u64 flags, u64 mode (UAPI) */
        u64 how[2] = {};
        bpf_probe_read_user(&how, sizeof(how), (const void *)dx);
        p->fd = (s32)di;
        p->a0 = si;
        p->a1 = how[0];
        p->a2 = how[1];
    }
    return 1;
#else
    return unstash(p) && p->type == EV_OPEN;
#endif
}

/* The open's result: its event with the path, and the new open file's state
 * made here (no access yet), replacing any left by an earlier file of the
 * number. Its first read or write is then one lookup: no fd_kind (FD_NAMED
 * only matters for fds whose open userspace never saw, and this one it sees
 * now), no insertion, no note_fd. A state with no access bits flushes as the
 * plain EV_CLOSE (all zero), or, at an exit or exec, as an EV_CLOSE of no
 * access and no bytes. */
static __always_inline int open_exit(long ret, int sys)
{
#if OPEN_FROM_REGS
    if (ret < 0)  /* no stash to take: a failed open is done here */
        return 0;
#endif
    TRACED_OR_RETURN(me)
    u64 cg = me->run;
    struct pending p;
    if (!open_args(&p, sys) || ret < 0)
        return 0;
    u32 tgid = me->pid_tgid >> 32;
    struct fd_key k = {.tgid = tgid, .fd = (s32)ret};
    struct fd_state *s = fdstate.lookup(&k);
    if (s) {  /* the state a close left (or a stale one): rewritten in place, as the
               * update replaced it (a read by another thread of the number
               * before this exit loses its bits either way) */
        s->rbytes = 0;
        s->wbytes = 0;
        s->rcalls = 0;
        s->wcalls = 0;
        s->bits = 0;
        s->inexact = 0;
        s->epoch = me->epoch;
    } else {
        struct fd_state none = {.epoch = me->epoch};
        fdstate.update(&k, &none);
    }
    note_fd(tgid, (s32)ret);
    struct event_buf *b = get_buf(cg, EV_OPEN);
    if (!b)
        return 0;
    b->ev.fd = (s32)ret;
    b->ev.ret = p.fd;
    b->ev.a0 = p.a1;
    b->ev.a1 = p.a2;
    u32 n = read_path(&b->ev, b->data, (const char *)p.a0);
    b->ev.len1 = n;
    emit_buf(b, n);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_open) { return open_exit(args->ret, OPEN_SYS_OPEN); }
TRACEPOINT_PROBE(syscalls, sys_exit_creat) { return open_exit(args->ret, OPEN_SYS_CREAT); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return open_exit(args->ret, OPEN_SYS_OPENAT); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return open_exit(args->ret, OPEN_SYS_OPENAT2); }

/* ---- close ---------------------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    TRACED_OR_RETURN(me)
    u64 cg = me->run;
    s32 fd = args->fd;
    if (close_fd(cg, me->pid_tgid >> 32, fd, me->epoch))
        return 0;
    http_closed(cg, me->pid_tgid >> 32, fd);  /* a connected IP socket: its last message's body bytes */
    /* no accesses (in this process life): still tell userspace the fd number
     * is free again */
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_CLOSE);
    ev.fd = fd;
    emit_small(&ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close_range)
{
    TRACED_OR_RETURN(me)
    u64 cg = me->run;
    u32 tgid = me->pid_tgid >> 32;
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_CLOSE_RANGE);
    ev.fd = args->fd;
    ev.a0 = args->max_fd;
    ev.a1 = args->flags;
    if (!(args->flags & CLOSE_RANGE_CLOEXEC)) {
        struct proc_state *p = procs.lookup(&tgid);
        if (p) {
            u32 first = args->fd;
            u32 last = args->max_fd;
            u32 maxfd = p->maxfd;
            u64 epoch = me->epoch;
            if (last > maxfd)
                last = maxfd;
            for (u32 i = 0; i < FLUSH_MAX; i++) {
                KEEP_LOOP_BOUND(i);
                u32 fd = first + i;
                if (fd > last)
                    break;
                flush_fd(cg, tgid, fd, epoch);
            }
            if (last >= first + FLUSH_MAX)
                ev.flags |= EVF_TRUNCATED;
        }
    }
    emit_small(&ev);
    return 0;
}

/* ---- dup ------------------------------------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_dup)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_DUP, args->fildes, 0, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup2)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_DUP, args->oldfd, 0, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup3)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_DUP, args->oldfd, (args->flags & 02000000) ? 1 : 0, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_fcntl)
{
    if (!tagged_cgroup())
        return 0;
    if (args->cmd == F_DUPFD_)
        stash(EV_DUP, args->fd, 0, 0, 0, 0);
    else if (args->cmd == F_DUPFD_CLOEXEC_)
        stash(EV_DUP, args->fd, 1, 0, 0, 0);
    else if (args->cmd == F_SETFD_)
        stash(EV_FDFLAGS, args->fd, (args->arg & FD_CLOEXEC_) ? 1 : 0, 0, 0, 0);
    return 0;
}

static __always_inline int dup_exit(long ret)
{
    TRACED_OR_RETURN(me)
    u64 cg = me->run;
    struct pending p;
    if (!unstash(&p) || ret < 0)
        return 0;
    struct roar_event ev = {};
    if (p.type == EV_DUP) {
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        if ((s32)ret != p.fd) {
            /* the target fd number now names the duplicated file */
            flush_fd(cg, tgid, (s32)ret, me->epoch);
            note_fd(tgid, (s32)ret);
        }
        fill_header(&ev, cg, EV_DUP);
        ev.fd = p.fd;
        ev.ret = ret;
        ev.a0 = p.a0;
    } else if (p.type == EV_FDFLAGS) {
        fill_header(&ev, cg, EV_FDFLAGS);
        ev.fd = p.fd;
        ev.a0 = p.a0;
    } else {
        return 0;
    }
    emit_small(&ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_dup) { return dup_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return dup_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return dup_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fcntl) { return dup_exit(args->ret); }

/* ---- namespace changes: rename, link, unlink, truncate, cwd ------------------ */

TRACEPOINT_PROBE(syscalls, sys_enter_rename)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_RENAME, AT_FDCWD_, (u64)args->oldname, (u64)AT_FDCWD_, (u64)args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_renameat)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_RENAME, args->olddfd, (u64)args->oldname, (u64)args->newdfd, (u64)args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_renameat2)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_RENAME, args->olddfd, (u64)args->oldname, (u64)args->newdfd, (u64)args->newname,
          args->flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_link)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_LINK, AT_FDCWD_, (u64)args->oldname, (u64)AT_FDCWD_, (u64)args->newname, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_linkat)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_LINK, args->olddfd, (u64)args->oldname, (u64)args->newdfd, (u64)args->newname,
          args->flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlink)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_UNLINK, AT_FDCWD_, (u64)args->pathname, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_UNLINK, args->dfd, (u64)args->pathname, args->flag, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_truncate)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_TRUNCATE, AT_FDCWD_, (u64)args->path, args->length, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ftruncate)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_FTRUNCATE, args->fd, args->length, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_chdir)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_CHDIR, AT_FDCWD_, (u64)args->filename, 0, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_fchdir)
{
    if (!tagged_cgroup())
        return 0;
    stash(EV_FCHDIR, args->fd, 0, 0, 0, 0);
    return 0;
}

/* Emit a namespace event whose arguments were stashed at enter; paths are
 * read now, after the kernel itself copied them in, so they are resident. */
static __always_inline int ns_exit(long ret)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct pending p;
    if (!unstash(&p) || ret < 0)
        return 0;
    struct event_buf *b = get_buf(cg, p.type);
    if (!b)
        return 0;
    b->ev.fd = p.fd;
    u32 n1 = 0, n2 = 0;
    switch (p.type) {
    case EV_RENAME:
    case EV_LINK:
        b->ev.a0 = p.a1;  /* new dirfd */
        b->ev.a1 = p.a3;  /* flags */
        n1 = read_path(&b->ev, b->data, (const char *)p.a0);
        n2 = read_path(&b->ev, b->data + ROAR_PATH_MAX, (const char *)p.a2);
        b->ev.len1 = n1;
        b->ev.len2 = n2;
        emit_buf(b, ROAR_PATH_MAX + n2);
        return 0;
    case EV_UNLINK:
        b->ev.a0 = p.a1;
        break;
    case EV_TRUNCATE:
        b->ev.a0 = p.a1;
        break;
    case EV_CHDIR:
        break;
    case EV_FTRUNCATE:
        b->ev.a0 = p.a0;
        emit_buf(b, 0);
        return 0;
    case EV_FCHDIR:
        emit_buf(b, 0);
        return 0;
    default:
        return 0;
    }
    n1 = read_path(&b->ev, b->data, (const char *)p.a0);
    b->ev.len1 = n1;
    emit_buf(b, n1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_rename) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_renameat) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_renameat2) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_link) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_linkat) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_unlink) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_unlinkat) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_truncate) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_ftruncate) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_chdir) { return ns_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchdir) { return ns_exit(args->ret); }

#endif
