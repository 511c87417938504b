/* stash.h - enter/exit pairing: a syscall's arguments, kept from its enter
 * to its exit, keyed by thread id.
 *
 * Each thread keeps its entry: the exit marks it taken (type 0, which no
 * stashed type uses) instead of deleting it, and the next enter overwrites it
 * in place. A hash map's insertion and deletion each take a bucket lock and a
 * free-list operation (~275 ns for the delete alone at every open's exit,
 * docs/bench.md); a write through the pointer a lookup gave takes neither.
 * The entry goes with its thread: every task's exit deletes it
 * (stash_forget, from sched_process_exit, traced or not: a thread that leaves
 * its run's cgroup, or outlives the run, must not leave it behind), so the
 * map holds at most one entry per live thread that made a stashed call. One
 * case leaves an entry behind: a thread other than the leader that execs
 * takes the leader's id, and its old id's entry (taken) stays until the id is
 * reused (overwritten) or the probes are detached (roar/capture/probes.py
 * empties the map then).
 */
#ifndef ROAR_STASH_H
#define ROAR_STASH_H

struct pending {
    u32 type;  /* 0: none (taken, or never stashed) */
    s32 fd;
    u64 a0;
    u64 a1;
    u64 a2;
    u64 a3;
};

BPF_HASH(pending_args, u32, struct pending, 16384);

static __always_inline void stash(u32 type, s32 fd, u64 a0, u64 a1, u64 a2, u64 a3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct pending *p = pending_args.lookup(&tid);
    if (p) {
        p->fd = fd;
        p->a0 = a0;
        p->a1 = a1;
        p->a2 = a2;
        p->a3 = a3;
        p->type = type;
        return;
    }
    struct pending n = {.type = type, .fd = fd, .a0 = a0, .a1 = a1, .a2 = a2, .a3 = a3};
    pending_args.update(&tid, &n);
}

/* Take the stashed arguments of this thread's syscall; 0 if none. */
static __always_inline int unstash(struct pending *out)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct pending *p = pending_args.lookup(&tid);
    if (!p || !p->type)
        return 0;
    __builtin_memcpy(out, p, sizeof(*out));
    p->type = 0;
    return 1;
}

/* The current thread is exiting: its entry goes with it. */
static __always_inline void stash_forget(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    pending_args.delete(&tid);
}

#endif
