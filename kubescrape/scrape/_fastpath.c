/* The warm loop of kubescrape.scrape.cache.SeriesCache._encode, compiled.
 *
 * run() consumes the lines whose series the previous scrape's order predicts, exactly as the Python
 * loop does, and stops (without consuming it) at the first line it is not sure about: a misprediction,
 * a value that float() rejects or reads as NaN/Inf, a value with "_", a timestamp that is not a plain
 * in-window int64 with a 6-byte varint. The Python loop then handles that line and calls run() again,
 * so every decision that is not the common case stays in one place (Python) and both paths produce the
 * same bytes. join() assembles the chunks without slicing the pieces list.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Timestamps whose varint is 6 bytes (2^35 .. 2^42 - 1 ms) fit the cached heads. */
#define TS_MIN (1LL << 35)
#define TS_END (1LL << 42)

static int
all_digits(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return 1;
}

/* The tail (0x10 + 6-byte varint) of an explicit timestamp, new reference; NULL without an error set
 * when the Python code must decide (not digits, beyond int64, outside lo..hi, other varint length). */
static PyObject *
make_tail(const char *s, Py_ssize_t n, long long lo, long long hi)
{
    if (n == 0 || !all_digits(s, n)) {
        return NULL;
    }
    long long ts = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int digit = s[i] - '0';
        if (ts > (LLONG_MAX - digit) / 10) {
            return NULL;
        }
        ts = ts * 10 + digit;
    }
    if (ts < lo || ts > hi || ts < TS_MIN || ts >= TS_END) {
        return NULL;
    }
    unsigned char buf[7];
    unsigned long long u = (unsigned long long)ts;
    buf[0] = 0x10;
    for (int i = 1; i < 6; i++) {
        buf[i] = (unsigned char)((u & 0x7F) | 0x80);
        u >>= 7;
    }
    buf[6] = (unsigned char)u;
    return PyBytes_FromStringAndSize((const char *)buf, 7);
}

/* Longest value text parsed here; longer ones (rare) go to the Python loop. */
#define VALUE_MAX 64

/* The packed double (8 bytes, little-endian) of a value text, new reference; NULL without an error set
 * when the Python code must decide, NULL with an error set on failure.
 *
 * Only texts of digits, signs, dots and exponents are parsed here: for those float() is exactly
 * PyOS_string_to_double() over the whole text (no whitespace to strip, no "_"), which is what this
 * calls. NaN, infinities, overflow and anything else are left to Python. No memo: parsing in place
 * costs about what the old value-text dict lookup did, and the dict held ~260 B per series. */
static PyObject *
packed_value(const char *s, Py_ssize_t n)
{
    if (n == 0 || n >= VALUE_MAX) {
        return NULL;
    }
    char text[VALUE_MAX];
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')) {
            return NULL;
        }
        text[i] = c;
    }
    text[n] = '\0';
    char *end = NULL;
    double x = PyOS_string_to_double(text, &end, NULL);
    if (x == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear(); /* not a number: Python decides */
        }
        return NULL;
    }
    if (end != text + n || x - x != 0.0 || x != x) {
        return NULL; /* not all of it a number, or ±Inf (overflow): Python decides */
    }
    char buf[8];
    if (PyFloat_Pack8(x, buf, 1) < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize(buf, 8);
}

