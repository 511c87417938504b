/* _relay: roard's per-record path, compiled.
 *
 * libbcc calls router_cb for each record of the ring buffer, from the thread
 * polling it, without the GIL (ctypes releases it around bpf_poll_ringbuf).
 * The callback reads the record's run cgroup, and appends the record, framed
 * as roar/capture/protocol.py frames an EVENT (kind byte, u32 length, bytes),
 * to that run's buffer; records of no known run are counted. roard's Python
 * then handles a run's records as one blob per wake-up (spool write, socket
 * send), never one by one: its work per run does not grow with the number of
 * events in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "roar_event_user.h"

typedef struct {
    u64 cgroup;
    char *buf;
    size_t len, cap;
    u64 records, dropped; /* in the buffer now; dropped since the run began */
} Slot;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    Slot *slots;
    int n, cap;
    u64 unrouted;
    u64 max_records; /* per run, waiting in its buffer: past it records are dropped */
    char kind;
} Router;

static Slot *find(Router *r, u64 cg)
{
    for (int i = 0; i < r->n; i++)
        if (r->slots[i].cgroup == cg)
            return &r->slots[i];
    return NULL;
}

/* libbcc's ring_buffer_sample_fn: no GIL, no Python */
static int router_cb(void *ctx, void *data, int size)
{
    Router *r = ctx;
    if (size < (int)sizeof(struct roar_event)) {
        __atomic_add_fetch(&r->unrouted, 1, __ATOMIC_RELAXED);
        return 0;
    }
    u64 cg;
    memcpy(&cg, (char *)data + offsetof(struct roar_event, cgroup), sizeof cg);
    pthread_mutex_lock(&r->lock);
    Slot *s = find(r, cg);
    if (!s) {
        r->unrouted++;
    } else if (s->records >= r->max_records) {
        s->dropped++; /* bounded memory: counted on the run, never a hang */
    } else {
        size_t need = s->len + 5 + (size_t)size;
        if (need > s->cap) {
            size_t cap = s->cap ? s->cap : 1 << 16;
            while (cap < need)
                cap *= 2;
            char *nb = realloc(s->buf, cap);
            if (!nb) {
                s->dropped++; /* out of memory: counted as lost for its run */
                pthread_mutex_unlock(&r->lock);
                return 0;
            }
            s->buf = nb;
            s->cap = cap;
        }
        char *p = s->buf + s->len;
        u32 n = (u32)size;
        p[0] = r->kind;
        memcpy(p + 1, &n, 4); /* little-endian, as protocol.FRAME ("<cI") */
        memcpy(p + 5, data, (size_t)size);
        s->len = need;
        s->records++;
    }
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static int Router_init(Router *r, PyObject *args, PyObject *kw)
{
    static char *kws[] = {"kind", "max_records", NULL};
    const char *kind;
    Py_ssize_t kn;
    unsigned long long max_records = (unsigned long long)-1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y#|K", kws, &kind, &kn, &max_records))
        return -1;
    r->max_records = max_records;
    if (kn != 1) {
        PyErr_SetString(PyExc_ValueError, "kind is one byte (protocol.EVENT)");
        return -1;
    }
    r->kind = kind[0];
    return 0;
}

static PyObject *Router_new(PyTypeObject *t, PyObject *a, PyObject *k)
{
    Router *r = (Router *)t->tp_alloc(t, 0);
    if (r)
        pthread_mutex_init(&r->lock, NULL);
    return (PyObject *)r;
}

static void Router_dealloc(Router *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->slots[i].buf);
    free(r->slots);
    pthread_mutex_destroy(&r->lock);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int get_cg(PyObject *o, u64 *cg)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *cg = v;
    return 0;
}

static PyObject *Router_add(Router *r, PyObject *o)
{
    u64 cg;
    if (get_cg(o, &cg) < 0)
        return NULL;
    pthread_mutex_lock(&r->lock);
    if (!find(r, cg)) {
        if (r->n == r->cap) {
            int cap = r->cap ? r->cap * 2 : 8;
            Slot *ns = realloc(r->slots, sizeof(Slot) * (size_t)cap);
            if (!ns) {
                pthread_mutex_unlock(&r->lock);
                return PyErr_NoMemory();
            }
            r->slots = ns;
            r->cap = cap;
        }
        r->slots[r->n++] = (Slot){.cgroup = cg};
    }
    pthread_mutex_unlock(&r->lock);
    Py_RETURN_NONE;
}

/* (the framed records of a run so far, how many), handed over; (b"", 0) when none */
static PyObject *take(Router *r, u64 cg, int remove)
{
    pthread_mutex_lock(&r->lock);
    Slot *s = find(r, cg);
    char *buf = NULL;
    size_t len = 0;
    u64 n = 0;
    if (s) {
        buf = s->buf;
        len = s->len;
        n = s->records;
        if (remove) {
            *s = r->slots[--r->n];
        } else {
            s->buf = NULL; /* the next records start a new buffer */
            s->len = s->cap = 0;
            s->records = 0;
        }
    }
    pthread_mutex_unlock(&r->lock);
    PyObject *out = Py_BuildValue("(y#K)", buf ? buf : "", (Py_ssize_t)len,
                                  (unsigned long long)n);
    free(buf);
    return out;
}

