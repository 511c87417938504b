/* stash.h - enter/exit pairing: a syscall's arguments, kept from its enter
 * to its exit, keyed by thread id.
 */
#ifndef ROAR_STASH_H
#define ROAR_STASH_H

struct pending {
    u32 type;
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
