/* The warm loop of kubescrape.scrape.cache.SeriesCache._encode, compiled.
 *
 * run() consumes the lines whose series the previous scrape's order predicts, exactly as the Python
 * loop does, and stops (without consuming it) at the first line it is not sure about: a misprediction,
 * a value that float() rejects or reads as NaN/Inf, a value with "_", a timestamp that is not a plain
 * in-window int64 with a 6-byte varint. The Python loop then handles that line and calls run() again,
 * so every decision that is not the common case stays in one place (Python) and both paths produce the
 * same bytes. join_range() assembles a chunk without slicing the pieces list.
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

/* A packed sample: the value's 8 bytes, then the 7-byte tail (0x10 + 6-byte varint). */
#define PACKED_TAIL 7
#define PACKED_SAMPLE 15

/* Longest value text parsed here; longer ones (rare) go to the Python loop. */
#define VALUE_MAX 64

/* The packed double (8 bytes, little-endian) of a value text into ``out``: 1; 0 when the Python code
 * must decide; -1 with an error set on failure.
 *
 * Only texts of digits, signs, dots and exponents are parsed here: for those float() is exactly
 * PyOS_string_to_double() over the whole text (no whitespace to strip, no "_"), which is what this
 * calls. NaN, infinities, overflow and anything else are left to Python. No memo: parsing in place
 * costs about what the old value-text dict lookup did, and the dict held ~260 B per series. */
static int
parse_value(const char *s, Py_ssize_t n, char out[8])
{
    if (n == 0 || n >= VALUE_MAX) {
        return 0;
    }
    /* Plain integers of up to 15 digits (most cAdvisor values: bytes, counts) are exact as doubles:
     * converted directly, the same double PyOS_string_to_double gives, without its cost. */
    Py_ssize_t first = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (n - first >= 1 && n - first <= 15) {
        long long whole = 0;
        Py_ssize_t i = first;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            whole = whole * 10 + (s[i] - '0');
        }
        if (i == n) {
            double x = (double)whole;
            if (s[0] == '-') {
                x = -x; /* "-0" is -0.0, as strtod reads it */
            }
            return PyFloat_Pack8(x, out, 1) < 0 ? -1 : 1;
        }
    }
    char text[VALUE_MAX];
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')) {
            return 0;
        }
        text[i] = c;
    }
    text[n] = '\0';
    char *end = NULL;
    double x = PyOS_string_to_double(text, &end, NULL);
    if (x == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear(); /* not a number: Python decides */
            return 0;
        }
        return -1;
    }
    if (end != text + n || x - x != 0.0 || x != x) {
        return 0; /* not all of it a number, or ±Inf (overflow): Python decides */
    }
    if (PyFloat_Pack8(x, out, 1) < 0) {
        return -1;
    }
    return 1;
}

