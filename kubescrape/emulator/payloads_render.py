"""The emulator's exposition engine: series templates, rendered per call by formatting numbers only.

A payload is built in two steps. When the set of pods changes (start-up, churn) a :class:`TextBuilder`
compiles every sample line once: its literal text (name, labels, constant values) as pre-encoded
pieces, and for each dynamic number a triple ``(base, rate, slot)``. On every scrape,
:class:`Timebase` computes a small table of time functions (a few hundred floats) and
:meth:`Template.render` evaluates ``base + rate * table[slot]`` in one list comprehension, formats
all numbers with one ``%`` over a short format string, drops them (and the per-call timestamp
strings) into the placeholder positions of the piece list and joins it: no per-series Python logic,
the static text is copied and never parsed again.

Every dynamic number is affine in one table entry, which keeps the guarantees simple:

* counters use monotonic kernels ``F_k`` (derivative ``1 + a*sin`` with ``a < 1``), so with
  ``rate >= 0`` they never decrease while the clock moves forward;
* histogram buckets are ``rate * cdf(le) * F_k`` with a non-decreasing ``cdf``, so buckets stay
  cumulative and monotonic (``%d`` truncation is monotonic too);
* gauges are ``mean + amplitude * W_k`` with waves ``W_k`` in ``[-1, 1]``.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Final, NamedTuple

KERNELS: Final = 8
"""Distinct counter kernels / gauge waves: enough that series do not move in lockstep."""
PHASES: Final = 16
"""Distinct cAdvisor housekeeping phases: containers are refreshed at different moments."""
HOUSEKEEPING_S: Final = 10.0
"""cAdvisor's per-container housekeeping interval under the kubelet."""

# Layout of the per-call table.
CONST: Final = 0  # always 1.0: ``base + rate * 1``
NOW_MS: Final = 1  # scrape time, epoch milliseconds
NOW_S: Final = 2  # scrape time, epoch seconds
_NOW_F: Final = 3  # counter kernels at scrape time
_NOW_W: Final = _NOW_F + KERNELS  # gauge waves at scrape time
_PHASE0: Final = _NOW_W + KERNELS
_PHASE_STRIDE: Final = 1 + 2 * KERNELS  # ts_ms, F_0..F_K-1, W_0..W_K-1
TABLE_SIZE: Final = _PHASE0 + PHASES * _PHASE_STRIDE


def counter_slot(kernel: int, phase: int | None = None) -> int:
    """Table slot of counter kernel ``kernel`` evaluated at scrape time or at a housekeeping phase."""
    if phase is None:
        return _NOW_F + kernel % KERNELS
    return _PHASE0 + (phase % PHASES) * _PHASE_STRIDE + 1 + kernel % KERNELS


def wave_slot(kernel: int, phase: int | None = None) -> int:
    """Table slot of gauge wave ``kernel`` evaluated at scrape time or at a housekeeping phase."""
    if phase is None:
        return _NOW_W + kernel % KERNELS
    return _PHASE0 + (phase % PHASES) * _PHASE_STRIDE + 1 + KERNELS + kernel % KERNELS


def ts_slot(phase: int) -> int:
    """Table slot of the epoch-millisecond timestamp of housekeeping phase ``phase``."""
    return _PHASE0 + (phase % PHASES) * _PHASE_STRIDE


