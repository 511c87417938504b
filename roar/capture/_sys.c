/* _sys: the three system calls roar needs that Python's os module does not
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif

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
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                      &fprog);
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
