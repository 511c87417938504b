/* _readhash.c - a file's content hash, read and hashed without the GIL.
 *
 * roar/record/hasher.py opens, stats and closes; this reads an open file from
 * its start to its end and hashes what it read with xxh3-128, in the calling
 * thread, with the interpreter's lock released: the hasher's worker threads
 * then hash in parallel, and a small file costs a few µs instead of a
 * Python read loop's ~25.
 *
 * The hash functions are the xxhash Python package's own (a dependency of
 * roar): its extension module exports libxxhash's XXH3_* symbols, which are
 * looked up in it (bind(), given its file), else in the OS's libxxhash.
 * Without either, available() is False and hasher.py keeps its Python loop.
 * The digest is the one xxhash.xxh3_128().hexdigest() gives (tests check it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define CHUNK (1 << 20)

typedef struct {
    uint64_t low64;
    uint64_t high64;
} xxh128_t;  /* XXH128_hash_t */

typedef void *(*create_fn)(void);
typedef int (*reset_fn)(void *);
typedef int (*update_fn)(void *, const void *, size_t);
typedef xxh128_t (*digest_fn)(const void *);
typedef int (*free_fn)(void *);

typedef uint64_t (*digest64_fn)(const void *, size_t);

static create_fn xxh_create;
static digest64_fn xxh_64; /* XXH3_64bits: cuts() (optional) */
static reset_fn xxh_reset;
static update_fn xxh_update;
static digest_fn xxh_digest;
static free_fn xxh_free;

/* per thread, made on its first file and freed when the thread ends (roard
 * hashes in threads that come and go): a page-aligned read buffer (xxh3 over
 * unaligned data runs at a third of its speed here) and a hash state */
struct worker {
    char *buf;
    void *state;
};
static pthread_key_t worker_key;

static void worker_free(void *p)
{
    struct worker *w = p;
    free(w->buf);
    xxh_free(w->state);
    free(w);
}

static struct worker *worker(void)
{
    struct worker *w = pthread_getspecific(worker_key);
    if (w)
        return w;
    w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    if (posix_memalign((void **)&w->buf, 4096, CHUNK) != 0 || !(w->state = xxh_create())) {
        free(w->buf);
        free(w);
        return NULL;
    }
    if (pthread_setspecific(worker_key, w) != 0) {
        worker_free(w);
        return NULL;
    }
    return w;
}

static int lookup(void *lib)
{
    create_fn c = (create_fn)dlsym(lib, "XXH3_createState");
    reset_fn r = (reset_fn)dlsym(lib, "XXH3_128bits_reset");
    update_fn u = (update_fn)dlsym(lib, "XXH3_128bits_update");
    digest_fn d = (digest_fn)dlsym(lib, "XXH3_128bits_digest");
    free_fn f = (free_fn)dlsym(lib, "XXH3_freeState");
    if (!c || !r || !u || !d || !f)
        return 0;
    xxh_free = f;
    xxh_64 = (digest64_fn)dlsym(lib, "XXH3_64bits");
    xxh_create = c;
    xxh_reset = r;
    xxh_update = u;
    xxh_digest = d;
    return 1;
}

static PyObject *bind(PyObject *self, PyObject *arg)
{
    const char *path = PyUnicode_AsUTF8(arg);
    if (!path)
        return NULL;
    if (xxh_create)
        Py_RETURN_TRUE;
    /* the module is loaded already (hasher.py imports xxhash first) */
    const char *where[] = {path, "libxxhash.so.0"};
    for (int i = 0; i < 2; i++) {
        void *lib = dlopen(where[i], RTLD_NOW | RTLD_LOCAL);
        if (lib && lookup(lib))
            Py_RETURN_TRUE;  /* kept open for the process's life */
        if (lib)
            dlclose(lib);
    }
    Py_RETURN_FALSE;
}

static PyObject *available(PyObject *self, PyObject *noargs)
{
    return PyBool_FromLong(xxh_create != NULL);
}

/* read_hash(fd) -> (hexdigest, bytes read): fd read from offset 0 to its end. */
static PyObject *read_hash(PyObject *self, PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (!xxh_create) {
        PyErr_SetString(PyExc_RuntimeError, "xxh3 is not bound (bind() first)");
        return NULL;
    }
    struct worker *w = worker();
    if (!w)
        return PyErr_NoMemory();
    int err = 0;
    uint64_t total = 0;
    xxh128_t h;
    Py_BEGIN_ALLOW_THREADS
    xxh_reset(w->state);
    if (lseek(fd, 0, SEEK_SET) < 0) {
        err = errno;
    } else {
        for (;;) {
            ssize_t n = read(fd, w->buf, CHUNK);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                err = errno;
                break;
            }
            if (n == 0)
                break;
            xxh_update(w->state, w->buf, (size_t)n);
            total += (uint64_t)n;
        }
    }
    h = xxh_digest(w->state);
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    char hex[33];
    snprintf(hex, sizeof(hex), "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    return Py_BuildValue("(sK)", hex, (unsigned long long)total);
}

/* cuts(rows, avg) -> [i + 1 for each row i whose xxh3-64 (xxhash.xxh3_64_intdigest)
 * is 0 mod avg], or None where XXH3_64bits is not bound: store._put_set's cuts of a
 * file set into chunks, without a Python call per row. */
static PyObject *cuts(PyObject *self, PyObject *args)
{
    PyObject *rows;
    unsigned long long avg;
    if (!PyArg_ParseTuple(args, "O!K", &PyList_Type, &rows, &avg))
        return NULL;
    if (!xxh_64 || !avg)
        Py_RETURN_NONE;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyBytes_CheckExact(row)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "cuts: a list of bytes expected");
            return NULL;
        }
        if (xxh_64(PyBytes_AS_STRING(row), (size_t)PyBytes_GET_SIZE(row)) % avg)
            continue;
        PyObject *at = PyLong_FromSsize_t(i + 1);
        if (!at || PyList_Append(out, at) < 0) {
            Py_XDECREF(at);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(at);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"cuts", cuts, METH_VARARGS,
     "cuts(rows, avg) -> [i + 1 for each row i whose xxh3-64 is 0 mod avg], or None: "
     "store._put_set's chunk cuts."},
    {"bind", bind, METH_O, "Find xxh3 in the xxhash module's file (or libxxhash); True if found."},
    {"available", available, METH_NOARGS, "Whether read_hash can run."},
    {"read_hash", read_hash, METH_O,
     "read_hash(fd) -> (xxh3-128 hexdigest, bytes): the open file from offset 0 to its end, "
     "without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "roar.record._readhash",
    "A file's xxh3-128 read and hashed without the GIL (roar/record/hasher.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__readhash(void)
{
    if (pthread_key_create(&worker_key, worker_free) != 0)
        return PyErr_NoMemory();
    return PyModule_Create(&moddef);
}