static PyObject *
fastpath_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "run() takes 11 arguments");
        return NULL;
    }
    PyObject *data = args[0], *predicted = args[2], *order = args[4], *pieces = args[5];
    PyObject *tails = args[6], *default_tail = args[7];
    if (!PyBytes_Check(data) || !PyList_CheckExact(predicted) || !PyList_CheckExact(pieces) ||
        (order != Py_None && !PyList_CheckExact(order)) || !PyDict_CheckExact(tails) ||
        !PyBytes_CheckExact(default_tail)) {
        PyErr_SetString(PyExc_TypeError, "run(): unexpected argument types");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t index = PyLong_AsSsize_t(args[3]);
    int honor = PyObject_IsTrue(args[8]);
    long long lo = PyLong_AsLongLong(args[9]);
    long long hi = PyLong_AsLongLong(args[10]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    /* The tail of the previous line's timestamp: kubelet payloads repeat one stamp for many lines. */
    const char *last_stamp = NULL;
    Py_ssize_t last_stamp_len = -1;
    PyObject *last_tail = NULL; /* borrowed from ``tails`` */

    while (pos < size && index < PyList_GET_SIZE(predicted)) {
        PyObject *entry = PyList_GET_ITEM(predicted, index);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
            break;
        }
        PyObject *key = PyTuple_GET_ITEM(entry, 0);
        PyObject *head = PyTuple_GET_ITEM(entry, 2);
        if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(head)) {
            break;
        }
        Py_ssize_t klen = PyBytes_GET_SIZE(key);
        if (klen > size - pos || memcmp(buf + pos, PyBytes_AS_STRING(key), (size_t)klen) != 0) {
            break; /* misprediction: the Python loop looks the series up */
        }
        Py_ssize_t start = pos + klen;
        const char *nl = memchr(buf + start, '\n', (size_t)(size - start));
        if (nl == NULL) {
            break; /* the body always ends with a newline; be safe anyway */
        }
        Py_ssize_t end = nl - buf;
        const char *sp = memchr(buf + start, ' ', (size_t)(end - start));
        Py_ssize_t value_end = sp != NULL ? sp - buf : end;

        PyObject *tail;
        if (sp != NULL && end > value_end + 1) {
            const char *stamp = buf + value_end + 1;
            Py_ssize_t stamp_len = end - value_end - 1;
            if (last_tail != NULL && stamp_len == last_stamp_len &&
                memcmp(stamp, last_stamp, (size_t)stamp_len) == 0) {
                tail = last_tail;
            }
            else {
                PyObject *stamp_obj = PyBytes_FromStringAndSize(stamp, stamp_len);
                if (stamp_obj == NULL) {
                    return NULL;
                }
                tail = PyDict_GetItemWithError(tails, stamp_obj);
                if (tail == NULL) {
                    if (PyErr_Occurred()) {
                        Py_DECREF(stamp_obj);
                        return NULL;
                    }
                    PyObject *fresh = make_tail(stamp, stamp_len, lo, hi);
                    if (fresh == NULL) {
                        Py_DECREF(stamp_obj);
                        if (PyErr_Occurred()) {
                            return NULL;
                        }
                        break; /* an unusual timestamp: the full parser decides */
                    }
                    int rc = PyDict_SetItem(tails, stamp_obj, fresh);
                    Py_DECREF(fresh);
                    if (rc < 0) {
                        Py_DECREF(stamp_obj);
                        return NULL;
                    }
                    tail = fresh; /* borrowed: ``tails`` holds it */
                }
                Py_DECREF(stamp_obj);
                last_tail = tail;
                last_stamp = stamp;
                last_stamp_len = stamp_len;
            }
            if (!honor) {
                tail = default_tail;
            }
        }
        else {
            tail = default_tail;
        }

        PyObject *packed = packed_value(buf + start, value_end - start);
        if (packed == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            break; /* an unusual value: the Python loop decides */
        }
        if (order != Py_None && PyList_Append(order, entry) < 0) {
            Py_DECREF(packed);
            return NULL;
        }
        if (PyBytes_GET_SIZE(head) > 0) {
            if (PyList_Append(pieces, head) < 0 || PyList_Append(pieces, packed) < 0 ||
                PyList_Append(pieces, tail) < 0) {
                Py_DECREF(packed);
                return NULL;
            }
        }
        Py_DECREF(packed);
        pos = end + 1;
        index += 1;
    }
    return Py_BuildValue("(nn)", pos, index);
}

static PyObject *
fastpath_join(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "join(pieces: list[bytes], step: int)");
        return NULL;
    }
    PyObject *pieces = args[0];
    Py_ssize_t step = PyLong_AsSsize_t(args[1]);
    if (step == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (step < 1) {
        PyErr_SetString(PyExc_ValueError, "step must be at least 1");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(pieces);
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t first = 0; first < n; first += step) {
        Py_ssize_t last = first + step < n ? first + step : n;
        Py_ssize_t total = 0;
        for (Py_ssize_t i = first; i < last; i++) {
            PyObject *piece = PyList_GET_ITEM(pieces, i);
            if (!PyBytes_CheckExact(piece)) {
                Py_DECREF(out);
                PyErr_SetString(PyExc_TypeError, "join(): pieces must be bytes");
                return NULL;
            }
            total += PyBytes_GET_SIZE(piece);
        }
        PyObject *chunk = PyBytes_FromStringAndSize(NULL, total);
        if (chunk == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        char *dst = PyBytes_AS_STRING(chunk);
        for (Py_ssize_t i = first; i < last; i++) {
            PyObject *piece = PyList_GET_ITEM(pieces, i);
            Py_ssize_t len = PyBytes_GET_SIZE(piece);
            memcpy(dst, PyBytes_AS_STRING(piece), (size_t)len);
            dst += len;
        }
        int rc = PyList_Append(out, chunk);
        Py_DECREF(chunk);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyMethodDef fastpath_methods[] = {
    {"run", (PyCFunction)(void (*)(void))fastpath_run, METH_FASTCALL,
     "Consume the predicted lines from pos; return (pos, index) of the first line left to Python."},
    {"join", (PyCFunction)(void (*)(void))fastpath_join, METH_FASTCALL,
     "b''.join of each run of step pieces, without slicing the list."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "Compiled warm path of the scrape cache.", -1, fastpath_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModule_Create(&fastpath_module);
}