static PyObject *
fastpath_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "run() takes 14 arguments");
        return NULL;
    }
    /* The order is two parallel lists: series keys and their heads. The lines consumed are exactly
     * keys[index:returned index]: the caller adds them to its order, if it builds one. */
    PyObject *data = args[0], *keys = args[3], *heads = args[4], *pieces = args[6];
    PyObject *tails = args[7], *default_tail = args[8], *packed_out = args[12];
    if (!PyBytes_Check(data) || !PyList_CheckExact(keys) || !PyList_CheckExact(heads) ||
        !PyList_CheckExact(pieces) || !PyDict_CheckExact(tails) || !PyBytes_CheckExact(default_tail) ||
        (packed_out != Py_None && !PyByteArray_CheckExact(packed_out))) {
        PyErr_SetString(PyExc_TypeError, "run(): unexpected argument types");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    Py_ssize_t index = PyLong_AsSsize_t(args[5]);
    int honor = PyObject_IsTrue(args[9]);
    long long lo = PyLong_AsLongLong(args[10]);
    long long hi = PyLong_AsLongLong(args[11]);
    Py_ssize_t packed_len = PyLong_AsSsize_t(args[13]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    /* Lines are taken from data[pos:size] only (a segment of whole lines of a body given in pieces). */
    if (pos < 0 || size < pos || size > PyBytes_GET_SIZE(data) || index < 0) {
        PyErr_SetString(PyExc_ValueError, "run(): pos, stop or index out of range");
        return NULL;
    }
    /* Packed mode: value (8 bytes) + tail (7) of each kept sample go to ``packed_out`` at
     * ``packed_len``, the heads being those of the predicted entries; nothing is appended to pieces. */
    char *packed_buf = NULL;
    Py_ssize_t packed_cap = 0;
    if (packed_out != Py_None) {
        packed_buf = PyByteArray_AS_STRING(packed_out);
        packed_cap = PyByteArray_GET_SIZE(packed_out);
        if (packed_len < 0 || packed_len > packed_cap) {
            PyErr_SetString(PyExc_ValueError, "run(): packed length out of range");
            return NULL;
        }
    }
    const char *buf = PyBytes_AS_STRING(data);
    /* The tail of the previous line's timestamp: kubelet payloads repeat one stamp for many lines. */
    const char *last_stamp = NULL;
    Py_ssize_t last_stamp_len = -1;
    PyObject *last_tail = NULL; /* borrowed from ``tails`` */

    while (pos < size && index < PyList_GET_SIZE(keys) && index < PyList_GET_SIZE(heads)) {
        PyObject *key = PyList_GET_ITEM(keys, index);
        PyObject *head = PyList_GET_ITEM(heads, index);
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
            break; /* every segment ends with a newline; be safe anyway */
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

        char value[8];
        int ok = parse_value(buf + start, value_end - start, value);
        if (ok < 0) {
            return NULL;
        }
        if (ok == 0) {
            break; /* an unusual value: the Python loop decides */
        }
        if (PyBytes_GET_SIZE(tail) != PACKED_TAIL) {
            break; /* cannot happen (tails are 7 bytes); let Python decide anyway */
        }
        if (PyBytes_GET_SIZE(head) > 0) {
            if (packed_buf != NULL) {
                if (packed_len + PACKED_SAMPLE > packed_cap) {
                    break; /* no room: the Python loop decides (it never happens: one per entry) */
                }
                memcpy(packed_buf + packed_len, value, 8);
                memcpy(packed_buf + packed_len + 8, PyBytes_AS_STRING(tail), PACKED_TAIL);
                packed_len += PACKED_SAMPLE;
            }
            else {
                PyObject *packed = PyBytes_FromStringAndSize(value, 8);
                if (packed == NULL) {
                    return NULL;
                }
                int rc = PyList_Append(pieces, head) < 0 || PyList_Append(pieces, packed) < 0 ||
                         PyList_Append(pieces, tail) < 0;
                Py_DECREF(packed);
                if (rc) {
                    return NULL;
                }
            }
        }
        pos = end + 1;
        index += 1;
    }
    return Py_BuildValue("(nnn)", pos, index, packed_len);
}

/* join_range(pieces, start, stop) -> bytes: pieces[start:stop] joined, without slicing the list. */
static PyObject *
fastpath_join_range(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "join_range(pieces: list[bytes], start: int, stop: int)");
        return NULL;
    }
    PyObject *pieces = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(pieces);
    if (start < 0 || stop > n || start > stop) {
        PyErr_SetString(PyExc_ValueError, "join_range(): start/stop out of range");
        return NULL;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = start; i < stop; i++) {
        PyObject *piece = PyList_GET_ITEM(pieces, i);
        if (!PyBytes_CheckExact(piece)) {
            PyErr_SetString(PyExc_TypeError, "join_range(): pieces must be bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(piece);
    }
    PyObject *chunk = PyBytes_FromStringAndSize(NULL, total);
    if (chunk == NULL) {
        return NULL;
    }
    char *dst = PyBytes_AS_STRING(chunk);
    for (Py_ssize_t i = start; i < stop; i++) {
        PyObject *piece = PyList_GET_ITEM(pieces, i);
        Py_ssize_t len = PyBytes_GET_SIZE(piece);
        memcpy(dst, PyBytes_AS_STRING(piece), (size_t)len);
        dst += len;
    }
    return chunk;
}

/* join_packed(heads, packed, index, stop, offset, count) -> (bytes, index, offset): the next
 * ``count`` kept samples of heads[index:stop] (the non-empty heads, in order), each
 * its head followed by the 15 packed bytes at ``offset``; and where the next chunk starts. */
static PyObject *
fastpath_join_packed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6 || !PyList_CheckExact(args[0]) || !PyByteArray_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "join_packed(heads: list, packed: bytearray, index, stop, offset, count)");
        return NULL;
    }
    PyObject *heads = args[0], *packed = args[1];
    Py_ssize_t index = PyLong_AsSsize_t(args[2]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[3]);
    Py_ssize_t offset = PyLong_AsSsize_t(args[4]);
    Py_ssize_t count = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t plen = PyByteArray_GET_SIZE(packed);
    if (index < 0 || stop > PyList_GET_SIZE(heads) || index > stop || offset < 0 || count < 1) {
        PyErr_SetString(PyExc_ValueError, "join_packed(): argument out of range");
        return NULL;
    }
    /* First pass: how far the chunk reaches and its size. */
    Py_ssize_t total = 0, samples = 0, i = index, off = offset;
    for (; i < stop && samples < count; i++) {
        PyObject *head = PyList_GET_ITEM(heads, i);
        if (!PyBytes_CheckExact(head)) {
            PyErr_SetString(PyExc_TypeError, "join_packed(): heads must be bytes");
            return NULL;
        }
        Py_ssize_t hlen = PyBytes_GET_SIZE(head);
        if (hlen == 0) {
            continue;
        }
        if (off + PACKED_SAMPLE > plen) {
            PyErr_SetString(PyExc_ValueError, "join_packed(): packed samples run short");
            return NULL;
        }
        total += hlen + PACKED_SAMPLE;
        off += PACKED_SAMPLE;
        samples += 1;
    }
    PyObject *chunk = PyBytes_FromStringAndSize(NULL, total);
    if (chunk == NULL) {
        return NULL;
    }
    char *dst = PyBytes_AS_STRING(chunk);
    const char *src = PyByteArray_AS_STRING(packed);
    for (Py_ssize_t j = index; j < i; j++) {
        PyObject *head = PyList_GET_ITEM(heads, j);
        Py_ssize_t hlen = PyBytes_GET_SIZE(head);
        if (hlen == 0) {
            continue;
        }
        memcpy(dst, PyBytes_AS_STRING(head), (size_t)hlen);
        memcpy(dst + hlen, src + offset, PACKED_SAMPLE);
        dst += hlen + PACKED_SAMPLE;
        offset += PACKED_SAMPLE;
    }
    return Py_BuildValue("(Nnn)", chunk, i, offset);
}

