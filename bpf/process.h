/* process.h - process lifecycle: clone/fork (thread vs process), exec with
 * argv, and exit with its status, with the flush of per-fd counters when a
 * thread group dies.
 */
#ifndef ROAR_PROCESS_H
#define ROAR_PROCESS_H

#include "tagging.h"
#include "emit.h"
#include "stash.h"
#include "fdstate.h"
#include "untraced.h"

#define CLONE_THREAD_ 0x00010000
#define SIGKILL_ 9
#define SIGSTOP_ 19
#define ARGV_MAX_ARGS 256

BPF_HASH(clone_flags, u32, u64, 16384);           /* tid -> flags of the clone in progress */

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    if (!tagged_cgroup())
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    if (!tagged_cgroup())
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;  /* struct clone_args starts with u64 flags (UAPI) */
    bpf_probe_read_user(&flags, sizeof(flags), args->uargs);
    clone_flags.update(&tid, &flags);
    return 0;
}

/* Runs in the parent, after the child exists (fork, vfork, clone, clone3). */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;
    u64 *f = clone_flags.lookup(&tid);
    if (f) {
        flags = *f;
        clone_flags.delete(&tid);
    }
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_FORK);
    ev.ret = args->child_pid;
    ev.a0 = (flags & CLONE_THREAD_) ? 1 : 0;
    ev.a1 = flags;
    if (!(flags & CLONE_THREAD_)) {
        u32 child = args->child_pid;
        struct proc_state ps = {.epoch = ev.ts};
        procs.update(&child, &ps);
        procs_changed();  /* a cached epoch of an earlier life of this pid is stale */
    }
    emit_small(&ev);
    return 0;
}

static __always_inline int exec_enter(s32 dirfd, const char *filename, const char *const *argv)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct event_buf *b = get_buf(cg, EV_EXEC);
    if (!b)
        return 0;
    b->ev.fd = dirfd;
    u32 n = read_path(&b->ev, b->data, filename);
    /* The argv blob follows the filename (EVF_ARGV_PACKED), not at data +
     * ROAR_PATH_MAX: a record of ~100 bytes instead of ~4.2 KiB for every
     * exec, through the ring buffer, roard's spool and the client's socket. A
     * filename cut at ROAR_PATH_MAX keeps its ROAR_PATH_MAX - 1 bytes: its NUL
     * makes way for the blob (decoders stop at len1 as at a NUL). */
    if (n > ROAR_PATH_MAX - 1)
        n = ROAR_PATH_MAX - 1;
    n &= ROAR_PATH_MAX - 1;
    b->ev.len1 = n;
    b->ev.flags |= EVF_ARGV_PACKED;
    char *blob = b->data + n;
    u32 off = 0;
    int i;
    for (i = 0; i < ARGV_MAX_ARGS; i++) {
        const char *arg = 0;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) < 0) {
            b->ev.flags |= EVF_FAULT;
            break;
        }
        if (!arg)
            break;
        if (off >= ROAR_ARGV_MAX) {
            b->ev.flags |= EVF_TRUNCATED;
            break;
        }
        long len = read_user_str(blob + (off & (ROAR_ARGV_MAX - 1)), ROAR_ARGV_MAX, arg);
        if (len < 0) {
            b->ev.flags |= EVF_FAULT;
            break;
        }
        off += len;
    }
    if (i == ARGV_MAX_ARGS)
        b->ev.flags |= EVF_TRUNCATED;
    if (off > ROAR_ARGV_MAX) {
        off = ROAR_ARGV_MAX;
        b->ev.flags |= EVF_TRUNCATED;
    }
    b->ev.len2 = off;
    emit_buf(b, n + off);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return exec_enter(-100, args->filename, args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return exec_enter(args->fd, args->filename, args->argv);
}

/* Flush the summaries of fds 0..maxfd of this process life (at exit, or
 * at exec with EVF_EXEC_FLUSH); EVF_TRUNCATED when fds were left out. */
static __always_inline u16 flush_fds(u64 cg, u32 tgid, u32 maxfd, u64 epoch, u16 flags)
{
    for (u32 fd = 0; fd < FLUSH_MAX; fd++) {
        KEEP_LOOP_BOUND(fd);
        if (fd > maxfd)
            break;
        flush_fd_flags(cg, tgid, fd, epoch, flags);
    }
    return maxfd >= FLUSH_MAX ? EVF_TRUNCATED : 0;
}

/* A successful exec closed the close-on-exec fds without a close(2): what
 * they read or mapped (reported only by their summaries) is flushed before
 * the exec's result, while userspace still knows the fds. The fds that stay
 * open start new summaries at their next use. */
