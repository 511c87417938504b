/* _cmodel: the process model of roar/record/model.py, compiled.
 *
 * `roar run` feeds every kernel record of a run through here: decoding (the
 * layout of bpf/roar_event.h, included below), the process model (fd tables,
 * cwd, process tree, path resolution, per-path history) and, for the inputs
 * it hashes, the stat-cache lookup. model.py stays as the reference: the
 * differential tests (tests/test_compiled_model.py) run both on the same event
 * streams, recorded from real capture runs and generated, and compare every
 * piece of state. A change to one is a change to both.
 *
 * State lives in the Python objects the recorder reads (dicts, lists, sets,
 * and the record types below with the attributes of model.py's dataclasses),
 * so recorder.py, audit.py and attach.py work on either model. Rare events
 * (/dev/fd aliases, connect, TLS) call model.py's helpers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "roar_event_user.h"

#define O_ACCMODE_ 03
#define O_WRONLY_ 01
#define O_RDWR_ 02
#define O_TRUNC_ 01000
#define O_DIRECTORY_ 0200000
#define O_CLOEXEC_ 02000000
#define O_PATH_ 010000000
#define O_CREAT_ 0100
#define O_TMPFILE_ 020000000
#define AT_FDCWD_ (-100)
#define AT_EMPTY_PATH_ 0x1000
#define AT_REMOVEDIR_ 0x200
#define CLONE_FILES_ 0x400

/* model.py's helpers, classify.needs_hash, hasher's types */
static PyObject *py_normalize, *py_join, *py_fd_alias, *py_decode_sockaddr, *py_remote_log,
    *py_needs_hash, *py_needs_hash_dir, *py_hash_job, *py_hash_result;
static PyObject *S_read, *S_write, *S_ok, *S_address, *S_family, *S_unix, *S_process,
    *S_std, *S_pid, *S_fd, *S_fd2, *S_self, *S_thread_self, *S_stdin, *S_stdout, *S_stderr,
    *S_request, *S_response, *S_freed, *S_value, *S_group, *S_match, *S_fullmatch, *S_lookup,
    *S_memo, *S___self__, *S_needles;

/* classify's answer for a directory whose files are told apart by name carries
 * `needles` (classify._Names, _NameKind): literal strings one of which every
 * name its rules match contains. 1 when path[start:n] holds one of them or
 * they are not known (ask the rules), 0 when it holds none (no rule matches),
 * -1 on error. */
static int name_may_match(PyObject *by, PyObject *path, Py_ssize_t start, Py_ssize_t n)
{
    PyObject *needles = PyObject_GetAttr(by, S_needles);
    if (!needles) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    int r = 1;
    if (PyTuple_CheckExact(needles)) {
        r = 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(needles) && r == 0; j++) {
            PyObject *k = PyTuple_GET_ITEM(needles, j);
            if (!PyUnicode_CheckExact(k)) {
                r = 1;
                break;
            }
            Py_ssize_t at = PyUnicode_Find(path, k, start, n, 1);
            r = at == -2 ? -1 : at >= 0;
        }
    }
    Py_DECREF(needles);
    return r;
}

/* -- record types ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *path, *tmpfile_dir;
    unsigned long long flags;
    char tmpfile_written;
} OpenFile;

typedef struct {
    PyObject_HEAD
    PyObject *file; /* OpenFile */
    char cloexec;
} FdEntry;

typedef struct {
    PyObject_HEAD
    PyObject *path;
    char read, written, mapped, bytes_exact;
    unsigned long long bytes_read, bytes_written, read_calls, write_calls;
} ProcFile;

typedef struct {
    PyObject_HEAD
    long long pid;
    PyObject *key, *parent, *ppid, *argv, *exe, *cwd, *fds, *end_ts, *exit_code, *signal,
        *files, *pending_exec;
    unsigned long long start_ts;
    long long threads, execs;
    char argv_incomplete;
} Proc;

typedef struct {
    PyObject_HEAD
    PyObject *path, *first, *modified_ts, *create_ts, *early_hash, *early_ts, *renamed_from;
    char read, written, deleted;
    /* classify.needs_hash(path), asked once (it depends on the path alone):
     * 0 not asked yet, 1 yes, 2 no. An environment file (ld.so.cache, libc)
     * is opened by every process of a spawn loop, and never hashed early. */
    char need;
} PathState;

static PyTypeObject OpenFileType, FdEntryType, ProcFileType, ProcType, PathStateType;

#define OBJ(T, f) {#f, T_OBJECT, offsetof(T, f), 0, NULL}
#define BOOL(T, f) {#f, T_BOOL, offsetof(T, f), 0, NULL}

static void clear_objs(PyObject *self, Py_ssize_t *offs, int n)
{
    for (int i = 0; i < n; i++)
        Py_CLEAR(*(PyObject **)((char *)self + offs[i]));
}

#define DEALLOC(T, ...)                                                          \
    static void T##_dealloc(PyObject *self)                                      \
    {                                                                            \
        Py_ssize_t offs[] = {__VA_ARGS__};                                       \
        clear_objs(self, offs, (int)(sizeof(offs) / sizeof(offs[0])));           \
        Py_TYPE(self)->tp_free(self);                                            \
    }

DEALLOC(OpenFile, offsetof(OpenFile, path), offsetof(OpenFile, tmpfile_dir))
DEALLOC(FdEntry, offsetof(FdEntry, file))
DEALLOC(ProcFile, offsetof(ProcFile, path))
DEALLOC(Proc, offsetof(Proc, key), offsetof(Proc, parent), offsetof(Proc, ppid),
        offsetof(Proc, argv), offsetof(Proc, exe), offsetof(Proc, cwd), offsetof(Proc, fds),
        offsetof(Proc, end_ts), offsetof(Proc, exit_code), offsetof(Proc, signal),
        offsetof(Proc, files), offsetof(Proc, pending_exec))
DEALLOC(PathState, offsetof(PathState, path), offsetof(PathState, first),
        offsetof(PathState, modified_ts), offsetof(PathState, create_ts),
        offsetof(PathState, early_hash), offsetof(PathState, early_ts),
        offsetof(PathState, renamed_from))

static PyObject *new_openfile(PyObject *path, unsigned long long flags, PyObject *tmpfile_dir)
{
    OpenFile *o = PyObject_New(OpenFile, &OpenFileType);
    if (!o)
        return NULL;
    o->path = Py_NewRef(path);
    o->tmpfile_dir = Py_NewRef(tmpfile_dir);
    o->flags = flags;
    o->tmpfile_written = 0;
    return (PyObject *)o;
}

static PyObject *new_fdentry(PyObject *file, int cloexec)
{
    FdEntry *e = PyObject_New(FdEntry, &FdEntryType);
    if (!e)
        return NULL;
    e->file = Py_NewRef(file);
    e->cloexec = cloexec ? 1 : 0;
    return (PyObject *)e;
}

static PyObject *OpenFile_new(PyTypeObject *t, PyObject *args, PyObject *kw)
{
    static char *kws[] = {"path", "flags", "tmpfile_dir", "tmpfile_written", NULL};
    PyObject *path, *dir = Py_None;
    unsigned long long flags;
    int written = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OK|Op", kws, &path, &flags, &dir, &written))
        return NULL;
    OpenFile *o = (OpenFile *)new_openfile(path, flags, dir);
    if (o)
        o->tmpfile_written = (char)written;
    return (PyObject *)o;
}

static PyObject *FdEntry_new(PyTypeObject *t, PyObject *args, PyObject *kw)
{
    static char *kws[] = {"file", "cloexec", NULL};
    PyObject *file;
    int cloexec;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!p", kws, &OpenFileType, &file, &cloexec))
        return NULL;
    return new_fdentry(file, cloexec);
}

static int FdEntry_set_file(FdEntry *self, PyObject *v, void *c)
{
    if (!v || !PyObject_TypeCheck(v, &OpenFileType)) {
        PyErr_SetString(PyExc_TypeError, "FdEntry.file must be an OpenFile");
        return -1;
    }
    Py_SETREF(self->file, Py_NewRef(v));
    return 0;
}

static PyObject *FdEntry_get_file(FdEntry *self, void *c) { return Py_NewRef(self->file); }

static PyObject *ProcFile_mode(ProcFile *pf, void *c)
{
    char m[4];
    int n = 0;
    if (pf->read)
        m[n++] = 'r';
    if (pf->written)
        m[n++] = 'w';
    if (pf->mapped)
        m[n++] = 'm';
    return PyUnicode_FromStringAndSize(m, n);
}

static PyMemberDef OpenFile_members[] = {
    OBJ(OpenFile, path), OBJ(OpenFile, tmpfile_dir), {"flags", T_ULONGLONG, offsetof(OpenFile, flags), 0, NULL},
    BOOL(OpenFile, tmpfile_written), {NULL}};
static PyMemberDef FdEntry_members[] = {BOOL(FdEntry, cloexec), {NULL}};
static PyGetSetDef FdEntry_getset[] = {
    {"file", (getter)FdEntry_get_file, (setter)FdEntry_set_file, NULL, NULL}, {NULL}};
static PyMemberDef ProcFile_members[] = {
    OBJ(ProcFile, path), BOOL(ProcFile, read), BOOL(ProcFile, written), BOOL(ProcFile, mapped),
    BOOL(ProcFile, bytes_exact),
    {"bytes_read", T_ULONGLONG, offsetof(ProcFile, bytes_read), 0, NULL},
    {"bytes_written", T_ULONGLONG, offsetof(ProcFile, bytes_written), 0, NULL},
    {"read_calls", T_ULONGLONG, offsetof(ProcFile, read_calls), 0, NULL},
    {"write_calls", T_ULONGLONG, offsetof(ProcFile, write_calls), 0, NULL}, {NULL}};
static PyGetSetDef ProcFile_getset[] = {{"mode", (getter)ProcFile_mode, NULL, NULL, NULL}, {NULL}};
static PyMemberDef Proc_members[] = {
    {"pid", T_LONGLONG, offsetof(Proc, pid), READONLY, NULL}, OBJ(Proc, key), OBJ(Proc, parent),
    OBJ(Proc, ppid), OBJ(Proc, argv), OBJ(Proc, exe), OBJ(Proc, cwd), OBJ(Proc, fds),
    OBJ(Proc, end_ts), OBJ(Proc, exit_code), OBJ(Proc, signal), OBJ(Proc, files),
    OBJ(Proc, pending_exec), {"start_ts", T_ULONGLONG, offsetof(Proc, start_ts), 0, NULL},
    {"threads", T_LONGLONG, offsetof(Proc, threads), 0, NULL},
    {"execs", T_LONGLONG, offsetof(Proc, execs), 0, NULL}, BOOL(Proc, argv_incomplete), {NULL}};
static PyMemberDef PathState_members[] = {
    OBJ(PathState, path), OBJ(PathState, first), OBJ(PathState, modified_ts),
    OBJ(PathState, create_ts), OBJ(PathState, early_hash), OBJ(PathState, early_ts),
    OBJ(PathState, renamed_from), BOOL(PathState, read), BOOL(PathState, written),
    BOOL(PathState, deleted), {NULL}};

#define RECORD_TYPE(T, doc, ...)                                                   \
    static PyTypeObject T##Type = {                                                 \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roar.record._cmodel." #T,         \
        .tp_basicsize = sizeof(T), .tp_dealloc = T##_dealloc,                       \
        .tp_flags = Py_TPFLAGS_DEFAULT, .tp_doc = doc, .tp_members = T##_members,   \
        __VA_ARGS__};

RECORD_TYPE(OpenFile, "An open file description; shared by dup'ed and inherited fds.",
            .tp_new = OpenFile_new)
RECORD_TYPE(FdEntry, "One fd of a process.", .tp_new = FdEntry_new, .tp_getset = FdEntry_getset)
RECORD_TYPE(ProcFile, "What one process did with one path.", .tp_getset = ProcFile_getset)
RECORD_TYPE(Proc, "A process of the run.", )
RECORD_TYPE(PathState, "The run's history of one path.", )

/* -- events ---------------------------------------------------------------------- */

typedef struct {
    struct roar_event h;
    PyObject *path, *path2, *argv, *raw; /* owned; NULL is None */
} Ev;

static void ev_clear(Ev *ev)
{
    Py_CLEAR(ev->path);
    Py_CLEAR(ev->path2);
    Py_CLEAR(ev->argv);
    Py_CLEAR(ev->raw);
}

static PyObject *cstr(const char *p, Py_ssize_t n)
{
    const char *end = memchr(p, 0, (size_t)n);
    return PyUnicode_DecodeFSDefaultAndSize(p, end ? end - p : n);
}

/* data[start:start+len] clamped as a Python slice is */
static Py_ssize_t clamp(Py_ssize_t dn, Py_ssize_t start, Py_ssize_t len)
{
    if (start >= dn)
        return 0;
    return len < dn - start ? len : dn - start;
}

static int decode_raw(const char *buf, Py_ssize_t n, Ev *ev)
{
    ev->path = ev->path2 = ev->argv = ev->raw = NULL;
    if (n < (Py_ssize_t)sizeof(struct roar_event)) {
        PyErr_Format(PyExc_ValueError, "a record of %zd bytes is shorter than its header", n);
        return -1;
    }
    memcpy(&ev->h, buf, sizeof(struct roar_event));
    const char *data = buf + sizeof(struct roar_event);
    Py_ssize_t dn = n - (Py_ssize_t)sizeof(struct roar_event);
    u32 len1 = ev->h.len1, len2 = ev->h.len2;
    int t = ev->h.type;
    if (t == EV_EXEC) {
        if (len1 && !(ev->path = cstr(data, clamp(dn, 0, len1))))
            return -1;
        Py_ssize_t at = (ev->h.flags & EVF_ARGV_PACKED) ? (Py_ssize_t)len1 : ROAR_PATH_MAX;
        Py_ssize_t bn = clamp(dn, at, len2);
        const char *b = data + (at < dn ? at : dn), *e = b + bn;
        if (!(ev->argv = PyList_New(0)))
            return -1;
        const char *s = b;
        while (bn > 0) {
            const char *z = memchr(s, 0, (size_t)(e - s));
            if (!z && s == e)
                break; /* the last part is empty: dropped */
            PyObject *a = PyUnicode_DecodeFSDefaultAndSize(s, (z ? z : e) - s);
            if (!a || PyList_Append(ev->argv, a) < 0) {
                Py_XDECREF(a);
                return -1;
            }
            Py_DECREF(a);
            if (!z)
                break;
            s = z + 1;
        }
    } else if (t == EV_CONNECT || t == EV_TLS_WRITE || t == EV_TLS_READ) {
        if (!(ev->raw = PyBytes_FromStringAndSize(data, clamp(dn, 0, len1))))
            return -1;
    } else if (len1 || len2) {
        if (len1 && !(ev->path = cstr(data, clamp(dn, 0, len1))))
            return -1;
        if (len2) {
            Py_ssize_t m = clamp(dn, ROAR_PATH_MAX, len2);
            if (!(ev->path2 = cstr(m ? data + ROAR_PATH_MAX : data, m)))
                return -1;
        }
    }
    return 0;
}

static int get_u64(PyObject *o, const char *name, u64 *out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v)
        return -1;
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        long long s = PyLong_AsLongLong(v); /* a negative value: two's complement */
        if (s == -1 && PyErr_Occurred()) {
            Py_DECREF(v);
            return -1;
        }
        x = (unsigned long long)s;
    }
    Py_DECREF(v);
    *out = x;
    return 0;
}

static int get_opt(PyObject *o, const char *name, PyObject **out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v)
        return -1;
    if (v == Py_None)
        Py_CLEAR(v);
    *out = v;
    return 0;
}

/* an Event of roar.capture.events (the audit tracker and the tests feed those) */
static int decode_obj(PyObject *o, Ev *ev)
{
    u64 v[11];
    static const char *names[] = {"ts", "cgroup", "tgid", "tid", "type", "flags", "fd", "ret",
                                  "a0", "a1", "a2"};
    memset(ev, 0, sizeof(*ev));
    for (int i = 0; i < 11; i++)
        if (get_u64(o, names[i], &v[i]) < 0)
            return -1;
    ev->h.ts = v[0];
    ev->h.cgroup = v[1];
    ev->h.tgid = (u32)v[2];
    ev->h.tid = (u32)v[3];
    ev->h.type = (u16)v[4];
    ev->h.flags = (u16)v[5];
    ev->h.fd = (s32)v[6];
    ev->h.ret = (s64)v[7];
    ev->h.a0 = v[8];
    ev->h.a1 = v[9];
    ev->h.a2 = v[10];
    if (get_opt(o, "path", &ev->path) < 0 || get_opt(o, "path2", &ev->path2) < 0 ||
        get_opt(o, "argv", &ev->argv) < 0 || get_opt(o, "raw", &ev->raw) < 0) {
        ev_clear(ev);
        return -1;
    }
    return 0;
}

/* -- paths --------------------------------------------------------------------- */

/* posixpath.normpath of n bytes at p into out (room for n + 2 bytes); its length */
static Py_ssize_t normpath(const char *p, Py_ssize_t n, char *out)
{
    if (n == 0) {
        out[0] = '.';
        return 1;
    }
    int initial = p[0] == '/';
    if (initial && n > 1 && p[1] == '/' && !(n > 2 && p[2] == '/'))
        initial = 2;
    Py_ssize_t o = 0, comps = 0, dotdots = 0; /* components in out; leading ".." ones */
    for (int i = 0; i < initial; i++)
        out[o++] = '/';
    Py_ssize_t base = o, i = 0;
    while (i < n) {
        while (i < n && p[i] == '/')
            i++;
        Py_ssize_t s = i;
        while (i < n && p[i] != '/')
            i++;
        Py_ssize_t len = i - s;
        if (len == 0 || (len == 1 && p[s] == '.'))
            continue;
        if (len == 2 && p[s] == '.' && p[s + 1] == '.') {
            if ((!initial && comps == 0) || (comps > 0 && comps == dotdots)) {
                /* kept: a relative path climbing, or after other kept ".." */
            } else if (comps > 0) {
                /* pop the last component */
                Py_ssize_t k = o;
                while (k > base && out[k - 1] != '/')
                    k--;
                o = k > base ? k - 1 : base;
                comps--;
                continue;
            } else {
                continue; /* "/.." is "/" */
            }
            if (comps > 0)
                out[o++] = '/';
            out[o++] = '.';
            out[o++] = '.';
            comps++;
            dotdots++;
            continue;
        }
        if (comps > 0)
            out[o++] = '/';
        memcpy(out + o, p + s, (size_t)len);
        o += len;
        comps++;
    }
    if (o == 0)
        out[o++] = '.';
    return o;
}

/* paths._normalize(posixpath.join(base, path)); base may be NULL (path alone) */
static PyObject *join_normalize(PyObject *base, PyObject *path)
{
    Py_ssize_t bn = 0, pn;
    const char *b = NULL, *p = PyUnicode_AsUTF8AndSize(path, &pn);
    if (p && base)
        b = PyUnicode_AsUTF8AndSize(base, &bn);
    if (!p || (base && !b)) { /* not UTF-8 (surrogates): model.py's way */
        PyErr_Clear();
        PyObject *joined = base ? PyObject_CallFunctionObjArgs(py_join, base, path, NULL)
                                : Py_NewRef(path);
        PyObject *r = joined ? PyObject_CallOneArg(py_normalize, joined) : NULL;
        Py_XDECREF(joined);
        return r;
    }
    char stackbuf[2 * 4096 + 8];
    char *buf = stackbuf, *heap = NULL;
    Py_ssize_t need = bn + pn + 2;
    if (need > 4096) {
        if (!(heap = PyMem_Malloc((size_t)(2 * need + 8))))
            return PyErr_NoMemory();
        buf = heap;
    }
    const char *j;
    Py_ssize_t jn;
    PyObject *joined_obj = path; /* the joined string, when it is an object already */
    if (!base || bn == 0 || (pn && p[0] == '/')) {
        j = p;
        jn = pn;
    } else {
        memcpy(buf, b, (size_t)bn);
        jn = bn;
        if (b[bn - 1] != '/')
            buf[jn++] = '/';
        memcpy(buf + jn, p, (size_t)pn);
        jn += pn;
        j = buf;
        joined_obj = NULL;
    }
    PyObject *r;
    const char *dd = jn >= 3 ? memmem(j, (size_t)jn, "/..", 3) : NULL;
    if (dd) { /* a step up: model.py resolves the part before it (realpath) */
        PyObject *joined = joined_obj ? Py_NewRef(joined_obj)
                                      : PyUnicode_DecodeUTF8(j, jn, "surrogateescape");
        r = joined ? PyObject_CallOneArg(py_normalize, joined) : NULL;
        Py_XDECREF(joined);
    } else {
        char *out = (j == buf) ? buf + jn + 1 : buf;
        Py_ssize_t on = normpath(j, jn, out);
        if (joined_obj && on == jn && memcmp(out, j, (size_t)jn) == 0)
            r = Py_NewRef(joined_obj); /* already normal: the same string */
        else
            r = PyUnicode_DecodeUTF8(out, on, "surrogateescape");
    }
    PyMem_Free(heap);
    return r;
}

static int has_prefix(PyObject *s, const char *prefix)
{
    Py_ssize_t n = (Py_ssize_t)strlen(prefix);
    if (PyUnicode_GET_LENGTH(s) < n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyUnicode_READ_CHAR(s, i) != (Py_UCS4)(unsigned char)prefix[i])
            return 0;
    return 1;
}

/* s == p or s starts with p + "/" */
static int at_or_below(PyObject *s, PyObject *p)
{
    Py_ssize_t pn = PyUnicode_GET_LENGTH(p), sn = PyUnicode_GET_LENGTH(s);
    if (sn < pn || PyUnicode_Tailmatch(s, p, 0, pn, -1) != 1)
        return 0;
    return sn == pn || PyUnicode_READ_CHAR(s, pn) == '/';
}

static int strictly_below(PyObject *s, PyObject *p)
{
    return PyUnicode_GET_LENGTH(s) > PyUnicode_GET_LENGTH(p) && at_or_below(s, p);
}

/* new + s[len(old):] */
static PyObject *rebase(PyObject *s, PyObject *old, PyObject *new)
{
    PyObject *tail = PyUnicode_Substring(s, PyUnicode_GET_LENGTH(old), PyUnicode_GET_LENGTH(s));
    if (!tail)
        return NULL;
    PyObject *r = PyUnicode_Concat(new, tail);
    Py_DECREF(tail);
    return r;
}

/* -- the model ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *submit_hash, *procs, *live, *paths, *by_path, *new_paths, *dirs, *touched,
        *connects, *remote, *problems, *root, *lookup, *untraced_fds, *exec_closed,
        *need_dirs; /* directory -> classify.needs_hash_dir's answer */
    /* the stat cache read here (cached_job), when cache_lookup is a Hasher's
     * model_lookup: its memo, its model_reader, the read transaction's get that
     * gave and when (seconds, CLOCK_MONOTONIC); submit_hash's Hasher */
    PyObject *memo, *model_reader, *reader_get, *hasher;
    double reader_at;
    char io_uring;
    long long events;
    long long cache_hits;
} Model;

static PyTypeObject ModelType;

static int problem(Model *m, const char *what)
{
    PyObject *k = PyUnicode_FromString(what);
    if (!k)
        return -1;
    PyObject *v = PyDict_GetItemWithError(m->problems, k);
    long long n = 0;
    if (v) {
        n = PyLong_AsLongLong(v);
        if (n == -1 && PyErr_Occurred()) {
            Py_DECREF(k);
            return -1;
        }
    } else if (PyErr_Occurred()) {
        Py_DECREF(k);
        return -1;
    }
    PyObject *nv = PyLong_FromLongLong(n + 1);
    int r = nv ? PyDict_SetItem(m->problems, k, nv) : -1;
    Py_XDECREF(nv);
    Py_DECREF(k);
    return r;
}

static PyObject *u64obj(u64 x) { return PyLong_FromUnsignedLongLong(x); }

/* _new_proc: a new reference to the new Proc (also in procs and live) */
static Proc *new_proc(Model *m, long long pid, Proc *parent, PyObject *argv, PyObject *cwd,
                      PyObject *fds, u64 ts)
{
    PyObject *pidobj = PyLong_FromLongLong(pid);
    if (!pidobj)
        return NULL;
    PyObject *old = PyDict_GetItemWithError(m->live, pidobj);
    if (old) {
        Py_INCREF(old);
        if (PyDict_DelItem(m->live, pidobj) < 0)
            goto err_old;
        Proc *o = (Proc *)old;
        if (!PyObject_IsTrue(o->end_ts)) {
            PyObject *t = u64obj(ts);
            if (!t)
                goto err_old;
            Py_SETREF(o->end_ts, t);
        }
        Py_DECREF(old);
        if (problem(m, "process exit not seen before its pid was reused") < 0)
            goto err;
    } else if (PyErr_Occurred())
        goto err;
    Proc *p = PyObject_New(Proc, &ProcType);
    if (!p)
        goto err;
    p->pid = pid;
    p->key = PyUnicode_FromFormat("%lld@%llu", pid, (unsigned long long)ts);
    p->parent = Py_NewRef(parent ? parent->key : Py_None);
    p->ppid = parent ? PyLong_FromLongLong(parent->pid) : Py_NewRef(Py_None);
    p->argv = PySequence_List(argv);
    p->exe = Py_NewRef(Py_None);
    p->cwd = Py_NewRef(cwd);
    p->fds = Py_NewRef(fds);
    p->start_ts = ts;
    p->end_ts = Py_NewRef(Py_None);
    p->exit_code = Py_NewRef(Py_None);
    p->signal = Py_NewRef(Py_None);
    p->threads = 1;
    p->execs = 0;
    p->argv_incomplete = 0;
    p->files = PyDict_New();
    p->pending_exec = Py_NewRef(Py_None);
    if (!p->key || !p->ppid || !p->argv || !p->files || PyList_Append(m->procs, (PyObject *)p) < 0 ||
        PyDict_SetItem(m->live, pidobj, (PyObject *)p) < 0) {
        Py_DECREF(p);
        goto err;
    }
    Py_DECREF(pidobj);
    return p;
err_old:
    Py_DECREF(old);
err:
    Py_DECREF(pidobj);
    return NULL;
}