static PyObject *fastpath_cold_parse(PyObject *module, PyObject *arg);
static PyObject *fastpath_cold_head(PyObject *module, PyObject *arg);
static PyObject *fastpath_plain_labels(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
static PyObject *fastpath_cold_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef fastpath_methods[] = {
    {"run", (PyCFunction)(void (*)(void))fastpath_run, METH_FASTCALL,
     "Consume the predicted lines from pos; return (pos, index) of the first line left to Python."},
    {"join_range", (PyCFunction)(void (*)(void))fastpath_join_range, METH_FASTCALL,
     "b''.join(pieces[start:stop]), without slicing the list."},
    {"join_packed", (PyCFunction)(void (*)(void))fastpath_join_packed, METH_FASTCALL,
     "The next chunk of packed samples: (bytes, next index, next offset)."},
    {"cold_parse", (PyCFunction)fastpath_cold_parse, METH_O,
     "Split a sample line it is sure about into (name, labels, value, timestamp, key), else None."},
    {"cold_head", (PyCFunction)fastpath_cold_head, METH_O,
     "sample_head(encode_labels(labels), 6) for a list of str pairs, else None."},
    {"plain_labels", (PyCFunction)(void (*)(void))fastpath_plain_labels, METH_FASTCALL,
     "The labeler's result for a target without filters, prefixes or rules, else None."},
    {"cold_run", (PyCFunction)(void (*)(void))fastpath_cold_run, METH_FASTCALL,
     "Consume new series lines of a plain-labeled target from pos; return (pos, samples added)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "Compiled warm path of the scrape cache.", -1, fastpath_methods,
    NULL, NULL, NULL, NULL,
};

static void init_name_class(void);

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    init_name_class();
    return PyModule_Create(&fastpath_module);
}

/* ---- Cold path: a series seen for the first time ------------------------------------------------
 *
 * cold_parse() splits a sample line the way parser.parse_sample_line() does, but only for the lines it
 * is sure about: ``name{a="b",…} value[ timestamp]`` with no blanks inside the series, a value in
 * plain decimal notation, label values that are valid UTF-8 with the usual escapes. Anything else
 * (NaN/Inf spellings, tabs, extra blanks, duplicate or ``__name__`` labels, invalid UTF-8, more than
 * COLD_MAX_LABELS labels, any malformed text) returns None and the Python parser decides, so errors
 * and their messages stay in one place. The key it returns is the series text and the blank after it
 * (the scrape cache's key). cold_head() is sample_head(encode_labels(labels), 6).
 */

#define COLD_MAX_LABELS 64

/* Character classes of names: bit 1 a label name's first character, bit 2 any later one, bit 4 a metric
 * name's first character, bit 8 any later one (``:`` is allowed in metric names only). */
#define NAME_START 1
#define NAME_CHAR 2
#define METRIC_START 4
#define METRIC_CHAR 8
static unsigned char name_class[256];

static void
init_name_class(void)
{
    for (int c = 0; c < 256; c++) {
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        int digit = c >= '0' && c <= '9';
        name_class[c] = (unsigned char)((alpha ? NAME_START | NAME_CHAR | METRIC_START | METRIC_CHAR : 0) |
                                        (digit ? NAME_CHAR | METRIC_CHAR : 0) |
                                        (c == ':' ? METRIC_START | METRIC_CHAR : 0));
    }
}

static int
cold_name_start(unsigned char c)
{
    return name_class[c] & NAME_START;
}

static int
cold_name_char(unsigned char c)
{
    return name_class[c] & NAME_CHAR;
}

/* Whether s[0:n] is a number Go's ParseFloat takes, in decimal notation (no NaN/Inf, no hex). */
static int
cold_decimal(const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, before = 0, after = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        i++;
    }
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
        before++;
    }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
            after++;
        }
    }
    if (before == 0 && after == 0) {
        return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        Py_ssize_t exp = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
            exp++;
        }
        if (exp == 0) {
            return 0;
        }
    }
    return i == n;
}

/* A label value (between the quotes, escapes still in) as str; NULL without an error set when it is
 * not valid UTF-8. ``\\``, ``\"`` and ``\n`` are unescaped, any other escape is kept as written. */
