/* _sys: the system calls roar needs that Python's os module does not
 * wrap, compiled so that `roar run` does not load ctypes for them (importing
 * ctypes and opening libc through it is ~3 ms of every run's start on a small
 * machine). roar/capture/syscalls.py picks these, or its ctypes versions
 * when this module is not built.
 *
 *   seccomp_install(prog, no_new_privs) -> listener fd
 *       the pre-image hold's filter (roar/capture/seccomp.py builds prog)
 *   read_mem(pid, addr, n) -> bytes or None
 *       process_vm_readv of another process (the held task's path arguments)
 *   birth_ns(dirfd, path, flags) -> int or None
 *       statx's creation time, where the filesystem records it
 *   hold_next(listener, timeout_ms[, unread_before_ns])
 *       the pre-image hold's common case (a write-open of a new file) answered
 *       here; the rest handed to roar/record/preimage.py (below)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <limits.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <time.h>

#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif
#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)
#endif
/* SPEC_ALLOW: the hold is no sandbox, so it must not turn on the Speculative
 * Store Bypass mitigation a filter otherwise forces on where the kernel's
 * spec_store_bypass_disable is `seccomp` (the default before 5.16: Debian 11,
 * Ubuntu 20.04, RHEL 8), which slows the workload's own code. Older than
 * NEW_LISTENER (4.17 vs 5.0): every kernel that takes one takes both. */
#define HOLD_FILTER_FLAGS (SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW)

static PyObject *seccomp_install(PyObject *self, PyObject *args)
{
    Py_buffer prog;
    int no_new_privs;
    if (!PyArg_ParseTuple(args, "y*p", &prog, &no_new_privs))
        return NULL;
    if (prog.len == 0 || prog.len % sizeof(struct sock_filter) ||
        prog.len / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        PyBuffer_Release(&prog);
        PyErr_SetString(PyExc_ValueError, "not a classic BPF program");
        return NULL;
    }
    if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        PyBuffer_Release(&prog);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct sock_fprog fprog = {
        .len = (unsigned short)(prog.len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)prog.buf,
    };
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, HOLD_FILTER_FLAGS, &fprog);
    int err = errno;
    PyBuffer_Release(&prog);
    if (fd < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

static PyObject *read_mem(PyObject *self, PyObject *args)
{
    int pid;
    unsigned long long addr;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "iKn", &pid, &addr, &n))
        return NULL;
    if (n < 0 || n > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "read_mem: 0 to 1 MiB");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    struct iovec local = {PyBytes_AS_STRING(out), (size_t)n};
    struct iovec remote = {(void *)(uintptr_t)addr, (size_t)n};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got <= 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (got < n && _PyBytes_Resize(&out, got) < 0)
        return NULL;
    return out;
}

static PyObject *birth_ns(PyObject *self, PyObject *args)
{
    int dirfd, flags;
    const char *path;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "iy#i", &dirfd, &path, &len, &flags))
        return NULL;
    if ((Py_ssize_t)strlen(path) != len) {
        PyErr_SetString(PyExc_ValueError, "embedded NUL in path");
        return NULL;
    }
    struct statx sx;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = statx(dirfd, path, flags, STATX_BTIME, &sx);
    Py_END_ALLOW_THREADS
    if (rc != 0 || !(sx.stx_mask & STATX_BTIME))
        Py_RETURN_NONE;
    return PyLong_FromLongLong((long long)sx.stx_btime.tv_sec * 1000000000LL +
                               sx.stx_btime.tv_nsec);
}

/* ---- the pre-image hold's common case, without Python ---------------------
 *
 * hold_next(listener, timeout_ms[, unread_before_ns])
 *     -> (notification or None, continued, ns, max_ns, gone)
 *
 * Waits up to timeout_ms for the run's held syscalls (roar/capture/seccomp.py)
 * and lets each one continue at once, here, when none of the files it names
 * can hold a pre-image: nothing is there (a new file: a write-open of one, the
 * target of a rename), or something that is not a regular file (and not a
 * directory that a rename or unlink takes away). That is what the supervisor
 * (roar/record/preimage.py, Supervisor._handle) decides for such a syscall
 * before it reads the event model, and most held syscalls are such: a program
 * writing its outputs with open(path, "w") makes one per file, which through
 * Python cost ~120 µs of the workload's time each. The first syscall that
 * names a regular file (or a directory taken away), or one whose files this
 * cannot tell (openat2, ftruncate), is returned as (id, pid, nr, args) for the
 * supervisor. continued, ns, max_ns: how many were let through here, how long
 * they were held here in all and at most; gone: the listener has no task left
 * under the filter. At most HOLD_BATCH are let through per call, so that the
 * supervisor sees its stop flag now and then while syscalls keep coming.
 * With unread_before_ns (the run's start, wall clock, less the supervisor's
 * slack), a link of a regular file nobody read since then is continued here
 * too (unread_since_start above).
 */

