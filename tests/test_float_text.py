"""Feature values as text: the array formatter against numpy's own ``str(numpy.float32)``."""
from decimal import Decimal

import numpy as np
import pytest

from deep_spectrum_extractor.output.float_text import (POSITIONAL_RANGE, float32_text,
                                                        shortest_digits)


def numpy_rows(values: np.ndarray) -> list[str]:
    return [",".join(str(value) for value in row) for row in values]


def numpy_digits(value: np.float32) -> tuple[int, int]:
    """numpy's shortest digits of ``value`` as (digits without trailing zeros, exponent)."""
    sign, digits, exponent = Decimal(str(abs(value))).normalize().as_tuple()
    return int("".join(map(str, digits))), exponent


def float32_from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint64).astype(np.uint32).view(np.float32)


def test_shortest_digits_equal_numpys_for_random_float32_of_every_exponent():
    rng = np.random.default_rng(3)
    values = float32_from_bits(rng.integers(0, 2**32, 20000, dtype=np.uint64))
    values = values[np.isfinite(values) & (values != 0)]
    # every exponent field (subnormals included), with the mantissas that make Ryu take
    # its special paths: zero (powers of two: unequal gaps), one, and the largest
    fields = np.arange(0, 255, dtype=np.uint64) << np.uint64(23)
    edges = float32_from_bits(np.concatenate([fields + m for m in (0, 1, 2, 0x7FFFFF)]))
    values = np.concatenate([values, edges[edges != 0]])
    digits, exponent = shortest_digits(values)
    assert [(int(d), int(e)) for d, e in zip(digits, exponent)] \
        == [numpy_digits(value) for value in values]


def test_short_decimals_and_exact_integers_get_their_short_digits():
    values = np.float32([0.1, 0.5, 1.0, 2.0, 10.0, 100.0, 1e-4, 16777216.0, 3.0e38, 1e-45,
                         0.3, 123456.7, 9.999999e-5])
    digits, exponent = shortest_digits(values)
    assert list(zip(digits.tolist(), exponent.tolist())) == [
        (1, -1), (5, -1), (1, 0), (2, 0), (1, 1), (1, 2), (1, -4), (16777216, 0), (3, 38),
        (1, -45), (3, -1), (1234567, -1), (9999999, -11)]


def test_rows_in_the_positional_range_equal_numpys_text():
    """Values numpy prints as 0.000123, 12.5, 999999.94: the array layout's whole range."""
    rng = np.random.default_rng(4)
    low, high = (np.float32(bound).view(np.uint32) for bound in POSITIONAL_RANGE)
    bits = rng.integers(int(low), int(high) + 1, size=(40, 512), dtype=np.uint64)
    values = float32_from_bits(bits)
    values[rng.random(values.shape) < 0.5] *= -1
    values[::3, ::2] = 0.0  # ReLU rows: half zeros
    values[1, :4] = [-0.0, 0.0, np.nextafter(np.float32(1e-4), np.float32(1)),
                     np.nextafter(np.float32(1e6), np.float32(0))]
    assert float32_text(values) == numpy_rows(values)


def test_every_200th_float32_of_the_positional_exponents_equals_numpys_text():
    """All exponent fields from below 1e-4 to above 1e6, both signs, strided mantissas."""
    mantissas = np.arange(0, 1 << 23, 200, dtype=np.uint64)
    fields = np.arange(113, 148, dtype=np.uint64) << np.uint64(23)
    bits = (fields[:, None] + mantissas[None, :]).ravel()
    values = float32_from_bits(bits)
    values = np.concatenate([values, -values])
    values = values[: len(values) // 1000 * 1000].reshape(-1, 1000)
    assert float32_text(values) == numpy_rows(values)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, 1e-5, 2.5e-38, 1e6, -3.4e38,
                                     1e-45])
def test_rows_with_values_printed_in_scientific_notation_or_not_finite(special):
    values = np.float32([[0.5, special, -0.0, 123.25], [1.0, 0.0, 2.0, 3.0]])
    assert float32_text(values) == numpy_rows(values)
    assert float32_text(values)[0].split(",")[1] == str(np.float32(special))


def test_texts_read_back_as_the_same_float32():
    values = np.random.default_rng(5).standard_normal((8, 300)).astype(np.float32) ** 3
    lines = float32_text(values)
    assert np.array_equal(np.array([line.split(",") for line in lines], np.float32), values)


def test_empty_inputs():
    assert float32_text(np.zeros((3, 0), np.float32)) == ["", "", ""]
    assert float32_text(np.zeros((0, 5), np.float32)) == []
    assert float32_text(np.zeros((2, 2), np.float32)) == ["0.0,0.0", "0.0,0.0"]