static PyObject *
cold_value(const char *s, Py_ssize_t n, int escaped)
{
    if (!escaped) {
        PyObject *text = PyUnicode_DecodeUTF8(s, n, NULL);
        if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
        }
        return text;
    }
    char small[256];
    char *buf = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)n);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t len = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char next = s[i + 1];
            if (next == '\\' || next == '"' || next == 'n') {
                buf[len++] = next == 'n' ? '\n' : next;
                i++;
                continue;
            }
        }
        buf[len++] = s[i];
    }
    PyObject *text = PyUnicode_DecodeUTF8(buf, len, NULL);
    if (buf != small) {
        PyMem_Free(buf);
    }
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
    }
    return text;
}

/* The label names and plain ASCII values of the previous line, by position: consecutive lines of a
 * family repeat most of them, so the str objects are shared instead of made again. */
static PyObject *cold_names[COLD_MAX_LABELS];
static PyObject *cold_values[COLD_MAX_LABELS];

/* A new reference to the str of ASCII s[0:n], reusing ``*slot`` when it holds the same text. */
static PyObject *
cold_ascii(PyObject **slot, const char *s, Py_ssize_t n)
{
    PyObject *cached = *slot;
    if (cached != NULL && PyUnicode_GET_LENGTH(cached) == n && PyUnicode_IS_ASCII(cached) &&
        memcmp(PyUnicode_DATA(cached), s, (size_t)n) == 0) {
        return Py_NewRef(cached);
    }
    PyObject *text = PyUnicode_DecodeASCII(s, n, NULL);
    if (text == NULL) {
        return NULL;
    }
    Py_XSETREF(*slot, Py_NewRef(text));
    return text;
}

static int
cold_is_ascii(const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        unsigned long long word;
        memcpy(&word, s + i, 8);
        if (word & 0x8080808080808080ULL) {
            return 0;
        }
    }
    for (; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80) {
            return 0;
        }
    }
    return 1;
}

/* A sample line split by cold_scan(): offsets into the line, the value parsed. */
struct cold_label {
    Py_ssize_t name, name_len, value, value_len;
    int escaped;
};

struct cold_line {
    Py_ssize_t name_end, series_end;
    int count;
    struct cold_label labels[COLD_MAX_LABELS];
    double value;
    int has_ts;
    long long ts;
    Py_ssize_t stamp, stamp_len;
};

/* Split s[0:n] (one line, no newline) the way parser.parse_sample_line() does: 1 for a line it is sure
 * about (see above; label values are not checked for UTF-8 here), 0 for any other, -1 with an error
 * set. */
static int
cold_scan(const char *s, Py_ssize_t n, struct cold_line *line)
{
    Py_ssize_t i = 0;
    if (n == 0 || !(name_class[(unsigned char)s[0]] & METRIC_START)) {
        return 0;
    }
    while (i < n && (name_class[(unsigned char)s[i]] & METRIC_CHAR)) {
        i++;
    }
    line->name_end = i;
    int count = 0;
    if (i < n && s[i] == '{') {
        i++;
        for (;;) {
            if (i < n && s[i] == '}') {
                i++;
                break;
            }
            if (i >= n || !cold_name_start((unsigned char)s[i]) || count == COLD_MAX_LABELS) {
                return 0;
            }
            Py_ssize_t label_start = i;
            while (i < n && cold_name_char((unsigned char)s[i])) {
                i++;
            }
            Py_ssize_t label_len = i - label_start;
            if (i + 1 >= n || s[i] != '=' || s[i + 1] != '"') {
                return 0;
            }
            i += 2;
            Py_ssize_t value_start = i;
            int escaped = 0;
            const char *quote = i < n ? memchr(s + i, '"', (size_t)(n - i)) : NULL;
            if (quote != NULL && memchr(s + i, '\\', (size_t)(quote - (s + i))) == NULL) {
                i = quote - s; /* no escape before the closing quote (the usual value) */
            }
            else {
                while (i < n && s[i] != '"') {
                    if (s[i] == '\\') {
                        escaped = 1;
                        i++;
                    }
                    i++;
                }
            }
            if (i >= n) {
                return 0; /* unterminated value */
            }
            Py_ssize_t value_len = i - value_start;
            i++;
            if (i < n && s[i] == ',') {
                i++;
            }
            else if (i >= n || s[i] != '}') {
                return 0;
            }
            if (label_len == 8 && memcmp(s + label_start, "__name__", 8) == 0) {
                return 0;
            }
            for (int k = 0; k < count; k++) {
                if (line->labels[k].name_len == label_len &&
                    memcmp(s + line->labels[k].name, s + label_start, (size_t)label_len) == 0) {
                    return 0; /* duplicate label name */
                }
            }
            struct cold_label *label = &line->labels[count++];
            label->name = label_start;
            label->name_len = label_len;
            label->value = value_start;
            label->value_len = value_len;
            label->escaped = escaped;
        }
    }
    line->count = count;
    line->series_end = i;
    if (i >= n || s[i] != ' ') {
        return 0;
    }
    i++;
    Py_ssize_t value_start = i;
    while (i < n && s[i] != ' ') {
        i++;
    }
    Py_ssize_t value_len = i - value_start;
    char number[64];
    if (value_len >= (Py_ssize_t)sizeof(number) || !cold_decimal(s + value_start, value_len)) {
        return 0;
    }
    memcpy(number, s + value_start, (size_t)value_len);
    number[value_len] = '\0';
    char *number_end = NULL;
    double value = PyOS_string_to_double(number, &number_end, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (number_end != number + value_len || isinf(value) || isnan(value)) {
        return 0; /* out of range (1e400): the Python parser says so */
    }
    line->value = value;
    line->has_ts = 0;
    if (i < n) {
        i++; /* the blank before the timestamp */
        if (i >= n || n - i > 19) {
            return 0;
        }
        line->stamp = i;
        line->stamp_len = n - i;
        unsigned long long ts = 0;
        for (; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return 0;
            }
            ts = ts * 10 + (unsigned long long)(s[i] - '0');
        }
        if (ts > (unsigned long long)LLONG_MAX) {
            return 0;
        }
        line->has_ts = 1;
        line->ts = (long long)ts;
    }
    return 1;
}