/* _proc: borrowed */
static Proc *get_proc(Model *m, Ev *ev)
{
    PyObject *k = PyLong_FromUnsignedLong(ev->h.tgid);
    if (!k)
        return NULL;
    PyObject *p = PyDict_GetItemWithError(m->live, k);
    Py_DECREF(k);
    if (p)
        return (Proc *)p;
    if (PyErr_Occurred())
        return NULL;
    if (problem(m, "process seen without its start") < 0)
        return NULL;
    PyObject *argv = PyList_New(0), *fds = PyDict_New();
    Proc *np = argv && fds ? new_proc(m, ev->h.tgid, NULL, argv, Py_None, fds, ev->h.ts) : NULL;
    Py_XDECREF(argv);
    Py_XDECREF(fds);
    if (!np)
        return NULL;
    Py_DECREF(np); /* live holds it */
    return np;
}

/* p.fds.get(fd): borrowed FdEntry or NULL (no error set when absent) */
static FdEntry *fd_get(Proc *p, long long fd)
{
    if (!PyDict_Check(p->fds))
        return NULL;
    PyObject *k = PyLong_FromLongLong(fd);
    if (!k)
        return NULL;
    PyObject *e = PyDict_GetItemWithError(p->fds, k);
    Py_DECREF(k);
    if (e && !PyObject_TypeCheck(e, &FdEntryType)) {
        PyErr_SetString(PyExc_TypeError, "an fd table entry is not an FdEntry");
        return NULL;
    }
    return (FdEntry *)e;
}

static int fd_put(Proc *p, long long fd, PyObject *entry)
{
    PyObject *k = PyLong_FromLongLong(fd);
    if (!k)
        return -1;
    int r = PyDict_SetItem(p->fds, k, entry);
    Py_DECREF(k);
    return r;
}

static int fd_pop(Proc *p, long long fd)
{
    PyObject *k = PyLong_FromLongLong(fd);
    if (!k)
        return -1;
    PyObject *r = PyObject_CallMethod(p->fds, "pop", "OO", k, Py_None);
    Py_DECREF(k);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *file_path(FdEntry *e) { return ((OpenFile *)e->file)->path; }

/* _resolve: new reference, or None (a new reference to it), NULL on error */
static PyObject *resolve(Model *m, Proc *p, long long dirfd, PyObject *path, unsigned flags)
{
    if (!path || (flags & EVF_FAULT)) {
        if (problem(m, "path could not be read from process memory") < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if ((flags & EVF_TRUNCATED) && problem(m, "path longer than PATH_MAX") < 0)
        return NULL;
    if (PyUnicode_GET_LENGTH(path) && PyUnicode_READ_CHAR(path, 0) == '/')
        return join_normalize(NULL, path);
    PyObject *base;
    if (dirfd == AT_FDCWD_) {
        base = p->cwd;
    } else {
        FdEntry *e = fd_get(p, dirfd);
        if (!e && PyErr_Occurred())
            return NULL;
        base = e ? file_path(e) : Py_None;
    }
    if (base == Py_None) {
        if (problem(m, "relative path with unknown base directory") < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (PyUnicode_GET_LENGTH(path) == 0)
        return Py_NewRef(base);
    return join_normalize(base, path);
}

/* _state: borrowed PathState */
static PathState *state(Model *m, PyObject *path, PyObject *first)
{
    if (PySet_Add(m->touched, path) < 0)
        return NULL;
    PyObject *s = PyDict_GetItemWithError(m->paths, path);
    if (s) {
        PathState *ps = (PathState *)s;
        if (ps->first == Py_None)
            Py_SETREF(ps->first, Py_NewRef(first));
        return ps;
    }
    if (PyErr_Occurred())
        return NULL;
    PathState *ps = PyObject_New(PathState, &PathStateType);
    if (!ps)
        return NULL;
    ps->path = Py_NewRef(path);
    ps->first = Py_NewRef(first);
    ps->read = ps->written = ps->deleted = ps->need = 0;
    ps->modified_ts = Py_NewRef(Py_None);
    ps->create_ts = Py_NewRef(Py_None);
    ps->early_hash = Py_NewRef(Py_None);
    ps->early_ts = Py_NewRef(Py_None);
    ps->renamed_from = PyList_New(0);
    if (!ps->renamed_from || PyDict_SetItem(m->paths, path, (PyObject *)ps) < 0) {
        Py_DECREF(ps);
        return NULL;
    }
    Py_DECREF(ps); /* paths holds it */
    if (PyList_Append(m->new_paths, path) < 0)
        return NULL;
    /* every directory above it */
    Py_ssize_t end = PyUnicode_GET_LENGTH(path);
    while (1) {
        Py_ssize_t slash = end > 0 ? PyUnicode_FindChar(path, '/', 0, end, -1) : -1;
        if (slash == -2)
            return NULL;
        if (slash <= 0)
            break;
        PyObject *d = PyUnicode_Substring(path, 0, slash);
        if (!d)
            return NULL;
        int has = PySet_Contains(m->dirs, d);
        if (has != 0) {
            Py_DECREF(d);
            if (has < 0)
                return NULL;
            break;
        }
        int r = PySet_Add(m->dirs, d);
        Py_DECREF(d);
        if (r < 0)
            return NULL;
        end = slash;
    }
    return ps;
}

/* _pfile: borrowed ProcFile */
static ProcFile *pfile(Model *m, Proc *p, PyObject *path)
{
    if (PySet_Add(m->touched, path) < 0)
        return NULL;
    PyObject *pf = PyDict_GetItemWithError(p->files, path);
    if (pf)
        return (ProcFile *)pf;
    if (PyErr_Occurred())
        return NULL;
    ProcFile *f = PyObject_New(ProcFile, &ProcFileType);
    if (!f)
        return NULL;
    f->path = Py_NewRef(path);
    f->read = f->written = f->mapped = 0;
    f->bytes_exact = 1;
    f->bytes_read = f->bytes_written = f->read_calls = f->write_calls = 0;
    if (PyDict_SetItem(p->files, path, (PyObject *)f) < 0) {
        Py_DECREF(f);
        return NULL;
    }
    Py_DECREF(f);
    PyObject *lst = PyDict_GetItemWithError(m->by_path, path);
    if (!lst) {
        if (PyErr_Occurred() || !(lst = PyList_New(0)))
            return NULL;
        int r = PyDict_SetItem(m->by_path, path, lst);
        Py_DECREF(lst);
        if (r < 0)
            return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, (PyObject *)p, (PyObject *)f);
    if (!pair)
        return NULL;
    int r = PyList_Append(lst, pair);
    Py_DECREF(pair);
    return r < 0 ? NULL : f;
}

static int set_ts(PyObject **slot, u64 ts)
{
    PyObject *t = u64obj(ts);
    if (!t)
        return -1;
    Py_SETREF(*slot, t);
    return 0;
}

static PathState *modified(Model *m, PyObject *path, u64 ts)
{
    PathState *s = state(m, path, S_write);
    if (s && s->modified_ts == Py_None && set_ts(&s->modified_ts, ts) < 0)
        return NULL;
    return s;
}

static int is_read(PyObject *first)
{
    return first == S_read ||
           (PyUnicode_Check(first) && PyUnicode_CompareWithASCIIString(first, "read") == 0);
}

/* HashResult and HashJob made here as their __init__ makes them (every slot set,
 * no __init__ run) when their slots are the ones named below and nothing else
 * (checked at import: slots_at), else by calling the class. */
static PyObject *attr(const char *module, const char *name);

static const char *HR_SLOTS[] = {"status", "hash", "size", "started_ns", "finished_ns",
                                 "ctime_ns", "born_ns", "cached", "error"};
static const char *HJ_SLOTS[] = {"path", "birth", "value", "hasher", "claimed"};
#define N_HR 9
#define N_HJ 5
static Py_ssize_t HR_AT[N_HR], HJ_AT[N_HJ];
static int hr_direct, hj_direct;

/* 1: the type's instances are its __slots__ `names` (in that order) and nothing
 * else, each a plain object slot: their offsets are in at[]; 0: not so */
static int slots_at(PyObject *type, const char **names, int n, Py_ssize_t *at)
{
    PyTypeObject *t = (PyTypeObject *)type;
    if (!PyType_Check(type) || t->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) +
                                                               n * sizeof(PyObject *)) ||
        t->tp_itemsize != 0 || t->tp_dictoffset != 0 || t->tp_weaklistoffset != 0)
        return 0;
    PyObject *slots = PyObject_GetAttrString(type, "__slots__");
    int ok = slots && PyTuple_Check(slots) && PyTuple_GET_SIZE(slots) == n;
    for (int i = 0; ok && i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(slots, i);
        PyObject *d = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, names[i]) == 0
                          ? PyObject_GetAttr(type, name) : NULL;
        ok = d && Py_TYPE(d) == &PyMemberDescr_Type &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
             !(((PyMemberDescrObject *)d)->d_member->flags & READONLY);
        if (ok)
            at[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_XDECREF(d);
    }
    Py_XDECREF(slots);
    PyErr_Clear();
    return ok;
}

/* an instance of type with its slots (at[]) set to vals; or type(*vals) when
 * direct is 0 (nargs: the positional arguments of that call) */
static PyObject *new_slotted(PyObject *type, int direct, Py_ssize_t *at, PyObject **vals, int n,
                             Py_ssize_t nargs)
{
    if (!direct)
        return PyObject_Vectorcall(type, vals, nargs, NULL);
    PyObject *o = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0);
    if (!o)
        return NULL;
    for (int i = 0; i < n; i++)
        *(PyObject **)((char *)o + at[i]) = Py_NewRef(vals[i]);
    return o;
}

/* Objects made here that hold only strs, ints, bytes, None and each other (a
 * finished job's result, the containers of a settled input's records) and live to
 * the end of the run cannot be in a cycle: the cyclic collector is spared walking
 * them at each collection until the consumer's next gc.freeze (the collector's
 * time was ~2.4 µs per input in the replay of cat over 20,000 files). Untracked,
 * an object is still freed by its count; were it ever made part of a cycle, that
 * cycle would only outlive the run's end, as everything here does anyway. */
static void untrack(PyObject *o)
{
    if (o && PyObject_IS_GC(o))
        PyObject_GC_UnTrack(o); /* a no-op when not tracked */
}

/* The hash the stat cache holds for key: a new reference to a str, Py_None when
 * it holds none, NULL with no error: ask m->lookup (the Hasher's model_lookup,
 * the reference, which also takes a damaged store out of use), NULL with an
 * error: an error. hasher.model_lookup's work without its Python frame: the
 * memo, then one read transaction (hasher.model_reader) kept READER_S. */
#define READER_S 0.05
static PyObject *stat_cache_get(Model *m, PyObject *key)
{
    if (!m->memo)
        return NULL;
    PyObject *h = PyDict_GetItemWithError(m->memo, key);
    if (h)
        return Py_NewRef(h);
    if (PyErr_Occurred())
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = ts.tv_sec + ts.tv_nsec * 1e-9;
    if (!m->reader_get || now - m->reader_at > READER_S) {
        Py_CLEAR(m->reader_get);
        PyObject *get = PyObject_CallNoArgs(m->model_reader);
        if (!get) {
            PyErr_Clear();
            return NULL;
        }
        if (get == Py_None) { /* no store to read: the reference says what that means */
            Py_DECREF(get);
            return NULL;
        }
        m->reader_get = get;
        m->reader_at = now;
    }
    PyObject *raw = PyObject_CallOneArg(m->reader_get, key);
    if (!raw || (raw != Py_None && !PyBytes_CheckExact(raw))) {
        Py_XDECREF(raw);
        PyErr_Clear();
        Py_CLEAR(m->reader_get); /* the reference tries again, and says what failed */
        return NULL;
    }
    if (raw == Py_None)
        return raw;
    h = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL);
    Py_DECREF(raw);
    if (!h)
        PyErr_Clear(); /* as the reference's bytes(raw).decode() would raise: ask it */
    return h;
}

/* The stat-cache lookup of a hash job, in this thread: a regular file whose
 * (dev, ino, size, mtime, ctime) was hashed before gets its finished job now
 * (as hasher.hash_path's cached answer), without a trip through the hashing
 * threads. NULL with no error: not known (the threads hash it). */
static PyObject *cached_job(Model *m, PyObject *path)
{
    if (m->lookup == Py_None)
        return NULL;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(path, &n);
    if (!p || n >= 4000) {
        PyErr_Clear();
        return NULL;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    unsigned char key[40];
    uint64_t f[5] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
                     (uint64_t)((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec),
                     (uint64_t)((int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec)};
    for (int i = 0; i < 5; i++) /* struct.pack(">QQQqq") */
        for (int b = 0; b < 8; b++)
            key[i * 8 + b] = (unsigned char)(f[i] >> (56 - 8 * b));
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, 40);
    if (!k)
        return NULL;
    PyObject *known = stat_cache_get(m, k);
    if (!known && PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    if (!known)
        known = PyObject_CallOneArg(m->lookup, k);
    Py_DECREF(k);
    if (!known || !PyObject_IsTrue(known)) {
        Py_XDECREF(known);
        return NULL; /* an error in the lookup: the threads try again, and say so */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* HashResult(OK, known, size, started, finished, ctime, None, cached=True) */
    PyObject *res = NULL, *job = NULL, *hasher = NULL;
    PyObject *num[4] = {PyLong_FromLongLong((long long)st.st_size),
                        PyLong_FromLongLong((long long)t0.tv_sec * 1000000000 + t0.tv_nsec),
                        PyLong_FromLongLong((long long)t1.tv_sec * 1000000000 + t1.tv_nsec),
                        PyLong_FromLongLong((long long)f[4])};
    if (num[0] && num[1] && num[2] && num[3]) {
        PyObject *argv[N_HR] = {S_ok, known, num[0], num[1], num[2], num[3], Py_None, Py_True,
                                Py_None};
        res = new_slotted(py_hash_result, hr_direct, HR_AT, argv, N_HR, 8);
        if (hr_direct) /* its slots: strs, ints, True, None */
            untrack(res);
    }
    for (int i = 0; i < 4; i++)
        Py_XDECREF(num[i]);
    Py_DECREF(known);
    if (!res)
        return NULL;
    hasher = m->hasher ? Py_NewRef(m->hasher) : PyObject_GetAttr(m->submit_hash, S___self__);
    if (hasher) { /* HashJob(path, hasher), its value the result */
        if (hj_direct) {
            PyObject *argv[N_HJ] = {path, Py_False, res, hasher, Py_False};
            job = new_slotted(py_hash_job, 1, HJ_AT, argv, N_HJ, 0);
        } else {
            PyObject *argv[2] = {path, hasher};
            job = PyObject_Vectorcall(py_hash_job, argv, 2, NULL);
            if (job && PyObject_SetAttr(job, S_value, res) < 0)
                Py_CLEAR(job);
        }
        Py_DECREF(hasher);
    }
    Py_DECREF(res);
    if (!job)
        PyErr_Clear();
    else
        m->cache_hits++;
    return job;
}

/* classify.needs_hash(path) from the answer for its directory, asked once per
 * directory (classify.needs_hash_dir: True or False for every name in it, a
 * pattern: True unless the name fully matches it, None: ask needs_hash).
 * 1, 0: the answer; 2: ask needs_hash; -1: an error. */
static int need_by_dir(Model *m, PyObject *path)
{
    if (!PyUnicode_CheckExact(path))
        return 2;
    Py_ssize_t n = PyUnicode_GET_LENGTH(path);
    Py_ssize_t i = PyUnicode_FindChar(path, '/', 0, n, -1);
    if (i < 0)
        return i == -1 ? 2 : -1;
    PyObject *d = PyUnicode_Substring(path, 0, i + 1);
    if (!d)
        return -1;
    PyObject *v = PyDict_GetItemWithError(m->need_dirs, d);
    if (v) {
        Py_INCREF(v);
    } else if (!PyErr_Occurred()) {
        if (PyDict_GET_SIZE(m->need_dirs) >= 65536) /* as classify's DIRS_KEPT */
            PyDict_Clear(m->need_dirs);
        v = PyObject_CallOneArg(py_needs_hash_dir, d);
        if (v && PyDict_SetItem(m->need_dirs, d, v) < 0)
            Py_CLEAR(v);
    }
    Py_DECREF(d);
    if (!v)
        return -1;
    int r;
    if (v == Py_None) {
        r = 2;
    } else if (PyBool_Check(v)) {
        r = v == Py_True;
    } else if ((r = name_may_match(v, path, i + 1, n)) == 1) { /* a rule by name may match */
        PyObject *name = PyUnicode_Substring(path, i + 1, n);
        PyObject *match = name ? PyObject_CallMethodOneArg(v, S_fullmatch, name) : NULL;
        r = match ? match == Py_None : -1;
        Py_XDECREF(name);
        Py_XDECREF(match);
    } else if (r == 0) { /* no rule by name matches it */
        r = 1;
    }
    Py_DECREF(v);
    return r;
}

static int hash_early(Model *m, PathState *s, u64 ts, int created)
{
    if (s->early_hash != Py_None || s->modified_ts != Py_None || !is_read(s->first) ||
        m->submit_hash == Py_None)
        return 0;
    if (!s->need) {
        int yes = need_by_dir(m, s->path);
        if (yes == 2) {
            PyObject *need = PyObject_CallOneArg(py_needs_hash, s->path);
            if (!need)
                return -1;
            yes = PyObject_IsTrue(need);
            Py_DECREF(need);
        }
        if (yes < 0)
            return -1;
        s->need = yes ? 1 : 2;
    }
    if (s->need != 1)
        return 0;
    PyObject *job = created ? NULL : cached_job(m, s->path);
    if (!job) {
        if (PyErr_Occurred())
            return -1;
        job = created ? PyObject_CallFunctionObjArgs(m->submit_hash, s->path, Py_True, NULL)
                      : PyObject_CallOneArg(m->submit_hash, s->path);
        if (!job)
            return -1;
    }
    Py_SETREF(s->early_hash, job);
    return set_ts(&s->early_ts, ts);
}

/* -- handlers ----------------------------------------------------------------- */

/* model._fd_alias: a new reference to the path behind /dev/fd/N & co, or None */
static PyObject *fd_alias(Model *m, Proc *p, PyObject *path)
{
    PyObject *mt = PyObject_CallMethodOneArg(py_fd_alias, S_match, path);
    if (!mt || mt == Py_None)
        return mt;
    PyObject *std = PyObject_CallMethodOneArg(mt, S_group, S_std);
    PyObject *who = std ? PyObject_CallMethodOneArg(mt, S_group, S_pid) : NULL;
    PyObject *fd = who ? PyObject_CallMethodOneArg(mt, S_group, S_fd) : NULL;
    PyObject *r = NULL;
    if (fd == Py_None) {
        Py_DECREF(fd);
        fd = PyObject_CallMethodOneArg(mt, S_group, S_fd2);
    }
    if (!fd)
        goto out;
    Proc *owner = p;
    if (who != Py_None && PyUnicode_Compare(who, S_self) != 0 &&
        PyUnicode_Compare(who, S_thread_self) != 0) {
        PyObject *pid = PyLong_FromUnicodeObject(who, 10);
        if (!pid)
            goto out;
        owner = (Proc *)PyDict_GetItemWithError(m->live, pid);
        Py_DECREF(pid);
        if (!owner) {
            if (!PyErr_Occurred())
                r = Py_NewRef(Py_None);
            goto out;
        }
    }
    long long num;
    if (std != Py_None) {
        num = PyUnicode_Compare(std, S_stdin) == 0 ? 0 : PyUnicode_Compare(std, S_stdout) == 0 ? 1 : 2;
    } else {
        PyObject *n = PyLong_FromUnicodeObject(fd, 10);
        if (!n)
            goto out;
        num = PyLong_AsLongLong(n);
        Py_DECREF(n);
        if (num == -1 && PyErr_Occurred())
            goto out;
    }
    FdEntry *e = fd_get(owner, num);
    if (!e) {
        if (!PyErr_Occurred())
            r = Py_NewRef(Py_None);
        goto out;
    }
    OpenFile *f = (OpenFile *)e->file;
    r = Py_NewRef(f->tmpfile_dir != Py_None ? Py_None : f->path);
out:
    Py_DECREF(mt);
    Py_XDECREF(std);
    Py_XDECREF(who);
    Py_XDECREF(fd);
    return r;
}

static int on_open(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = resolve(m, p, ev->h.ret, ev->path, ev->h.flags);
    if (!path)
        return -1;
    unsigned long long flags = ev->h.a0;
    int rc = -1;
    if (path != Py_None && (has_prefix(path, "/dev/") || has_prefix(path, "/proc/"))) {
        PyObject *alias = fd_alias(m, p, path);
        if (!alias)
            goto out;
        if (alias != Py_None && PyObject_IsTrue(alias))
            Py_SETREF(path, alias);
        else
            Py_DECREF(alias);
    }
    int cloexec = (flags & O_CLOEXEC_) != 0;
    PyObject *file = (flags & O_TMPFILE_) ? new_openfile(Py_None, flags, path)
                                          : new_openfile(path, flags, Py_None);
    PyObject *entry = file ? new_fdentry(file, cloexec) : NULL;
    Py_XDECREF(file);
    if (!entry)
        goto out;
    int r = fd_put(p, ev->h.fd, entry);
    Py_DECREF(entry);
    if (r < 0)
        goto out;
    if ((flags & O_TMPFILE_) || path == Py_None || (flags & (O_PATH_ | O_DIRECTORY_))) {
        rc = 0;
        goto out;
    }
    int is_new = PyDict_Contains(m->paths, path);
    if (is_new < 0)
        goto out;
    is_new = !is_new;
    unsigned long long acc = flags & O_ACCMODE_;
    PathState *s;
    if ((acc == O_WRONLY_ || acc == O_RDWR_) && (flags & O_TRUNC_)) {
        if (!(s = modified(m, path, ev->h.ts)))
            goto out;
        s->written = 1;
        s->deleted = 0;
        ProcFile *pf = pfile(m, p, path);
        if (!pf)
            goto out;
        pf->written = 1;
    } else if (acc != O_WRONLY_) {
        if (!(s = state(m, path, S_read)))
            goto out;
        if (!s->deleted && hash_early(m, s, ev->h.ts, (flags & O_CREAT_) != 0) < 0)
            goto out;
    } else {
        if (!(s = state(m, path, Py_None)))
            goto out;
    }
    if ((flags & O_CREAT_) && s->create_ts == Py_None && is_new &&
        set_ts(&s->create_ts, ev->h.ts) < 0)
        goto out;
    if (flags & O_CREAT_)
        s->deleted = 0;
    rc = 0;
out:
    Py_DECREF(path);
    return rc;
}

/* _fd_path: borrowed path or Py_None; NULL on error */
static PyObject *fd_path(Proc *p, long long fd)
{
    FdEntry *e = fd_get(p, fd);
    if (!e)
        return PyErr_Occurred() ? NULL : Py_None;
    return file_path(e);
}

/* _untraced: I/O (bits: the kernel's access bits) on an fd the run never saw
 * opened: lost if the kernel says it names a regular file with a name */
static int untraced(Model *m, Proc *p, long long fd, u64 bits)
{
    if (!(bits & FD_NAMED))
        return 0;
    PyObject *k = PyLong_FromLongLong(fd);
    if (!k)
        return -1;
    int has = PyDict_Check(p->fds) ? PyDict_Contains(p->fds, k) : PySequence_Contains(p->fds, k);
    int rc = has < 0 ? -1 : 0;
    if (has == 0) {
        PyObject *t = PyTuple_Pack(2, p->key, k);
        int closed = t ? PySet_Contains(m->exec_closed, t) : -1;  /* closed by an exec */
        rc = closed < 0 ? -1 : closed ? 0 : PySet_Add(m->untraced_fds, t);
        Py_XDECREF(t);
    }
    Py_DECREF(k);
    return rc;
}

static int on_read(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = fd_path(p, ev->h.fd);
    if (!path)
        return -1;
    if (path == Py_None)
        return untraced(m, p, ev->h.fd, ev->h.a0);
    Py_INCREF(path);
    int rc = -1;
    ProcFile *pf = pfile(m, p, path);
    if (!pf)
        goto out;
    pf->read = 1;
    PathState *s = state(m, path, S_read);
    if (!s)
        goto out;
    s->read = 1;
    rc = hash_early(m, s, ev->h.ts, 0);
out:
    Py_DECREF(path);
    return rc;
}

static int wrote(Model *m, Proc *p, PyObject *path, u64 ts, int undelete)
{
    Py_INCREF(path);
    int rc = -1;
    ProcFile *pf = pfile(m, p, path);
    if (!pf)
        goto out;
    pf->written = 1;
    PathState *s = modified(m, path, ts);
    if (!s)
        goto out;
    s->written = 1;
    if (undelete)
        s->deleted = 0;
    rc = 0;
out:
    Py_DECREF(path);
    return rc;
}

static int on_write(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    FdEntry *e = fd_get(p, ev->h.fd);
    if (!e && PyErr_Occurred())
        return -1;
    if (e && ((OpenFile *)e->file)->tmpfile_dir != Py_None) {
        ((OpenFile *)e->file)->tmpfile_written = 1;
        return 0;
    }
    if (!e || file_path(e) == Py_None)
        return untraced(m, p, ev->h.fd, ev->h.a0);
    return wrote(m, p, file_path(e), ev->h.ts, 1);
}

/* path mapped with the access bits `bits` (FD_MAP_READ, FD_MAP_WRITE) */
static int mapped(Model *m, Proc *p, PyObject *path, u64 bits, Ev *ev)
{
    Py_INCREF(path);
    int rc = -1;
    ProcFile *pf = pfile(m, p, path);
    if (!pf)
        goto out;
    pf->mapped = 1;
    if (bits & FD_MAP_READ) {
        pf->read = 1;
        PathState *s = state(m, path, S_read);
        if (!s)
            goto out;
        s->read = 1;
        if (hash_early(m, s, ev->h.ts, 0) < 0)
            goto out;
    }
    if (bits & FD_MAP_WRITE) {
        pf->written = 1;
        PathState *s = modified(m, path, ev->h.ts);
        if (!s)
            goto out;
        s->written = 1;
    }
    rc = 0;
out:
    Py_DECREF(path);
    return rc;
}

static int on_mmap(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = fd_path(p, ev->h.fd);
    if (!path)
        return -1;
    if (path == Py_None)
        return untraced(m, p, ev->h.fd, ev->h.a0);
    return mapped(m, p, path, ev->h.a0, ev);
}

/* An fd's summary: at its close, or flushed by an exec (EVF_EXEC_FLUSH: the
 * fd stays, unless the exec's result closes it as close-on-exec) */
static int on_close(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    int keep = (ev->h.flags & EVF_EXEC_FLUSH) != 0;
    FdEntry *e = fd_get(p, ev->h.fd);
    if (!e && PyErr_Occurred())
        return -1;
    if (!e || file_path(e) == Py_None) {
        if (untraced(m, p, ev->h.fd, (u64)ev->h.ret) < 0)
            return -1;
        return keep ? 0 : fd_pop(p, ev->h.fd);
    }
    Py_INCREF(e);
    int rc = -1;
    if ((ev->h.ret & FD_READ) && on_read(m, ev) < 0)
        goto out;
    /* read-only mappings of fds < FLUSH_MAX come only here */
    if ((ev->h.ret & FD_MAP_READ) && mapped(m, p, file_path(e), FD_MAP_READ, ev) < 0)
        goto out;
    if (!keep) {
        PyObject *k = PyLong_FromLong(ev->h.fd);
        if (!k)
            goto out;
        int r = PyDict_DelItem(p->fds, k);
        Py_DECREF(k);
        if (r < 0)
            goto out;
    }
    if (ev->h.a0 || ev->h.a1 || ev->h.a2) {
        ProcFile *pf = pfile(m, p, file_path(e));
        if (!pf)
            goto out;
        pf->bytes_read += ev->h.a0;
        pf->bytes_written += ev->h.a1;
        pf->read_calls += ev->h.a2 >> 32;
        pf->write_calls += ev->h.a2 & 0xFFFFFFFFu;
        if (ev->h.flags & EVF_BYTES_UNKNOWN)
            pf->bytes_exact = 0;
    }
    rc = 0;
out:
    Py_DECREF(e);
    return rc;
}

static int on_close_range(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    long long first = (u32)ev->h.fd, last = (u32)ev->h.a0;
    PyObject *keys = PyDict_Keys(p->fds);
    if (!keys)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys) && rc == 0; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        long long fd = PyLong_AsLongLong(k);
        if (fd == -1 && PyErr_Occurred()) {
            rc = -1;
            break;
        }
        if (fd < first || fd > last)
            continue;
        if (ev->h.a1 & CLOSE_RANGE_CLOEXEC) {
            PyObject *e = PyDict_GetItemWithError(p->fds, k);
            if (e)
                ((FdEntry *)e)->cloexec = 1;
            else
                rc = -1;
        } else {
            rc = PyDict_DelItem(p->fds, k);
        }
    }
    Py_DECREF(keys);
    return rc;
}

static int on_dup(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    FdEntry *old = fd_get(p, ev->h.fd);
    if (!old && PyErr_Occurred())
        return -1;
    long long new = ev->h.ret;
    if (!old)
        return fd_pop(p, new);
    if (new == ev->h.fd)
        return 0;
    PyObject *e = new_fdentry(old->file, ev->h.a0 != 0);
    if (!e)
        return -1;
    int r = fd_put(p, new, e);
    Py_DECREF(e);
    return r;
}

static int on_fdflags(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    FdEntry *e = fd_get(p, ev->h.fd);
    if (!e)
        return PyErr_Occurred() ? -1 : 0;
    e->cloexec = ev->h.a0 != 0;
    return 0;
}

/* {fd: FdEntry(e.file, e.cloexec)} (keep_cloexec) or the entries without
 * close-on-exec, all cleared */
/* Does the exec (its EV_EXEC_RET ev) close fd, whose entry is e? The
 * kernel's word where it gave it (EVF_FDS_OPEN), else e's close-on-exec flag. */
static int exec_closes(const Ev *ev, PyObject *fd, FdEntry *e)
{
    if (ev->h.flags & EVF_FDS_OPEN) {
        long n = PyLong_AsLong(fd);
        if (n == -1 && PyErr_Occurred())
            return -1;
        if (n >= 0 && n < EXEC_FDS_KNOWN) {
            u64 w = n < 64 ? ev->h.a0 : n < 128 ? ev->h.a1 : ev->h.a2;
            return !((w >> (n % 64)) & 1);
        }
    }
    return e->cloexec;
}

/* A copy of an fd table: for a fork (exec NULL) with the close-on-exec flags,
 * for an exec (its EV_EXEC_RET) of the fds it leaves open, without them. */
static PyObject *copy_fds(PyObject *fds, const Ev *exec)
{
    PyObject *out = PyDict_New(), *k, *v;
    Py_ssize_t pos = 0;
    if (!out)
        return NULL;
    while (PyDict_Next(fds, &pos, &k, &v)) {
        if (!PyObject_TypeCheck(v, &FdEntryType)) {
            PyErr_SetString(PyExc_TypeError, "an fd table entry is not an FdEntry");
            goto err;
        }
        FdEntry *e = (FdEntry *)v;
        if (exec) {
            int closed = exec_closes(exec, k, e);
            if (closed < 0)
                goto err;
            if (closed)
                continue;
        }
        PyObject *n = new_fdentry(e->file, exec ? 0 : e->cloexec);
        if (!n || PyDict_SetItem(out, k, n) < 0) {
            Py_XDECREF(n);
            goto err;
        }
        Py_DECREF(n);
    }
    return out;
err:
    Py_DECREF(out);
    return NULL;
}

static int on_fork(Model *m, Ev *ev)
{
    Proc *parent = get_proc(m, ev);
    if (!parent)
        return -1;
    if (ev->h.a0) {
        parent->threads++;
        return 0;
    }
    PyObject *fds = (ev->h.a1 & CLONE_FILES_) ? Py_NewRef(parent->fds) : copy_fds(parent->fds, NULL);
    if (!fds)
        return -1;
    Py_INCREF(parent);
    Proc *child = new_proc(m, ev->h.ret, parent, parent->argv, parent->cwd, fds, ev->h.ts);
    Py_DECREF(fds);
    if (child) {
        Py_SETREF(child->exe, Py_NewRef(parent->exe));
        Py_DECREF(child);
    }
    Py_DECREF(parent);
    return child ? 0 : -1;
}

static int on_exec(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *exe = resolve(m, p, ev->h.fd, ev->path, ev->h.flags & ~EVF_TRUNCATED);
    if (!exe)
        return -1;
    PyObject *argv = ev->argv && PyObject_IsTrue(ev->argv) ? Py_NewRef(ev->argv) : PyList_New(0);
    PyObject *t = argv ? Py_BuildValue("(NNi)", exe, argv, (int)ev->h.flags) : NULL;
    if (!argv)
        Py_DECREF(exe);
    if (!t)
        return -1;
    Py_SETREF(p->pending_exec, t);
    return 0;
}

static int on_exec_ret(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *pending = p->pending_exec;
    p->pending_exec = Py_NewRef(Py_None);
    int rc = 0;
    if (ev->h.ret != 0 || pending == Py_None)
        goto out;
    rc = -1;
    if (!PyTuple_Check(pending) || PyTuple_GET_SIZE(pending) != 3) {
        PyErr_SetString(PyExc_TypeError, "pending_exec is not (exe, argv, flags)");
        goto out;
    }
    Py_SETREF(p->exe, Py_NewRef(PyTuple_GET_ITEM(pending, 0)));
    Py_SETREF(p->argv, Py_NewRef(PyTuple_GET_ITEM(pending, 1)));
    long fl = PyLong_AsLong(PyTuple_GET_ITEM(pending, 2));
    if (fl == -1 && PyErr_Occurred())
        goto out;
    p->argv_incomplete = (fl & (EVF_TRUNCATED | EVF_FAULT)) != 0;
    p->execs++;
    {   /* the close-on-exec fds the exec closes, kept as (process key, fd) */
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Check(p->fds) && PyDict_Next(p->fds, &pos, &k, &v)) {
            if (!PyObject_TypeCheck(v, &FdEntryType))
                continue;
            int closed = exec_closes(ev, k, (FdEntry *)v);
            if (closed < 0)
                goto out;
            if (!closed)
                continue;
            PyObject *t = PyTuple_Pack(2, p->key, k);
            if (!t || PySet_Add(m->exec_closed, t) < 0) {
                Py_XDECREF(t);
                goto out;
            }
            Py_DECREF(t);
        }
    }
    PyObject *fds = copy_fds(p->fds, ev);
    if (!fds)
        goto out;
    Py_SETREF(p->fds, fds);
    rc = 0;
out:
    Py_DECREF(pending);
    return rc;
}

static int on_exit_ev(Model *m, Ev *ev)
{
    PyObject *k = PyLong_FromUnsignedLong(ev->h.tgid);
    if (!k)
        return -1;
    PyObject *po = PyDict_GetItemWithError(m->live, k);
    if (!po) {
        Py_DECREF(k);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(po);
    int rc = PyDict_DelItem(m->live, k);
    Py_DECREF(k);
    Proc *p = (Proc *)po;
    if (rc == 0)
        rc = set_ts(&p->end_ts, ev->h.ts);
    if (rc == 0) {
        unsigned fl = ev->h.flags;
        if ((fl & EVF_SIGNALED) && !(fl & EVF_EXITED))
            rc = set_ts(&p->signal, ev->h.a1);
        else if (fl & EVF_EXITED)
            rc = set_ts(&p->exit_code, ev->h.a0);
    }
    if (rc == 0 && p->fds != Py_None) {
        PyObject *d = PyDict_New();
        if (d)
            Py_SETREF(p->fds, d);
        else
            rc = -1;
    }
    Py_DECREF(po);
    return rc;
}

static int on_reap(Model *m, Ev *ev)
{
    long long pid = ev->h.ret;
    u64 st = ev->h.a0;
    for (Py_ssize_t i = PyList_GET_SIZE(m->procs) - 1; i >= 0; i--) {
        Proc *c = (Proc *)PyList_GET_ITEM(m->procs, i);
        if (c->pid != pid)
            continue;
        if (st > INT32_MAX) { /* as os.WIFSIGNALED says */
            PyErr_SetString(PyExc_OverflowError, "signed integer is greater than maximum");
            return -1;
        }
        int status = (int)st;
        if (WIFSIGNALED(status)) {
            if (set_ts(&c->signal, (u64)WTERMSIG(status)) < 0)
                return -1;
            Py_SETREF(c->exit_code, Py_NewRef(Py_None));
        } else if (WIFEXITED(status)) {
            if (set_ts(&c->exit_code, (u64)WEXITSTATUS(status)) < 0)
                return -1;
            Py_SETREF(c->signal, Py_NewRef(Py_None));
        }
        return 0;
    }
    return 0;
}

/* _at_or_below: a new list */
static PyObject *list_at_or_below(Model *m, PyObject *path)
{
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    int has = PyDict_Contains(m->paths, path);
    if (has < 0 || (has && PyList_Append(out, path) < 0))
        goto err;
    int isdir = PySet_Contains(m->dirs, path);
    if (isdir < 0)
        goto err;
    if (isdir) {
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(m->paths, &pos, &k, &v))
            if (strictly_below(k, path) && PyList_Append(out, k) < 0)
                goto err;
    }
    return out;
err:
    Py_DECREF(out);
    return NULL;
}

/* model.py's _moved_to: the state of a rename's destination; a new name holding
 * content the run did not write is no write of the run (read later: an input) */
static PathState *moved_to(Model *m, PyObject *dest, int ours, PyObject *replaced, u64 ts)
{
    int known = ours ? 1 : PySequence_Contains(replaced, dest);
    if (known < 0)
        return NULL;
    return known ? modified(m, dest, ts) : state(m, dest, Py_None);
}

static int move(Model *m, PyObject *old, PyObject *new, u64 ts)
{
    PyObject *gone = list_at_or_below(m, new), *moved = NULL;
    int rc = -1;
    if (!gone)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(gone); i++) {
        PyObject *path = PyList_GET_ITEM(gone, i);
        if (PySet_Add(m->touched, path) < 0)
            goto out;
        PathState *g = (PathState *)PyDict_GetItemWithError(m->paths, path);
        if (!g)
            goto out;
        if (g->modified_ts == Py_None && set_ts(&g->modified_ts, ts) < 0)
            goto out;
        g->deleted = 1;
    }
    if (!(moved = list_at_or_below(m, old)))
        goto out;
    int ours = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(moved) && !ours; i++) {
        PathState *src = (PathState *)PyDict_GetItemWithError(m->paths,
                                                              PyList_GET_ITEM(moved, i));
        if (!src)
            goto out;
        ours = src->written;
    }
    PathState *d = moved_to(m, new, ours, gone, ts);
    if (!d)
        goto out;
    d->deleted = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(moved); i++) {
        PyObject *path = PyList_GET_ITEM(moved, i);
        if (PySet_Add(m->touched, path) < 0)
            goto out;
        PathState *src = (PathState *)PyDict_GetItemWithError(m->paths, path);
        if (!src)
            goto out;
        Py_INCREF(src);
        PyObject *dest = rebase(path, old, new);
        PathState *dd = dest ? moved_to(m, dest, src->written, gone, ts) : NULL;
        Py_XDECREF(dest);
        int ok = dd != NULL;
        if (ok && src->written) {
            dd->written = 1;
            src->written = 0;
            /* [path, *src.renamed_from], taken before dd's list grows (dd may be src) */
            PyObject *names = PySequence_List(src->renamed_from);
            ok = names && PyList_Insert(names, 0, path) == 0;
            PyObject *ext = ok ? PyObject_CallMethod(dd->renamed_from, "extend", "O", names)
                               : NULL;
            ok = ext != NULL;
            Py_XDECREF(ext);
            Py_XDECREF(names);
        }
        if (ok) {
            dd->deleted = 0;
            src->deleted = 1;
            if (src->modified_ts == Py_None)
                ok = set_ts(&src->modified_ts, ts) == 0;
        }
        Py_DECREF(src);
        if (!ok)
            goto out;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(m->live, &pos, &k, &v)) {
        Proc *proc = (Proc *)v;
        if (PyDict_Check(proc->fds)) {
            PyObject *fk, *fv;
            Py_ssize_t fpos = 0;
            while (PyDict_Next(proc->fds, &fpos, &fk, &fv)) {
                OpenFile *f = (OpenFile *)((FdEntry *)fv)->file;
                if (PyUnicode_Check(f->path) && PyUnicode_GET_LENGTH(f->path) &&
                    at_or_below(f->path, old)) {
                    PyObject *np = rebase(f->path, old, new);
                    if (!np)
                        goto out;
                    Py_SETREF(f->path, np);
                }
            }
        }
        if (PyUnicode_Check(proc->cwd) && PyUnicode_GET_LENGTH(proc->cwd) &&
            at_or_below(proc->cwd, old)) {
            PyObject *np = rebase(proc->cwd, old, new);
            if (!np)
                goto out;
            Py_SETREF(proc->cwd, np);
        }
    }
    rc = 0;
