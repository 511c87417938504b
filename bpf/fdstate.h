/* fdstate.h - per-open-file state: the access bits and byte counters of each
 * (tgid, fd), stamped with the epoch of the process life that made them
 * (tagging.h), reported when the fd is closed or its process exits.
 */
#ifndef ROAR_FDSTATE_H
#define ROAR_FDSTATE_H

#include "roar_event.h"
#include "emit.h"
#include "tagging.h"

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

BPF_TABLE("lru_hash", struct fd_key, struct fd_state, fdstate, 262144);

#define FLUSH_MAX 256  /* fds flushed by one loop at exit or close_range */
/* At the top of every bounded loop with a data-dependent break (the FLUSH_MAX
 * loops, iov_sum): keeps `i < BOUND` a compare of its own. Otherwise clang folds
 * both exits into one compare against min(n, BOUND), which 6.1's verifier cannot
 * bound: it walks on past BOUND until "the sequence of 8193 jumps is too complex"
 * (EFAULT) or a million instructions (E2BIG). 6.12 and later see through it. */
#define KEEP_LOOP_BOUND(i) asm volatile("" : "+r"(i))

static __always_inline void note_fd(u32 tgid, s32 fd)
{
    struct proc_state *p = procs.lookup(&tgid);
    if (p && fd > 0 && (u32)fd > p->maxfd)
        p->maxfd = fd;
}

/* Emit the close summary of (tgid, fd) if it has dedup state of this
 * process life (with the event flags `flags`); forget it. Returns 0 if it
 * had none. */
static __always_inline int flush_fd_flags(u64 cg, u32 tgid, s32 fd, u64 epoch, u16 flags)
{
    struct fd_key k = {.tgid = tgid, .fd = fd};
    struct fd_state *s = fdstate.lookup(&k);
    if (!s)
        return 0;
    int mine = s->epoch == epoch;
    if (mine) {
        struct roar_event ev = {};
        fill_header(&ev, cg, EV_CLOSE);
        ev.fd = fd;
        ev.a0 = s->rbytes;
        ev.a1 = s->wbytes;
        ev.a2 = ((u64)s->rcalls << 32) | s->wcalls;
        ev.ret = s->bits;
        ev.flags = flags;
        if (s->inexact)
            ev.flags |= EVF_BYTES_UNKNOWN;
        /* flushes come in loops (exit, close_range): the caller's own event wakes */
        emit_small_flags(&ev, RB_NO_WAKEUP);
    }
    fdstate.delete(&k);
    return mine;
}

static __always_inline int flush_fd(u64 cg, u32 tgid, s32 fd, u64 epoch)
{
    return flush_fd_flags(cg, tgid, fd, epoch, 0);
}

#endif