static PyObject *
fastpath_cold_parse(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "cold_parse(line: bytes)");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(arg);
    struct cold_line line;
    int sure = cold_scan(s, PyBytes_GET_SIZE(arg), &line);
    if (sure < 0) {
        return NULL;
    }
    if (sure == 0) {
        Py_RETURN_NONE;
    }
    PyObject *labels = PyList_New(line.count);
    if (labels == NULL) {
        return NULL;
    }
    for (int k = 0; k < line.count; k++) {
        const struct cold_label *label = &line.labels[k];
        PyObject *value;
        if (!label->escaped && cold_is_ascii(s + label->value, label->value_len)) {
            value = cold_ascii(&cold_values[k], s + label->value, label->value_len);
        }
        else {
            value = cold_value(s + label->value, label->value_len, label->escaped);
            if (value == NULL && !PyErr_Occurred()) {
                Py_DECREF(labels);
                Py_RETURN_NONE; /* not UTF-8: the Python parser says so */
            }
        }
        if (value == NULL) {
            Py_DECREF(labels);
            return NULL;
        }
        PyObject *name = cold_ascii(&cold_names[k], s + label->name, label->name_len);
        if (name == NULL) {
            Py_DECREF(value);
            Py_DECREF(labels);
            return NULL;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            Py_DECREF(labels);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(labels, k, pair);
    }
    PyObject *timestamp = line.has_ts ? PyLong_FromLongLong(line.ts) : Py_NewRef(Py_None);
    if (timestamp == NULL) {
        Py_DECREF(labels);
        return NULL;
    }
    PyObject *name = PyUnicode_FromStringAndSize(s, line.name_end);
    if (name == NULL) {
        Py_DECREF(timestamp);
        Py_DECREF(labels);
        return NULL;
    }
    /* The cache key: the series text and the blank after it. */
    PyObject *key = PyBytes_FromStringAndSize(s, line.series_end + 1);
    if (key == NULL) {
        Py_DECREF(name);
        Py_DECREF(timestamp);
        Py_DECREF(labels);
        return NULL;
    }
    return Py_BuildValue("(NNdNN)", name, labels, line.value, timestamp, key);
}

static char *
cold_varint(char *out, unsigned long long n)
{
    while (n > 0x7F) {
        *out++ = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *out++ = (char)n;
    return out;
}

static Py_ssize_t
cold_varint_len(unsigned long long n)
{
    Py_ssize_t len = 1;
    while (n > 0x7F) {
        n >>= 7;
        len++;
    }
    return len;
}

struct cold_item {
    const char *name;
    Py_ssize_t name_len;
    const char *value;
    Py_ssize_t value_len; /* as written (escapes in) */
    Py_ssize_t out_len;   /* unescaped */
    int escaped;
};

/* Length of a label value once ``\\``, ``\"`` and ``\n`` are unescaped (as cold_value() does). */
static Py_ssize_t
cold_unescaped_len(const char *s, Py_ssize_t n)
{
    Py_ssize_t len = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '\\' || s[i + 1] == '"' || s[i + 1] == 'n')) {
            i++;
        }
        len++;
    }
    return len;
}

static char *
cold_unescape(char *out, const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '\\' || s[i + 1] == '"' || s[i + 1] == 'n')) {
            *out++ = s[i + 1] == 'n' ? '\n' : s[i + 1];
            i++;
            continue;
        }
        *out++ = s[i];
    }
    return out;
}

/* The head of a series (see sample_head(): 0x0a, varint(series length), the encoded labels, then 0x12,
 * the sample's length (16) and 0x09) from its labels ``items[0:count]``, already sorted by name; an empty
 * value is a missing label (not even its name is encoded). A new reference, or NULL with an error set. */