/* Which of fds 0..EXEC_FDS_KNOWN-1 are open in the current task (its fd
 * table's open_fds bitmap, at the running kernel's BTF offsets): the words
 * the table has, the rest 0. 0 when it cannot be read (or without BTF). */
static __always_inline int open_fds_now(u64 *words)
{
#if ROAR_FD_KIND
    const char *t = (const char *)bpf_get_current_task();
    const char *files = NULL, *fdt = NULL, *bits = NULL;
    u32 max = 0;
    KREAD(files, t, OFF_TASK_FILES);
    if (!files)
        return 0;
    KREAD(fdt, files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    KREAD(max, fdt, OFF_FDT_MAX_FDS);
    KREAD(bits, fdt, OFF_FDT_OPEN_FDS);
    if (!bits || max < 64)
        return 0;
    /* max_fds is a multiple of 64 (BITS_PER_LONG): the bitmap has max / 64 words */
    if (bpf_probe_read_kernel(&words[0], 8, bits) < 0)
        return 0;
    if (max >= 128 && bpf_probe_read_kernel(&words[1], 8, bits + 8) < 0)
        return 0;
    if (max >= 192 && bpf_probe_read_kernel(&words[2], 8, bits + 16) < 0)
        return 0;
    return 1;
#else
    return 0;
#endif
}

static __always_inline int exec_exit(long ret)
{
    struct task_seen *me = traced_task();
    if (!me || !me->run)
        return 0;
    u64 cg = me->run;
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_EXEC_RET);
    ev.ret = ret;
    if (ret == 0) {
        u32 tgid = me->pid_tgid >> 32;
        struct proc_state *p = procs.lookup(&tgid);
        if (p)
            ev.flags = flush_fds(cg, tgid, p->maxfd, me->epoch, EVF_EXEC_FLUSH);
        /* the fds the exec left open, as the kernel has them: userspace's
         * close-on-exec flags miss ioctl(FIOCLEX/FIONCLEX), which
         * os.set_inheritable and subprocess's pass_fds use */
        u64 w[3] = {};
        if (open_fds_now(w)) {
            ev.a0 = w[0];
            ev.a1 = w[1];
            ev.a2 = w[2];
            ev.flags |= EVF_FDS_OPEN;
        }
    }
    emit_small(&ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve) { return exec_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_execveat) { return exec_exit(args->ret); }

#if !EXIT_FROM_TASK
/* Without the kernel's own exit status (no BTF offsets, EXIT_FROM_TASK=0): the
 * code exit_group/exit said, a fatal signal delivered with the default action,
 * and the status the parent collected (EV_REAP). */
static __always_inline int note_exit_code(int code)
{
    if (!tagged_cgroup())
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct proc_state *p = procs.lookup(&tgid);
    if (p) {
        p->exit_code = code & 0xff;
        p->state |= EVF_EXITED;
    } else {
        struct proc_state ps = {.exit_code = code & 0xff, .state = EVF_EXITED};
        procs.update(&tgid, &ps);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) { return note_exit_code(args->error_code); }
/* exit(2) ends one thread; for the last thread its code is the process's */
TRACEPOINT_PROBE(syscalls, sys_enter_exit) { return note_exit_code(args->error_code); }

/* A parent collecting a child's status knows exactly how it ended (a fatal
 * signal reaches the dying task as SIGKILL; the status keeps the original). */
#define WAIT_STATUS 1
#define WAIT_SIGINFO 2

TRACEPOINT_PROBE(syscalls, sys_enter_wait4)
{
    if (!tagged_cgroup() || !args->stat_addr)
        return 0;
    stash(EV_REAP, -1, (u64)args->stat_addr, WAIT_STATUS, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_waitid)
{
    if (!tagged_cgroup() || !args->infop)
        return 0;
    stash(EV_REAP, -1, (u64)args->infop, WAIT_SIGINFO, 0, 0);
    return 0;
}

#define CLD_EXITED_ 1

static __always_inline int reap_exit(long ret)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct pending p;
    if (!unstash(&p) || p.type != EV_REAP || ret < 0)
        return 0;
    u64 addr = p.a0, how = p.a1;
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_REAP);
    if (how == WAIT_STATUS) {
        if (ret == 0)
            return 0;  /* WNOHANG, nothing reaped */
        int status = 0;
        if (bpf_probe_read_user(&status, sizeof(status), (void *)addr) < 0)
            return 0;
        ev.ret = ret;
        ev.a0 = (u32)status;
    } else {
        /* siginfo_t (UAPI): si_code at 8; for SIGCHLD si_pid at 16, si_status at 24 */
        int code = 0, pid = 0, st = 0;
        bpf_probe_read_user(&code, sizeof(code), (char *)addr + 8);
        bpf_probe_read_user(&pid, sizeof(pid), (char *)addr + 16);
        bpf_probe_read_user(&st, sizeof(st), (char *)addr + 24);
        if (pid <= 0)
            return 0;
        ev.ret = pid;
        /* rebuild a waitpid status word: exited -> code << 8, else the signal */
        ev.a0 = code == CLD_EXITED_ ? ((u32)(st & 0xff) << 8) : (u32)(st & 0x7f);
    }
    emit_small(&ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_wait4) { return reap_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_waitid) { return reap_exit(args->ret); }

/* A fatal signal taking its default action ends the whole group. */
TRACEPOINT_PROBE(signal, signal_deliver)
{
    if (!tagged_cgroup())
        return 0;
    if (args->sa_handler != 0)  /* SIG_DFL only */
        return 0;
    int sig = args->sig;
    /* default action "ignore" or "stop": not a death */
    if (sig == 17 || sig == 18 || sig == 23 || sig == 28 || sig == SIGSTOP_ || sig == 20 ||
        sig == 21 || sig == 22)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct proc_state *p = procs.lookup(&tgid);
    if (p) {
        p->signal = sig;
        p->state |= EVF_SIGNALED;
    } else {
        struct proc_state ps = {.signal = sig, .state = EVF_SIGNALED};
        procs.update(&tgid, &ps);
    }
    return 0;
}
#else
/* The wait status the parent will collect, read where wait4 reads it
 * (wait_task_zombie): the group's exit code when the group ended as a whole
 * (exit_group, a fatal signal, a core dump: SIGNAL_GROUP_EXIT), else the
 * leader's own (exit(2) of each thread: a leader that ended first keeps its
 * code). Read by the group's last thread at its exit: with every thread
 * exiting, no signal can start a group exit any more, so neither changes
 * before the reap. Exact where the reaps were not: an orphan reaped by init
 * or a subreaper outside the run, a parent that never waits, a wait4 result
 * in a pid namespace. Offsets from the running kernel's BTF (roar.capture.btf). */
#define SIGNAL_GROUP_EXIT_ 4
static __always_inline u32 exit_status(void)
{
    const char *t = (const char *)bpf_get_current_task();
    const char *sig = NULL, *leader = NULL;
    u32 flags = 0;
    int code = 0;
    KREAD(sig, t, OFF_TASK_SIGNAL);
    if (sig)
        KREAD(flags, sig, OFF_SIGNAL_FLAGS);
    if (flags & SIGNAL_GROUP_EXIT_) {
        KREAD(code, sig, OFF_SIGNAL_GROUP_EXIT_CODE);
        return code;
    }
    KREAD(leader, t, OFF_TASK_GROUP_LEADER);
    KREAD(code, leader ? leader : t, OFF_TASK_EXIT_CODE);
    return code;
}
#endif

#if !EXIT_HAS_GROUP_DEAD
#include <linux/sched/signal.h>
#endif

/* Is the exiting thread the last of its group? Recent kernels say so in the
 * tracepoint (group_dead: 6.18 here); stock distribution kernels (5.10, 6.1,
 * 6.12) do not, and there the answer is signal->live, which do_exit()
 * decrements before firing the tracepoint. That read needs struct layouts, so it is compiled only
 * there (-DEXIT_HAS_GROUP_DEAD=0, probed from the tracepoint's format file),
 * where BCC compiles against the running kernel's own headers. */
#if !EXIT_HAS_GROUP_DEAD
static __always_inline int last_thread_exiting(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct signal_struct *sig = NULL;
    int live = 1;
    bpf_probe_read_kernel(&sig, sizeof(sig), &task->signal);
    if (sig)
        bpf_probe_read_kernel(&live, sizeof(live), &sig->live.counter);
    return live == 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    stash_forget();  /* every task's, traced or not (stash.h) */
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
#if EXIT_HAS_GROUP_DEAD
    if (!args->group_dead)
        return 0;
#else
    if (!last_thread_exiting())
        return 0;
#endif
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_EXIT);
#if EXIT_FROM_TASK
    u32 status = exit_status();
    if (status & 0x7f) {
        ev.a1 = status & 0x7f;  /* WTERMSIG */
        ev.flags = EVF_SIGNALED;
    } else {
        ev.a0 = (status >> 8) & 0xff;  /* WEXITSTATUS */
        ev.flags = EVF_EXITED;
    }
#endif
    struct proc_state *p = procs.lookup(&tgid);
    if (p) {
        u32 maxfd = p->maxfd;
        u64 epoch = p->epoch;
#if !EXIT_FROM_TASK
        ev.a0 = p->exit_code;
        ev.a1 = p->signal;
        ev.flags = p->state;
#endif
        ev.flags |= flush_fds(cg, tgid, maxfd, epoch, 0);
        procs.delete(&tgid);
        procs_changed();
    }
    emit_small(&ev);
    return 0;
}

#endif
