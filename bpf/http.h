/* http.h - HTTP/1.x in plaintext over TCP: the same message heads and body
 * counts as tls.h, taken from send/recv on the sockets a traced process
 * connected to an IPv4/IPv6 address (http:// object stores such as an
 * in-cluster MinIO, plain-HTTP mirrors).
 *
 * Only sendto and recvfrom are read: what send()/recv() (Python's socket
 * module, urllib3, curl) become. A client moving HTTP with write()/read() or
 * sendmsg()/recvmsg() on its socket is not parsed: its peer stays
 * "uninspected" (record/remote.py), which makes the run incomplete, never
 * silently complete.
 *
 * A socket is keyed like an SSL* in tls.h, as HTTP_SOCKET_KEY | fd, so one
 * pairing of requests and responses serves both (record/remote.py). */
#ifndef ROAR_HTTP_H
#define ROAR_HTTP_H

#include "tagging.h"
#include "emit.h"
#include "tls.h"

#define ROAR_AF_INET 2
#define ROAR_AF_INET6 10
#define ROAR_MSG_PEEK 2

struct sock_key {
    u32 tgid;
    s32 fd;
};

struct recv_args {
    u64 fd;
    u64 buf;
};

/* (tgid, fd) -> 1: fds the process connected to an IP address (last connect wins) */
BPF_TABLE("lru_hash", struct sock_key, u8, inet_socks, 16384);
BPF_HASH(sock_recvs, u32, struct recv_args, 16384);  /* tid -> recvfrom args until exit */

/* connect(fd, addr) by a traced process: remember IP sockets, forget others
 * (an fd number reused for a Unix socket must not be parsed). */
static __always_inline void http_connected(u32 tgid, s32 fd, u16 family)
{
    struct sock_key k = {.tgid = tgid, .fd = fd};
    if (family == ROAR_AF_INET || family == ROAR_AF_INET6) {
        u8 one = 1;
        inet_socks.update(&k, &one);
    } else {
        inet_socks.delete(&k);
    }
}

/* close(fd) of an fd with no file state: if it was a connected IP socket, the
 * body bytes of its last message travel on an EV_TLS_FREE, as on SSL_free. */
static __always_inline void http_closed(u64 cg, u32 tgid, s32 fd)
{
    struct sock_key k = {.tgid = tgid, .fd = fd};
    if (!inet_socks.lookup(&k))
        return;
    inet_socks.delete(&k);
    struct tls_key t = {.tgid = tgid, .ssl = HTTP_SOCKET_KEY | (u32)fd};
    tls_flush(cg, &t);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = args->fd};
    if (!inet_socks.lookup(&k))
        return 0;
    tls_transfer(cg, HTTP_SOCKET_KEY | (u32)args->fd, (const char *)args->buff, args->len, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    u64 cg = tagged_cgroup();
    if (!cg || (args->flags & ROAR_MSG_PEEK))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct sock_key k = {.tgid = id >> 32, .fd = args->fd};
    if (!inet_socks.lookup(&k))
        return 0;
    u32 tid = (u32)id;
    struct recv_args a = {.fd = (u32)args->fd, .buf = (u64)args->ubuf};
    sock_recvs.update(&tid, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct recv_args *p = sock_recvs.lookup(&tid);
    if (!p)
        return 0;
    struct recv_args a = *p;
    sock_recvs.delete(&tid);
    u64 cg = tagged_cgroup();
    if (!cg || args->ret <= 0)
        return 0;
    tls_transfer(cg, HTTP_SOCKET_KEY | a.fd, (const char *)a.buf, (u64)args->ret, 0);
    return 0;
}

#endif