#define HOLD_PATH_MAX 4096
#define HOLD_BATCH 256
#define AT_FDCWD_ (-100)

static int read_path(pid_t pid, unsigned long addr, char *out)
{
    size_t got = 0;
    while (got < HOLD_PATH_MAX) {
        size_t n = 4096 - (addr % 4096);
        if (n > HOLD_PATH_MAX - got)
            n = HOLD_PATH_MAX - got;
        struct iovec local = {out + got, n}, remote = {(void *)addr, n};
        ssize_t r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (r <= 0)
            return -1;
        char *nul = memchr(out + got, 0, (size_t)r);
        if (nul)
            return nul == out ? -1 : 0;  /* an empty path names nothing */
        got += (size_t)r;
        addr += (unsigned long)r;
    }
    return -1;  /* longer than PATH_MAX: the supervisor skips it too */
}

/* Links (below): the supervisor's access-time rule (Supervisor._unread_since_start),
 * here. A regular file whose access time is older than unread_before (the run's
 * start, less the supervisor's slack) and which a read would have moved (the
 * kernel's relatime rule: atime not after mtime or ctime, or a day old), on a
 * mount without noatime, was not read since the run started: no input of the
 * run can be waiting for its hash. cp -al of 20,000 files paid ~60 us a link
 * through Python. */
static long long hold_unread_before;  /* this call's; 0: the rule is off */
#define NOATIME_DEVS 16
static struct { dev_t dev; int noatime; } noatime_seen[NOATIME_DEVS];
static int noatime_n;
static long long noatime_for;  /* the unread_before the table was filled for (a run) */

static long long ts_ns(struct timespec t)
{
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int mounted_noatime(const char *where, dev_t dev)
{
    if (noatime_for != hold_unread_before) {  /* another run: mounts may have changed */
        noatime_n = 0;
        noatime_for = hold_unread_before;
    }
    for (int i = 0; i < noatime_n; i++)
        if (noatime_seen[i].dev == dev)
            return noatime_seen[i].noatime;
    struct statvfs sv;
    int noatime = statvfs(where, &sv) != 0 || (sv.f_flag & ST_NOATIME);
    if (noatime_n < NOATIME_DEVS) {
        noatime_seen[noatime_n].dev = dev;
        noatime_seen[noatime_n++].noatime = noatime;
    }
    return noatime;
}

static int unread_since_start(const char *where, const struct stat *st)
{
    if (hold_unread_before <= 0)
        return 0;
    long long a = ts_ns(st->st_atim);
    if (a >= hold_unread_before)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!(a <= ts_ns(st->st_mtim) || a <= ts_ns(st->st_ctim)
          || ts_ns(now) - a >= 86400LL * 1000000000LL))
        return 0;
    return !mounted_noatime(where, st->st_dev);
}

/* 0: the file named cannot hold a pre-image; 1: the supervisor must look;
 * the path unreadable counts as 0, as the supervisor skips it. links: the
 * file is named anew (link, linkat), and one the run has not read since it
 * started is answered here too. */
static int needs_look_as(pid_t tid, long dirfd, unsigned long ptr, int removes, int links)
{
    char path[HOLD_PATH_MAX];
    char where[HOLD_PATH_MAX + 64];
    if (read_path(tid, ptr, path) != 0)
        return 0;
    int n;
    if (path[0] == '/')
        n = snprintf(where, sizeof(where), "/proc/%d/root%s", (int)tid, path);
    else if ((int)dirfd == AT_FDCWD_)
        n = snprintf(where, sizeof(where), "/proc/%d/cwd/%s", (int)tid, path);
    else
        n = snprintf(where, sizeof(where), "/proc/%d/fd/%d/%s", (int)tid, (int)dirfd, path);
    if (n < 0 || (size_t)n >= sizeof(where))
        return 1;
    struct stat st;
    if ((removes ? lstat(where, &st) : stat(where, &st)) != 0)
        return 0;  /* nothing there */
    if (S_ISDIR(st.st_mode) && removes && !links)
        return 1;  /* a directory taken away: its pending inputs */
    if (!S_ISREG(st.st_mode))
        return 0;
    return !(links && unread_since_start(where, &st));
}

static int needs_look(pid_t tid, long dirfd, unsigned long ptr, int removes)
{
    return needs_look_as(tid, dirfd, ptr, removes, 0);
}