static PyObject *
cold_encode_head(const struct cold_item *items, Py_ssize_t count)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        const struct cold_item *item = &items[k];
        if (item->out_len == 0) {
            continue;
        }
        Py_ssize_t label = 1 + cold_varint_len((unsigned long long)item->name_len) + item->name_len + 1 +
                           cold_varint_len((unsigned long long)item->out_len) + item->out_len;
        total += 1 + cold_varint_len((unsigned long long)label) + label;
    }
    Py_ssize_t series_len = total + 2 + 16;
    PyObject *head = PyBytes_FromStringAndSize(NULL, 1 + cold_varint_len((unsigned long long)series_len) + total + 3);
    if (head == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(head);
    *out++ = 0x0a;
    out = cold_varint(out, (unsigned long long)series_len);
    for (Py_ssize_t k = 0; k < count; k++) {
        const struct cold_item *item = &items[k];
        if (item->out_len == 0) {
            continue;
        }
        Py_ssize_t label = 1 + cold_varint_len((unsigned long long)item->name_len) + item->name_len + 1 +
                           cold_varint_len((unsigned long long)item->out_len) + item->out_len;
        *out++ = 0x0a;
        out = cold_varint(out, (unsigned long long)label);
        *out++ = 0x0a;
        out = cold_varint(out, (unsigned long long)item->name_len);
        memcpy(out, item->name, (size_t)item->name_len);
        out += item->name_len;
        *out++ = 0x12;
        out = cold_varint(out, (unsigned long long)item->out_len);
        if (item->escaped) {
            out = cold_unescape(out, item->value, item->value_len);
        }
        else {
            memcpy(out, item->value, (size_t)item->value_len);
            out += item->value_len;
        }
    }
    *out++ = 0x12;
    *out++ = 16;
    *out++ = 0x09;
    return head;
}

static PyObject *
fastpath_cold_head(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyList_CheckExact(arg)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyList_GET_SIZE(arg);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *pair = PyList_GET_ITEM(arg, k);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            Py_RETURN_NONE; /* not the labeler's usual list of str pairs: encode_labels() decides */
        }
    }
    PyObject *pairs = PyList_GetSlice(arg, 0, count);
    if (pairs == NULL) {
        return NULL;
    }
    if (PyList_Sort(pairs) < 0) {
        Py_DECREF(pairs);
        return NULL;
    }
    count = PyList_GET_SIZE(pairs);
    struct cold_item small[COLD_MAX_LABELS];
    struct cold_item *items = count <= COLD_MAX_LABELS ? small : PyMem_Malloc((size_t)count * sizeof(*items));
    if (items == NULL) {
        Py_DECREF(pairs);
        return PyErr_NoMemory();
    }
    /* The UTF-8 of every name and value (cached in the str objects, which ``pairs`` keeps alive). */
    PyObject *head = NULL;
    int named = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *pair = PyList_GET_ITEM(pairs, k);
        struct cold_item *item = &items[k];
        item->escaped = 0;
        if (PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(pair, 1)) == 0) {
            item->name = item->value = NULL; /* an empty label is a missing one: never encoded */
            item->name_len = item->value_len = item->out_len = 0;
            continue;
        }
        item->name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &item->name_len);
        if (item->name == NULL) {
            goto done;
        }
        item->value = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &item->value_len);
        if (item->value == NULL) {
            goto done;
        }
        item->out_len = item->value_len;
        if (item->name_len == 8 && memcmp(item->name, "__name__", 8) == 0) {
            named = 1;
        }
    }
    if (!named) {
        PyErr_SetString(PyExc_ValueError, "a remote-write series needs a non-empty __name__ label");
        goto done;
    }
    head = cold_encode_head(items, count);
done:
    if (items != small) {
        PyMem_Free(items);
    }
    Py_DECREF(pairs);
    return head;
}

/* Whether two str objects are equal (both exact str). */
static int
cold_same_str(PyObject *a, PyObject *b)
{
    return a == b || (PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) && PyUnicode_Compare(a, b) == 0);
}

/* make_labeler's shortcut for a target without filters, prefixes or rules: the scraped labels with a
 * value (``__name__`` left out), the target labels and ``__name__``, sorted. None (the Python labeler
 * decides) when a scraped label clashes with a target label (``exported_`` renaming), on a repeated
 * name, on anything but str pairs, or for more than COLD_MAX_LABELS labels. */