out:
    Py_DECREF(gone);
    Py_XDECREF(moved);
    return rc;
}

/* the second dirfd of a rename or link: an int to the kernel, whatever the upper
 * half of its register held (coreutils' mv and ln pass AT_FDCWD zero-extended) */
static long long signed_fd(u64 a0) { return (long long)(s32)(u32)a0; }

static int on_rename(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *old = resolve(m, p, ev->h.fd, ev->path, ev->h.flags);
    if (!old)
        return -1;
    PyObject *new = resolve(m, p, signed_fd(ev->h.a0), ev->path2, ev->h.flags);
    int rc = new ? 0 : -1;
    if (new && old != Py_None && new != Py_None)
        rc = move(m, old, new, ev->h.ts);
    Py_DECREF(old);
    Py_XDECREF(new);
    return rc;
}

/* _tmpfile_source: borrowed OpenFile or NULL (error set or not) */
static OpenFile *tmpfile_source(Model *m, Proc *p, Ev *ev)
{
    FdEntry *e = NULL;
    int empty = !ev->path || PyUnicode_GET_LENGTH(ev->path) == 0;
    if (empty && (ev->h.a1 & AT_EMPTY_PATH_)) {
        e = fd_get(p, ev->h.fd);
    } else if (!empty) {
        PyObject *mt = PyObject_CallMethodOneArg(py_fd_alias, S_match, ev->path);
        if (!mt)
            return NULL;
        if (mt != Py_None) {
            PyObject *fd2 = PyObject_CallMethodOneArg(mt, S_group, S_fd2);
            PyObject *who = fd2 ? PyObject_CallMethodOneArg(mt, S_group, S_pid) : NULL;
            int ok = 0;
            if (who && fd2 != Py_None && who != Py_None) {
                if (PyUnicode_Compare(who, S_self) == 0 || PyUnicode_Compare(who, S_thread_self) == 0) {
                    ok = 1;
                } else {
                    PyObject *mine = PyUnicode_FromFormat("%lld", p->pid);
                    ok = mine && PyUnicode_Compare(who, mine) == 0;
                    Py_XDECREF(mine);
                }
            }
            if (ok) {
                PyObject *n = PyLong_FromUnicodeObject(fd2, 10);
                long long num = n ? PyLong_AsLongLong(n) : -1;
                Py_XDECREF(n);
                if (!PyErr_Occurred())
                    e = fd_get(p, num);
            }
            Py_XDECREF(fd2);
            Py_XDECREF(who);
        }
        Py_DECREF(mt);
        if (PyErr_Occurred())
            return NULL;
    }
    if (e && ((OpenFile *)e->file)->tmpfile_dir != Py_None)
        return (OpenFile *)e->file;
    return NULL;
}

static int on_link(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    long long newdirfd = signed_fd(ev->h.a0);
    OpenFile *tmp = tmpfile_source(m, p, ev);
    if (!tmp && PyErr_Occurred())
        return -1;
    if (tmp) {
        Py_INCREF(tmp);
        PyObject *new = resolve(m, p, newdirfd, ev->path2, ev->h.flags);
        int rc = new ? 0 : -1;
        if (new && new != Py_None) {
            rc = wrote(m, p, new, ev->h.ts, 1);
            if (rc == 0) {
                Py_SETREF(tmp->path, Py_NewRef(new));
                Py_SETREF(tmp->tmpfile_dir, Py_NewRef(Py_None));
            }
        }
        Py_XDECREF(new);
        Py_DECREF(tmp);
        return rc;
    }
    PyObject *old = resolve(m, p, ev->h.fd, ev->path, ev->h.flags);
    if (!old)
        return -1;
    PyObject *new = resolve(m, p, newdirfd, ev->path2, ev->h.flags);
    int rc = new ? 0 : -1;
    if (new && old != Py_None && new != Py_None) {
        PathState *d = modified(m, new, ev->h.ts);
        rc = -1;
        if (d) {
            d->deleted = 0;
            PathState *src = (PathState *)PyDict_GetItemWithError(m->paths, old);
            if (src || !PyErr_Occurred()) {
                if (src && src->written)
                    d->written = 1;
                rc = 0;
            }
        }
    }
    Py_DECREF(old);
    Py_XDECREF(new);
    return rc;
}

static int on_unlink(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = resolve(m, p, ev->h.fd, ev->path, ev->h.flags);
    if (!path)
        return -1;
    int rc = 0;
    if (path == Py_None)
        goto out;
    rc = -1;
    PathState *s = modified(m, path, ev->h.ts);
    if (!s)
        goto out;
    s->deleted = 1;
    if (ev->h.a0 & AT_REMOVEDIR_) {
        int isdir = PySet_Contains(m->dirs, path);
        if (isdir < 0)
            goto out;
        if (isdir) {
            PyObject *k, *v;
            Py_ssize_t pos = 0;
            while (PyDict_Next(m->paths, &pos, &k, &v)) {
                if (strictly_below(k, path)) {
                    if (PySet_Add(m->touched, k) < 0)
                        goto out;
                    ((PathState *)v)->deleted = 1;
                }
            }
        }
    }
    rc = 0;
out:
    Py_DECREF(path);
    return rc;
}

static int on_truncate(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = resolve(m, p, AT_FDCWD_, ev->path, ev->h.flags);
    if (!path)
        return -1;
    int rc = path == Py_None ? 0 : wrote(m, p, path, ev->h.ts, 0);
    Py_DECREF(path);
    return rc;
}

static int on_ftruncate(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = fd_path(p, ev->h.fd);
    if (!path)
        return -1;
    return path == Py_None ? 0 : wrote(m, p, path, ev->h.ts, 0);
}

static int on_chdir(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = resolve(m, p, AT_FDCWD_, ev->path, ev->h.flags);
    if (!path)
        return -1;
    Py_SETREF(p->cwd, path);
    return 0;
}

static int on_fchdir(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *path = fd_path(p, ev->h.fd);
    if (!path)
        return -1;
    if (path == Py_None && problem(m, "fchdir to an unknown directory") < 0)
        return -1;
    Py_SETREF(p->cwd, Py_NewRef(path));
    return 0;
}

static int on_connect(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *raw = ev->raw ? ev->raw : PyBytes_FromStringAndSize("", 0);
    if (!ev->raw && !raw)
        return -1;
    PyObject *ep = PyObject_CallOneArg(py_decode_sockaddr, raw);
    if (!ev->raw)
        Py_DECREF(raw);
    if (!ep)
        return -1;
    int rc = -1;
    if (ep == Py_None) {
        rc = 0;
        goto out;
    }
    PyObject *addr = PyDict_GetItemWithError(ep, S_address); /* borrowed */
    PyObject *fam = addr ? PyDict_GetItemWithError(ep, S_family) : NULL;
    if (!fam)
        goto out;
    if (PyUnicode_Check(fam) && PyUnicode_Compare(fam, S_unix) == 0 && PyObject_IsTrue(addr) &&
        !has_prefix(addr, "/") && !has_prefix(addr, "@") && p->cwd != Py_None &&
        PyObject_IsTrue(p->cwd)) {
        PyObject *full = join_normalize(p->cwd, addr);
        if (!full || PyDict_SetItem(ep, S_address, full) < 0) {
            Py_XDECREF(full);
            goto out;
        }
        Py_DECREF(full);
    }
    if (PyDict_SetItem(ep, S_process, p->key) < 0 || PyList_Append(m->connects, ep) < 0)
        goto out;
    rc = 0;
out:
    Py_DECREF(ep);
    return rc;
}