static int notif_needs_look(const struct seccomp_notif *n)
{
    const __u64 *a = n->data.args;
    pid_t tid = (pid_t)n->pid;
    switch (n->data.nr) {
    case 2:   /* open */
    case 85:  /* creat */
    case 76:  /* truncate */
        return needs_look(tid, AT_FDCWD_, a[0], 0);
    case 257: /* openat */
        return needs_look(tid, (int)a[0], a[1], 0);
    case 82:  /* rename */
        return needs_look(tid, AT_FDCWD_, a[0], 1) || needs_look(tid, AT_FDCWD_, a[1], 1);
    case 264: /* renameat */
    case 316: /* renameat2 */
        return needs_look(tid, (int)a[0], a[1], 1) || needs_look(tid, (int)a[2], a[3], 1);
    case 87:  /* unlink */
        return needs_look(tid, AT_FDCWD_, a[0], 1);
    case 263: /* unlinkat */
        return needs_look(tid, (int)a[0], a[1], 1);
    case 86:  /* link: the file it names anew (not a symlink's target) */
        return needs_look_as(tid, AT_FDCWD_, a[0], 1, 1);
    case 265: /* linkat: the target of a symlink with AT_SYMLINK_FOLLOW */
        return needs_look_as(tid, (int)a[0], a[1], !(a[4] & 0x400), 1);
    default:  /* openat2 (flags behind a pointer), ftruncate (an fd): the supervisor */
        return 1;
    }
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static PyObject *hold_next(PyObject *self, PyObject *args)
{
    int listener, timeout_ms;
    long long unread_before = 0;
    if (!PyArg_ParseTuple(args, "ii|L", &listener, &timeout_ms, &unread_before))
        return NULL;
    hold_unread_before = unread_before;  /* one supervisor thread calls this at a time */
    struct seccomp_notif notif;
    struct seccomp_notif_resp resp;
    long continued = 0;
    long long waited = 0, most = 0;
    int found = 0, gone = 0, err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        struct pollfd p = {.fd = listener, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r < 0) {
            if (errno == EINTR)
                break;
            err = errno;
            break;
        }
        if (r == 0)
            break;
        if (!(p.revents & POLLIN)) {
            if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
                gone = 1;
            break;
        }
        memset(&notif, 0, sizeof(notif));
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &notif) != 0) {
            if (errno == EINTR || errno == ENOENT)  /* its task died meanwhile */
                continue;
            err = errno;
            break;
        }
        long long t0 = now_ns();
        if (notif_needs_look(&notif)) {
            found = 1;
            break;
        }
        memset(&resp, 0, sizeof(resp));
        resp.id = notif.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT) {
            err = errno;
            break;
        }
        long long dt = now_ns() - t0;
        continued++;
        waited += dt;
        if (dt > most)
            most = dt;
        if (continued >= HOLD_BATCH)
            break;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *n;
    if (found) {
        const __u64 *a = notif.data.args;
        n = Py_BuildValue("(KIi(KKKKKK))", (unsigned long long)notif.id, (unsigned)notif.pid,
                          notif.data.nr, (unsigned long long)a[0], (unsigned long long)a[1],
                          (unsigned long long)a[2], (unsigned long long)a[3],
                          (unsigned long long)a[4], (unsigned long long)a[5]);
        if (!n)
            return NULL;
    } else {
        n = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(NlLLO)", n, continued, waited, most, gone ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"seccomp_install", seccomp_install, METH_VARARGS,
     "seccomp_install(prog, no_new_privs) -> fd: install the classic BPF program prog as a "
     "seccomp filter with a new user-notification listener (PR_SET_NO_NEW_PRIVS first if "
     "asked); OSError on failure."},
    {"read_mem", read_mem, METH_VARARGS,
     "read_mem(pid, addr, n) -> bytes (maybe fewer than n) or None: process_vm_readv."},
    {"birth_ns", birth_ns, METH_VARARGS,
     "birth_ns(dirfd, path, flags) -> int or None: statx's btime in ns, None when the "
     "filesystem does not record it or the file is not there."},
    {"hold_next", hold_next, METH_VARARGS,
     "hold_next(listener, timeout_ms[, unread_before_ns]) -> (notification or None, "
     "continued, ns, max_ns, gone): the pre-image hold's held syscalls naming no file that "
     "can hold a pre-image are continued here (links of files unread since unread_before_ns "
     "too); the first that does is returned as (id, pid, nr, args)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "roar.capture._sys",
    "The system calls roar needs that the os module does not wrap.", -1, methods,
};

PyMODINIT_FUNC PyInit__sys(void)
{
    return PyModule_Create(&moddef);
}