static PyObject *
fastpath_plain_labels(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "plain_labels(name, scraped, target_labels)");
        return NULL;
    }
    PyObject *name = args[0], *scraped = args[1], *target = args[2];
    if (!PyUnicode_CheckExact(name) || !PyList_CheckExact(scraped) || !PyTuple_CheckExact(target)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t nscraped = PyList_GET_SIZE(scraped), ntarget = PyTuple_GET_SIZE(target);
    if (nscraped + ntarget + 1 > COLD_MAX_LABELS) {
        Py_RETURN_NONE;
    }
    PyObject *dunder = PyUnicode_FromString("__name__");
    if (dunder == NULL) {
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_DECREF(dunder);
        return NULL;
    }
    /* Target labels first: every later name is checked against all names taken so far. */
    for (Py_ssize_t round = 0; round < 2; round++) {
        PyObject *seq = round == 0 ? target : scraped;
        Py_ssize_t count = round == 0 ? ntarget : nscraped;
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *pair = round == 0 ? PyTuple_GET_ITEM(seq, k) : PyList_GET_ITEM(seq, k);
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
                !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
                goto unsure;
            }
            PyObject *key = PyTuple_GET_ITEM(pair, 0);
            if (round == 1 && PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(pair, 1)) == 0) {
                continue; /* an empty scraped label is a missing one */
            }
            if (cold_same_str(key, dunder)) {
                if (round == 1) {
                    continue; /* the scraped __name__ is replaced by the metric name */
                }
                goto unsure;
            }
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(out); j++) {
                if (cold_same_str(PyTuple_GET_ITEM(PyList_GET_ITEM(out, j), 0), key)) {
                    goto unsure; /* a clash or a repeated name */
                }
            }
            if (PyList_Append(out, pair) < 0) {
                goto error;
            }
        }
    }
    PyObject *named = PyTuple_Pack(2, dunder, name);
    if (named == NULL) {
        goto error;
    }
    int rc = PyList_Append(out, named);
    Py_DECREF(named);
    if (rc < 0 || PyList_Sort(out) < 0) {
        goto error;
    }
    Py_DECREF(dunder);
    return out;

unsure:
    Py_DECREF(dunder);
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(dunder);
    Py_DECREF(out);
    return NULL;
}

/* ---- Cold run: the new series of a target with a plain labeler, without Python objects per label ----
 *
 * cold_run() is the loop of cold_scan() + make_labeler's plain shortcut + cold_head() + SeriesCache._add()
 * for the usual first scrape of a kubelet target: it consumes new series lines (not in ``entries``) of a
 * target whose labeler only adds target labels, from the raw bytes to the encoded head, and stops
 * (without consuming it) at the first line that needs any other decision: a comment, a line that is not
 * plain ASCII, any line cold_scan() is not sure about, a series already cached, a scraped label that
 * clashes with a target label, a timestamp outside the window or without a 6-byte varint, the sample
 * limit. The Python loop handles that line and calls it again. */

static int
cold_item_less(const struct cold_item *a, const struct cold_item *b)
{
    Py_ssize_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->name, b->name, (size_t)n);
    return c < 0 || (c == 0 && a->name_len < b->name_len);
}

/* The head (see cold_head()) of the series of line ``s`` with the target labels ``target`` (a tuple of
 * (name, value) bytes pairs, UTF-8): a new reference; Py_None (a new reference) when a scraped label
 * clashes with a target label or there are too many labels; NULL with an error set on failure. */
static PyObject *
cold_run_head(const char *s, const struct cold_line *line, PyObject *target)
{
    struct cold_item items[2 * COLD_MAX_LABELS + 1];
    Py_ssize_t ntarget = PyTuple_GET_SIZE(target);
    int count = 0;
    if (ntarget + line->count + 1 > (Py_ssize_t)(sizeof(items) / sizeof(items[0]))) {
        Py_RETURN_NONE;
    }
    for (Py_ssize_t k = 0; k < ntarget; k++) {
        PyObject *pair = PyTuple_GET_ITEM(target, k);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        struct cold_item *item = &items[count++];
        item->name = PyBytes_AS_STRING(name);
        item->name_len = PyBytes_GET_SIZE(name);
        item->value = PyBytes_AS_STRING(value);
        item->value_len = item->out_len = PyBytes_GET_SIZE(value);
        item->escaped = 0;
    }
    for (int k = 0; k < line->count; k++) {
        const struct cold_label *label = &line->labels[k];
        if (label->value_len == 0) {
            continue; /* an empty scraped label is a missing one */
        }
        for (Py_ssize_t j = 0; j < ntarget; j++) {
            if (items[j].name_len == label->name_len &&
                memcmp(items[j].name, s + label->name, (size_t)label->name_len) == 0) {
                Py_RETURN_NONE; /* a clash: exported_* renaming is left to Python */
            }
        }
        struct cold_item *item = &items[count++];
        item->name = s + label->name;
        item->name_len = label->name_len;
        item->value = s + label->value;
        item->value_len = label->value_len;
        item->escaped = label->escaped;
        item->out_len = label->escaped ? cold_unescaped_len(item->value, item->value_len) : label->value_len;
    }
    struct cold_item *named = &items[count++];
    named->name = "__name__";
    named->name_len = 8;
    named->value = s;
    named->value_len = named->out_len = line->name_end;
    named->escaped = 0;
    /* Insertion sort by name (names are unique): a dozen labels. */
    for (int k = 1; k < count; k++) {
        struct cold_item moving = items[k];
        int j = k - 1;
        while (j >= 0 && cold_item_less(&moving, &items[j])) {
            items[j + 1] = items[j];
            j--;
        }
        items[j + 1] = moving;
    }
    return cold_encode_head(items, count);
}

