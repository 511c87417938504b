/* net.h - network endpoints (connect). io_uring is flagged in untraced.h. */
#ifndef ROAR_NET_H
#define ROAR_NET_H

#include "tagging.h"
#include "emit.h"
#include "http.h"

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct event_buf *b = get_buf(cg, EV_CONNECT);
    if (!b)
        return 0;
    b->ev.fd = args->fd;
    u64 n = (u32)args->addrlen;
    if (n > ROAR_SOCKADDR_MAX) {
        n = ROAR_SOCKADDR_MAX;
        b->ev.flags |= EVF_TRUNCATED;
    }
    if (bpf_probe_read_user(b->data, n & (ROAR_SOCKADDR_MAX - 1 | ROAR_SOCKADDR_MAX), args->uservaddr) < 0) {
        b->ev.flags |= EVF_FAULT;
        n = 0;
    }
    b->ev.len1 = n;
    u16 family = n >= 2 ? *(u16 *)b->data : 0;
    http_connected(bpf_get_current_pid_tgid() >> 32, args->fd, family);
    emit_buf(b, n);
    return 0;
}

#endif