class Timebase:
    """Time functions of one emulated node; ``t0`` is the origin of the kernels (node boot)."""

    def __init__(self, t0: float, seed: int) -> None:
        self.t0 = t0
        # Deterministic per-node kernel shapes: amplitude < 1 keeps F_k strictly increasing.
        self._amp = [0.25 + 0.5 * ((seed * 7919 + k * 104729) % 1000) / 1000.0 for k in range(KERNELS)]
        self._omega = [
            2.0 * math.pi / (90.0 + 1700.0 * ((seed * 31 + k * 7717) % 997) / 997.0) for k in range(KERNELS)
        ]
        self._phi = [2.0 * math.pi * ((seed * 13 + k * 3301) % 1009) / 1009.0 for k in range(KERNELS)]
        self._cos_phi = [math.cos(p) for p in self._phi]
        self._offsets = [
            HOUSEKEEPING_S * (p + 0.37 * ((seed + p * 17) % 11) / 11.0) / PHASES for p in range(PHASES)
        ]

    def counter(self, kernel: int, t: float) -> float:
        """``F_k(t - t0)``: increasing, ``F_k(t0) == 0``, average slope 1."""
        k = kernel % KERNELS
        x = t - self.t0
        a, w, p = self._amp[k], self._omega[k], self._phi[k]
        return x + a * (self._cos_phi[k] - math.cos(w * x + p)) / w

    def wave(self, kernel: int, t: float) -> float:
        """``W_k(t)`` in ``[-1, 1]``: a slow, irregular oscillation."""
        k = kernel % KERNELS
        x = (t - self.t0) * self._omega[k]
        return 0.7 * math.sin(x + self._phi[k]) + 0.3 * math.sin(2.71 * x + 1.3 * self._phi[k])

    def stats_time(self, phase: int, now: float) -> float:
        """Last housekeeping time of ``phase`` at or before ``now`` (what cAdvisor would report)."""
        off = self._offsets[phase % PHASES]
        rel = now - self.t0 - off
        return self.t0 + off + math.floor(rel / HOUSEKEEPING_S) * HOUSEKEEPING_S

    def table(self, now: float) -> tuple[list[float], list[bytes]]:
        """Every time function at scrape time ``now``, and the per-call strings (timestamps as integers)."""
        tab = [0.0] * TABLE_SIZE
        tab[CONST] = 1.0
        now_ms = math.floor(now * 1000.0)
        tab[NOW_MS] = float(now_ms)
        tab[NOW_S] = now_ms / 1000.0
        self._fill(tab, _NOW_F, now)
        for p in range(PHASES):
            st = self.stats_time(p, now)
            base = _PHASE0 + p * _PHASE_STRIDE
            tab[base] = float(math.floor(st * 1000.0))
            self._fill(tab, base + 1, st)
        strings = [b"%.0f" % tab[_PHASE0 + p * _PHASE_STRIDE] for p in range(PHASES)]
        strings.append(b"%.0f" % tab[NOW_MS])
        strings.append(go_float(float(math.floor(now))).encode())  # Go's float64(time.Unix()): 1.7e+09
        return tab, strings

    def _fill(self, tab: list[float], at: int, t: float) -> None:
        x = t - self.t0
        for k in range(KERNELS):
            a, w, p = self._amp[k], self._omega[k], self._phi[k]
            tab[at + k] = x + a * (self._cos_phi[k] - math.cos(w * x + p)) / w
            y = x * w
            tab[at + KERNELS + k] = 0.7 * math.sin(y + p) + 0.3 * math.sin(2.71 * y + 1.3 * p)


def go_float(value: float) -> str:
    """Format like Go's ``strconv.FormatFloat(v, 'g', -1, 64)``, as the Prometheus Go client does."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    sign, digits, exp = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits))
    point = len(ds) + exp  # position of the decimal point relative to the digits
    x = point - 1
    neg = "-" if sign else ""
    # Shortest 'g' switches to an exponent below 1e-4 and from 1e6 on.
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{neg}{ds}{'0' * (point - len(ds))}"
    return f"{neg}{ds[:point]}.{ds[point:]}"


def escape_label(value: str) -> str:
    """Escape a label value for the text exposition format."""
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels_text(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` with names sorted, as the Go client renders them (``""`` when empty)."""
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label(labels[k])}"' for k in sorted(labels))
    return "{" + inner + "}"


# Placeholder tokens of a compiled sample: a dynamic number, or (>= 0) the index of a per-call string
# (``Timebase.table``: the phases' timestamps, then scrape time in ms and in s).
_VALUE: Final = -1
_RETUNE_S: Final = 3600.0


class _Sample(NamedTuple):
    """One compiled sample line (or a family header): literal pieces around its placeholders."""

    key: tuple[str, int]
    pieces: tuple[bytes, ...]  # literal, b"" (a placeholder's position), literal, ... literal
    tokens: tuple[int, ...]  # one per placeholder
    values: tuple[tuple[float, float, int], ...]  # one per _VALUE token: base, rate, table slot
    fmts: tuple[str, ...]


Fragment = dict[str, list[_Sample]]
"""The samples of one source (e.g. one cgroup) by family: reusable across rebuilds."""


def _string_key(slot: int) -> int | None:
    """The per-call string that renders table slot ``slot`` as an integer, if there is one."""
    if slot == NOW_MS:
        return PHASES
    if slot == NOW_S:
        return PHASES + 1
    if slot >= _PHASE0 and (slot - _PHASE0) % _PHASE_STRIDE == 0:
        return (slot - _PHASE0) // _PHASE_STRIDE
    return None