static PyObject *
fastpath_cold_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "cold_run() takes 14 arguments");
        return NULL;
    }
    PyObject *data = args[0], *target = args[3], *entries = args[4], *new_keys = args[5];
    PyObject *order_keys = args[6], *order_heads = args[7], *pieces = args[8], *default_tail = args[9];
    if (!PyBytes_Check(data) || !PyTuple_CheckExact(target) || !PyDict_CheckExact(entries) ||
        !PyList_CheckExact(new_keys) || !PyList_CheckExact(order_keys) || !PyList_CheckExact(order_heads) ||
        !PyList_CheckExact(pieces) || !PyBytes_CheckExact(default_tail) ||
        PyBytes_GET_SIZE(default_tail) != PACKED_TAIL) {
        PyErr_SetString(PyExc_TypeError, "cold_run(): unexpected argument types");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(target); k++) {
        PyObject *pair = PyTuple_GET_ITEM(target, k);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "cold_run(): target labels must be (bytes, bytes) pairs");
            return NULL;
        }
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    int honor = PyObject_IsTrue(args[10]);
    long long lo = PyLong_AsLongLong(args[11]);
    long long hi = PyLong_AsLongLong(args[12]);
    Py_ssize_t max_pieces = PyLong_AsSsize_t(args[13]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0 || size < pos || size > PyBytes_GET_SIZE(data)) {
        PyErr_SetString(PyExc_ValueError, "cold_run(): pos or stop out of range");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(data);
    /* The tail of the previous explicit timestamp: kubelet payloads repeat one stamp for many lines. */
    long long last_ts = -1;
    PyObject *last_tail = NULL; /* owned */
    Py_ssize_t added = 0;
    struct cold_line line;
    PyObject *result = NULL;

    while (pos < size) {
        const char *s = buf + pos;
        const char *nl = memchr(s, '\n', (size_t)(size - pos));
        if (nl == NULL) {
            break; /* every segment ends with a newline; be safe anyway */
        }
        Py_ssize_t n = nl - s;
        if (n == 0) {
            pos += 1; /* an empty line: nothing, as in the Python loop */
            continue;
        }
        int sure = cold_scan(s, n, &line);
        if (sure < 0) {
            goto done;
        }
        if (sure == 0) {
            break;
        }
        /* Names, value and timestamp of a line cold_scan() takes are ASCII: only label values may not be
         * (their UTF-8 is validated by the Python path). */
        int ascii = 1;
        for (int k = 0; k < line.count && ascii; k++) {
            ascii = cold_is_ascii(s + line.labels[k].value, line.labels[k].value_len);
        }
        if (!ascii) {
            break;
        }
        PyObject *tail = default_tail;
        if (honor && line.has_ts) {
            if (last_tail == NULL || line.ts != last_ts) {
                /* The same tail the tails dict and _new_tail() give: 0x10 + a 6-byte varint. */
                PyObject *fresh = make_tail(s + line.stamp, line.stamp_len, lo, hi);
                if (fresh == NULL) {
                    if (PyErr_Occurred()) {
                        goto done;
                    }
                    break; /* outside the window or an odd varint length: Python drops or decides */
                }
                Py_XSETREF(last_tail, fresh);
                last_ts = line.ts;
            }
            tail = last_tail;
        }
        if (PyList_GET_SIZE(pieces) + 3 > max_pieces) {
            break; /* the sample limit: Python raises */
        }
        PyObject *head = cold_run_head(s, &line, target);
        if (head == NULL) {
            goto done;
        }
        if (head == Py_None) {
            Py_DECREF(head);
            break;
        }
        PyObject *key = PyBytes_FromStringAndSize(s, line.series_end + 1);
        if (key == NULL) {
            Py_DECREF(head);
            goto done;
        }
        /* One lookup: inserted unless the series is cached already (a duplicate line, or the cache of
         * earlier scrapes), which the Python loop then handles. */
        PyObject *kept = PyDict_SetDefault(entries, key, head);
        if (kept != head) {
            Py_DECREF(head);
            Py_DECREF(key);
            if (kept == NULL) {
                goto done;
            }
            break;
        }
        char value[8];
        PyObject *packed = NULL;
        int failed = PyList_Append(new_keys, key) < 0 || PyFloat_Pack8(line.value, value, 1) < 0 ||
                     (packed = PyBytes_FromStringAndSize(value, 8)) == NULL || PyList_Append(order_keys, key) < 0 ||
                     PyList_Append(order_heads, head) < 0 || PyList_Append(pieces, head) < 0 ||
                     PyList_Append(pieces, packed) < 0 || PyList_Append(pieces, tail) < 0;
        Py_XDECREF(packed);
        Py_DECREF(head);
        Py_DECREF(key);
        if (failed) {
            goto done;
        }
        pos += n + 1;
        added += 1;
    }
    result = Py_BuildValue("(nn)", pos, added);
done:
    Py_XDECREF(last_tail);
    return result;
}