static int call_remote(Model *m, PyObject *meth, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    if (!args)
        return -1;
    PyObject *f = PyObject_GetAttr(m->remote, meth);
    PyObject *r = f ? PyObject_Call(f, args, NULL) : NULL;
    Py_XDECREF(f);
    Py_DECREF(args);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyObject *raw_or_empty(Ev *ev)
{
    return ev->raw ? Py_NewRef(ev->raw) : PyBytes_FromStringAndSize("", 0);
}

static int on_tls_write(Model *m, Ev *ev)
{
    Proc *p = get_proc(m, ev);
    if (!p)
        return -1;
    PyObject *raw = raw_or_empty(ev);
    return raw ? call_remote(m, S_request, "(kOKNKKLKs)", (unsigned long)ev->h.tgid, p->key,
                             (unsigned long long)ev->h.a0, raw, (unsigned long long)ev->h.a1,
                             (unsigned long long)ev->h.a2, (long long)ev->h.ret,
                             (unsigned long long)ev->h.ts,
                             (ev->h.a0 & HTTP_SOCKET_KEY) ? "http" : "https")
               : -1;
}

static int on_tls_read(Model *m, Ev *ev)
{
    if (!get_proc(m, ev))
        return -1;
    PyObject *raw = raw_or_empty(ev);
    return raw ? call_remote(m, S_response, "(kKNKKL)", (unsigned long)ev->h.tgid,
                             (unsigned long long)ev->h.a0, raw, (unsigned long long)ev->h.a1,
                             (unsigned long long)ev->h.a2, (long long)ev->h.ret)
               : -1;
}

static int on_tls_free(Model *m, Ev *ev)
{
    if (!get_proc(m, ev))
        return -1;
    return call_remote(m, S_freed, "(kKKL)", (unsigned long)ev->h.tgid,
                       (unsigned long long)ev->h.a0, (unsigned long long)ev->h.a2,
                       (long long)ev->h.ret);
}

static int on_iouring(Model *m, Ev *ev)
{
    if (!get_proc(m, ev))
        return -1;
    m->io_uring = 1;
    return 0;
}

static int dispatch(Model *m, Ev *ev)
{
    m->events++;
    switch (ev->h.type) {
    case EV_OPEN: return on_open(m, ev);
    case EV_READ: return on_read(m, ev);
    case EV_WRITE: return on_write(m, ev);
    case EV_MMAP: return on_mmap(m, ev);
    case EV_CLOSE: return on_close(m, ev);
    case EV_CLOSE_RANGE: return on_close_range(m, ev);
    case EV_DUP: return on_dup(m, ev);
    case EV_FDFLAGS: return on_fdflags(m, ev);
    case EV_FORK: return on_fork(m, ev);
    case EV_EXEC: return on_exec(m, ev);
    case EV_EXEC_RET: return on_exec_ret(m, ev);
    case EV_EXIT: return on_exit_ev(m, ev);
    case EV_RENAME: return on_rename(m, ev);
    case EV_LINK: return on_link(m, ev);
    case EV_UNLINK: return on_unlink(m, ev);
    case EV_TRUNCATE: return on_truncate(m, ev);
    case EV_FTRUNCATE: return on_ftruncate(m, ev);
    case EV_CHDIR: return on_chdir(m, ev);
    case EV_FCHDIR: return on_fchdir(m, ev);
    case EV_CONNECT: return on_connect(m, ev);
    case EV_IOURING: return on_iouring(m, ev);
    case EV_REAP: return on_reap(m, ev);
    case EV_TLS_WRITE: return on_tls_write(m, ev);
    case EV_TLS_READ: return on_tls_read(m, ev);
    case EV_TLS_FREE: return on_tls_free(m, ev);
    default: return 0;
    }
}

/* -- RunModel --------------------------------------------------------------- */

static PyObject *Model_feed_raw(Model *m, PyObject *raw)
{
    Py_buffer b;
    if (PyObject_GetBuffer(raw, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    Ev ev;
    int r = decode_raw(b.buf, b.len, &ev);
    PyBuffer_Release(&b);
    if (r == 0)
        r = dispatch(m, &ev);
    ev_clear(&ev);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* roar run's consumer (capture/session.py DaemonSession._records): the event
 * frames of roard's stream (protocol.py: type byte 'E', 4-byte little-endian
 * length, one raw record) from buf[pos], each fed as feed_raw feeds one, up to
 * the first frame that is not a whole event frame of at most max_frame bytes
 * (a barrier, the end message, a partial frame: the session parses those).
 * Returns (pos after what was fed, None), or (pos after the record, the
 * exception it raised): the consumer notes it on the run and goes on. */
static PyObject *Model_feed_frames(Model *m, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t pos, max_frame;
    if (!PyArg_ParseTuple(args, "Onn", &buf, &pos, &max_frame))
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(buf, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t n = b.len;
    PyObject *err = NULL;
    while (pos >= 0 && n - pos >= 5 && p[pos] == 'E') {
        Py_ssize_t size = (Py_ssize_t)((uint32_t)p[pos + 1] | (uint32_t)p[pos + 2] << 8 |
                                       (uint32_t)p[pos + 3] << 16 | (uint32_t)p[pos + 4] << 24);
        if (size > max_frame || n - pos - 5 < size)
            break;
        Ev ev;
        int r = decode_raw((const char *)p + pos + 5, size, &ev);
        if (r == 0)
            r = dispatch(m, &ev);
        ev_clear(&ev);
        pos += 5 + size;
        if (r < 0) {
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_NormalizeException(&t, &v, &tb);
            if (tb && v)
                PyException_SetTraceback(v, tb);
            Py_XDECREF(t);
            Py_XDECREF(tb);
            if (!v) {
                PyBuffer_Release(&b);
                return NULL;
            }
            err = v;
            break;
        }
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(nN)", pos, err ? err : Py_NewRef(Py_None));
}

static PyObject *Model_feed(Model *m, PyObject *obj)
{
    Ev ev;
    if (decode_obj(obj, &ev) < 0)
        return NULL;
    int r = dispatch(m, &ev);
    ev_clear(&ev);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Model_problem(Model *m, PyObject *what)
{
    if (!PyUnicode_Check(what)) {
        PyErr_SetString(PyExc_TypeError, "problem() takes a str");
        return NULL;
    }
    PyObject *v = PyDict_GetItemWithError(m->problems, what);
    if (!v && PyErr_Occurred())
        return NULL;
    PyObject *one = PyLong_FromLong(1);
    PyObject *n = v ? PyNumber_Add(v, one) : Py_NewRef(one);
    Py_DECREF(one);
    if (!n)
        return NULL;
    int r = PyDict_SetItem(m->problems, what, n);
    Py_DECREF(n);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Model_new_proc(Model *m, PyObject *args)
{
    long long pid;
    PyObject *parent, *argv, *cwd, *fds;
    unsigned long long ts;
    if (!PyArg_ParseTuple(args, "LOOOO!K", &pid, &parent, &argv, &cwd, &PyDict_Type, &fds, &ts))
        return NULL;
    if (parent != Py_None && !PyObject_TypeCheck(parent, &ProcType)) {
        PyErr_SetString(PyExc_TypeError, "parent must be a Proc or None");
        return NULL;
    }
    return (PyObject *)new_proc(m, pid, parent == Py_None ? NULL : (Proc *)parent, argv, cwd,
                                fds, ts);
}

static int Model_init(Model *m, PyObject *args, PyObject *kw)
{
    static char *kws[] = {"root_pid", "cwd", "argv", "root_fds", "start_ts", "submit_hash",
                          "cache_lookup", NULL};
    long long root_pid;
    PyObject *cwd, *argv, *root_fds, *submit = Py_None, *lookup = Py_None;
    unsigned long long start;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "LOOO!K|OO", kws, &root_pid, &cwd, &argv,
                                     &PyDict_Type, &root_fds, &start, &submit, &lookup))
        return -1;
    if (m->procs) {
        PyErr_SetString(PyExc_RuntimeError, "RunModel is initialised once");
        return -1;
    }
    m->submit_hash = Py_NewRef(submit);
    m->lookup = Py_NewRef(lookup);
    if (submit != Py_None) { /* the Hasher of hasher.submit_input */
        m->hasher = PyObject_GetAttr(submit, S___self__);
        PyErr_Clear();
    }
    if (lookup != Py_None) { /* a Hasher's model_lookup: its memo and reader read here */
        PyObject *h = PyObject_GetAttr(lookup, S___self__);
        PyObject *memo = h ? PyObject_GetAttr(h, S_memo) : NULL;
        PyObject *reader = memo ? PyObject_GetAttrString(h, "model_reader") : NULL;
        PyObject *func = PyObject_GetAttrString(lookup, "__func__");
        PyObject *cls = h ? attr("roar.record.hasher", "Hasher") : NULL;
        PyObject *ref = cls ? PyObject_GetAttrString(cls, "model_lookup") : NULL;
        Py_XDECREF(cls);
        PyErr_Clear();
        if (reader && PyDict_CheckExact(memo) && func && func == ref) {
            m->memo = Py_NewRef(memo);
            m->model_reader = Py_NewRef(reader);
        }
        Py_XDECREF(h);
        Py_XDECREF(memo);
        Py_XDECREF(reader);
        Py_XDECREF(func);
        Py_XDECREF(ref);
    }
    m->procs = PyList_New(0);
    m->live = PyDict_New();
    m->paths = PyDict_New();
    m->by_path = PyDict_New();
    m->new_paths = PyList_New(0);
    m->dirs = PySet_New(NULL);
    m->touched = PySet_New(NULL);
    m->connects = PyList_New(0);
    m->remote = PyObject_CallNoArgs(py_remote_log);
    m->problems = PyDict_New();
    m->untraced_fds = PySet_New(NULL);
    m->exec_closed = PySet_New(NULL);
    m->need_dirs = PyDict_New();
    m->io_uring = 0;
    m->events = 0;
    if (!m->procs || !m->live || !m->paths || !m->by_path || !m->new_paths || !m->dirs ||
        !m->touched || !m->connects || !m->remote || !m->problems || !m->untraced_fds || !m->exec_closed ||
        !m->need_dirs)
        return -1;
    PyObject *fds = PyDict_New(), *k, *v;
    Py_ssize_t pos = 0;
    if (!fds)
        return -1;
    while (PyDict_Next(root_fds, &pos, &k, &v)) {
        PyObject *f = new_openfile(v, 0, Py_None);
        PyObject *e = f ? new_fdentry(f, 0) : NULL;
        Py_XDECREF(f);
        if (!e || PyDict_SetItem(fds, k, e) < 0) {
            Py_XDECREF(e);
            Py_DECREF(fds);
            return -1;
        }
        Py_DECREF(e);
    }
    Proc *root = new_proc(m, root_pid, NULL, argv, cwd, fds, start);
    Py_DECREF(fds);
    if (!root)
        return -1;
    m->root = (PyObject *)root;
    return 0;
}

static void Model_dealloc(Model *m)
{
    Py_XDECREF(m->submit_hash);
    Py_XDECREF(m->lookup);
    Py_XDECREF(m->memo);
    Py_XDECREF(m->model_reader);
    Py_XDECREF(m->reader_get);
    Py_XDECREF(m->hasher);
    Py_XDECREF(m->procs);
    Py_XDECREF(m->live);
    Py_XDECREF(m->paths);
    Py_XDECREF(m->by_path);
    Py_XDECREF(m->new_paths);
    Py_XDECREF(m->dirs);
    Py_XDECREF(m->touched);
    Py_XDECREF(m->connects);
    Py_XDECREF(m->remote);
    Py_XDECREF(m->problems);
    Py_XDECREF(m->untraced_fds);
    Py_XDECREF(m->exec_closed);
    Py_XDECREF(m->need_dirs);
    Py_XDECREF(m->root);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *Model_still_running(Model *m, PyObject *unused)
{
    return PyLong_FromSsize_t(PyDict_Size(m->live));
}

static PyMethodDef Model_methods[] = {
    {"feed_raw", (PyCFunction)Model_feed_raw, METH_O, "Decode one raw record and model it."},
    {"feed_frames", (PyCFunction)Model_feed_frames, METH_VARARGS,
     "feed_frames(buf, pos, max_frame) -> (pos, exception or None): feed_raw for each event "
     "frame of roard's stream from buf[pos] (see _cmodel.c)."},
    {"feed", (PyCFunction)Model_feed, METH_O, "Model one decoded Event."},
    {"problem", (PyCFunction)Model_problem, METH_O, "Count a problem of the run."},
    {"still_running", (PyCFunction)Model_still_running, METH_NOARGS,
     "Processes whose exit the run never saw."},
    {"_new_proc", (PyCFunction)Model_new_proc, METH_VARARGS,
     "_new_proc(pid, parent, argv, cwd, fds, ts): a process the model did not see start."},
    {NULL}};

static PyMemberDef Model_members[] = {
    OBJ(Model, submit_hash), {"procs", T_OBJECT, offsetof(Model, procs), READONLY, NULL},
    {"live", T_OBJECT, offsetof(Model, live), READONLY, NULL},
    {"paths", T_OBJECT, offsetof(Model, paths), READONLY, NULL},
    {"by_path", T_OBJECT, offsetof(Model, by_path), READONLY, NULL},
    OBJ(Model, new_paths), {"dirs", T_OBJECT, offsetof(Model, dirs), READONLY, NULL},
    {"touched", T_OBJECT, offsetof(Model, touched), READONLY, NULL},
    {"connects", T_OBJECT, offsetof(Model, connects), READONLY, NULL},
    {"remote", T_OBJECT, offsetof(Model, remote), READONLY, NULL},
    {"problems", T_OBJECT, offsetof(Model, problems), READONLY, NULL},
    {"untraced_fds", T_OBJECT, offsetof(Model, untraced_fds), READONLY,
     "(process key, fd) of fds on named regular files used without their open seen"},
    {"exec_closed", T_OBJECT, offsetof(Model, exec_closed), READONLY,
     "(process key, fd) of close-on-exec fds an exec closed"},
    {"root", T_OBJECT, offsetof(Model, root), READONLY, NULL}, BOOL(Model, io_uring),
    {"events", T_LONGLONG, offsetof(Model, events), 0, NULL},
    {"cache_hits", T_LONGLONG, offsetof(Model, cache_hits), READONLY,
     "hash jobs answered by the stat cache in the model's own thread"},
    {NULL}};

static int Model_set_new_paths_check(void) { return 0; }

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roar.record._cmodel.RunModel",
    .tp_basicsize = sizeof(Model),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RunModel(root_pid, cwd, argv, root_fds, start_ts, submit_hash=None, "
              "cache_lookup=None): model.RunModel, compiled. cache_lookup(stat_key) -> hash "
              "or None answers read inputs' hash jobs from the stat cache in this thread.",
    .tp_methods = Model_methods,
    .tp_members = Model_members,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

/* -- module -------------------------------------------------------------------- */

static PyObject *attr(const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (!mod)
        return NULL;
    PyObject *r = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return r;
}

/* -- the store's JSON encoder ---------------------------------------------------
 *
 * codes.encode's bytes, compiled: json.JSONEncoder(separators=(",", ":"),
 * ensure_ascii=True) for what records hold (dicts with str keys, lists, tuples,
 * str, int, float, True, False, None, and str and int subclasses such as enums).
 * Anything else (a dict subclass, a key that is not a str, another type, a very
 * deep document) returns None and codes.encode uses the json module, so the
 * bytes and the errors are always that encoder's (tests/test_records.py compares
 * them on generated documents, tests/test_recorder.py on a run's stored records). */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
    char stack[1024]; /* a record's document fits here: no allocation but its bytes */
} JBuf;

#define JBUF_INIT(b) ((b)->p = (b)->stack, (b)->n = 0, (b)->cap = sizeof (b)->stack)
#define JBUF_FREE(b) ((b)->p != (b)->stack ? PyMem_Free((b)->p) : (void)0)

#define JSON_DEPTH 64

static int jb_reserve(JBuf *b, Py_ssize_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    char *p = b->p == b->stack ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->stack)
        memcpy(p, b->stack, b->n);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int jb_put(JBuf *b, const char *s, Py_ssize_t n)
{
    if (jb_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int jb_ascii(JBuf *b, PyObject *str) /* a str known to be ASCII (a repr) */
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    return s ? jb_put(b, s, n) : -1;
}

static const char HEX[] = "0123456789abcdef";

static void jb_u(JBuf *b, Py_UCS4 c)
{
    char *o = b->p + b->n;
    o[0] = '\\', o[1] = 'u', o[2] = HEX[(c >> 12) & 15], o[3] = HEX[(c >> 8) & 15];
    o[4] = HEX[(c >> 4) & 15], o[5] = HEX[c & 15];
    b->n += 6;
}

/* the ASCII characters json writes as they are (ensure_ascii: ' ' to '~' but '"' and '\\') */
static unsigned char JSON_PLAIN[128];

static int jb_str(JBuf *b, PyObject *s)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t i = 0;
    if (PyUnicode_IS_ASCII(s)) { /* most strings: copied as they are up to the first escape */
        const unsigned char *a = data;
        while (i < len && JSON_PLAIN[a[i]])
            i++;
        if (i == len) {
            if (jb_reserve(b, len + 2) < 0)
                return -1;
            char *o = b->p + b->n;
            o[0] = '"';
            memcpy(o + 1, a, len);
            o[len + 1] = '"';
            b->n += len + 2;
            return 0;
        }
    }
    if (jb_reserve(b, len * 12 + 2) < 0) /* at worst a surrogate pair per character */
        return -1;
    char *o = b->p;
    Py_ssize_t n = b->n;
    o[n++] = '"';
    if (i) { /* the plain ASCII head found above */
        memcpy(o + n, data, i);
        n += i;
    }
    for (; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            o[n++] = (char)c;
            continue;
        }
        o[n++] = '\\';
        switch (c) {
        case '\\': o[n++] = '\\'; continue;
        case '"': o[n++] = '"'; continue;
        case '\b': o[n++] = 'b'; continue;
        case '\f': o[n++] = 'f'; continue;
        case '\n': o[n++] = 'n'; continue;
        case '\r': o[n++] = 'r'; continue;
        case '\t': o[n++] = 't'; continue;
        }
        n--;
        b->n = n;
        if (c >= 0x10000) {
            c -= 0x10000;
            jb_u(b, 0xd800 | ((c >> 10) & 0x3ff));
            jb_u(b, 0xdc00 | (c & 0x3ff));
        } else {
            jb_u(b, c);
        }
        n = b->n;
    }
    o[n++] = '"';
    b->n = n;
    return 0;
}

/* 1: written; 0: not this encoder's (the caller uses the json module); -1: error */
static int jb_obj(JBuf *b, PyObject *o, int depth)
{
    if (o == Py_None)
        return jb_put(b, "null", 4) < 0 ? -1 : 1;
    if (o == Py_True)
        return jb_put(b, "true", 4) < 0 ? -1 : 1;
    if (o == Py_False)
        return jb_put(b, "false", 5) < 0 ? -1 : 1;
    if (PyUnicode_Check(o))
        return jb_str(b, o) < 0 ? -1 : 1;
    if (PyLong_Check(o) || PyFloat_CheckExact(o)) {
        PyObject *r;
        if (PyLong_Check(o)) {
            int over;
            long long v = PyLong_AsLongLongAndOverflow(o, &over);
            if (!over && !(v == -1 && PyErr_Occurred())) { /* int.__repr__'s digits */
                char d[24];
                int len = 0;
                unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v
                                             : (unsigned long long)v;
                do
                    d[sizeof d - 1 - len++] = (char)('0' + u % 10);
                while (u /= 10);
                if (v < 0)
                    d[sizeof d - 1 - len++] = '-';
                return jb_put(b, d + sizeof d - len, len) < 0 ? -1 : 1;
            }
            PyErr_Clear();
            r = PyLong_Type.tp_repr(o);
        } else {
            double d = PyFloat_AS_DOUBLE(o);
            if (!isfinite(d)) {
                const char *t = isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity";
                return jb_put(b, t, strlen(t)) < 0 ? -1 : 1;
            }
            r = PyFloat_Type.tp_repr(o);
        }
        if (!r)
            return -1;
        int rc = jb_ascii(b, r);
        Py_DECREF(r);
        return rc < 0 ? -1 : 1;
    }
    if (depth >= JSON_DEPTH)
        return 0;
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        PyObject **items = PySequence_Fast_ITEMS(o);
        if (jb_put(b, "[", 1) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i && jb_put(b, ",", 1) < 0)
                return -1;
            /* a list may change under us only through code run by a repr: none here */
            int rc = jb_obj(b, items[i], depth + 1);
            if (rc <= 0)
                return rc;
        }
        return jb_put(b, "]", 1) < 0 ? -1 : 1;
    }
    if (PyDict_CheckExact(o)) {
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *v;
        if (jb_put(b, "{", 1) < 0)
            return -1;
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (!PyUnicode_Check(k))
                return 0;
            if ((i++ && jb_put(b, ",", 1) < 0) || jb_str(b, k) < 0 || jb_put(b, ":", 1) < 0)
                return -1;
            int rc = jb_obj(b, v, depth + 1);
            if (rc <= 0)
                return rc;
        }
        return jb_put(b, "}", 1) < 0 ? -1 : 1;
    }
    return 0;
}

static PyObject *json_bytes(PyObject *o);

static PyObject *encode_json(PyObject *self, PyObject *o)
{
    return json_bytes(o);
}


/* -- the records of a settled read-only input ------------------------------------
 *
 * recorder.py's RunRecorder.prebuild, for the path kind that makes nearly all of
 * a data loader's records: a data or code file the run only read, whose hash is
 * done and verified. One call gives what recorder.py's _build, _sig and
 * _prebuild_proc_files give for it: the file record (_records_for ->
 * _input_record -> _version, _bound_bytes), its JSON, its signature, and each
 * reader's process entry (_proc_file) with its signature and JSON. Any other case
 * (another kind, /dev/shm, a result that is not a plain verified one, a count
 * that does not fit) answers None, and recorder.py builds it. recorder.py is the
 * reference: tests/test_recorder.py compares the stored bytes of runs recorded
 * with and without this. */

static PyObject *S_kind, *S_bytes_read, *S_bytes_written, *S_processes, *S_role, *S_mode,
    *S_hash, *S_size, *S_status, *S_error, *S_ctime_ns, *S_read_calls, *S_write_calls,
    *S_input, *S_r, *S_data, *S_code, *S_path, *S_shm, *S_hash_read;

static PyObject *json_bytes(PyObject *o) /* encode_json's bytes; None: not its own */
{
    JBuf b;
    JBUF_INIT(&b);
    int rc = jb_obj(&b, o, 0);
    PyObject *out = rc > 0 ? PyBytes_FromStringAndSize(b.p, b.n) : NULL;
    JBUF_FREE(&b);
    if (rc == 0)
        Py_RETURN_NONE;
    return out;
}

/* json_bytes of a dict whose keys are keys[] (plain ASCII names: no escape) and
 * values vals[], in that order, without the dict: the same bytes, as jb_obj writes
 * a dict (depth 1 for its values); None: not this encoder's (as json_bytes) */
static PyObject *fields_json(const char *const *keys, PyObject *const *vals, int n)
{
    JBuf b;
    JBUF_INIT(&b);
    int rc = 1;
    for (int i = 0; i < n && rc > 0; i++) {
        size_t k = strlen(keys[i]);
        if (jb_reserve(&b, (Py_ssize_t)k + 4) < 0) {
            rc = -1;
            break;
        }
        char *o = b.p + b.n;
        o[0] = i ? ',' : '{';
        o[1] = '"';
        memcpy(o + 2, keys[i], k);
        o[k + 2] = '"';
        o[k + 3] = ':';
        b.n += (Py_ssize_t)k + 4;
        rc = jb_obj(&b, vals[i], 1);
    }
    if (rc > 0 && jb_put(&b, n ? "}" : "{}", n ? 1 : 2) < 0)
        rc = -1;
    PyObject *out = rc > 0 ? PyBytes_FromStringAndSize(b.p, b.n) : NULL;
    JBUF_FREE(&b);
    if (rc == 0)
        Py_RETURN_NONE;
    return out;
}

/* recorder._version's input record and recorder._proc_file's entry: their keys in
 * the order those dicts are made */
static const char *const REC_KEYS[] = {"path", "kind", "bytes_read", "bytes_written",
                                       "processes", "role", "mode", "hash", "size", "status",
                                       "error"};
static const char *const ENTRY_KEYS[] = {"path", "kind", "mode", "bytes_read", "bytes_written",
                                         "read_calls", "write_calls"};
#define N_REC 11
#define N_ENTRY 7

/* getattr(o, name) for a HashJob's or HashResult's slot at: read in place when o is
 * exactly that type and its slots are the known ones (direct), else PyObject_GetAttr */
static PyObject *slot_or_attr(PyObject *o, PyObject *type, int direct, Py_ssize_t at,
                              PyObject *name)
{
    if (direct && Py_TYPE(o) == (PyTypeObject *)type) {
        PyObject *v = *(PyObject **)((char *)o + at);
        if (v)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, name); /* unset: its AttributeError */
}

/* a hex digit's value, -1 for anything else */
static inline int hex_digit(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* bytes.fromhex(h): parsed here when h is plain hex digits, else by bytes.fromhex
 * itself (its rules and errors for anything else) */
static PyObject *hex_bytes(PyObject *h)
{
    Py_ssize_t n;
    const char *p = PyUnicode_Check(h) && PyUnicode_IS_ASCII(h) ? PyUnicode_AsUTF8AndSize(h, &n)
                                                                  : NULL;
    if (p && n % 2 == 0) {
        PyObject *out = PyBytes_FromStringAndSize(NULL, n / 2);
        if (!out)
            return NULL;
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            int v = hex_digit((unsigned char)p[i]);
            if (v < 0)
                break;
            if (i % 2)
                o[i / 2] |= (unsigned char)v;
            else
                o[i / 2] = (unsigned char)(v << 4);
        }
        if (i == n)
            return out;
        Py_DECREF(out);
    }
    PyErr_Clear();
    return PyObject_CallMethod((PyObject *)&PyBytes_Type, "fromhex", "O", h);
}

/* a dict of keys[i] -> vals[i], in that order (NULL: an error) */
static PyObject *dict_of(PyObject *const *keys, PyObject *const *vals, int n)
{
    PyObject *d = _PyDict_NewPresized(n);
    for (int k = 0; d && k < n; k++)
        if (PyDict_SetItem(d, keys[k], vals[k]) < 0)
            Py_CLEAR(d);
    return d;
}

/* recorder._version's input record from its values in REC_KEYS' order */
static PyObject *record_dict(PyObject *const *vals)
{
    PyObject *const keys[N_REC] = {S_path, S_kind, S_bytes_read, S_bytes_written, S_processes,
                                   S_role, S_mode, S_hash, S_size, S_status, S_error};
    return dict_of(keys, vals, N_REC);
}

/* store.index_entries(rid, [record])'s row for an input whose hash is true:
 * ("hash_read", bytes.fromhex(hash) + rid, the path's bytes) (NULL: an error) */
static PyObject *read_row(PyObject *hash, PyObject *rid, PyObject *path)
{
    PyObject *hb = hex_bytes(hash);
    PyObject *key = hb ? PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(hb) +
                                                             PyBytes_GET_SIZE(rid))
                       : NULL;
    PyObject *pb = key ? PyUnicode_AsEncodedString(path, "utf-8", "surrogateescape") : NULL;
    PyObject *row = NULL;
    if (pb) {
        memcpy(PyBytes_AS_STRING(key), PyBytes_AS_STRING(hb), PyBytes_GET_SIZE(hb));
        memcpy(PyBytes_AS_STRING(key) + PyBytes_GET_SIZE(hb), PyBytes_AS_STRING(rid),
               PyBytes_GET_SIZE(rid));
        row = PyTuple_Pack(3, S_hash_read, key, pb);
    }
    Py_XDECREF(hb);
    Py_XDECREF(key);
    Py_XDECREF(pb);
    return row;
}

/* A settled input's built value, as settled_inputs stores it in recorder._built:
 * the record's fields and its JSON, not the record. Read, it is the 4-tuple
 * recorder._build_settled stores, (None, [record], [JSON], rows) (len, items,
 * slices, iteration, comparison): that tuple is made the first time anything reads
 * it (RunRecorder.files, a path the end builds again, the reference paths), and
 * kept. The end's ledger (ledger_add) and the sizes (size_for) read the fields: a
 * cat or data loader run over 20,000 files makes no record dict, rows or lists for
 * its settled inputs (~10 objects and ~1 KB a file). Made only for an ASCII path
 * whose hash is None, empty or plain hex (key16: the index row's 16 bytes after
 * the path and NUL, (bytes.fromhex(hash) + rid)[:16]); anything else is built as
 * the tuple itself. */
typedef struct {
    PyObject_HEAD
    PyObject *path, *kind, *br, *bw, *procs, *hash, *size, *status, *error, *raw, *rid;
    PyObject *val; /* the tuple, once read */
    int has_row;
    unsigned char key16[16];
} Built;

static PyTypeObject BuiltType;

static void built_dealloc(Built *b)
{
    Py_XDECREF(b->path);
    Py_XDECREF(b->kind);
    Py_XDECREF(b->br);
    Py_XDECREF(b->bw);
    Py_XDECREF(b->procs);
    Py_XDECREF(b->hash);
    Py_XDECREF(b->size);
    Py_XDECREF(b->status);
    Py_XDECREF(b->error);
    Py_XDECREF(b->raw);
    Py_XDECREF(b->rid);
    Py_XDECREF(b->val);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* (bytes.fromhex(h) + rid)[:16] into out when h is a str of plain hex digits and
 * that makes 16 bytes or more: 1; else 0 (the tuple is built instead) */
static int hex_key16(PyObject *h, PyObject *rid, unsigned char *out)
{
    if (!PyUnicode_CheckExact(h) || !PyUnicode_IS_ASCII(h))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(h), hb = n / 2;
    const unsigned char *p = PyUnicode_1BYTE_DATA(h);
    if (n % 2 || hb + PyBytes_GET_SIZE(rid) < 16)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int v = hex_digit(p[i]);
        if (v < 0)
            return 0;
        if (i / 2 < 16)
            out[i / 2] = i % 2 ? (unsigned char)(out[i / 2] | v) : (unsigned char)(v << 4);
    }
    for (Py_ssize_t i = hb; i < 16; i++)
        out[i] = (unsigned char)PyBytes_AS_STRING(rid)[i - hb];
    return 1;
}

/* the tuple a Built reads as (a borrowed reference; NULL: an error): as
 * build_settled and settled_inputs made it before, each container untracked */
static PyObject *built_val(Built *b)
{
    if (b->val)
        return b->val;
    PyObject *rec = NULL, *recs = NULL, *raws = NULL, *rows = NULL, *val = NULL;
    PyObject *const vals[N_REC] = {b->path, b->kind, b->br, b->bw, b->procs, S_input, S_r,
                                   b->hash, b->size, b->status, b->error};
    if (!(rec = record_dict(vals)) || !(rows = PyList_New(0)))
        goto done;
    if (b->has_row) { /* store.index_entries(rid, [rec]): its row in hash_read */
        PyObject *row = read_row(b->hash, b->rid, b->path);
        int bad = !row || PyList_Append(rows, row) < 0;
        untrack(row);
        Py_XDECREF(row);
        if (bad)
            goto done;
    }
    if (!(recs = PyList_New(1)) || !(raws = PyList_New(1)))
        goto done;
    PyList_SET_ITEM(recs, 0, Py_NewRef(rec));
    PyList_SET_ITEM(raws, 0, Py_NewRef(b->raw));
    if (!(val = PyTuple_Pack(4, Py_None, recs, raws, rows)))
        goto done;
    untrack(rec);
    untrack(rows);
    untrack(recs);
    untrack(raws);
    untrack(val);
    b->val = val;
done:
    Py_XDECREF(rec);
    Py_XDECREF(recs);
    Py_XDECREF(raws);
    Py_XDECREF(rows);
    return val;
}

static Py_ssize_t built_len(Built *b)
{
    return 4;
}

static PyObject *built_item(Built *b, Py_ssize_t i)
{
    PyObject *val = built_val(b);
    return val ? PySequence_GetItem(val, i) : NULL;
}

static PyObject *built_subscript(Built *b, PyObject *key)
{
    PyObject *val = built_val(b);
    return val ? PyObject_GetItem(val, key) : NULL;
}

static PyObject *built_iter(Built *b)
{
    PyObject *val = built_val(b);
    return val ? PyObject_GetIter(val) : NULL;
}

static PyObject *built_richcompare(PyObject *a, PyObject *o, int op)
{
    PyObject *x = built_val((Built *)a);
    PyObject *y = !x ? NULL : Py_IS_TYPE(o, &BuiltType) ? built_val((Built *)o) : o;
    return y ? PyObject_RichCompare(x, y, op) : NULL;
}

static PySequenceMethods built_as_sequence = {.sq_length = (lenfunc)built_len,
                                              .sq_item = (ssizeargfunc)built_item};
static PyMappingMethods built_as_mapping = {.mp_length = (lenfunc)built_len,
                                            .mp_subscript = (binaryfunc)built_subscript};

static PyTypeObject BuiltType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roar.record._cmodel.Built",
    .tp_basicsize = sizeof(Built),
    .tp_dealloc = (destructor)built_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_as_sequence = &built_as_sequence,
    .tp_as_mapping = &built_as_mapping,
    .tp_iter = (getiterfunc)built_iter,
    .tp_richcompare = built_richcompare,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_doc = "A settled input's built value: reads as (None, [record], [JSON], rows).",
};

