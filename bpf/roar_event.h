/* roar_event.h - the one definition of everything both sides of the kernel
 * boundary read: the record the kernel side emits, its constants, the access
 * bits it reports, and the per-process state userspace seeds for a run's root.
 *
 * Userspace (roar/capture/events.py) parses this file by name, so the structs
 * and #define constants below are the single source of truth. Keep field
 * types to u16/u32/s32/u64/s64 and one field per line.
 */
#ifndef ROAR_EVENT_H
#define ROAR_EVENT_H

#define ROAR_PATH_MAX 4096
#define ROAR_ARGV_MAX 8192
#define ROAR_SOCKADDR_MAX 128
#define ROAR_TAG_LEVELS 24  /* run cgroups are looked for at levels 1..ROAR_TAG_LEVELS-1 */
#define TLS_PEEK 4096          /* head of an HTTP message over TLS kept (bytes) */
#define HTTP_SOCKET_KEY 0x8000000000000000 /* tls.h key bit: a plain TCP socket (bpf/http.h), fd below */

/* event types */
#define EV_OPEN 1        /* fd=new fd, a0=open flags, a1=mode, ret=dirfd, data=path */
#define EV_READ 2        /* first read-like call on (tgid, fd), for fds >= FLUSH_MAX only */
#define EV_WRITE 3       /* first write-like call on (tgid, fd) */
#define EV_MMAP 4        /* first mapping of fd with new access bits (a0); a read-only mapping of
                            an fd < FLUSH_MAX only in its EV_CLOSE's bits, as reads */
#define EV_CLOSE 5       /* fd closed (or flushed at exit): ret=access bits (1 read, 2 write, 4/8 mapped
                            read/write), a0=bytes read, a1=bytes written, a2=calls r<<32|w */
#define EV_DUP 6         /* fd=old fd, ret=new fd, a0=1 if close-on-exec */
#define EV_FORK 7        /* ret=child pid, a0=1 if a thread (CLONE_THREAD), a1=clone flags */
#define EV_EXEC 8        /* exec attempt: fd=dirfd, data=filename, data2=argv blob (NUL separated;
                            right after the filename with EVF_ARGV_PACKED) */
#define EV_EXEC_RET 9    /* ret=exec result; with EVF_FDS_OPEN, a0..a2: which of fds 0..191 are
                            open after the exec (bit fd % 64 of word fd / 64) */
#define EV_EXIT 10       /* thread group exit: a0=exit code (valid if flag EXITED), a1=fatal signal
                            (valid if flag SIGNALED); with BTF the status its parent collects */
#define EV_RENAME 11     /* fd=old dirfd, a0=new dirfd, a1=flags, data=old path, data2=new path */
#define EV_LINK 12       /* fd=old dirfd, a0=new dirfd, data=old path, data2=new path */
#define EV_UNLINK 13     /* fd=dirfd, a0=flags, data=path */
#define EV_TRUNCATE 14   /* a0=length, data=path */
#define EV_FTRUNCATE 15  /* fd, a0=length */
#define EV_CHDIR 16      /* data=path */
#define EV_FCHDIR 17     /* fd */
#define EV_CONNECT 18    /* fd, data=sockaddr bytes */
#define EV_IOURING 19    /* io_uring used: io_uring_setup, _enter or _register, or an io_uring
                            fd mapped or read (once per run for _enter/_register) */
#define EV_CLOSE_RANGE 20 /* fd=first, a0=last, a1=flags */
#define EV_FDFLAGS 21    /* fcntl(F_SETFD): fd, a0=1 if close-on-exec */
#define EV_REAP 22       /* a parent reaped a child: ret=child pid, a0=wait status (as waitpid);
                            only where EV_EXIT cannot carry the kernel's own status (no BTF:
                            EXIT_FROM_TASK=0, bpf/process.h) */
#define EV_TLS_WRITE 23  /* HTTP request head written over TLS: a0=SSL*, a1=call bytes, a2/ret=body
                            bytes read/written on that SSL* since its last message, data=head */
#define EV_TLS_READ 24   /* HTTP response head read over TLS: fields as EV_TLS_WRITE */
#define EV_TLS_FREE 25   /* SSL_free: a0=SSL*, a2/ret=body bytes read/written since the last head */

/* event flags */
#define EVF_TRUNCATED 1      /* a string hit its size limit: path or argv is incomplete */
#define EVF_FAULT 2          /* user memory could not be read: the string is missing */
#define EVF_EXITED 4         /* EV_EXIT: a0 holds an exit_group/exit status */
#define EVF_SIGNALED 8       /* EV_EXIT: a1 holds the fatal signal */
#define EVF_BYTES_UNKNOWN 16 /* EV_CLOSE: some calls were counted without their sizes */
#define EVF_ARGV_PACKED 32   /* EV_EXEC: the argv blob starts at data + len1 (else at
                                data + ROAR_PATH_MAX, as kernel sides before it wrote) */
#define EVF_EXEC_FLUSH 64    /* EV_CLOSE: the summary of an fd flushed by a successful
                                exec (the fd may stay open, or have been closed as
                                close-on-exec); the next use starts a new summary */
#define EVF_FDS_OPEN 128     /* EV_EXEC_RET: a0..a2 say which fds the exec left open (the
                                kernel's own table: close-on-exec set by any means) */
#define EXEC_FDS_KNOWN 192   /* fds EVF_FDS_OPEN covers */

/* access bits of an open file: EV_MMAP's a0, EV_CLOSE's ret */
#define FD_READ 1
#define FD_WRITE 2
#define FD_MAP_READ 4
#define FD_MAP_WRITE 8
/* with the bits above (EV_READ/EV_WRITE/EV_MMAP's a0, EV_CLOSE's ret): the fd
 * names a regular file with a name (nlink > 0), set when the kernel side first
 * sees the fd used; a use of such an fd whose open the run never saw (an fd
 * received over SCM_RIGHTS, from pidfd_getfd, open_by_handle_at or io_uring)
 * is I/O on a file the run cannot name */
#define FD_NAMED 16

/* close_range(2) flag (linux/close_range.h): EV_CLOSE_RANGE's a1. With it the
 * range is only marked close-on-exec, nothing is closed. */
#define CLOSE_RANGE_CLOEXEC 4  /* 1U << 2 */

struct roar_event {
    u64 ts;
    u64 cgroup;
    u32 tgid;
    u32 tid;
    u16 type;
    u16 flags;
    s32 fd;
    s64 ret;
    u64 a0;
    u64 a1;
    u64 a2;
    u32 len1;
    u32 len2;
};

/* generations (bpf/tagging.h): userspace bumps GEN_TAGS after it tags or
 * untags a run cgroup (and after seeding the root's proc_state) */
#define GEN_TAGS 0
#define GEN_PROCS 1  /* bumped by the kernel side only */
#define GEN_MOVES 2  /* bumped by the kernel side only */

/* The procs map's value, per tgid. Userspace writes a run's root process
 * (it was forked before its cgroup was tagged) with a fresh epoch. */
struct proc_state {
    u64 epoch;      /* changes whenever a tgid is (re)born: stale fd entries never match */
    u32 maxfd;      /* highest fd seen from open/dup: bounds the flush loop at exit */
    u32 exit_code;  /* from exit/exit_group */
    u32 signal;     /* fatal signal delivered with the default action */
    u32 state;      /* EVF_EXITED | EVF_SIGNALED */
};

#endif
