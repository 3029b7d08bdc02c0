"""Feature values as text: numpy's ``str(numpy.float32(v))``, computed for whole arrays.

Feature files hold each value as the shortest decimal that reads back as the same
float32, laid out as numpy prints a float32 scalar (``0.0``, ``1.5``, ``123.0``,
``0.00012``, ``1e-05``, ``-2.5e+16``).  numpy finds those digits with Dragon4 and
big-number arithmetic, one value at a time: about a microsecond per value, more than
the rest of the writer together.  Here the same digits come from the Ryu algorithm (Ulf
Adams, "Ryu: fast float-to-string conversion", PLDI 2018), which needs only 64-bit
integer products, run on whole arrays at once; each value's characters are then picked
from its digits by a layout table, and a row's text is joined without a Python call per
value.  Rows holding NaN or infinity are left to numpy.  The tests compare digits and
texts with numpy's: random bit patterns, the edge mantissas of every exponent, and a
sweep of the exponents that numpy prints positionally.
"""
from __future__ import annotations

import functools

import numpy as np

_MANTISSA_BITS = 23
_BIAS = 127
_POW5_INV_BITCOUNT = 59
_POW5_BITCOUNT = 61
_DIGITS = 9  # a float32 never needs more significant digits
_POW10 = 10.0 ** np.arange(12)


def _pow5bits(e: int) -> int:
    """Bits of 5**e (for 0 <= e <= 3528): ``ceil(log2(5**e))`` or 1 for e = 0."""
    return ((e * 1217359) >> 19) + 1


@functools.lru_cache(maxsize=1)
def _exponent_tables() -> dict[str, np.ndarray]:
    """Everything Ryu derives from a float32's exponent field, for all 255 finite ones.

    For the biased exponent ``b`` the value is ``m2 * 2**e2`` (scaled by 4 for the
    bounds); Ryu turns ``4*m2`` into a decimal ``vr * 10**e10`` with a multiply by a
    fixed-point power of five and a shift, and does the same one digit further for the
    last removed digit.  Tables are exact integers computed here (Python ints), as the
    reference implementation's tables are.
    """
    biased = np.arange(255)
    e2 = np.where(biased == 0, 1, biased) - _BIAS - _MANTISSA_BITS - 2
    q = np.empty(255, np.int64)
    e10 = np.empty(255, np.int64)
    factor = np.empty(255, np.uint64)
    shift = np.empty(255, np.int64)
    last_factor = np.zeros(255, np.uint64)
    last_shift = np.full(255, 33, np.int64)
    for b, e in enumerate(e2.tolist()):
        if e >= 0:
            qq = (e * 78913) >> 18  # floor(log10(2**e))
            e10[b] = qq
            factor[b] = _pow5_inverse(qq)
            shift[b] = -e + qq + _POW5_INV_BITCOUNT + _pow5bits(qq) - 1
            if qq:
                last_factor[b] = _pow5_inverse(qq - 1)
                last_shift[b] = -e + qq - 1 + _POW5_INV_BITCOUNT + _pow5bits(qq - 1) - 1
        else:
            qq = (-e * 732923) >> 20  # floor(log10(5**-e))
            e10[b] = qq + e
            i = -e - qq
            factor[b] = _pow5(i)
            shift[b] = qq - (_pow5bits(i) - _POW5_BITCOUNT)
            if qq:
                last_factor[b] = _pow5(i + 1)
                last_shift[b] = qq - 1 - (_pow5bits(i + 1) - _POW5_BITCOUNT)
        q[b] = qq
    return {"e2": e2, "q": q, "e10": e10, "factor": factor, "shift": shift,
            "last_factor": last_factor, "last_shift": last_shift}