/* settled_input's work; rid NULL: the 4-tuple of the reference's shapes (with its
 * signatures), else the 5-tuple recorder._build_settled takes (no signatures: a
 * path changed after this is built again at the end) */
static PyObject *build_settled(PathState *s, PyObject *users, PyObject *kind,
                               PyObject *wall_offset, PyObject *rid, int lazy)
{
    Built *bo = NULL;
    unsigned char key16[16];
    int truth = 0;
    PyObject *rec = NULL, *raw = NULL, *sig = NULL, *entries = NULL, *procs = NULL,
             *res = NULL, *rhash = NULL, *rsize = NULL, *rstatus = NULL, *rerror = NULL,
             *ctime = NULL, *out = NULL, *br = NULL, *bw = NULL, *rows = NULL;
    if ((PyUnicode_Compare(kind, S_data) != 0 && PyUnicode_Compare(kind, S_code) != 0) ||
        !PyUnicode_CheckExact(s->path) ||
        PyUnicode_Tailmatch(s->path, S_shm, 0, PY_SSIZE_T_MAX, -1) != 0 ||
        s->modified_ts != Py_None || s->create_ts != Py_None || s->early_hash == Py_None ||
        !PyLong_CheckExact(s->early_ts))
        goto none;
    if (PyErr_Occurred())
        return NULL;
    res = slot_or_attr(s->early_hash, py_hash_job, hj_direct, HJ_AT[2], S_value);
    if (!res)
        return NULL;
    PyObject *hr = py_hash_result;
    if (res == Py_None ||
        !(rstatus = slot_or_attr(res, hr, hr_direct, HR_AT[0], S_status)) ||
        !(rhash = slot_or_attr(res, hr, hr_direct, HR_AT[1], S_hash)) ||
        !(rsize = slot_or_attr(res, hr, hr_direct, HR_AT[2], S_size)) ||
        !(rerror = slot_or_attr(res, hr, hr_direct, HR_AT[8], S_error)) ||
        !(ctime = slot_or_attr(res, hr, hr_direct, HR_AT[5], S_ctime_ns)))
        goto fail_or_none;
    if (rsize != Py_None && !PyLong_CheckExact(rsize))
        goto none;
    int ok = PyUnicode_Check(rstatus) && PyUnicode_Compare(rstatus, S_ok) == 0;
    if (ok && ctime != Py_None) { /* changed after the open, before the hash: recorder.py */
        PyObject *bound = PyNumber_Add(s->early_ts, wall_offset);
        if (!bound)
            goto fail;
        int later = PyObject_RichCompareBool(ctime, bound, Py_GT);
        Py_DECREF(bound);
        if (later != 0)
            goto fail_or_none;
    }
    /* _agg: the readers' bytes (Python ints: summed here without overflow) */
    Py_ssize_t n = PyList_GET_SIZE(users);
    unsigned long long sr = 0, sw = 0;
    int exact = 1;
    if (!(procs = PyList_New(n)))
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(users, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2 ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(t, 0), &ProcType) ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(t, 1), &ProcFileType))
            goto none;
        ProcFile *pf = (ProcFile *)PyTuple_GET_ITEM(t, 1);
        if (__builtin_add_overflow(sr, pf->bytes_read, &sr) ||
            __builtin_add_overflow(sw, pf->bytes_written, &sw) || sr > (1ULL << 62) ||
            sw > (1ULL << 62))
            goto none;
        exact = exact && pf->bytes_exact;
        PyList_SET_ITEM(procs, i, Py_NewRef(((Proc *)PyTuple_GET_ITEM(t, 0))->key));
    }
    /* _sig(s, a, kind) */
    if (rid) {
        sig = Py_NewRef(Py_None);
    } else {
        PyObject *renamed = PySequence_Tuple(s->renamed_from);
        if (!renamed)
            goto fail;
        sig = Py_BuildValue("(OOOOOOOONKKOn)", kind, s->first, s->read ? Py_True : Py_False,
                            s->written ? Py_True : Py_False, s->deleted ? Py_True : Py_False,
                            s->modified_ts, s->create_ts, s->early_ts, renamed, sr, sw,
                            exact ? Py_True : Py_False, n);
        if (!sig)
            goto fail;
    }
    /* _version(base, "input", res=res), then _bound_bytes */
    if (!exact) {
        br = Py_NewRef(Py_None);
        bw = Py_NewRef(Py_None);
    } else {
        br = PyLong_FromUnsignedLongLong(sr);
        bw = PyLong_FromUnsignedLongLong(sw);
        if (!br || !bw)
            goto fail;
        if (rsize != Py_None && sr) {
            int less = PyObject_RichCompareBool(rsize, br, Py_LT);
            if (less < 0)
                goto fail;
            if (less)
                Py_SETREF(br, Py_NewRef(rsize));
        }
    }
    /* lazy (settled_inputs with a rid): the Built, not the record and rows, where
     * the Built can give them (an ASCII path, a hash of plain hex or none) */
    if ((truth = PyObject_IsTrue(rhash)) < 0)
        goto fail;
    lazy = lazy && rid && PyUnicode_IS_ASCII(s->path) && (!truth || hex_key16(rhash, rid, key16));
    PyObject *rec_vals[N_REC] = {s->path, kind, br, bw, procs, S_input, S_r, rhash, rsize,
                                 rstatus, rerror};
    if (!lazy && !(rec = record_dict(rec_vals)))
        goto fail;
    if (!(raw = fields_json(REC_KEYS, rec_vals, N_REC)))
        goto fail;
    if (raw == Py_None)
        goto none;
    /* _prebuild_proc_files: each reader's entry, its bytes bounded by the size;
     * with rid, as (id(ProcFile), (signature, entry, JSON)) for recorder._pf_built */
    if (!(entries = PyList_New(n)))
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        ProcFile *pf = (ProcFile *)PyTuple_GET_ITEM(PyList_GET_ITEM(users, i), 1);
        PyObject *mode = ProcFile_mode(pf, NULL);
        PyObject *nread = mode ? PyLong_FromUnsignedLongLong(pf->bytes_read) : NULL;
        PyObject *d = NULL, *dj = NULL, *psig = NULL, *e = NULL;
        if (nread && rsize != Py_None) {
            int less = PyObject_RichCompareBool(rsize, nread, Py_LT);
            if (less < 0)
                Py_CLEAR(nread);
            else if (less)
                Py_SETREF(nread, Py_NewRef(rsize));
        }
        PyObject *ev[N_ENTRY] = {pf->path, kind, mode, NULL, NULL, NULL, NULL};
        if (nread) { /* _proc_file's values, in its order */
            ev[3] = pf->bytes_exact ? Py_NewRef(nread) : Py_NewRef(Py_None);
            ev[4] = pf->bytes_exact ? PyLong_FromUnsignedLongLong(pf->bytes_written)
                                    : Py_NewRef(Py_None);
            ev[5] = PyLong_FromUnsignedLongLong(pf->read_calls);
            ev[6] = PyLong_FromUnsignedLongLong(pf->write_calls);
        }
        if (ev[4] && ev[5] && ev[6]) {
            PyObject *const ek[N_ENTRY] = {S_path, S_kind, S_mode, S_bytes_read,
                                           S_bytes_written, S_read_calls, S_write_calls};
            d = dict_of(ek, ev, N_ENTRY);
        }
        if (d)
            dj = fields_json(ENTRY_KEYS, ev, N_ENTRY);
        for (int k = 3; k < N_ENTRY; k++)
            Py_XDECREF(ev[k]);
        if (dj && rid)
            psig = Py_NewRef(Py_None);
        else if (dj)
            psig = Py_BuildValue("(OOOOOKKKKO)", kind, rsize, pf->read ? Py_True : Py_False,
                                 pf->written ? Py_True : Py_False,
                                 pf->mapped ? Py_True : Py_False, pf->bytes_read,
                                 pf->bytes_written, pf->read_calls, pf->write_calls,
                                 pf->bytes_exact ? Py_True : Py_False);
        if (psig && dj != Py_None) {
            if (!rid) {
                e = PyTuple_Pack(4, (PyObject *)pf, psig, d, dj);
            } else {
                PyObject *id = PyLong_FromVoidPtr(pf);
                PyObject *val = id ? PyTuple_Pack(3, psig, d, dj) : NULL;
                e = val ? PyTuple_Pack(2, id, val) : NULL;
                Py_XDECREF(id);
                Py_XDECREF(val);
            }
        }
        int own = dj == Py_None;
        Py_XDECREF(mode);
        Py_XDECREF(nread);
        Py_XDECREF(d);
        Py_XDECREF(dj);
        Py_XDECREF(psig);
        if (!e) {
            if (own && !PyErr_Occurred())
                goto none;
            goto fail;
        }
        PyList_SET_ITEM(entries, i, e);
    }
    if (rid && !lazy) { /* store.index_entries(rid, [rec]): its row in hash_read */
        if (!(rows = PyList_New(0)))
            goto fail;
        if (truth) {
            PyObject *row = read_row(rhash, rid, s->path);
            if (!row || PyList_Append(rows, row) < 0) {
                Py_XDECREF(row);
                goto fail;
            }
            Py_DECREF(row);
        }
    }
    if (rid) {
        untrack(procs);
        untrack(rec);
        for (Py_ssize_t i = 0; rows && i < PyList_GET_SIZE(rows); i++)
            untrack(PyList_GET_ITEM(rows, i));
        untrack(rows);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) /* (id, (sig, entry, JSON)) */
            untrack(PyTuple_GET_ITEM(PyList_GET_ITEM(entries, i), 1));
    }
    if (lazy) { /* (Built, entries) */
        if (!(bo = PyObject_New(Built, &BuiltType)))
            goto fail;
        bo->path = Py_NewRef(s->path);
        bo->kind = Py_NewRef(kind);
        bo->br = Py_NewRef(br);
        bo->bw = Py_NewRef(bw);
        bo->procs = Py_NewRef(procs);
        bo->hash = Py_NewRef(rhash);
        bo->size = Py_NewRef(rsize);
        bo->status = Py_NewRef(rstatus);
        bo->error = Py_NewRef(rerror);
        bo->raw = Py_NewRef(raw);
        bo->rid = Py_NewRef(rid);
        bo->val = NULL;
        bo->has_row = truth;
        memcpy(bo->key16, key16, sizeof key16);
        out = PyTuple_Pack(2, (PyObject *)bo, entries);
        Py_DECREF(bo);
        goto done;
    }
    out = rid ? PyTuple_Pack(5, rec, raw, sig, entries, rows)
              : PyTuple_Pack(4, rec, raw, sig, entries);
    goto done;
fail_or_none:
    if (PyErr_Occurred())
        goto fail;
none:
    out = Py_NewRef(Py_None);
    goto done;
fail:
    out = NULL;
done:
    Py_XDECREF(rec);
    Py_XDECREF(raw);
    Py_XDECREF(sig);
    Py_XDECREF(entries);
    Py_XDECREF(procs);
    Py_XDECREF(res);
    Py_XDECREF(rhash);
    Py_XDECREF(rsize);
    Py_XDECREF(rstatus);
    Py_XDECREF(rerror);
    Py_XDECREF(ctime);
    Py_XDECREF(br);
    Py_XDECREF(bw);
    Py_XDECREF(rows);
    return out;
}

static PyObject *settled_input(PyObject *self, PyObject *args)
{
    PyObject *st, *users, *kind, *wall_offset, *rid = NULL;
    if (!PyArg_ParseTuple(args, "O!O!UO!|O!", &PathStateType, &st, &PyList_Type, &users, &kind,
                          &PyLong_Type, &wall_offset, &PyBytes_Type, &rid))
        return NULL;
    return build_settled((PathState *)st, users, kind, wall_offset, rid, 0);
}

/* recorder._classify(path) from what its directory says, when by_dir (recorder._by_dir:
 * directory -> classify.kind_by_dir's answer) has the answer: a kind, or a function
 * of the file name; stored in kinds. 1: classified, 0: not (recorder.py does it), -1:
 * an error. */
/* last: the directory (a str ending in "/") of the path before in the same call
 * and by_dir's answer for it (strong references, or NULL): a batch's paths come
 * directory by directory, and by_dir does not change during a call */
static int kind_from_dir(PyObject *path, PyObject *by_dir, PyObject *kinds, PyObject **kind,
                         PyObject **last, PyObject *ask)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(path);
    Py_ssize_t i = PyUnicode_FindChar(path, '/', 0, n, -1);
    if (i == -2)
        return -1;
    PyObject *by;
    if (last[0] && PyUnicode_GET_LENGTH(last[0]) == i + 1 &&
        PyUnicode_Tailmatch(path, last[0], 0, i + 1, -1) == 1) {
        by = last[1]; /* path[:rfind("/") + 1] == last[0] */
    } else {
        PyObject *d = PyUnicode_Substring(path, 0, i + 1); /* path[:rfind("/") + 1] */
        if (!d)
            return -1;
        by = PyDict_GetItemWithError(by_dir, d);
        if (!by && !PyErr_Occurred() && ask) {
            /* a directory new to by_dir: by_dir[d] = ask(d) (recorder.py's
             * kind_by_dir(d, ...) or False), as recorder._classify would */
            PyObject *got = PyObject_CallOneArg(ask, d);
            if (got && PyDict_SetItem(by_dir, d, got) == 0)
                by = PyDict_GetItemWithError(by_dir, d);
            Py_XDECREF(got);
        }
        if (!by) {
            Py_DECREF(d);
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_XSETREF(last[0], d);
        Py_XSETREF(last[1], Py_NewRef(by));
    }
    PyObject *k;
    if (PyUnicode_CheckExact(by)) {
        k = Py_NewRef(by);
    } else if (by == Py_False || by == Py_None || !PyCallable_Check(by)) {
        return 0;
    } else {
        int may = name_may_match(by, path, i + 1, n);
        if (may < 0)
            return -1;
        PyObject *name = may ? PyUnicode_Substring(path, i + 1, n) : NULL;
        k = !may ? Py_NewRef(S_data) : name ? PyObject_CallOneArg(by, name) : NULL;
        Py_XDECREF(name);
        if (!k)
            return -1;
        if (!PyUnicode_CheckExact(k)) {
            Py_DECREF(k);
            return 0;
        }
    }
    int bad = PyDict_SetItem(kinds, path, k) < 0;
    *kind = k; /* kinds holds it */
    Py_DECREF(k);
    return bad ? -1 : 1;
}

struct Ledger; /* the end's ledger (below) */
static PyTypeObject LedgerType;
static int ledger_add(struct Ledger *l, PyObject *path, PyObject *val);

/* recorder.prebuild's loop for the paths C builds: each (path, looks) of batch
 * that is a settled read-only data or code input (recorder._settled) is built
 * (build_settled) and stored as recorder._build_settled stores it: built[path],
 * pf_built, clean; a path not in kinds is classified first from by_dir when given
 * (kind_from_dir; with ask, a directory by_dir lacks is asked ask(directory) and the
 * answer stored in by_dir first). Returns (how many, [the (path, looks) left to recorder.py]). */
static PyObject *settled_inputs(PyObject *self, PyObject *args)
{
    PyObject *model, *batch, *kinds, *stdio, *wall_offset, *rid, *built, *pf_built, *clean,
        *by_dir = NULL, *ledger = NULL, *ask = NULL;
    if (!PyArg_ParseTuple(args, "O!O!O!OO!O!O!O!O!|OOO", &ModelType, &model, &PyList_Type, &batch,
                          &PyDict_Type, &kinds, &stdio, &PyLong_Type, &wall_offset,
                          &PyBytes_Type, &rid, &PyDict_Type, &built, &PyDict_Type, &pf_built,
                          &PySet_Type, &clean, &by_dir, &ledger, &ask))
        return NULL;
    if (ask == Py_None)
        ask = NULL;
    if (by_dir == Py_None)
        by_dir = NULL;
    if (ledger == Py_None)
        ledger = NULL;
    if ((by_dir && !PyDict_CheckExact(by_dir)) ||
        (ledger && !PyObject_TypeCheck(ledger, &LedgerType))) {
        PyErr_SetString(PyExc_TypeError, "settled_inputs: by_dir a dict, ledger a Ledger");
        return NULL;
    }
    Model *m = (Model *)model;
    PyObject *rest = PyList_New(0), *empty = PyList_New(0), *last[2] = {NULL, NULL};
    Py_ssize_t count = 0;
    if (!rest || !empty)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *item = PyList_GET_ITEM(batch, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "settled_inputs: (path, looks) expected");
            goto fail;
        }
        PyObject *path = PyTuple_GET_ITEM(item, 0);
        PathState *s = (PathState *)PyDict_GetItemWithError(m->paths, path);
        PyObject *kind = s ? PyDict_GetItemWithError(kinds, path) : NULL;
        if (PyErr_Occurred())
            goto fail;
        if (s && !kind && by_dir && PyUnicode_CheckExact(path) &&
            kind_from_dir(path, by_dir, kinds, &kind, last, ask) < 0)
            goto fail;
        PyObject *out = NULL;
        if (kind && PyUnicode_CheckExact(kind) &&
            (PyUnicode_Compare(kind, S_data) == 0 || PyUnicode_Compare(kind, S_code) == 0) &&
            s->read && is_read(s->first) && !s->written && !s->deleted &&
            s->create_ts == Py_None && PyList_CheckExact(s->renamed_from) &&
            PyList_GET_SIZE(s->renamed_from) == 0 && s->early_hash != Py_None) {
            int in_stdio = PySequence_Contains(stdio, path);
            if (in_stdio < 0)
                goto fail;
            PyObject *value = in_stdio ? NULL
                                       : slot_or_attr(s->early_hash, py_hash_job, hj_direct,
                                                      HJ_AT[2], S_value);
            if (!in_stdio && !value)
                goto fail;
            if (value && value != Py_None) {
                PyObject *users = PyDict_GetItemWithError(m->by_path, path);
                if (!users && PyErr_Occurred()) {
                    Py_DECREF(value);
                    goto fail;
                }
                out = build_settled(s, users && PyList_CheckExact(users) ? users : empty, kind,
                                    wall_offset, rid, 1);
                if (!out) {
                    Py_DECREF(value);
                    goto fail;
                }
                if (out == Py_None)
                    Py_CLEAR(out);
            }
            Py_XDECREF(value);
        }
        if (!out) {
            if (PyList_Append(rest, item) < 0)
                goto fail;
            continue;
        }
        /* built[path] = (signature, [record], [JSON], rows), or the Built that reads
         * as it; pf_built.update(entries) */
        int lazy = PyTuple_GET_SIZE(out) == 2;
        PyObject *recs = lazy ? NULL : PyList_New(1), *raws = lazy ? NULL : PyList_New(1);
        PyObject *val = lazy ? Py_NewRef(PyTuple_GET_ITEM(out, 0)) : NULL;
        if (recs && raws) {
            PyList_SET_ITEM(recs, 0, Py_NewRef(PyTuple_GET_ITEM(out, 0)));
            PyList_SET_ITEM(raws, 0, Py_NewRef(PyTuple_GET_ITEM(out, 1)));
            val = PyTuple_Pack(4, PyTuple_GET_ITEM(out, 2), recs, raws, PyTuple_GET_ITEM(out, 4));
            untrack(recs);
            untrack(raws);
            untrack(val);
        }
        Py_XDECREF(recs);
        Py_XDECREF(raws);
        int bad = !val || PyDict_SetItem(built, path, val) < 0 ||
                  (ledger && ledger_add((struct Ledger *)ledger, path, val) < 0);
        Py_XDECREF(val);
        PyObject *entries = PyTuple_GET_ITEM(out, lazy ? 1 : 3);
        for (Py_ssize_t j = 0; !bad && j < PyList_GET_SIZE(entries); j++) {
            PyObject *e = PyList_GET_ITEM(entries, j);
            bad = PyDict_SetItem(pf_built, PyTuple_GET_ITEM(e, 0), PyTuple_GET_ITEM(e, 1)) < 0;
        }
        Py_DECREF(out);
        if (bad || PySet_Add(clean, path) < 0)
            goto fail;
        count++;
    }
    Py_DECREF(empty);
    Py_XDECREF(last[0]);
    Py_XDECREF(last[1]);
    return Py_BuildValue("(nN)", count, rest);
fail:
    Py_XDECREF(rest);
    Py_XDECREF(empty);
    Py_XDECREF(last[0]);
    Py_XDECREF(last[1]);
    return NULL;
}