class TextBuilder:
    """Accumulates one payload's template: static text plus affine slots for the dynamic numbers.

    Families may be opened in any order; :meth:`build` emits them sorted by name, and the series of
    each family sorted by their label text, like the Go client's registry.
    """

    def __init__(self, *, fragment: bool = False) -> None:
        """With ``fragment=True`` families need no declaration: the samples are meant for :meth:`add`."""
        self._families: dict[str, tuple[_Sample, list[_Sample]]] = {}
        self._fragment = fragment

    def family(self, name: str, mtype: str, help_text: str) -> None:
        """Declare a metric family (idempotent)."""
        if name not in self._families:
            header = f"# HELP {name} {help_text}\n# TYPE {name} {mtype}\n".encode()
            self._families[name] = (_Sample(("", 0), (header,), (), (), ()), [])

    def sample(
        self,
        family: str,
        name: str,
        labels: str,
        value: tuple[float, float, int] | float,
        *,
        fmt: str = "%.12g",
        ts: int | None = None,
        key: tuple[str, int] | None = None,
    ) -> None:
        """Add one sample line.

        ``value`` is either a constant (rendered now, Go-style) or ``(base, rate, slot)`` meaning
        ``base + rate * table[slot]`` rendered with ``fmt`` at every call. ``ts`` is a table slot
        holding an epoch-millisecond timestamp, or ``None`` for no timestamp. ``key`` orders the
        sample within its family (default: its label text).
        """
        head = f"{name}{labels} "
        values: tuple[tuple[float, float, int], ...] = ()
        fmts: tuple[str, ...] = ()
        tskey = -1
        if ts is not None:
            found = _string_key(ts)
            if found is None:
                raise ValueError(f"table slot {ts} is not a timestamp")
            tskey = found
        if isinstance(value, tuple) and value[1] != 0.0:
            skey = _string_key(value[2]) if value[0] == 0.0 and value[1] == 1.0 and fmt == "%d" else None
            if skey is None:
                skey, values, fmts = _VALUE, (value,), (fmt,)
            # Timestamps are shared by many samples: formatted once per call, inserted as strings.
            if ts is None:
                pieces: tuple[bytes, ...] = (head.encode(), b"", b"\n")
                tokens: tuple[int, ...] = (skey,)
            else:
                pieces, tokens = (head.encode(), b"", b" ", b"", b"\n"), (skey, tskey)
        else:
            # Constant: bake it into the text once instead of formatting it on every call.
            # (rounded as ``fmt`` would, printed as the Go client prints floats: 4.218808e+06).
            text = head + go_float(float(fmt % value[0]) if isinstance(value, tuple) else float(value))
            if ts is None:
                pieces, tokens = ((text + "\n").encode(),), ()
            else:
                pieces, tokens = ((text + " ").encode(), b"", b"\n"), (tskey,)
        families = self._families
        if self._fragment and family not in families:
            families[family] = (_Sample(("", 0), (b"",), (), (), ()), [])
        families[family][1].append(_Sample(key or (labels, 0), pieces, tokens, values, fmts))

    def histogram(
        self,
        family: str,
        labels: Mapping[str, str],
        buckets: Iterable[float],
        cdf: Iterable[float],
        count: tuple[float, float, int],
        mean: float,
    ) -> None:
        """A cumulative histogram: ``count`` observations, ``cdf[i]`` of them at or below ``buckets[i]``."""
        base, rate, slot = count
        plain = labels_text(labels)
        seq = 0
        for le, frac in zip([*buckets, math.inf], [*cdf, 1.0], strict=True):
            # The Go client writes ``le`` after the other labels: {operation_type="create",le="0.005"}.
            lab = f'{plain[:-1]},le="{go_float(le)}"}}' if plain else f'{{le="{go_float(le)}"}}'
            self.sample(
                family, f"{family}_bucket", lab, (base * frac, rate * frac, slot), fmt="%d", key=(plain, seq)
            )
            seq += 1
        self.sample(family, f"{family}_sum", plain, (base * mean, rate * mean, slot), key=(plain, seq))
        self.sample(family, f"{family}_count", plain, (base, rate, slot), fmt="%d", key=(plain, seq + 1))

    def fragment(self) -> Fragment:
        """The samples added so far, by family, to merge into other builders with :meth:`add`."""
        return {name: series for name, (_, series) in self._families.items() if series}

    def add(self, fragment: Fragment) -> None:
        """Merge samples rendered by another builder (their families must be declared here)."""
        for name, series in fragment.items():
            self._families[name][1].extend(series)

    def build(self) -> Template:
        """Freeze into a :class:`Template`: a few C-level list operations per (precompiled) sample."""
        records: list[_Sample] = []
        by_key = operator.itemgetter(0)
        for name in sorted(self._families):
            header, series = self._families[name]
            records.append(header)
            records.extend(sorted(series, key=by_key))
        chain = itertools.chain.from_iterable
        tokens = list(chain(map(operator.itemgetter(2), records)))
        values = list(chain(map(operator.itemgetter(3), records)))
        fmts = list(chain(map(operator.itemgetter(4), records)))
        # Glue each record's first literal onto the previous record's last one (runs of constant
        # samples are joined once, not appended to repeatedly); every sample line ends with its own
        # literal (at least "\n"), so the glued list alternates literal/placeholder.
        pieces: list[bytes] = []
        pending: list[bytes] = []
        append, extend, join = pieces.append, pieces.extend, b"".join
        for rec in records:
            rp = rec[1]
            pending.append(rp[0])
            if len(rp) > 1:
                append(join(pending))
                extend(rp[1:-1])
                pending = [rp[-1]]
        append(join(pending))
        n = len(values)
        counter = itertools.count()
        perm = [next(counter) if t == _VALUE else n + t for t in tokens]
        return Template(
            pieces,
            [v[0] for v in values],
            [v[1] for v in values],
            [v[2] for v in values],
            "\n".join(fmts),
            perm,
            len(records) - len(self._families),
            [j for j, f in enumerate(fmts) if f == "%d"],
        )