def _pow5_inverse(i: int) -> int:
    """``2**(pow5bits(i) - 1 + 59) / 5**i``, rounded up: a fixed-point ``5**-i``."""
    return int((1 << (_pow5bits(i) - 1 + _POW5_INV_BITCOUNT)) // 5 ** i + 1)


def _pow5(i: int) -> int:
    """``5**i`` as a 61-bit fixed-point number (its top 61 bits)."""
    bits = _pow5bits(i) - _POW5_BITCOUNT
    return int(5 ** i >> bits if bits >= 0 else 5 ** i << -bits)


def _mul_shift(m: np.ndarray, factor: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``(m * factor) >> shift`` for m < 2**32, a 64-bit factor and shift > 32, exactly.

    The 96-bit product is formed from two 64-bit halves, as Ryu's ``mulShift32``.
    """
    low = m * (factor & np.uint64(0xFFFFFFFF))
    high = m * (factor >> np.uint64(32))
    result: np.ndarray = ((low >> np.uint64(32)) + high) >> (shift - 32).astype(np.uint64)
    return result


def shortest_digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shortest decimal ``digits * 10**exponent`` that reads back as each float32.

    Parameters
    ----------
    values : np.ndarray [dtype=float32]
        Finite, nonzero values (their sign is ignored).

    Returns
    -------
    digits : np.ndarray [dtype=uint64]
        Significant digits without trailing zeros (at most 9 of them).
    exponent : np.ndarray [dtype=int64]
    """
    tables = _exponent_tables()
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    field = ((bits >> np.uint64(_MANTISSA_BITS)) & np.uint64(0xFF)).astype(np.intp)
    mantissa = bits & np.uint64((1 << _MANTISSA_BITS) - 1)
    m2 = np.where(field == 0, mantissa, mantissa | np.uint64(1 << _MANTISSA_BITS))
    accept_bounds = (m2 & np.uint64(1)) == 0
    mv = m2 * np.uint64(4)
    mp = mv + np.uint64(2)
    mm_shift = (mantissa != 0) | (field <= 1)
    mm = mv - np.uint64(1) - mm_shift.astype(np.uint64)

    e2 = tables["e2"][field]
    q = tables["q"][field]
    factor, shift = tables["factor"][field], tables["shift"][field]
    vr = _mul_shift(mv, factor, shift)
    vp = _mul_shift(mp, factor, shift)
    vm = _mul_shift(mm, factor, shift)
    last = _mul_shift(mv, tables["last_factor"][field], tables["last_shift"][field]) % 10
    last = np.where((q != 0) & ((vp - np.uint64(1)) // 10 <= vm // 10), last, 0)

    vm_zeros = np.zeros(len(bits), bool)
    vr_zeros = np.zeros(len(bits), bool)
    positive = e2 >= 0
    # e2 >= 0 and q <= 9: are the bounds exact decimals at this scale?
    small = positive & (q <= 9)
    pow5 = np.uint64(5) ** np.minimum(q, 27).astype(np.uint64)
    mv_by5 = mv % 5 == 0
    vr_zeros |= small & mv_by5 & (mv % pow5 == 0)
    vm_zeros |= small & ~mv_by5 & accept_bounds & (mm % pow5 == 0)
    vp -= (small & ~mv_by5 & ~accept_bounds & (mp % pow5 == 0)).astype(np.uint64)
    # e2 < 0
    tiny_q = ~positive & (q <= 1)
    vr_zeros |= tiny_q
    vm_zeros |= tiny_q & accept_bounds & mm_shift
    vp -= (tiny_q & ~accept_bounds).astype(np.uint64)
    mid_q = ~positive & (q > 1) & (q < 31)
    low_bits = (np.uint64(1) << np.clip(q - 1, 0, 62).astype(np.uint64)) - np.uint64(1)
    vr_zeros |= mid_q & ((mv & low_bits) == 0)

    # Remove digits while the bounds still differ above the last digit: ``removed`` is
    # the largest r with vp // 10**r > vm // 10**r (true for every smaller r, and at
    # least for the number of digits of vp - vm, less one).  The bounds are below 2**32,
    # so float64 quotients of them by powers of ten floor to the exact integer ones.
    removed = np.zeros(len(bits), np.intp)
    for power in range(1, 10):
        removed += vp - vm >= np.uint64(10 ** power)
    high, low = vp.astype(np.float64), vm.astype(np.float64)
    more = np.floor(high / _POW10[removed + 1]) > np.floor(low / _POW10[removed + 1])
    removed += more
    active = np.flatnonzero(more)
    while len(active):
        step = _POW10[removed[active] + 1]
        more = np.floor(high[active] / step) > np.floor(low[active] / step)
        active = active[more]
        removed[active] += 1
    middle = vr.astype(np.float64)
    scale = _POW10[removed]
    kept = np.floor(middle / scale)
    finer = np.floor(middle / _POW10[np.maximum(removed - 1, 0)])
    some = removed > 0
    # the general loop's flags: every removed digit of vm zero; every removed digit of vr
    # but the last (and the digit dropped before) zero; and the last removed digit
    vm_zeros &= low == np.floor(low / scale) * scale
    vr_zeros &= ~some | ((last == 0) & (middle == finer * _POW10[np.maximum(removed - 1, 0)]))
    last = np.where(some, (finer - kept * 10).astype(np.uint64), last)
    vr = kept.astype(np.uint64)
    vp = np.floor(high / scale).astype(np.uint64)
    vm = np.floor(low / scale).astype(np.uint64)
    active = np.flatnonzero(vm_zeros & (vm % 10 == 0))
    while len(active):
        vr_zeros[active] &= last[active] == 0
        last[active] = vr[active] % 10
        vr[active] //= 10
        vp[active] //= 10
        vm[active] //= 10
        removed[active] += 1
        active = active[vm[active] % 10 == 0]
    last = np.where(vr_zeros & (last == 5) & (vr % 2 == 0), 4, last)
    round_up = ((vr == vm) & (~accept_bounds | ~vm_zeros)) | (last >= 5)
    digits = vr + round_up.astype(np.uint64)
    exponent = tables["e10"][field] + removed
    # rounding up can leave trailing zeros (19 -> 20): the text never shows them
    active = np.flatnonzero(digits % 10 == 0)
    while len(active):
        digits[active] //= 10
        exponent[active] += 1
        active = active[digits[active] % 10 == 0]
    return digits, exponent


# numpy prints a float32 positionally when 1e-4 <= |v| < 1e6 ("0.00012", "999999.94"),
# in scientific notation otherwise ("1e-05", "-1.2345678e+20"); "nan", "inf" and "-inf"
# are left to numpy (a row holding one is formatted by numpy).
POSITIONAL_RANGE = (1e-4, 1e6)
_FRACTION_DIGITS = 12  # 1e-4 with 9 significant digits needs 12 decimals
_SLOT = 16  # the longest texts, "-0.000123456789" and "-1.2345678e-05", and a comma
# Per value, a source row of 24 bytes: 16 zero-padded digits (the value times
# 10**decimals, or its significant digits), "-", ".", ",", a zero byte, and the
# exponent ("e-05"); a layout picks the text's bytes from it, zero bytes are dropped.
_SOURCE = 24
_QUADS = np.array([f"{index:04d}" for index in range(10000)], "S4").view(np.uint32)
_MARKS = np.frombuffer(b"-.,\0", np.uint32)[0]
_MINUS, _POINT, _COMMA, _NOTHING, _EXPONENT = 16, 17, 18, 19, 20
_MIN_EXPONENT, _MAX_EXPONENT = -46, 39
_EXPONENTS = np.array([f"e{power:+03d}" for power in range(_MIN_EXPONENT, _MAX_EXPONENT + 1)],
                      "S4").view(np.uint32)
_POSITIONAL_KINDS = 2 * 7 * (_FRACTION_DIGITS + 1)  # sign, integer digits, decimals


@functools.lru_cache(maxsize=1)
def _layouts() -> np.ndarray:
    """Source positions of the 16 text bytes for every kind of text.

    Positional kinds ``(sign * 7 + whole) * 13 + decimals``: a value with ``whole``
    integer digits and ``decimals`` decimals, scaled to the integer
    ``v = |value| * 10**decimals``, prints as the last ``whole + decimals`` digits of
    ``v`` with a point before the last ``decimals``.  Scientific kinds
    ``182 + sign * 10 + n``: the first of ``n`` significant digits, a point and the
    others if there are any, then the exponent.
    """
    positional = np.full((2, 7, _FRACTION_DIGITS + 1, _SLOT), _NOTHING, np.intp)
    scientific = np.full((2, _DIGITS + 1, _SLOT), _NOTHING, np.intp)
    for sign in (0, 1):
        for whole in range(1, 7):
            for decimals in range(1, _FRACTION_DIGITS + 1):
                if sign + whole + decimals + 2 > _SLOT:
                    continue  # never printed: at most 9 digits, or "0." and 12 decimals
                text = [_MINUS] * sign + list(range(16 - whole - decimals, 16 - decimals)) \
                    + [_POINT] + list(range(16 - decimals, 16)) + [_COMMA]
                positional[sign, whole, decimals, :len(text)] = text
        for n in range(1, _DIGITS + 1):
            text = [_MINUS] * sign + [16 - n] + ([_POINT] + list(range(17 - n, 16)) if n > 1
                                                 else [])
            text += list(range(_EXPONENT, _EXPONENT + 4)) + [_COMMA]
            scientific[sign, n, :len(text)] = text
    return np.concatenate([positional.reshape(-1, _SLOT), scientific.reshape(-1, _SLOT)])


def float32_text(values: np.ndarray) -> list[str]:
    """Each row of ``values`` as ``",".join(str(numpy.float32(v)) for v in row)``.

    Parameters
    ----------
    values : np.ndarray [shape=(rows, n)]
        Converted to float32.

    Returns
    -------
    list of str
        One comma-separated line (without a newline) per row.
    """
    values = np.asarray(values, dtype=np.float32)
    rows, width = values.shape
    flat = values.ravel()
    finite = np.isfinite(flat)
    chosen = np.flatnonzero(finite & (flat != 0))
    chosen_values = flat[chosen]
    digits, exponent = shortest_digits(chosen_values)
    count = np.ones(len(digits), np.int64)  # number of significant digits
    for power in range(1, _DIGITS):
        count += digits >= 10 ** power
    leading = exponent + count - 1  # decimal exponent of the first digit
    size = np.abs(chosen_values).astype(np.float64)  # compared exactly, as numpy does
    plain = (size >= POSITIONAL_RANGE[0]) & (size < POSITIONAL_RANGE[1])

    # zeros (+0.0 and -0.0) print as one integer digit and one decimal of 0
    sign = np.signbit(flat).astype(np.intp)
    kind = (sign * 7 + 1) * (_FRACTION_DIGITS + 1) + 1
    scaled = np.zeros(len(flat), np.uint64)
    exponent_text = np.zeros(len(flat), np.uint32)
    if len(chosen):
        whole = np.maximum(leading + 1, 1)
        decimals = np.maximum(count - 1 - leading, 1)
        positional_kind = (sign[chosen] * 7 + whole) * (_FRACTION_DIGITS + 1) + decimals
        scientific_kind = _POSITIONAL_KINDS + sign[chosen] * (_DIGITS + 1) + count
        kind[chosen] = np.where(plain, positional_kind, scientific_kind)
        # positional: |value| * 10**decimals, an integer below 1e13 (exact in uint64);
        # scientific: the significant digits
        shift = np.where(plain, exponent + decimals, 0).astype(np.uint64)
        scaled[chosen] = digits * np.uint64(10) ** shift
        exponent_text[chosen] = _EXPONENTS[np.clip(leading, _MIN_EXPONENT, _MAX_EXPONENT)
                                           - _MIN_EXPONENT]

    source = np.empty((len(flat), _SOURCE // 4), np.uint32)
    source[:, 0] = _QUADS[scaled // 10 ** 12]
    source[:, 1] = _QUADS[(scaled // 10 ** 8) % 10 ** 4]
    source[:, 2] = _QUADS[(scaled // 10 ** 4) % 10 ** 4]
    source[:, 3] = _QUADS[scaled % 10 ** 4]
    source[:, 4] = _MARKS
    source[:, 5] = exponent_text
    layout = _layouts()[kind]
    layout += np.arange(0, len(flat) * _SOURCE, _SOURCE)[:, None]
    text = source.view(np.uint8).ravel().take(layout)
    lines = text.reshape(rows, width * _SLOT)
    odd_rows = ~finite.reshape(rows, width).all(axis=1)  # NaN or infinity: numpy's text
    return [",".join(row.astype(str).tolist()) if odd
            else line.tobytes().translate(None, b"\0").decode("ascii")[:-1]
            for line, row, odd in zip(lines, values, odd_rows)]