/* recorder._file_records' loop over paths whose records were built ahead: from
 * paths[start], while the path is in clean, extend records, encoded and index with
 * built[path]'s records, JSON and index rows. Returns the index of the first path
 * not taken (not clean, or not in built): recorder.py goes on from there. */
static PyObject *gather_built(PyObject *self, PyObject *args)
{
    PyObject *paths, *clean, *built, *lists[3];
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!nO!O!O!O!O!", &PyList_Type, &paths, &i, &PySet_Type, &clean,
                          &PyDict_Type, &built, &PyList_Type, &lists[0], &PyList_Type,
                          &lists[1], &PyList_Type, &lists[2]))
        return NULL;
    for (; i >= 0 && i < PyList_GET_SIZE(paths); i++) {
        PyObject *path = PyList_GET_ITEM(paths, i);
        int in = PySet_Contains(clean, path);
        if (in < 0)
            return NULL;
        if (!in)
            break;
        PyObject *v = PyDict_GetItemWithError(built, path);
        if (!v) {
            if (PyErr_Occurred())
                return NULL;
            break;
        }
        if (Py_IS_TYPE(v, &BuiltType) && !(v = built_val((Built *)v)))
            return NULL;
        if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != 4)
            break;
        for (int k = 0; k < 3; k++) {
            PyObject *part = PyTuple_GET_ITEM(v, k + 1);
            if (!PyList_CheckExact(part)) {
                PyErr_SetString(PyExc_TypeError, "gather_built: lists expected");
                return NULL;
            }
            Py_ssize_t n = PyList_GET_SIZE(lists[k]);
            if (PyList_GET_SIZE(part) == 1 ? PyList_Append(lists[k], PyList_GET_ITEM(part, 0)) < 0
                                           : PyList_SetSlice(lists[k], n, n, part) < 0)
                return NULL;
        }
    }
    return PyLong_FromSsize_t(i);
}

/* The size a path's records give it, as recorder.py reads it: from a dict of
 * sizes (path -> size; missing: None), or with from_built from recorder._built
 * (path -> (signature, records, JSON, rows)): the last record's "size" that is not
 * None (recorder._built_size). 1: the entry is not of that shape (recorder.py
 * looks itself), -1: an error. */
static int ledger_size_of(struct Ledger *l, PyObject *path, PyObject **out);

/* sizes given as (dict, ledger) (from_built 2): the end's sizes, those of the
 * ledger's entries that count left in the ledger (ledger_join's lazy_sizes) */
static int sizes_src_ok(PyObject *sizes, int from_built)
{
    if (from_built != 2)
        return PyDict_Check(sizes);
    return PyTuple_CheckExact(sizes) && PyTuple_GET_SIZE(sizes) == 2 &&
           PyDict_Check(PyTuple_GET_ITEM(sizes, 0)) &&
           PyObject_TypeCheck(PyTuple_GET_ITEM(sizes, 1), &LedgerType);
}

static int size_for(PyObject *src, int from_built, PyObject *path, PyObject **out)
{
    if (from_built == 2) { /* (sizes, ledger) */
        PyObject *v = PyDict_GetItemWithError(PyTuple_GET_ITEM(src, 0), path);
        if (v) {
            *out = Py_NewRef(v);
            return 0;
        }
        if (PyErr_Occurred())
            return -1;
        return ledger_size_of((struct Ledger *)PyTuple_GET_ITEM(src, 1), path, out);
    }
    PyObject *v = PyDict_GetItemWithError(src, path);
    if (!v) {
        if (PyErr_Occurred())
            return -1;
        *out = Py_NewRef(Py_None);
        return 0;
    }
    if (!from_built) {
        *out = Py_NewRef(v);
        return 0;
    }
    if (Py_IS_TYPE(v, &BuiltType)) { /* its one record's size */
        *out = Py_NewRef(((Built *)v)->size);
        return 0;
    }
    if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != 4 ||
        !PyList_CheckExact(PyTuple_GET_ITEM(v, 1)))
        return 1;
    PyObject *recs = PyTuple_GET_ITEM(v, 1);
    for (Py_ssize_t j = PyList_GET_SIZE(recs) - 1; j >= 0; j--) {
        PyObject *rec = PyList_GET_ITEM(recs, j);
        if (!PyDict_CheckExact(rec))
            return 1;
        PyObject *size = PyDict_GetItemWithError(rec, S_size);
        if (!size && PyErr_Occurred())
            return -1;
        if (size && size != Py_None) {
            *out = Py_NewRef(size);
            return 0;
        }
    }
    *out = Py_NewRef(Py_None);
    return 0;
}

/* recorder._proc_record's loop over a process's files, for the entries built
 * ahead: from pfs[start] on, while a ProcFile's path is classified (in kinds) and
 * clean and its entry is in pf_built (by id), append (path, size) to used (the
 * size from sizes, see size_for) and the entry and its JSON to files and parts.
 * Returns the index of the first ProcFile not taken: recorder.py goes on from
 * there. */
static PyObject *proc_files_built(PyObject *self, PyObject *args)
{
    PyObject *pfs, *kinds, *clean, *pf_built, *sizes, *files, *parts, *used;
    Py_ssize_t i;
    int from_built;
    if (!PyArg_ParseTuple(args, "O!nO!O!O!OiO!O!O!", &PyList_Type, &pfs, &i, &PyDict_Type,
                          &kinds, &PySet_Type, &clean, &PyDict_Type, &pf_built, &sizes,
                          &from_built, &PyList_Type, &files, &PyList_Type, &parts,
                          &PyList_Type, &used))
        return NULL;
    if (!sizes_src_ok(sizes, from_built)) {
        PyErr_SetString(PyExc_TypeError, "proc_files_built: sizes a dict, or (dict, Ledger)");
        return NULL;
    }
    for (; i >= 0 && i < PyList_GET_SIZE(pfs); i++) {
        PyObject *o = PyList_GET_ITEM(pfs, i);
        if (!PyObject_TypeCheck(o, &ProcFileType))
            break;
        PyObject *path = ((ProcFile *)o)->path;
        if (!PyUnicode_CheckExact(path))
            break;
        int in = PyDict_Contains(kinds, path);
        if (in > 0)
            in = PySet_Contains(clean, path);
        if (in < 0)
            return NULL;
        if (!in)
            break;
        PyObject *id = PyLong_FromVoidPtr(o);
        if (!id)
            return NULL;
        PyObject *hit = PyDict_GetItemWithError(pf_built, id);
        Py_DECREF(id);
        if (!hit) {
            if (PyErr_Occurred())
                return NULL;
            break;
        }
        if (!PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 3)
            break;
        PyObject *size = NULL;
        int r = size_for(sizes, from_built, path, &size);
        if (r < 0)
            return NULL;
        if (r > 0)
            break;
        PyObject *u = PyTuple_Pack(2, path, size);
        Py_DECREF(size);
        if (!u)
            return NULL;
        int bad = PyList_Append(used, u) < 0 ||
                  PyList_Append(files, PyTuple_GET_ITEM(hit, 1)) < 0 ||
                  PyList_Append(parts, PyTuple_GET_ITEM(hit, 2)) < 0;
        Py_DECREF(u);
        if (bad)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* A running process's record built ahead in part (recorder._prebuild_partials):
 * runs of its entries (p.files in order: that dict only grows) that were, at a
 * look, entries built ahead of clean paths (what proc_file_entry takes as built
 * ahead), each run with its entries, their JSON joined with commas and the
 * (path, size) each was taken with (the size its built records gave). A run is
 * spoiled when a path of it leaves the clean set (partial_spoil: the paths the
 * model touched that were clean): nothing else changes what proc_file_entry
 * gives for a clean path (its kind, its entry built ahead, its records and size
 * change only when it is built again, after it left the clean set). So at the
 * end the record of a process that exits last (a data loader's one process
 * with 20,000 files) splices the runs not spoiled and makes only the rest. */
typedef struct {
    Py_ssize_t start, end;          /* positions in p.files */
    PyObject *first;                /* the ProcFile at start (borrowed: p keeps it) */
    PyObject *files, *json, *used;  /* list of entries, bytes, list of (path, size) */
    char spoiled;
} PRun;

typedef struct {
    PyObject_HEAD
    PRun *r;
    Py_ssize_t n, cap;
    Py_ssize_t covered;   /* positions looked at */
    Py_ssize_t at;        /* PyDict_Next's position after them (p.files never loses a key) */
    Py_ssize_t stuck;     /* looks that stopped at covered */
    PyObject *run_of;     /* path -> the number of its run */
    PyObject *proc;       /* the Proc (strong) */
} Partial;

static void partial_dealloc(Partial *pt)
{
    for (Py_ssize_t i = 0; i < pt->n; i++) {
        Py_XDECREF(pt->r[i].files);
        Py_XDECREF(pt->r[i].json);
        Py_XDECREF(pt->r[i].used);
    }
    PyMem_RawFree(pt->r);
    Py_XDECREF(pt->run_of);
    Py_XDECREF(pt->proc);
    Py_TYPE(pt)->tp_free((PyObject *)pt);
}

static PyObject *partial_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *proc;
    if (!PyArg_ParseTuple(args, "O!", &ProcType, &proc))
        return NULL;
    Partial *pt = (Partial *)type->tp_alloc(type, 0);
    if (pt && !(pt->run_of = PyDict_New())) {
        Py_DECREF(pt);
        return NULL;
    }
    if (pt)
        pt->proc = Py_NewRef(proc);
    return (PyObject *)pt;
}

static PyObject *partial_get(Partial *pt, void *c)
{
    /* (positions looked at, runs, runs spoiled, entries in runs not spoiled) */
    Py_ssize_t spoiled = 0, kept = 0;
    for (Py_ssize_t i = 0; i < pt->n; i++) {
        spoiled += pt->r[i].spoiled;
        if (!pt->r[i].spoiled)
            kept += pt->r[i].end - pt->r[i].start;
    }
    return Py_BuildValue("(nnnn)", pt->covered, pt->n, spoiled, kept);
}

static PyGetSetDef partial_getset[] = {
    {"state", (getter)partial_get, NULL, "(positions looked at, runs, spoiled, entries kept)",
     NULL},
    {NULL}};

static PyTypeObject PartialType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roar.record._cmodel.Partial",
    .tp_basicsize = sizeof(Partial),
    .tp_dealloc = (destructor)partial_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = partial_new,
    .tp_getset = partial_getset,
    .tp_doc = "Partial(proc): a running process's record built ahead in part (see _cmodel.c).",
};

/* a run [start, end) of the entries in files, parts, used; 0 or -1 */
static int partial_push(Partial *pt, Py_ssize_t start, Py_ssize_t end, PyObject *first,
                        PyObject *files, PyObject *parts, PyObject *used)
{
    if (pt->n == pt->cap) {
        Py_ssize_t cap = pt->cap ? pt->cap * 2 : 8;
        PRun *r = PyMem_RawRealloc(pt->r, cap * sizeof(PRun));
        if (!r) {
            PyErr_NoMemory();
            return -1;
        }
        pt->r = r;
        pt->cap = cap;
    }
    Py_ssize_t total = PyList_GET_SIZE(parts) - 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++)
        total += PyBytes_GET_SIZE(PyList_GET_ITEM(parts, i));
    PyObject *json = PyBytes_FromStringAndSize(NULL, total);
    PyObject *num = PyLong_FromSsize_t(pt->n);
    if (!json || !num) {
        Py_XDECREF(json);
        Py_XDECREF(num);
        return -1;
    }
    char *o = PyBytes_AS_STRING(json);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        if (i)
            *o++ = ',';
        memcpy(o, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part));
        o += PyBytes_GET_SIZE(part);
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(used); i++) {
        PyObject *path = PyTuple_GET_ITEM(PyList_GET_ITEM(used, i), 0);
        if (PyDict_SetItem(pt->run_of, path, num) < 0) {
            Py_DECREF(json);
            Py_DECREF(num);
            return -1;
        }
    }
    Py_DECREF(num);
    PRun *r = &pt->r[pt->n++];
    r->start = start;
    r->end = end;
    r->first = first;
    r->files = Py_NewRef(files);
    r->json = json;
    r->used = Py_NewRef(used);
    r->spoiled = 0;
    return 0;
}

/* partial_extend(partial, kinds, clean, pf_built, built, patience[, unsettled]) ->
 * entries taken: from the first position not looked at, the entries
 * proc_file_entry would take as built ahead (path a str, classified, clean; its
 * entry in pf_built; its size from built, size_for's), in runs; at another entry
 * it stops, to look again at the next look, unless its path is in unsettled (left
 * to the end by prebuild, or made unclean: not clean again before the end) or it
 * stopped there at the last `patience` looks too: then that entry is left to the
 * end (a written file, stdout...) and it goes on. */
static PyObject *partial_extend(PyObject *self, PyObject *args)
{
    PyObject *po, *kinds, *clean, *pf_built, *built, *unsettled = NULL;
    Py_ssize_t patience;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!n|O!", &PartialType, &po, &PyDict_Type, &kinds,
                          &PySet_Type, &clean, &PyDict_Type, &pf_built, &PyDict_Type, &built,
                          &patience, &PySet_Type, &unsettled))
        return NULL;
    Partial *pt = (Partial *)po;
    Proc *p = (Proc *)pt->proc;
    if (!PyDict_CheckExact(p->files))
        return PyLong_FromLong(0);
    Py_ssize_t n = PyDict_GET_SIZE(p->files), taken = 0;
    if (pt->covered >= n)
        return PyLong_FromLong(0);
    PyObject *files = PyList_New(0), *parts = PyList_New(0), *used = PyList_New(0);
    if (!files || !parts || !used)
        goto fail;
    /* from where the last look stopped: not every position again at each look */
    Py_ssize_t pos = pt->at, i = pt->covered, start = -1;
    PyObject *k, *v, *first = NULL;
    while (PyDict_Next(p->files, &pos, &k, &v)) {
        i++;
        int ok = PyObject_TypeCheck(v, &ProcFileType);
        PyObject *path = ok ? ((ProcFile *)v)->path : NULL;
        PyObject *hit = NULL, *size = NULL;
        if (ok)
            ok = PyUnicode_CheckExact(path);
        if (ok && (ok = PyDict_Contains(kinds, path)) > 0)
            ok = PySet_Contains(clean, path);
        if (ok > 0) {
            PyObject *id = PyLong_FromVoidPtr(v);
            if (!id)
                goto fail;
            hit = PyDict_GetItemWithError(pf_built, id);
            Py_DECREF(id);
            if (!hit && PyErr_Occurred())
                goto fail;
            ok = hit && PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 3 &&
                 PyBytes_CheckExact(PyTuple_GET_ITEM(hit, 2));
        }
        if (ok > 0) {
            int r = size_for(built, 1, path, &size);
            if (r < 0)
                goto fail;
            ok = r == 0;
        }
        if (ok < 0)
            goto fail;
        if (ok) {
            PyObject *u = PyTuple_Pack(2, path, size);
            Py_DECREF(size);
            int bad = !u || PyList_Append(used, u) < 0 ||
                      PyList_Append(files, PyTuple_GET_ITEM(hit, 1)) < 0 ||
                      PyList_Append(parts, PyTuple_GET_ITEM(hit, 2)) < 0;
            Py_XDECREF(u);
            if (bad)
                goto fail;
            if (start < 0)
                start = i - 1, first = v;
            pt->covered = i;
            pt->at = pos;
            pt->stuck = 0;
            taken++;
            continue;
        }
        /* not one built ahead (yet) */
        if (start >= 0) {
            if (partial_push(pt, start, i - 1, first, files, parts, used) < 0)
                goto fail;
            start = -1;
            if (PyList_SetSlice(files, 0, PY_SSIZE_T_MAX, NULL) < 0 ||
                PyList_SetSlice(parts, 0, PY_SSIZE_T_MAX, NULL) < 0)
                goto fail;
            Py_SETREF(used, PyList_New(0));
            if (!used)
                goto fail;
        }
        int left = 0; /* left to the end by prebuild, or made unclean */
        if (unsettled && path && PyUnicode_CheckExact(path) &&
            (left = PySet_Contains(unsettled, path)) < 0)
            goto fail;
        if (!left && pt->stuck < patience) {
            pt->stuck++;
            break;
        }
        pt->covered = i; /* left to the end */
        pt->at = pos;
        pt->stuck = 0;
    }
    if (start >= 0 && partial_push(pt, start, pt->covered, first, files, parts, used) < 0)
        goto fail;
    Py_DECREF(files);
    Py_DECREF(parts);
    Py_DECREF(used);
    return PyLong_FromSsize_t(taken);
fail:
    Py_XDECREF(files);
    Py_XDECREF(parts);
    Py_XDECREF(used);
    return NULL;
}

/* partial_spoil(partial, paths): the runs holding one of paths (paths that left
 * the clean set) are spoiled: made entry by entry at the end */
static PyObject *partial_spoil(PyObject *self, PyObject *args)
{
    PyObject *po, *paths;
    if (!PyArg_ParseTuple(args, "O!O", &PartialType, &po, &paths))
        return NULL;
    Partial *pt = (Partial *)po;
    if (!PyDict_GET_SIZE(pt->run_of))
        Py_RETURN_NONE;
    PyObject *it = PyObject_GetIter(paths), *path;
    if (!it)
        return NULL;
    while ((path = PyIter_Next(it))) {
        PyObject *num = PyDict_GetItemWithError(pt->run_of, path);
        Py_DECREF(path);
        if (num) {
            Py_ssize_t j = PyLong_AsSsize_t(num);
            if (j >= 0 && j < pt->n)
                pt->r[j].spoiled = 1;
        } else if (PyErr_Occurred())
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The whole of recorder._proc_record for a process all of whose entries were
 * built ahead or are remembered by what they are made of (a spawn loop's
 * processes: each opens ld.so.cache and libc, entries the same but for their
 * ProcFile): for each ProcFile of p.files, its path classified (kinds), the size
 * its records give (size_for), and its entry from pf_built (by id) when its path
 * is clean or the entry's signature is _pf_sig's now, else from entries (by
 * (path, *signature)); the argv redacted as argvs has it; the document and its
 * JSON with the entries' JSON spliced in. Returns (doc, JSON, used), or None
 * for anything recorder.py must do itself (a path not classified, an entry not
 * built, an argv not redacted yet, a value the encoder leaves to json): it
 * changes nothing, so recorder.py then starts over. With one (a callable), an
 * entry it does not take is one(pf)'s: (entry, JSON, (path, size)), recorder.py's
 * loop body (the end's record of a process that exits last, with entries not
 * built ahead, in one pass). The argv is looked up first: none redacted, None
 * before any entry is looked at. With partial (the process's Partial), its runs
 * not spoiled are spliced as they are (their entries, JSON and (path, size)s),
 * the rest taken as above. recorder.py is the reference (tests/test_recorder.py). */
static PyObject *S_key, *S_ppid, *S_parent, *S_argv, *S_exe, *S_cwd, *S_exit_code, *S_signal,
    *S_threads, *S_execs, *S_argv_incomplete, *S_files;

static PyObject *pf_signature(ProcFile *pf, PyObject *kind, PyObject *size)
{
    return Py_BuildValue("(OOOOOKKKKO)", kind, size, pf->read ? Py_True : Py_False,
                         pf->written ? Py_True : Py_False, pf->mapped ? Py_True : Py_False,
                         pf->bytes_read, pf->bytes_written, pf->read_calls, pf->write_calls,
                         pf->bytes_exact ? Py_True : Py_False);
}

/* entry (a tuple of at least lo + 2 items): its items lo and lo + 1 appended to
 * files and parts; 1 when it is not such a tuple */
static int take_entry(PyObject *entry, Py_ssize_t lo, PyObject *files, PyObject *parts)
{
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < lo + 2 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, lo + 1)))
        return 1;
    if (PyList_Append(files, PyTuple_GET_ITEM(entry, lo)) < 0 ||
        PyList_Append(parts, PyTuple_GET_ITEM(entry, lo + 1)) < 0)
        return -1;
    return 0;
}

/* one ProcFile's entry: 0 taken, 1 recorder.py's, -1 error */
static int proc_file_entry(ProcFile *pf, PyObject *kinds, PyObject *clean, PyObject *pf_built,
                           PyObject *sizes, int from_built, PyObject *entries, PyObject *files,
                           PyObject *parts, PyObject *used)
{
    PyObject *path = pf->path;
    if (!PyUnicode_CheckExact(path))
        return 1;
    PyObject *kind = PyDict_GetItemWithError(kinds, path);
    if (!kind)
        return PyErr_Occurred() ? -1 : 1;
    PyObject *id = PyLong_FromVoidPtr(pf);
    if (!id)
        return -1;
    PyObject *hit = PyDict_GetItemWithError(pf_built, id);
    Py_DECREF(id);
    if (!hit && PyErr_Occurred())
        return -1;
    if (hit && (!PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 3))
        return 1;
    PyObject *size = NULL;
    int r = size_for(sizes, from_built, path, &size);
    if (r != 0)
        return r;
    PyObject *u = used ? PyTuple_Pack(2, path, size) : NULL; /* used: NULL when not asked */
    if (used && (!u || PyList_Append(used, u) < 0)) {
        Py_XDECREF(u);
        Py_DECREF(size);
        return -1;
    }
    Py_XDECREF(u);
    if (hit) {
        int in = PySet_Contains(clean, path);
        if (in < 0) {
            Py_DECREF(size);
            return -1;
        }
        if (in) {
            Py_DECREF(size);
            return take_entry(hit, 1, files, parts);
        }
    }
    PyObject *sig = pf_signature(pf, kind, size);
    Py_DECREF(size);
    if (!sig)
        return -1;
    if (hit) {
        int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(hit, 0), sig, Py_EQ);
        if (same != 0) {
            Py_DECREF(sig);
            return same < 0 ? -1 : take_entry(hit, 1, files, parts);
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(sig);
    PyObject *key = PyTuple_New(n + 1);
    if (!key) {
        Py_DECREF(sig);
        return -1;
    }
    PyTuple_SET_ITEM(key, 0, Py_NewRef(path));
    for (Py_ssize_t j = 0; j < n; j++)
        PyTuple_SET_ITEM(key, j + 1, Py_NewRef(PyTuple_GET_ITEM(sig, j)));
    Py_DECREF(sig);
    PyObject *same = PyDict_GetItemWithError(entries, key);
    Py_DECREF(key);
    if (!same)
        return PyErr_Occurred() ? -1 : 1;
    return take_entry(same, 0, files, parts);
}

static PyObject *proc_record_built(PyObject *self, PyObject *args)
{
    PyObject *po, *kinds, *clean, *pf_built, *sizes, *entries, *argvs, *one = Py_None,
             *partial = Py_None;
    int from_built, want_used = 1;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OiO!O!|pOO", &ProcType, &po, &PyDict_Type, &kinds,
                          &PySet_Type, &clean, &PyDict_Type, &pf_built, &sizes,
                          &from_built, &PyDict_Type, &entries, &PyDict_Type, &argvs,
                          &want_used, &one, &partial))
        return NULL;
    if (!sizes_src_ok(sizes, from_built)) {
        PyErr_SetString(PyExc_TypeError, "proc_record_built: sizes a dict, or (dict, Ledger)");
        return NULL;
    }
    Proc *p = (Proc *)po;
    Partial *pt = NULL; /* its runs of entries taken ahead (partial_extend) */
    if (partial != Py_None) {
        if (!PyObject_TypeCheck(partial, &PartialType)) {
            PyErr_SetString(PyExc_TypeError, "proc_record_built: partial a Partial or None");
            return NULL;
        }
        if (((Partial *)partial)->proc == po)
            pt = (Partial *)partial;
    }
    Py_ssize_t at = 0, ri = 0, skip_to = 0; /* position in p.files, next run, its end */
    if (!PyDict_CheckExact(p->files) || !PyList_CheckExact(p->argv))
        Py_RETURN_NONE;
    PyObject *files = PyList_New(0), *parts = PyList_New(0),
             *used = want_used ? PyList_New(0) : NULL;
    PyObject *doc = NULL, *raw = NULL, *out = NULL, *redacted = NULL;
    if (!files || !parts || (want_used && !used))
        goto done;
    PyObject *argv = PyList_AsTuple(p->argv);
    if (!argv)
        goto done;
    redacted = PyDict_GetItemWithError(argvs, argv);
    Py_DECREF(argv);
    if (!redacted) {
        if (PyErr_Occurred())
            goto done;
        goto none;
    }
    Py_INCREF(redacted);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(p->files, &pos, &k, &v)) {
        Py_ssize_t here = at++;
        if (here < skip_to)
            continue; /* in a run spliced */
        while (pt && ri < pt->n && pt->r[ri].end <= here)
            ri++;
        if (pt && ri < pt->n && pt->r[ri].start == here && !pt->r[ri].spoiled &&
            pt->r[ri].first == v) {
            PRun *r = &pt->r[ri++];
            Py_ssize_t nf = PyList_GET_SIZE(files);
            if (PyList_SetSlice(files, nf, nf, r->files) < 0 ||
                PyList_Append(parts, r->json) < 0)
                goto done;
            if (used) {
                Py_ssize_t nu = PyList_GET_SIZE(used);
                if (PyList_SetSlice(used, nu, nu, r->used) < 0)
                    goto done;
            }
            skip_to = r->end;
            continue;
        }
        if (!PyObject_TypeCheck(v, &ProcFileType))
            goto none;
        Py_ssize_t n_used = used ? PyList_GET_SIZE(used) : 0;
        int r = proc_file_entry((ProcFile *)v, kinds, clean, pf_built, sizes, from_built,
                                entries, files, parts, used);
        if (r < 0)
            goto done;
        if (r > 0 && one == Py_None)
            goto none;
        if (r > 0) { /* recorder.py's entry (one(pf): (entry, JSON, (path, size))) */
            if (used && PyList_SetSlice(used, n_used, PyList_GET_SIZE(used), NULL) < 0)
                goto done;
            PyObject *got = PyObject_CallOneArg(one, v);
            if (!got)
                goto done;
            if (!PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 3 ||
                !PyBytes_CheckExact(PyTuple_GET_ITEM(got, 1))) {
                Py_DECREF(got);
                PyErr_SetString(PyExc_TypeError,
                                "proc_record_built: one(pf) gives (entry, JSON, (path, size))");
                goto done;
            }
            int bad = PyList_Append(files, PyTuple_GET_ITEM(got, 0)) < 0 ||
                      PyList_Append(parts, PyTuple_GET_ITEM(got, 1)) < 0 ||
                      (used && PyList_Append(used, PyTuple_GET_ITEM(got, 2)) < 0);
            Py_DECREF(got);
            if (bad)
                goto done;
        }
    }
    PyObject *argv_list = PySequence_List(redacted);
    doc = argv_list ? PyDict_New() : NULL;
    if (!doc) {
        Py_XDECREF(argv_list);
        goto done;
    }
    PyObject *pid = PyLong_FromLongLong(p->pid), *threads = PyLong_FromLongLong(p->threads),
             *execs = PyLong_FromLongLong(p->execs);
    int bad = !pid || !threads || !execs || PyDict_SetItem(doc, S_key, p->key) < 0 ||
              PyDict_SetItem(doc, S_pid, pid) < 0 || PyDict_SetItem(doc, S_ppid, p->ppid) < 0 ||
              PyDict_SetItem(doc, S_parent, p->parent) < 0 ||
              PyDict_SetItem(doc, S_argv, argv_list) < 0 ||
              PyDict_SetItem(doc, S_exe, p->exe) < 0 || PyDict_SetItem(doc, S_cwd, p->cwd) < 0 ||
              PyDict_SetItem(doc, S_exit_code, p->exit_code) < 0 ||
              PyDict_SetItem(doc, S_signal, p->signal) < 0 ||
              PyDict_SetItem(doc, S_threads, threads) < 0 ||
              PyDict_SetItem(doc, S_execs, execs) < 0 ||
              PyDict_SetItem(doc, S_argv_incomplete,
                             p->argv_incomplete ? Py_True : Py_False) < 0;
    Py_XDECREF(pid);
    Py_XDECREF(threads);
    Py_XDECREF(execs);
    Py_DECREF(argv_list);
    if (bad)
        goto done;
    /* "files" last: the document's JSON is its head with the parts spliced in */
    JBuf b;
    JBUF_INIT(&b);
    int rc = jb_obj(&b, doc, 0);
    if (rc > 0 && b.n > 0) {
        b.n--; /* the head's closing brace */
        /* written straight into the bytes, at their length (megabytes for a process
         * with 20,000 files: not copied again, no memory touched twice) */
        Py_ssize_t np = PyList_GET_SIZE(parts), total = b.n + 12 + (np ? np - 1 : 0);
        for (Py_ssize_t i = 0; i < np; i++)
            total += PyBytes_GET_SIZE(PyList_GET_ITEM(parts, i));
        raw = PyBytes_FromStringAndSize(NULL, total);
        if (!raw)
            rc = -1;
        else {
            char *o = PyBytes_AS_STRING(raw);
            memcpy(o, b.p, b.n);
            o += b.n;
            memcpy(o, ",\"files\":[", 10);
            o += 10;
            for (Py_ssize_t i = 0; i < np; i++) {
                PyObject *part = PyList_GET_ITEM(parts, i);
                if (i)
                    *o++ = ',';
                memcpy(o, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part));
                o += PyBytes_GET_SIZE(part);
            }
            memcpy(o, "]}", 2);
        }
    }
    JBUF_FREE(&b);
    if (rc == 0)
        goto none; /* a value the encoder leaves to json */
    if (!raw || PyDict_SetItem(doc, S_files, files) < 0)
        goto done;
    PyObject *used_t = used ? PyList_AsTuple(used) : PyTuple_New(0);
    if (used_t)
        out = PyTuple_Pack(3, doc, raw, used_t);
    Py_XDECREF(used_t);
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(files);
    Py_XDECREF(parts);
    Py_XDECREF(used);
    Py_XDECREF(doc);
    Py_XDECREF(raw);
    Py_XDECREF(redacted);
    return out;
}