class Template:
    """A frozen payload: render it against a time table.

    Rendering formats only the dynamic numbers (one ``%`` over a short format string, split into
    fields), puts them and the per-call timestamp strings into the odd positions of the pre-encoded
    literal pieces, and joins: the static text is copied, never parsed again.
    """

    __slots__ = (
        "_bases",
        "_fmts",
        "_getter",
        "_int_fields",
        "_nvalues",
        "_pieces",
        "_rates",
        "_slots",
        "_tuned_at",
        "_vfmt",
        "samples",
    )

    def __init__(
        self,
        pieces: list[bytes],
        bases: list[float],
        rates: list[float],
        slots: list[int],
        value_format: str,
        perm: list[int],
        samples: int,
        int_fields: list[int] | None = None,
    ) -> None:
        self._pieces = pieces if perm else [b"".join(pieces)]
        self._bases = bases
        self._rates = rates
        self._slots = slots
        self._vfmt = value_format
        self._nvalues = len(bases)
        self._getter: Callable[[list[bytes]], tuple[bytes, ...]]
        if len(perm) == 1:
            only = perm[0]
            self._getter = lambda fields: (fields[only],)
        else:
            # itemgetter builds the argument tuple in C.
            self._getter = operator.itemgetter(*perm) if perm else (lambda fields: ())
        self.samples = samples
        self._int_fields = int_fields or []
        self._fmts = value_format.split("\n")
        self._tuned_at = -math.inf

    def _tune(self, values: list[float], now: float) -> None:
        """Print integral values from 1e6 on in exponent form with all their digits, as the Go client
        does (44634112 -> 4.4634112e+07), using a fixed-precision ``%e`` chosen from the current
        magnitude: the per-call format stays one C-level operation. Re-chosen now and then as
        counters grow (a value that gained a digit meanwhile is printed one digit shorter)."""
        fmts = self._fmts
        for j in self._int_fields:
            v = values[j]
            fmts[j] = f"%.{len(str(int(v))) - 1}e" if v >= 1e6 else "%d"
        self._vfmt = "\n".join(fmts)
        self._tuned_at = now

    @classmethod
    def constant(cls, body: bytes) -> Template:
        """A body that does not change with time."""
        return cls([body], [], [], [], "", [], 0, [])

    def render(self, table: list[float], strings: list[bytes]) -> bytes:
        """The payload at the time described by ``table`` and ``strings`` (from :meth:`Timebase.table`)."""
        if len(self._pieces) == 1:
            return self._pieces[0]
        fields: list[bytes] = []
        if self._nvalues:
            values = [b + r * table[i] for b, r, i in zip(self._bases, self._rates, self._slots, strict=True)]
            if self._int_fields and abs(table[NOW_S] - self._tuned_at) > _RETUNE_S:
                self._tune(values, table[NOW_S])
            fields = (self._vfmt % tuple(values)).encode().split(b"\n")
        fields.extend(strings)
        pieces = self._pieces.copy()
        pieces[1::2] = self._getter(fields)
        return b"".join(pieces)