static PyObject *Router_take(Router *r, PyObject *o)
{
    u64 cg;
    return get_cg(o, &cg) < 0 ? NULL : take(r, cg, 0);
}

static PyObject *Router_remove(Router *r, PyObject *o)
{
    u64 cg;
    return get_cg(o, &cg) < 0 ? NULL : take(r, cg, 1);
}

/* a run's bytes waiting (dropped = 0) or records dropped since it began
 * (dropped = 1); 0 for a run the router does not know */
static PyObject *slot_count(Router *r, PyObject *o, int dropped)
{
    u64 cg;
    if (get_cg(o, &cg) < 0)
        return NULL;
    pthread_mutex_lock(&r->lock);
    Slot *s = find(r, cg);
    u64 v = !s ? 0 : dropped ? s->dropped : (u64)s->len;
    pthread_mutex_unlock(&r->lock);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *Router_pending(Router *r, PyObject *o) { return slot_count(r, o, 0); }

static PyObject *Router_ready(Router *r, PyObject *unused)
{
    /* every run with records waiting: a spooler left out would wait for its
     * timeout while its buffer fills */
    u64 few[64], *cgs = few;
    int k = 0;
    pthread_mutex_lock(&r->lock);
    if (r->n > 64) {
        cgs = malloc(sizeof(u64) * (size_t)r->n);
        if (!cgs) {
            pthread_mutex_unlock(&r->lock);
            return PyErr_NoMemory();
        }
    }
    for (int i = 0; i < r->n; i++)
        if (r->slots[i].len)
            cgs[k++] = r->slots[i].cgroup;
    pthread_mutex_unlock(&r->lock);
    PyObject *out = PyList_New(k);
    for (int i = 0; out && i < k; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(cgs[i]);
        if (!v) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, v);
    }
    if (cgs != few)
        free(cgs);
    return out;
}

static PyObject *Router_callback(Router *r, void *c) { return PyLong_FromVoidPtr((void *)router_cb); }
static PyObject *Router_context(Router *r, void *c) { return PyLong_FromVoidPtr(r); }

static PyObject *Router_unrouted(Router *r, void *c)
{
    pthread_mutex_lock(&r->lock);
    u64 v = r->unrouted;
    pthread_mutex_unlock(&r->lock);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *Router_dropped(Router *r, PyObject *o) { return slot_count(r, o, 1); }

/* feed(record): what the ring buffer callback does, from Python (tests) */
static PyObject *Router_feed(Router *r, PyObject *o)
{
    Py_buffer b;
    if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len > INT32_MAX) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "record too large");
        return NULL;
    }
    router_cb(r, b.buf, (int)b.len);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyMethodDef Router_methods[] = {
    {"add", (PyCFunction)Router_add, METH_O, "add(cgroup_id): route that run's records"},
    {"take", (PyCFunction)Router_take, METH_O,
     "take(cgroup_id) -> (the run's framed records so far, their number)"},
    {"remove", (PyCFunction)Router_remove, METH_O,
     "remove(cgroup_id) -> (what is left of the run's records, their number); no more "
     "are routed to it"},
    {"pending", (PyCFunction)Router_pending, METH_O, "pending(cgroup_id) -> bytes waiting"},
    {"ready", (PyCFunction)Router_ready, METH_NOARGS, "cgroup ids with records waiting"},
    {"feed", (PyCFunction)Router_feed, METH_O, "route one raw record (as the ring buffer does)"},
    {"dropped", (PyCFunction)Router_dropped, METH_O,
     "dropped(cgroup_id) -> the run's records dropped: its buffer was full (max_records) "
     "or memory ran out"},
    {NULL}};

static PyGetSetDef Router_getset[] = {
    {"callback_address", (getter)Router_callback, NULL,
     "the C ring-buffer callback (libbcc's ring_buffer_sample_fn)", NULL},
    {"context_address", (getter)Router_context, NULL, "its ctx argument: this router", NULL},
    {"unrouted", (getter)Router_unrouted, NULL, "records of no known run", NULL},
    {NULL}};

static PyTypeObject RouterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roar.capture._relay.Router",
    .tp_basicsize = sizeof(Router),
    .tp_dealloc = (destructor)Router_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Router(kind, max_records=unbounded): ring-buffer records routed by run cgroup "
              "into framed blobs; past max_records waiting for a run, its records are "
              "dropped and counted.",
    .tp_methods = Router_methods,
    .tp_getset = Router_getset,
    .tp_init = (initproc)Router_init,
    .tp_new = Router_new,
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "roar.capture._relay",
                                    "roard's per-record path, compiled: see _relay.c.", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__relay(void)
{
    if (PyType_Ready(&RouterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m && PyModule_AddObjectRef(m, "Router", (PyObject *)&RouterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