/* recorder._process_records' check of a process record built ahead: whether
 * sizes.get(path) == size for each (path, size) of used. */
static PyObject *sizes_same(PyObject *self, PyObject *args)
{
    PyObject *used, *sizes, *ledger = NULL;
    if (!PyArg_ParseTuple(args, "O!O!|O!", &PyTuple_Type, &used, &PyDict_Type, &sizes,
                          &LedgerType, &ledger))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(used); i++) {
        PyObject *u = PyTuple_GET_ITEM(used, i);
        if (!PyTuple_CheckExact(u) || PyTuple_GET_SIZE(u) != 2) {
            PyErr_SetString(PyExc_TypeError, "sizes_same: (path, size) expected");
            return NULL;
        }
        PyObject *now = PyDict_GetItemWithError(sizes, PyTuple_GET_ITEM(u, 0)), *had = NULL;
        if (!now && PyErr_Occurred())
            return NULL;
        if (!now && ledger) {
            if (ledger_size_of((struct Ledger *)ledger, PyTuple_GET_ITEM(u, 0), &had) < 0)
                return NULL;
            now = had;
        }
        int same = PyObject_RichCompareBool(now ? now : Py_None, PyTuple_GET_ITEM(u, 1), Py_EQ);
        Py_XDECREF(had);
        if (same < 0)
            return NULL;
        if (!same)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyObject *S_output, *S_env, *S_pending, *S_temporary, *S_hash_written;

/* recorder.tally's accumulators, in its order */
typedef struct {
    Py_ssize_t unhashed, n_in, n_out;
    PyObject *sizes, *env_out, *env_read, *pending, *written;
} Tally;

/* One file record into t, as recorder.tally takes it: 0, 1 when it is not a dict
 * with the keys recorder.py reads (t is then of no use: recorder.tally does it),
 * -1 on an error. */
static int tally_one(Tally *t, PyObject *f, PyObject *listed, PyObject *hashed)
{
    if (!PyDict_CheckExact(f))
        return 1;
    PyObject *role = PyDict_GetItemWithError(f, S_role);
    PyObject *size = role ? PyDict_GetItemWithError(f, S_size) : NULL;
    if (!role || PyErr_Occurred())
        goto none_or_fail;
    if (size && size != Py_None) {
        PyObject *path = PyDict_GetItemWithError(f, S_path);
        if (!path || PyDict_SetItem(t->sizes, path, size) < 0)
            goto none_or_fail;
    }
    PyObject *st = PyDict_GetItemWithError(f, S_status); /* f.get("status") == "pending" */
    int late = st ? PyObject_RichCompareBool(st, S_pending, Py_EQ) : 0;
    if (late < 0 || (!st && PyErr_Occurred()))
        return -1;
    if (late) {
        PyObject *path = PyDict_GetItemWithError(f, S_path);
        if (!path || PyList_Append(t->pending, path) < 0)
            goto none_or_fail;
    }
    int w = PyObject_RichCompareBool(role, S_output, Py_EQ); /* links: what it wrote */
    if (w == 0)
        w = PyObject_RichCompareBool(role, S_temporary, Py_EQ);
    if (w < 0)
        return -1;
    if (w) {
        PyObject *path = PyDict_GetItemWithError(f, S_path);
        int truth = path ? PyObject_IsTrue(path) : 0;
        if (truth < 0 || (!path && PyErr_Occurred()))
            return -1;
        if (truth && PyList_Append(t->written, path) < 0)
            return -1;
    }
    int is_in = PyObject_RichCompareBool(role, S_input, Py_EQ);
    if (is_in < 0)
        return -1;
    if (is_in) {
        PyObject *status = PyDict_GetItemWithError(f, S_status);
        if (!status)
            goto none_or_fail;
        int known = PySequence_Contains(hashed, status);
        if (known < 0)
            return -1;
        t->unhashed += !known;
    }
    PyObject *kind = NULL;
    int is_out = is_in ? 0 : PyObject_RichCompareBool(role, S_output, Py_EQ);
    if (is_out < 0)
        return -1;
    if (is_in || is_out) {
        if (!(kind = PyDict_GetItemWithError(f, S_kind)))
            goto none_or_fail;
        int env = is_out ? PyObject_RichCompareBool(kind, S_env, Py_EQ) : 0;
        if (env < 0)
            return -1;
        if (env) {
            PyObject *path = PyDict_GetItemWithError(f, S_path);
            if (!path || PyList_Append(t->env_out, path) < 0)
                goto none_or_fail;
            return 0;
        }
        int in_listed = PySequence_Contains(listed, kind);
        if (in_listed < 0)
            return -1;
        if (in_listed) {
            if (is_in)
                t->n_in++;
            else
                t->n_out++;
        }
        return 0;
    }
    int is_env = PyObject_RichCompareBool(role, S_env, Py_EQ);
    if (is_env < 0)
        return -1;
    if (is_env) {
        PyObject *path = PyDict_GetItemWithError(f, S_path);
        if (!path || PyList_Append(t->env_read, path) < 0)
            goto none_or_fail;
    }
    return 0;
none_or_fail:
    return PyErr_Occurred() ? -1 : 1;
}

/* A tally's state as a list [unhashed, sizes, inputs, outputs, env_outputs,
 * env_reads, pending, written] (what tally_records returns, as a list): read
 * into t (borrowed references), or written back from it. */
static int tally_from(Tally *t, PyObject *state)
{
    if (!PyList_CheckExact(state) || PyList_GET_SIZE(state) != 8) {
        PyErr_SetString(PyExc_TypeError, "a tally state: a list of 8 expected");
        return -1;
    }
    PyObject **v = ((PyListObject *)state)->ob_item;
    t->unhashed = PyLong_AsSsize_t(v[0]);
    t->n_in = PyLong_AsSsize_t(v[2]);
    t->n_out = PyLong_AsSsize_t(v[3]);
    if (PyErr_Occurred())
        return -1;
    if (!PyDict_CheckExact(v[1]) || !PyList_CheckExact(v[4]) || !PyList_CheckExact(v[5]) ||
        !PyList_CheckExact(v[6]) || !PyList_CheckExact(v[7])) {
        PyErr_SetString(PyExc_TypeError, "a tally state: a list of 8 expected");
        return -1;
    }
    t->sizes = v[1];
    t->env_out = v[4];
    t->env_read = v[5];
    t->pending = v[6];
    t->written = v[7];
    return 0;
}

static int tally_back(Tally *t, PyObject *state)
{
    Py_ssize_t at[3] = {0, 2, 3}, n[3] = {t->unhashed, t->n_in, t->n_out};
    for (int i = 0; i < 3; i++) {
        PyObject *o = PyLong_FromSsize_t(n[i]);
        if (!o || PyList_SetItem(state, at[i], o) < 0)
            return -1;
    }
    return 0;
}

/* recorder.tally's passes over a run's file records, in one: (unhashed, sizes,
 * inputs, outputs, env_outputs, env_reads, pending, written) where unhashed counts
 * the inputs whose status is not one of hashed; sizes maps path -> size (the last
 * record of a path with a size not None); inputs and outputs count the records of
 * those roles of a listed kind; env_outputs and env_reads are the paths of the
 * outputs of kind env and of the records of role env, pending the paths of the
 * records whose status is "pending", written the paths (when true) of the outputs
 * and temporaries, all in order. None: a record that is not a dict with these keys
 * as recorder.py reads them (recorder.tally does it, and raises what it raises).
 * With state (a list, as tally_from reads it): the records are added to it, in
 * place, and it is returned (None as above: it is then of no use). */
static PyObject *tally_records(PyObject *self, PyObject *args)
{
    PyObject *files, *listed, *hashed, *state = NULL;
    if (!PyArg_ParseTuple(args, "O!O!O!|O!", &PyList_Type, &files, &PyTuple_Type, &listed,
                          &PyTuple_Type, &hashed, &PyList_Type, &state))
        return NULL;
    Tally t = {0};
    if (state) {
        if (tally_from(&t, state) < 0)
            return NULL;
    } else {
        t.sizes = PyDict_New();
        t.env_out = PyList_New(0);
        t.env_read = PyList_New(0);
        t.pending = PyList_New(0);
        t.written = PyList_New(0);
    }
    PyObject *out = NULL;
    if (!t.sizes || !t.env_out || !t.env_read || !t.pending || !t.written)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(files); i++) {
        int rc = tally_one(&t, PyList_GET_ITEM(files, i), listed, hashed);
        if (rc < 0)
            goto done;
        if (rc > 0) {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (state)
        out = tally_back(&t, state) < 0 ? NULL : Py_NewRef(state);
    else
        out = Py_BuildValue("(nOnnOOOO)", t.unhashed, t.sizes, t.n_in, t.n_out, t.env_out,
                            t.env_read, t.pending, t.written);
done:
    if (!state) {
        Py_XDECREF(t.sizes);
        Py_XDECREF(t.env_out);
        Py_XDECREF(t.env_read);
        Py_XDECREF(t.pending);
        Py_XDECREF(t.written);
    }
    return out;
}

/* The keys of a dict that are not in container (a set or a dict), in the
 * dict's order: [path for path in paths if path not in container]. */
static PyObject *keys_not_in(PyObject *self, PyObject *args)
{
    PyObject *d, *c, *k, *v;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &d, &c))
        return NULL;
    int is_set = PyAnySet_Check(c);
    if (!is_set && !PyDict_Check(c)) {
        PyErr_SetString(PyExc_TypeError, "keys_not_in: a set or a dict expected");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    Py_ssize_t pos = 0;
    if (!out)
        return NULL;
    while (PyDict_Next(d, &pos, &k, &v)) {
        int in = is_set ? PySet_Contains(c, k) : PyDict_Contains(c, k);
        if (in < 0 || (!in && PyList_Append(out, k) < 0)) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* The end's ledger of the settled inputs built in C (settled_inputs, given one):
 * per path built, its built entry (the tuple recorder._built holds), its JSON, size,
 * kind and status, and its hash-index row (path NUL hash) copied into one arena, so
 * that the end of a run over 20,000 files (ledger_sorted, ledger_join) touches a
 * few objects per file instead of walking each record (gather_built, tally_records,
 * index_rows: the reference, and what takes every path the ledger does not). An
 * entry counts at the end only when its path is clean and recorder._built still
 * holds that very tuple: anything built again, or touched since, is the rest's. */
typedef struct {
    PyObject *path, *val, *raw, *size, *kind, *status; /* strong references */
    size_t row_off, raw_len;
    uint32_t row_len;
    uint8_t ascii;
    uint8_t dead; /* its path built again, or no longer clean, since (ledger_spoil) */
} LEntry;

typedef struct Ledger {
    PyObject_HEAD
    LEntry *e;
    Py_ssize_t n, cap;
    char *arena;
    size_t an, acap;
    PyObject *index;  /* path -> its last entry's number */
    LEntry **sorted;  /* ledger_sorted's: the entries that count, in path order */
    Py_ssize_t n_sorted;
    Py_ssize_t *order; /* ledger_sort: the numbers of the entries [0, n_order_upto) not
                        * dead then, in path order (merged at each look, off the end) */
    Py_ssize_t n_order, order_upto;
} Ledger;

static void ledger_clear_entries(Ledger *l)
{
    for (Py_ssize_t i = 0; i < l->n; i++) {
        LEntry *e = &l->e[i];
        Py_XDECREF(e->path);
        Py_XDECREF(e->val);
        Py_XDECREF(e->raw);
        Py_XDECREF(e->size);
        Py_XDECREF(e->kind);
        Py_XDECREF(e->status);
    }
    PyMem_RawFree(l->e);
    PyMem_RawFree(l->arena);
    PyMem_RawFree(l->sorted);
    PyMem_RawFree(l->order);
    l->e = NULL;
    l->arena = NULL;
    l->sorted = NULL;
    l->order = NULL;
    l->n_order = l->order_upto = 0;
    l->n = l->cap = l->n_sorted = 0;
    l->an = l->acap = 0;
}

static void ledger_dealloc(Ledger *l)
{
    ledger_clear_entries(l);
    Py_XDECREF(l->index);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyObject *ledger_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Ledger *l = (Ledger *)type->tp_alloc(type, 0);
    if (l && !(l->index = PyDict_New())) {
        Py_DECREF(l);
        return NULL;
    }
    return (PyObject *)l;
}

static Py_ssize_t ledger_len(Ledger *l)
{
    return PyDict_GET_SIZE(l->index);
}

static PySequenceMethods ledger_as_sequence = {.sq_length = (lenfunc)ledger_len};

static PyTypeObject LedgerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roar.record._cmodel.Ledger",
    .tp_basicsize = sizeof(Ledger),
    .tp_dealloc = (destructor)ledger_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = ledger_new,
    .tp_as_sequence = &ledger_as_sequence,
    .tp_doc = "Ledger(): the settled inputs settled_inputs built, for the end (see _cmodel.c).",
};

/* An entry for path's built tuple val = (signature, [record], [JSON], rows) of a
 * settled input: 0 (added, or not of that shape: then not added, and the end takes
 * the path with the rest), -1 on an error. */
static int ledger_kill(Ledger *l, PyObject *path) /* its entry no longer counts */
{
    PyObject *num = PyDict_GetItemWithError(l->index, path);
    if (!num)
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t i = PyLong_AsSsize_t(num);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i >= 0 && i < l->n)
        l->e[i].dead = 1;
    return 0;
}

/* the size of path's entry that counts (*out a new reference; None: no such entry) */
static int ledger_size_of(Ledger *l, PyObject *path, PyObject **out)
{
    PyObject *num = PyDict_GetItemWithError(l->index, path);
    if (num) {
        Py_ssize_t i = PyLong_AsSsize_t(num);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i >= 0 && i < l->n && !l->e[i].dead) {
            *out = Py_NewRef(l->e[i].size);
            return 0;
        }
    } else if (PyErr_Occurred()) {
        return -1;
    }
    *out = Py_NewRef(Py_None);
    return 0;
}

/* ledger_size(ledger, path) -> the size its entry that counts gives, or None */
static PyObject *ledger_size(PyObject *self, PyObject *args)
{
    PyObject *ledger, *path, *out;
    if (!PyArg_ParseTuple(args, "O!O", &LedgerType, &ledger, &path))
        return NULL;
    return ledger_size_of((Ledger *)ledger, path, &out) < 0 ? NULL : out;
}

static int ledger_put(Ledger *l, PyObject *path, PyObject *val, PyObject *raw, PyObject *size,
                      PyObject *kind, PyObject *status, const char *pb, Py_ssize_t pn,
                      const char *kb, Py_ssize_t kn);

static int ledger_add(Ledger *l, PyObject *path, PyObject *val)
{
    /* built again: the entry before counts no more, whatever this one is */
    if (PyUnicode_CheckExact(path) && ledger_kill(l, path) < 0)
        return -1;
    if (PyUnicode_CheckExact(path) && Py_IS_TYPE(val, &BuiltType)) {
        /* its fields as the tuple's record holds them; its row: the path's bytes
         * (ASCII: its UTF-8), NUL, key16 */
        Built *b = (Built *)val;
        if (!PyUnicode_IS_ASCII(b->path) || !PyBytes_CheckExact(b->raw))
            return 0;
        return ledger_put(l, path, val, b->raw, b->size, b->kind, b->status,
                          b->has_row ? (const char *)PyUnicode_1BYTE_DATA(b->path) : NULL,
                          b->has_row ? PyUnicode_GET_LENGTH(b->path) : 0,
                          (const char *)b->key16, b->has_row ? 16 : 0);
    }
    if (!PyUnicode_CheckExact(path) || !PyTuple_CheckExact(val) || PyTuple_GET_SIZE(val) != 4)
        return 0;
    PyObject *recs = PyTuple_GET_ITEM(val, 1), *raws = PyTuple_GET_ITEM(val, 2),
             *rows = PyTuple_GET_ITEM(val, 3);
    if (!PyList_CheckExact(recs) || PyList_GET_SIZE(recs) != 1 || !PyList_CheckExact(raws) ||
        PyList_GET_SIZE(raws) != 1 || !PyBytes_CheckExact(PyList_GET_ITEM(raws, 0)) ||
        !PyList_CheckExact(rows) || PyList_GET_SIZE(rows) > 1)
        return 0;
    PyObject *rec = PyList_GET_ITEM(recs, 0);
    if (!PyDict_CheckExact(rec))
        return 0;
    PyObject *role = PyDict_GetItemWithError(rec, S_role),
             *size = PyDict_GetItemWithError(rec, S_size),
             *kind = PyDict_GetItemWithError(rec, S_kind),
             *status = PyDict_GetItemWithError(rec, S_status);
    if (PyErr_Occurred())
        return -1;
    if (!role || !size || !kind || !status)
        return 0;
    int input = PyObject_RichCompareBool(role, S_input, Py_EQ);
    if (input <= 0)
        return input;
    /* its row: path NUL the key's first 16 bytes (index_rows' with hash_len 16) */
    const char *pb = NULL, *kb = NULL;
    Py_ssize_t pn = 0, kn = 0;
    if (PyList_GET_SIZE(rows)) {
        PyObject *t = PyList_GET_ITEM(rows, 0);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 3 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(t, 0)) ||
            PyUnicode_Compare(PyTuple_GET_ITEM(t, 0), S_hash_read) != 0 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 1)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1)) < 16 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 2)))
            return 0;
        kb = PyBytes_AS_STRING(PyTuple_GET_ITEM(t, 1));
        kn = 16;
        pb = PyBytes_AS_STRING(PyTuple_GET_ITEM(t, 2));
        pn = PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 2));
    }
    return ledger_put(l, path, val, PyList_GET_ITEM(raws, 0), size, kind, status, pb, pn, kb,
                      kn);
}

/* ledger_add's entry: path's, for val, its JSON raw, size, kind and status, and its
 * row pb NUL kb (none when pn is 0) */
static int ledger_put(Ledger *l, PyObject *path, PyObject *val, PyObject *raw, PyObject *size,
                      PyObject *kind, PyObject *status, const char *pb, Py_ssize_t pn,
                      const char *kb, Py_ssize_t kn)
{
    /* an entry after ledger_sorted: that order (and its pointers into l->e,
     * which may move below) no longer stands; ledger_join refuses until sorted
     * again */
    PyMem_RawFree(l->sorted);
    l->sorted = NULL;
    l->n_sorted = 0;
    if (l->n == l->cap) {
        Py_ssize_t cap = l->cap ? l->cap * 2 : 1024;
        LEntry *e = PyMem_RawRealloc(l->e, cap * sizeof(LEntry));
        if (!e) {
            PyErr_NoMemory();
            return -1;
        }
        l->e = e;
        l->cap = cap;
    }
    size_t need = pn ? (size_t)pn + 1 + kn : 0;
    if (l->an + need > l->acap) {
        size_t cap = l->acap ? l->acap : 1 << 16;
        while (cap < l->an + need)
            cap *= 2;
        char *a = PyMem_RawRealloc(l->arena, cap);
        if (!a) {
            PyErr_NoMemory();
            return -1;
        }
        l->arena = a;
        l->acap = cap;
    }
    PyObject *num = PyLong_FromSsize_t(l->n);
    if (!num || PyDict_SetItem(l->index, path, num) < 0) {
        Py_XDECREF(num);
        return -1;
    }
    Py_DECREF(num);
    LEntry *e = &l->e[l->n++];
    e->path = Py_NewRef(path);
    e->val = Py_NewRef(val);
    e->raw = Py_NewRef(raw);
    e->raw_len = (size_t)PyBytes_GET_SIZE(e->raw);
    e->size = Py_NewRef(size);
    e->kind = Py_NewRef(kind);
    e->status = Py_NewRef(status);
    e->ascii = PyUnicode_IS_ASCII(path);
    e->dead = 0;
    e->row_off = l->an;
    e->row_len = (uint32_t)need;
    if (pn) {
        memcpy(l->arena + l->an, pb, pn);
        l->arena[l->an + pn] = '\0';
        memcpy(l->arena + l->an + pn + 1, kb, kn);
        l->an += need;
    }
    return 0;
}

static const char *ledger_arena; /* qsort's: the GIL is held throughout */

/* Python's order of two paths (sorted(str)): the bytes of ASCII ones (rows begin
 * with them, a NUL after: a path sorts before the longer ones it begins), else
 * their code points */
static int ledger_cmp(const void *a, const void *b)
{
    const LEntry *x = *(LEntry *const *)a, *y = *(LEntry *const *)b;
    if (x->ascii && y->ascii && x->row_len && y->row_len) {
        size_t n = x->row_len < y->row_len ? x->row_len : y->row_len;
        int c = memcmp(ledger_arena + x->row_off, ledger_arena + y->row_off, n);
        if (c)
            return c;
        return x->row_len < y->row_len ? -1 : x->row_len > y->row_len;
    }
    return PyUnicode_Compare(x->path, y->path); /* two str: no error */
}

static Ledger *ledger_of_cmp; /* qsort's: the GIL is held throughout */

static int ledger_num_cmp(const void *a, const void *b)
{
    Ledger *l = ledger_of_cmp;
    const LEntry *x = &l->e[*(const Py_ssize_t *)a], *y = &l->e[*(const Py_ssize_t *)b];
    return ledger_cmp(&x, &y);
}

/* the entries added since the last sort, sorted, merged into the order (the dead
 * ones dropped): what ledger_sorted would sort at the end, done at each look */
