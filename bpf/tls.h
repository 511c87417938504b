/* tls.h - HTTP over TLS, seen in plaintext: uprobes on OpenSSL's SSL_write(_ex)
 * and SSL_read(_ex) in the library a traced process maps.
 *
 * Only the start of an HTTP/1.x message is emitted (a request line on a write,
 * a status line on a read), with up to TLS_PEEK bytes of its head: the headers
 * say which object and which version. Body bytes are only counted, per
 * (tgid, SSL*), and travel on the next message's event or on SSL_free, so a
 * 1 GiB download costs a map update per TLS record, not an event.
 *
 * Attached with attach_uprobe(fn_name=...) by capture/probes.py, not by name.
 */
#ifndef ROAR_TLS_H
#define ROAR_TLS_H

#include "tagging.h"
#include "emit.h"

struct tls_key {
    u32 tgid;
    u32 pad;
    u64 ssl;
};

struct tls_bytes {
    u64 in;   /* body bytes read since the last message start */
    u64 out;  /* body bytes written since the last message start */
};

struct tls_read_args {
    u64 ssl;
    u64 buf;
    u64 readbytes;  /* SSL_read_ex: where the count is stored; 0 for SSL_read */
};

BPF_HASH(tls_counts, struct tls_key, struct tls_bytes, 16384);
BPF_HASH(tls_reads, u32, struct tls_read_args, 16384);  /* tid -> args until return */

/* Does buf begin an HTTP/1.x message? Requests by their method, responses by
 * "HTTP/". Eight bytes are enough to tell. */
static __always_inline int http_start(const char *head, int is_write)
{
    if (!is_write)
        return head[0] == 'H' && head[1] == 'T' && head[2] == 'T' && head[3] == 'P' &&
               head[4] == '/';
    if (head[0] == 'G' && head[1] == 'E' && head[2] == 'T' && head[3] == ' ')
        return 1;
    if (head[0] == 'P' && head[1] == 'U' && head[2] == 'T' && head[3] == ' ')
        return 1;
    if (head[0] == 'P' && head[1] == 'O' && head[2] == 'S' && head[3] == 'T' && head[4] == ' ')
        return 1;
    if (head[0] == 'H' && head[1] == 'E' && head[2] == 'A' && head[3] == 'D' && head[4] == ' ')
        return 1;
    if (head[0] == 'D' && head[1] == 'E' && head[2] == 'L' && head[3] == 'E' && head[4] == 'T')
        return 1;
    if (head[0] == 'P' && head[1] == 'A' && head[2] == 'T' && head[3] == 'C' && head[4] == 'H')
        return 1;
    return 0;
}

/* One TLS transfer of n plaintext bytes at buf on ssl: a message start is
 * emitted with its head and the body bytes counted before it; anything else
 * only adds to the counters. */
static __always_inline void tls_transfer(u64 cg, u64 ssl, const char *buf, u64 n, int is_write)
{
    if (n == 0 || n > (1ULL << 40))
        return;
    char head[8] = {};
    if (bpf_probe_read_user(head, sizeof(head), buf) < 0)
        return;
    struct tls_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .ssl = ssl};
    if (!http_start(head, is_write)) {
        struct tls_bytes *c = tls_counts.lookup(&k);
        if (c) {
            if (is_write)
                __sync_fetch_and_add(&c->out, n);
            else
                __sync_fetch_and_add(&c->in, n);
        } else {
            struct tls_bytes z = {.in = is_write ? 0 : n, .out = is_write ? n : 0};
            tls_counts.update(&k, &z);
        }
        return;
    }
    struct event_buf *b = get_buf(cg, is_write ? EV_TLS_WRITE : EV_TLS_READ);
    if (!b)
        return;
    b->ev.a0 = ssl;
    b->ev.a1 = n;
    struct tls_bytes *c = tls_counts.lookup(&k);
    if (c) {
        b->ev.a2 = c->in;
        b->ev.ret = c->out;
        c->in = 0;
        c->out = 0;
    }
    u64 len = n;
    if (len > TLS_PEEK) {
        len = TLS_PEEK;
        b->ev.flags |= EVF_TRUNCATED;
    }
    asm volatile("" : "+r"(len));
    if (len > TLS_PEEK)
        len = TLS_PEEK;
    if (bpf_probe_read_user(b->data, len, buf) < 0) {
        b->ev.flags |= EVF_FAULT;
        len = 0;
    }
    b->ev.len1 = len;
    emit_buf(b, len);
}

/* int SSL_write(SSL *ssl, const void *buf, int num);
 * int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written); */
int roar_tls_write(struct pt_regs *ctx)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    tls_transfer(cg, PT_REGS_PARM1(ctx), (const char *)PT_REGS_PARM2(ctx),
                 (u64)PT_REGS_PARM3(ctx) & 0xffffffffffffULL, 1);
    return 0;
}

/* int SSL_read(SSL *ssl, void *buf, int num): the count is the return value */
int roar_tls_read_enter(struct pt_regs *ctx)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct tls_read_args a = {.ssl = PT_REGS_PARM1(ctx), .buf = PT_REGS_PARM2(ctx)};
    tls_reads.update(&tid, &a);
    return 0;
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes):
 * returns 1 on success, the count is stored at readbytes */
int roar_tls_read_ex_enter(struct pt_regs *ctx)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct tls_read_args a = {.ssl = PT_REGS_PARM1(ctx), .buf = PT_REGS_PARM2(ctx),
                              .readbytes = PT_REGS_PARM4(ctx)};
    tls_reads.update(&tid, &a);
    return 0;
}

int roar_tls_read_return(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct tls_read_args *p = tls_reads.lookup(&tid);
    if (!p)
        return 0;
    struct tls_read_args a = *p;
    tls_reads.delete(&tid);
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    s64 rc = PT_REGS_RC(ctx);
    u64 n = 0;
    if (a.readbytes) {
        if ((int)rc != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)a.readbytes) < 0)
            return 0;
    } else {
        if ((int)rc <= 0)
            return 0;
        n = (u32)(int)rc;
    }
    tls_transfer(cg, a.ssl, (const char *)a.buf, n, 0);
    return 0;
}

/* The end of a connection (SSL_free, or close of a plain socket in http.h):
 * the body bytes counted since its last message start, on an EV_TLS_FREE. */
static __always_inline void tls_flush(u64 cg, struct tls_key *k)
{
    struct tls_bytes *c = tls_counts.lookup(k);
    if (!c)
        return;
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_TLS_FREE);
    ev.a0 = k->ssl;
    ev.a2 = c->in;
    ev.ret = c->out;
    tls_counts.delete(k);
    emit_small(&ev);
}

/* void SSL_free(SSL *ssl): the last message's body bytes */
int roar_tls_free(struct pt_regs *ctx)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    struct tls_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .ssl = PT_REGS_PARM1(ctx)};
    tls_flush(cg, &k);
    return 0;
}

#endif
