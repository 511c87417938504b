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

/* The epoch of a state whose fd was closed: no process life has it (an epoch
 * is a birth's ktime, or 0 for a process with no procs entry), so every check
 * of it reads "none of this process life", as a missing state does. A close
 * of an fd below FLUSH_MAX leaves its state so marked instead of deleting it,
 * and the next open of the number rewrites it in place: an LRU map's delete
 * and update each take a bucket lock and move an element between the LRU
 * lists, where a write through the pointer a lookup gave takes neither. The
 * exit flush (fds 0..maxfd, below FLUSH_MAX) deletes what is left; a closed
 * fd at FLUSH_MAX or above, which no flush reaches, is deleted at its close. */
#define EPOCH_CLOSED ((u64)-1)

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

/* The close summary of fd from its state s (with the event flags `flags`). */
static __always_inline void fill_summary(struct roar_event *ev, u64 cg, s32 fd,
                                         struct fd_state *s, u16 flags)
{
    fill_header(ev, cg, EV_CLOSE);
    ev->fd = fd;
    ev->a0 = s->rbytes;
    ev->a1 = s->wbytes;
    ev->a2 = ((u64)s->rcalls << 32) | s->wcalls;
    ev->ret = s->bits;
    ev->flags = flags;
    if (s->inexact)
        ev->flags |= EVF_BYTES_UNKNOWN;
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
        fill_summary(&ev, cg, fd, s, flags);
        /* flushes come in loops (exit, close_range): the caller's own event wakes */
        emit_small_flags(&ev, RB_NO_WAKEUP);
    }
    fdstate.delete(&k);
    return mine;
}

/* close(2) of (tgid, fd): its summary, as flush_fd_flags; the state is then
 * marked closed (EPOCH_CLOSED) for the next open of the number to reuse. */
static __always_inline int close_fd(u64 cg, u32 tgid, s32 fd, u64 epoch)
{
    if (fd < 0 || fd >= FLUSH_MAX)
        return flush_fd_flags(cg, tgid, fd, epoch, 0);
    struct fd_key k = {.tgid = tgid, .fd = fd};
    struct fd_state *s = fdstate.lookup(&k);
    if (!s || s->epoch != epoch)
        return 0;
    struct roar_event ev = {};
    fill_summary(&ev, cg, fd, s, 0);
    s->epoch = EPOCH_CLOSED;
    emit_small(&ev);
    return 1;
}

static __always_inline int flush_fd(u64 cg, u32 tgid, s32 fd, u64 epoch)
{
    return flush_fd_flags(cg, tgid, fd, epoch, 0);
}

#endif