static int ledger_sort_some(Ledger *l)
{
    Py_ssize_t m = l->n - l->order_upto;
    if (m <= 0)
        return 0;
    Py_ssize_t *add = PyMem_RawMalloc(m * sizeof(Py_ssize_t));
    Py_ssize_t *out = PyMem_RawMalloc((l->n_order + m) * sizeof(Py_ssize_t));
    if (!add || !out) {
        PyMem_RawFree(add);
        PyMem_RawFree(out);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t na = 0;
    for (Py_ssize_t k = l->order_upto; k < l->n; k++)
        if (!l->e[k].dead)
            add[na++] = k;
    ledger_arena = l->arena;
    ledger_of_cmp = l;
    qsort(add, na, sizeof(Py_ssize_t), ledger_num_cmp);
    Py_ssize_t a = 0, b = 0, no = 0;
    while (a < l->n_order || b < na) {
        if (a < l->n_order && l->e[l->order[a]].dead) {
            a++;
            continue;
        }
        if (b == na || (a < l->n_order && ledger_num_cmp(&l->order[a], &add[b]) <= 0))
            out[no++] = l->order[a++];
        else
            out[no++] = add[b++];
    }
    PyMem_RawFree(add);
    PyMem_RawFree(l->order);
    l->order = out;
    l->n_order = no;
    l->order_upto = l->n;
    return 0;
}

/* ledger_sort(ledger[, least]): ledger_sort_some, between looks (recorder.prebuild),
 * once the entries added since are an eighth of those in order and `least` (1,024)
 * or more: a merge walks them all, and the looks are many (one every few files in
 * a data loader's run); the end sorts what is left (ledger_sorted) */
static PyObject *ledger_sort(PyObject *self, PyObject *args)
{
    PyObject *ledger;
    Py_ssize_t least = 1024;
    if (!PyArg_ParseTuple(args, "O!|n", &LedgerType, &ledger, &least))
        return NULL;
    Ledger *l = (Ledger *)ledger;
    Py_ssize_t m = l->n - l->order_upto;
    if (m > 0 && m >= least && m >= l->n_order / 8 && ledger_sort_some(l) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ledger_spoil(ledger, paths): the entries of paths (paths that left the clean set,
 * or whose built tuple recorder.py replaced) count no more */
static PyObject *ledger_spoil(PyObject *self, PyObject *args)
{
    PyObject *ledger, *paths;
    if (!PyArg_ParseTuple(args, "O!O", &LedgerType, &ledger, &paths))
        return NULL;
    Ledger *l = (Ledger *)ledger;
    if (!l->n)
        Py_RETURN_NONE;
    PyObject *it = PyObject_GetIter(paths), *path;
    if (!it)
        return NULL;
    while ((path = PyIter_Next(it))) {
        int r = ledger_kill(l, path);
        Py_DECREF(path);
        if (r < 0)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* ledger_sorted(ledger, paths[, clean, built]) -> [paths of paths not taken]: the
 * entries that count at the end (not dead: recorder.py spoils an entry whenever its
 * path leaves the clean set or its built tuple is replaced, and a path built again
 * kills its entry before), in path order for ledger_join (the order ledger_sort kept
 * at each look, the entries since merged in); every other path of paths
 * (model.paths), in the dict's order, for recorder.py. With clean and built (the
 * tests' check, ROAR_CHECK_LEDGER): each entry that counts must have its path in
 * clean and built[path] its tuple, else RuntimeError. */
static PyObject *ledger_sorted(PyObject *self, PyObject *args)
{
    PyObject *ledger, *paths, *clean = NULL, *built = NULL, *k, *v;
    if (!PyArg_ParseTuple(args, "O!O!|O!O!", &LedgerType, &ledger, &PyDict_Type, &paths,
                          &PySet_Type, &clean, &PyDict_Type, &built))
        return NULL;
    Ledger *l = (Ledger *)ledger;
    PyMem_RawFree(l->sorted);
    l->sorted = NULL;
    l->n_sorted = 0;
    if (ledger_sort_some(l) < 0)
        return NULL;
    l->sorted = PyMem_RawMalloc((l->n_order ? l->n_order : 1) * sizeof(LEntry *));
    PyObject *rest = PyList_New(0);
    if (!l->sorted || !rest) {
        Py_XDECREF(rest);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < l->n_order; i++) {
        LEntry *e = &l->e[l->order[i]];
        if (e->dead)
            continue;
        if (clean) {
            int in = PySet_Contains(clean, e->path);
            PyObject *now = in > 0 ? PyDict_GetItemWithError(built, e->path) : NULL;
            if (in < 0 || PyErr_Occurred())
                goto fail;
            if (now != e->val) {
                PyErr_Format(PyExc_RuntimeError,
                             "ledger: the entry of %R counts, but its path is %s", e->path,
                             in ? "built again" : "not clean");
                goto fail;
            }
        }
        l->sorted[l->n_sorted++] = e;
    }
    Py_ssize_t pos = 0;
    while (PyDict_Next(paths, &pos, &k, &v)) {
        PyObject *num = PyDict_GetItemWithError(l->index, k);
        if (num) {
            Py_ssize_t i = PyLong_AsSsize_t(num);
            if (i == -1 && PyErr_Occurred())
                goto fail;
            if (i >= 0 && i < l->n && !l->e[i].dead)
                continue;
        } else if (PyErr_Occurred()) {
            goto fail;
        }
        if (PyList_Append(rest, k) < 0)
            goto fail;
    }
    return rest;
fail:
    PyMem_RawFree(l->sorted);
    l->sorted = NULL;
    l->n_sorted = 0;
    Py_DECREF(rest);
    return NULL;
}

/* ledger_join(ledger, rest, rest_json, state, (rows, rows), listed, hashed[,
 * lazy_sizes, brackets]) -> the JSON of the run's file records joined with commas
 * (store._join's without its brackets; with brackets, store._join's), in path
 * order: ledger_sorted's entries and the rest (their paths sorted, rest_json[i]
 * the JSON of rest[i]'s records) merged; the entries' records are added to the
 * tally state (tally_records'; with lazy_sizes their sizes are not: ledger_size
 * gives them) and their index rows to rows[0] (hash_read), as tally_records and
 * index_rows would. */
static PyObject *ledger_join(PyObject *self, PyObject *args)
{
    PyObject *ledger, *rest, *rest_json, *state, *rows_r, *rows_w, *listed, *hashed;
    int lazy_sizes = 0, brackets = 0;
    if (!PyArg_ParseTuple(args, "O!O!O!O!(O!O!)O!O!|pp", &LedgerType, &ledger, &PyList_Type,
                          &rest, &PyList_Type, &rest_json, &PyList_Type, &state, &PyList_Type,
                          &rows_r, &PyList_Type, &rows_w, &PyTuple_Type, &listed, &PyTuple_Type,
                          &hashed, &lazy_sizes, &brackets))
        return NULL;
    Ledger *l = (Ledger *)ledger;
    if (!l->sorted) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ledger_join: ledger_sorted first, after the ledger's last entry");
        return NULL;
    }
    Py_ssize_t nr = PyList_GET_SIZE(rest);
    if (PyList_GET_SIZE(rest_json) != nr) {
        PyErr_SetString(PyExc_ValueError, "ledger_join: a list of JSON per path of rest");
        return NULL;
    }
    Tally t;
    if (tally_from(&t, state) < 0)
        return NULL;
    /* the bytes' length first (no buffer grown and copied: megabytes) */
    size_t total = 0, parts = 0;
    for (Py_ssize_t j = 0; j < nr; j++) {
        PyObject *raws = PyList_GET_ITEM(rest_json, j);
        if (!PyList_CheckExact(raws))
            goto bad_type;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(raws); k++) {
            if (!PyBytes_CheckExact(PyList_GET_ITEM(raws, k)))
                goto bad_type;
            total += (size_t)PyBytes_GET_SIZE(PyList_GET_ITEM(raws, k));
            parts++;
        }
    }
    for (Py_ssize_t i = 0; i < l->n_sorted; i++)
        total += l->sorted[i]->raw_len;
    parts += (size_t)l->n_sorted;
    total += parts ? parts - 1 : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total + (brackets ? 2 : 0));
    if (!out)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    size_t at = 0, put = 0; /* bytes and parts written */
    if (brackets) { /* the stored list itself (store._join's), not copied again */
        o[0] = '[';
        o[total + 1] = ']';
        o++;
    }
    if (!lazy_sizes && !PyDict_GET_SIZE(t.sizes) && l->n_sorted > 1024) {
        /* no rehash at every doubling */
        PyObject *sized = _PyDict_NewPresized(l->n_sorted + nr);
        if (!sized || PyList_SetItem(state, 1, sized) < 0)
            goto fail;
        t.sizes = sized;
    }
    Py_ssize_t i = 0, j = 0;
    while (i < l->n_sorted || j < nr) {
        int take_rest = 0;
        if (j < nr) {
            PyObject *p = PyList_GET_ITEM(rest, j);
            if (i == l->n_sorted)
                take_rest = 1;
            else {
                LEntry *e = l->sorted[i];
                int c;
                if (e->ascii && e->row_len && PyUnicode_IS_ASCII(p)) {
                    /* as ledger_cmp, not touching the entry's str: its row begins with
                     * its path, a NUL after (a path holds none) */
                    Py_ssize_t pn = PyUnicode_GET_LENGTH(p), rn = e->row_len;
                    const char *row = l->arena + e->row_off;
                    c = memcmp(PyUnicode_DATA(p), row, pn < rn ? pn : rn);
                    if (!c) /* p begins the row: the same path, or p is the shorter */
                        c = pn < rn ? (row[pn] == '\0' ? 0 : -1) : 1;
                } else {
                    c = PyUnicode_Compare(p, e->path);
                    if (c == -1 && PyErr_Occurred())
                        goto fail;
                }
                take_rest = c < 0;
            }
        }
        if (take_rest) {
            PyObject *raws = PyList_GET_ITEM(rest_json, j++);
            for (Py_ssize_t k = 0; k < PyList_GET_SIZE(raws); k++) {
                PyObject *raw = PyList_GET_ITEM(raws, k);
                if (put++)
                    o[at++] = ',';
                memcpy(o + at, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
                at += PyBytes_GET_SIZE(raw);
            }
            continue;
        }
        LEntry *e = l->sorted[i++];
        if (put++)
            o[at++] = ',';
        memcpy(o + at, PyBytes_AS_STRING(e->raw), e->raw_len);
        at += e->raw_len;
        /* tally_one of an input record */
        if (!lazy_sizes && e->size != Py_None && PyDict_SetItem(t.sizes, e->path, e->size) < 0)
            goto fail;
        int late = PyObject_RichCompareBool(e->status, S_pending, Py_EQ);
        int known = late < 0 ? -1 : PySequence_Contains(hashed, e->status);
        int in_listed = known < 0 ? -1 : PySequence_Contains(listed, e->kind);
        if (in_listed < 0)
            goto fail;
        if (late && PyList_Append(t.pending, e->path) < 0)
            goto fail;
        t.unhashed += !known;
        t.n_in += in_listed;
        if (e->row_len) {
            PyObject *row = PyBytes_FromStringAndSize(l->arena + e->row_off, e->row_len);
            int bad = !row || PyList_Append(rows_r, row) < 0;
            Py_XDECREF(row);
            if (bad)
                goto fail;
        }
    }
    if (tally_back(&t, state) < 0)
        goto fail;
    return out;
fail:
    Py_DECREF(out);
    return NULL;
bad_type:
    PyErr_SetString(PyExc_TypeError, "ledger_join: lists of bytes expected");
    return NULL;
}

/* store._put_files' rows of the hash indexes from index entries (db, content hash +
 * run id, path): for each of the two dbs named, the sorted, distinct rows path NUL
 * the key's first hash_len bytes. None: an entry of another shape or db (store.py
 * makes them itself). The entries of a run come in path order: sorted as they come
 * (timsort: one pass over rows in order), then the repeats dropped. With start (two
 * lists of rows made already, gather_end's): the rows are added to them, in place. */
static PyObject *index_rows(PyObject *self, PyObject *args)
{
    PyObject *entries, *dbs[2], *start[2] = {NULL, NULL};
    Py_ssize_t hash_len;
    if (!PyArg_ParseTuple(args, "O!(UU)n|(O!O!)", &PyList_Type, &entries, &dbs[0], &dbs[1],
                          &hash_len, &PyList_Type, &start[0], &PyList_Type, &start[1]))
        return NULL;
    PyObject *sets[2] = {start[0] ? Py_NewRef(start[0]) : PyList_New(0),
                         start[1] ? Py_NewRef(start[1]) : PyList_New(0)},
             *out = NULL;
    if (!sets[0] || !sets[1])
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 3)
            goto none;
        PyObject *db = PyTuple_GET_ITEM(e, 0), *key = PyTuple_GET_ITEM(e, 1),
                 *path = PyTuple_GET_ITEM(e, 2);
        int which = -1;
        for (int j = 0; j < 2 && which < 0; j++) {
            int eq = PyUnicode_CheckExact(db) ? PyUnicode_Compare(db, dbs[j]) : -1;
            if (eq == -1 && PyErr_Occurred())
                goto done;
            if (eq == 0)
                which = j;
        }
        if (which < 0 || !PyBytes_CheckExact(key) || !PyBytes_CheckExact(path))
            goto none;
        Py_ssize_t kn = PyBytes_GET_SIZE(key) < hash_len ? PyBytes_GET_SIZE(key) : hash_len;
        Py_ssize_t pn = PyBytes_GET_SIZE(path);
        PyObject *row = PyBytes_FromStringAndSize(NULL, pn + 1 + kn);
        if (!row)
            goto done;
        char *o = PyBytes_AS_STRING(row);
        memcpy(o, PyBytes_AS_STRING(path), pn);
        o[pn] = '\0';
        memcpy(o + pn + 1, PyBytes_AS_STRING(key), kn);
        int bad = PyList_Append(sets[which], row) < 0;
        Py_DECREF(row);
        if (bad)
            goto done;
    }
    for (int j = 0; j < 2; j++) {
        PyObject *l = sets[j];
        if (PyList_Sort(l) < 0)
            goto done;
        Py_ssize_t n = PyList_GET_SIZE(l), k = 0;
        for (Py_ssize_t i = 0; i < n; i++) { /* bytes: equal when their bytes are */
            PyObject *r = PyList_GET_ITEM(l, i);
            if (k) {
                PyObject *last = PyList_GET_ITEM(l, k - 1);
                if (PyBytes_GET_SIZE(last) == PyBytes_GET_SIZE(r) &&
                    memcmp(PyBytes_AS_STRING(last), PyBytes_AS_STRING(r),
                           PyBytes_GET_SIZE(r)) == 0)
                    continue;
            }
            if (k != i) { /* moved down over a dropped repeat */
                PyObject *old = PyList_GET_ITEM(l, k);
                PyList_SET_ITEM(l, k, r);
                PyList_SET_ITEM(l, i, old);
            }
            k++;
        }
        if (k < n && PyList_SetSlice(l, k, n, NULL) < 0)
            goto done;
    }
    out = PyTuple_Pack(2, sets[0], sets[1]);
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(sets[0]);
    Py_XDECREF(sets[1]);
    return out;
}

/* recorder._file_records' candidates for created files and outputs: the paths of
 * paths (model.paths: path -> PathState) written or opened with O_CREAT (create_ts
 * set), in the dict's order. None: a value that is not a compiled PathState
 * (recorder.py looks itself). */
static PyObject *written_or_created(PyObject *self, PyObject *paths)
{
    if (!PyDict_CheckExact(paths)) {
        PyErr_SetString(PyExc_TypeError, "written_or_created: a dict expected");
        return NULL;
    }
    PyObject *out = PyList_New(0), *k, *v;
    Py_ssize_t pos = 0;
    if (!out)
        return NULL;
    while (PyDict_Next(paths, &pos, &k, &v)) {
        if (!PyObject_TypeCheck(v, &PathStateType)) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        PathState *st = (PathState *)v;
        if ((st->written || st->create_ts != Py_None) && PyList_Append(out, k) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* name_may_match(by, path, start) -> bool: the needle test the model and
 * prebuild run before a directory's name rules (tests/test_classify.py) */
static PyObject *py_name_may_match(PyObject *self, PyObject *args)
{
    PyObject *by, *path;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "OUn", &by, &path, &start))
        return NULL;
    int r = name_may_match(by, path, start, PyUnicode_GET_LENGTH(path));
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyMethodDef module_methods[] = {
    {"name_may_match", py_name_may_match, METH_VARARGS,
     "name_may_match(by, path, start) -> whether path[start:] holds one of by.needles (or "
     "they are not known): where it does not, no rule by name of the directory matches."},
    {"encode_json", encode_json, METH_O,
     "encode_json(obj) -> bytes, or None: codes.encode's JSON, compiled (see _cmodel.c)."},
    {"settled_input", settled_input, METH_VARARGS,
     "settled_input(state, users, kind, wall_offset[, rid]) -> (record, JSON, signature, "
     "[(ProcFile, signature, entry, JSON)]), or None: recorder.py's records of a settled "
     "read-only input, compiled (see _cmodel.c). With rid (the run id's bytes): (record, "
     "JSON, None, [(id(ProcFile), (None, entry, JSON))], index rows)."},
    {"ledger_sorted", ledger_sorted, METH_VARARGS,
     "ledger_sorted(ledger, paths[, clean, built]) -> [paths the ledger does not take]: its "
     "entries that count at the end, sorted by path for ledger_join (see _cmodel.c)."},
    {"ledger_size", ledger_size, METH_VARARGS,
     "ledger_size(ledger, path) -> the size of path's entry that counts, or None."},
    {"ledger_sort", ledger_sort, METH_VARARGS,
     "ledger_sort(ledger[, least]): the entries added since the last sort merged into the "
     "ledger's path order, once there are `least` (1024) and an eighth of it (at a look: "
     "not at the end)."},
    {"ledger_spoil", ledger_spoil, METH_VARARGS,
     "ledger_spoil(ledger, paths): the entries of paths count no more (see _cmodel.c)."},
    {"ledger_join", ledger_join, METH_VARARGS,
     "ledger_join(ledger, rest, rest_json, state, (rows, rows), listed, hashed) -> the file "
     "records' JSON joined with commas, in path order, the ledger's tallied and their index "
     "rows made (see _cmodel.c)."},
    {"keys_not_in", keys_not_in, METH_VARARGS,
     "keys_not_in(dict, container) -> [key for key in dict if key not in container]."},
    {"gather_built", gather_built, METH_VARARGS,
     "gather_built(paths, start, clean, built, records, encoded, index) -> the index of the "
     "first path not clean: recorder._file_records' loop over records built ahead."},
    {"proc_files_built", proc_files_built, METH_VARARGS,
     "proc_files_built(pfs, start, kinds, clean, pf_built, sizes, from_built, files, parts, used) "
     "-> the index of the first ProcFile not taken: recorder._proc_record's loop over the "
     "entries built ahead."},
    {"proc_record_built", proc_record_built, METH_VARARGS,
     "proc_record_built(proc, kinds, clean, pf_built, sizes, from_built, entries, argvs"
     "[, want_used, one, partial]) -> (doc, JSON, used: () unless wanted), or None: recorder._proc_record for a process whose entries were "
     "built ahead or are remembered, changing nothing (see _cmodel.c)."},
    {"partial_extend", partial_extend, METH_VARARGS,
     "partial_extend(partial, kinds, clean, pf_built, built, patience) -> entries taken: a "
     "running process's entries built ahead, taken into its Partial in runs (see _cmodel.c)."},
    {"partial_spoil", partial_spoil, METH_VARARGS,
     "partial_spoil(partial, paths): the runs of the Partial holding one of paths are spoiled."},
    {"sizes_same", sizes_same, METH_VARARGS,
     "sizes_same(used, sizes[, ledger]) -> whether sizes.get(path) == size for each (path, "
     "size) (with a ledger: the size of its entry that counts where sizes has none)."},
    {"written_or_created", written_or_created, METH_O,
     "written_or_created(paths) -> [path of a PathState written or created], or None."},
    {"tally_records", tally_records, METH_VARARGS,
     "tally_records(files, listed, hashed[, state]) -> (unhashed, sizes, inputs, outputs, "
     "env_outputs, env_reads, pending, written), or None: recorder.tally's passes over a run's "
     "file records, in one (with state, a list of those 8: added to it)."},
    {"index_rows", index_rows, METH_VARARGS,
     "index_rows(entries, (db, db), hash_len[, (rows, rows)]) -> (rows, rows), or None: "
     "store._put_files' sorted rows (path NUL hash) of each hash index."},
    {"settled_inputs", settled_inputs, METH_VARARGS,
     "settled_inputs(model, [(path, looks)], kinds, stdio, wall_offset, rid, built, pf_built, "
     "clean) -> (built, [(path, looks) left]): recorder.prebuild's loop for the settled "
     "read-only inputs C builds (see _cmodel.c)."},
    {NULL}};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "roar.record._cmodel",
    "The process model (roar/record/model.py), compiled: see _cmodel.c.", -1, module_methods};

#define INTERN(v, s) if (!(v = PyUnicode_InternFromString(s))) return NULL

PyMODINIT_FUNC PyInit__cmodel(void)
{
    (void)Model_set_new_paths_check;
    for (int c = ' '; c <= '~'; c++)
        JSON_PLAIN[c] = c != '"' && c != '\\';
    INTERN(S_read, "read");
    INTERN(S_key, "key");
    INTERN(S_ppid, "ppid");
    INTERN(S_parent, "parent");
    INTERN(S_argv, "argv");
    INTERN(S_exe, "exe");
    INTERN(S_cwd, "cwd");
    INTERN(S_exit_code, "exit_code");
    INTERN(S_signal, "signal");
    INTERN(S_threads, "threads");
    INTERN(S_execs, "execs");
    INTERN(S_argv_incomplete, "argv_incomplete");
    INTERN(S_files, "files");
    INTERN(S_write, "write");
    INTERN(S_ok, "ok");
    INTERN(S_kind, "kind");
    INTERN(S_bytes_read, "bytes_read");
    INTERN(S_bytes_written, "bytes_written");
    INTERN(S_processes, "processes");
    INTERN(S_role, "role");
    INTERN(S_mode, "mode");
    INTERN(S_hash, "hash");
    INTERN(S_size, "size");
    INTERN(S_status, "status");
    INTERN(S_error, "error");
    INTERN(S_ctime_ns, "ctime_ns");
    INTERN(S_read_calls, "read_calls");
    INTERN(S_write_calls, "write_calls");
    INTERN(S_input, "input");
    INTERN(S_r, "r");
    INTERN(S_data, "data");
    INTERN(S_code, "code");
    INTERN(S_path, "path");
    INTERN(S_shm, "/dev/shm/");
    INTERN(S_hash_read, "hash_read");
    INTERN(S_hash_written, "hash_written");
    INTERN(S_output, "output");
    INTERN(S_env, "env");
    INTERN(S_pending, "pending");
    INTERN(S_temporary, "temporary");
    INTERN(S_address, "address");
    INTERN(S_family, "family");
    INTERN(S_unix, "unix");
    INTERN(S_process, "process");
    INTERN(S_std, "std");
    INTERN(S_pid, "pid");
    INTERN(S_fd, "fd");
    INTERN(S_fd2, "fd2");
    INTERN(S_self, "self");
    INTERN(S_thread_self, "thread-self");
    INTERN(S_stdin, "stdin");
    INTERN(S_stdout, "stdout");
    INTERN(S_stderr, "stderr");
    INTERN(S_request, "request");
    INTERN(S_response, "response");
    INTERN(S_freed, "freed");
    INTERN(S_value, "value");
    INTERN(S_group, "group");
    INTERN(S_match, "match");
    INTERN(S_fullmatch, "fullmatch");
    INTERN(S_needles, "needles");
    INTERN(S_lookup, "lookup");
    INTERN(S_memo, "_memo");
    INTERN(S___self__, "__self__");
    if (!(py_normalize = attr("roar.record.paths", "_normalize")) ||
        !(py_join = attr("posixpath", "join")) ||
        !(py_fd_alias = attr("roar.record.paths", "_FD_ALIAS")) ||
        !(py_decode_sockaddr = attr("roar.record.paths", "decode_sockaddr")) ||
        !(py_remote_log = attr("roar.record.remote", "RemoteLog")) ||
        !(py_needs_hash = attr("roar.record.classify", "needs_hash")) ||
        !(py_needs_hash_dir = attr("roar.record.classify", "needs_hash_dir")) ||
        !(py_hash_job = attr("roar.record.hasher", "HashJob")) ||
        !(py_hash_result = attr("roar.record.hasher", "HashResult")))
        return NULL;
    hr_direct = slots_at(py_hash_result, HR_SLOTS, N_HR, HR_AT);
    hj_direct = slots_at(py_hash_job, HJ_SLOTS, N_HJ, HJ_AT);
    PyTypeObject *types[] = {&OpenFileType, &FdEntryType, &ProcFileType, &ProcType,
                             &PathStateType, &ModelType, &LedgerType, &PartialType,
                             &BuiltType};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *mod = PyModule_Create(&moddef);
    if (!mod)
        return NULL;
    if (PyModule_AddObjectRef(mod, "OpenFile", (PyObject *)&OpenFileType) < 0 ||
        PyModule_AddObjectRef(mod, "FdEntry", (PyObject *)&FdEntryType) < 0 ||
        PyModule_AddObjectRef(mod, "ProcFile", (PyObject *)&ProcFileType) < 0 ||
        PyModule_AddObjectRef(mod, "Proc", (PyObject *)&ProcType) < 0 ||
        PyModule_AddObjectRef(mod, "PathState", (PyObject *)&PathStateType) < 0 ||
        PyModule_AddObjectRef(mod, "RunModel", (PyObject *)&ModelType) < 0 ||
        PyModule_AddObjectRef(mod, "Ledger", (PyObject *)&LedgerType) < 0 ||
        PyModule_AddObjectRef(mod, "Partial", (PyObject *)&PartialType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
