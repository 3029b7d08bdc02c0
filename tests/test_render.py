"""The numpy renderer against matplotlib's own drawing (plot_matrix).

Every comparison here is exact: the renderer exists to produce the same bytes as the
figure path, so a single differing pixel is a failure (no tolerance). The reference
is always :func:`plot_matrix`, which draws with matplotlib and librosa; the one
stored expectation (a hash of plot_matrix's own output) only detects that
matplotlib itself changed how it draws.
"""
from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

PACKAGE_ROOT = Path(__file__).parents[1] / "deep-spectrum"
if str(PACKAGE_ROOT) not in sys.path:
    sys.path.insert(0, str(PACKAGE_ROOT))

import matplotlib  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deep_spectrum_extractor.errors import ParameterError  # noqa: E402
from deep_spectrum_extractor.images.plotting import plot_matrix  # noqa: E402
from deep_spectrum_extractor.images.render import (  # noqa: E402
    VALIDATED_MATPLOTLIB, colour_table, pixel_cells, render_matrix, verify_renderer)
from deep_spectrum_extractor.images.spectral import (  # noqa: E402
    min_chunk_length, spectral_matrix)

SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)
COLOUR_MAPS = sorted(matplotlib.colormaps)


def assert_same_image(matrix, **kwargs):
    """render_matrix and plot_matrix give identical bytes; returns the image."""
    expected = plot_matrix(matrix, **kwargs)
    got = render_matrix(matrix, **kwargs)
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.uint8
    differing = np.argwhere(np.any(got != expected, axis=-1))
    assert differing.size == 0, (
        f"{len(differing)} of {expected.shape[0] * expected.shape[1]} pixels differ "
        f"(first at row, column {differing[:5].tolist()}) for a {np.shape(matrix)} "
        f"matrix with {kwargs}")
    return got


def signal(kind: str, n_samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """A real-looking test signal made by numpy from a seeded generator."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    nyquist = sample_rate / 2
    if kind == "tone":
        y = np.sin(2 * np.pi * rng.uniform(30, nyquist * 0.95) * t)
    elif kind == "chirp":
        start, stop = sorted(rng.uniform(20, nyquist * 0.9, size=2))
        duration = max(t[-1], 1 / sample_rate)
        y = np.sin(2 * np.pi * (start * t + (stop - start) / (2 * duration) * t ** 2))
    elif kind == "noise":
        y = rng.standard_normal(n_samples)
    else:  # mixture: harmonics of a voice-like tone, a high partial and noise
        f0 = rng.uniform(80, 400)
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        y += 0.3 * np.sin(2 * np.pi * rng.uniform(1000, nyquist * 0.8) * t)
        y += 0.1 * rng.standard_normal(n_samples)
    return (0.5 * y).astype(np.float32)


def spectral(samples, sample_rate, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spectral_matrix(samples, sample_rate, **kwargs)


# -- (1) property: identical pixels over random parameters and signals -------------------

@st.composite
def render_cases(draw):
    mode = draw(st.sampled_from(("spectrogram", "mel", "chroma")))
    scale = "chroma" if mode == "chroma" else draw(st.sampled_from(("linear", "log", "mel")))
    sample_rate = draw(st.sampled_from(SAMPLE_RATES))
    nfft = draw(st.one_of(st.sampled_from((128, 256, 512, 1024, 2048)),
                          st.integers(100, 2100)))
    # ylim as a fraction of Nyquist, up to 1.5 (above Nyquist nothing is cut); from 0.1
    # so the cut STFT keeps the few rows librosa needs for mel and chroma.
    ylim = draw(st.one_of(st.none(), st.floats(0.1, 1.5).map(
        lambda fraction: int(fraction * sample_rate / 2))))
    delta = draw(st.sampled_from((None, 1, 2)))
    nmel = draw(st.integers(8, 256))
    cmap = draw(st.sampled_from(COLOUR_MAPS))
    size = draw(st.one_of(st.just(227), st.integers(50, 300)))
    shortest = min_chunk_length(nfft, delta)
    n_samples = draw(st.integers(shortest, max(shortest, int(1.5 * sample_rate))))
    kind = draw(st.sampled_from(("tone", "chirp", "noise", "mixture")))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return dict(mode=mode, scale=scale, sample_rate=sample_rate, nfft=nfft, ylim=ylim,
                delta=delta, nmel=nmel, cmap=cmap, size=size, n_samples=n_samples,
                kind=kind, seed=seed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=render_cases())
def test_renderer_matches_matplotlib_on_random_spectra(case):
    samples = signal(case["kind"], case["n_samples"], case["sample_rate"], case["seed"])
    matrix = spectral(samples, case["sample_rate"], mode=case["mode"], nfft=case["nfft"],
                      ylim=case["ylim"], delta=case["delta"], nmel=case["nmel"])
    assert_same_image(matrix, sample_rate=case["sample_rate"], nfft=case["nfft"],
                      scale=case["scale"], cmap=case["cmap"], size=case["size"],
                      ylim=case["ylim"])


# -- (2) edge cases ----------------------------------------------------------------------

@pytest.mark.parametrize("mode, scale", [("spectrogram", "linear"), ("spectrogram", "log"),
                                         ("mel", "mel"), ("mel", "linear"),
                                         ("chroma", "chroma")])
@pytest.mark.parametrize("what", ["silence", "click", "one frame", "quiet hum"])
def test_edge_signals(mode, scale, what):
    sample_rate, nfft = 16000, 512
    if what == "silence":
        samples = np.zeros(sample_rate // 2, dtype=np.float32)
    elif what == "click":
        samples = np.zeros(sample_rate // 2, dtype=np.float32)
        samples[3000] = 1.0
    elif what == "one frame":
        samples = signal("mixture", nfft, sample_rate, seed=5)
    else:
        samples = (1e-6 * np.sin(2 * np.pi * 50 * np.arange(sample_rate) / sample_rate)
                   ).astype(np.float32)
    matrix = spectral(samples, sample_rate, mode=mode, nfft=nfft)
    image = assert_same_image(matrix, sample_rate=sample_rate, nfft=nfft, scale=scale,
                              cmap="viridis", size=227)
    if what == "one frame":
        assert matrix.shape[1] == 1 and np.all(image == 255)  # zero-width cells: white


def test_constant_matrix_is_the_first_colour():
    image = assert_same_image(np.full((129, 40), -80.0, dtype=np.float32), sample_rate=16000,
                              nfft=256, scale="linear", cmap="magma", size=100)
    first = (np.asarray(matplotlib.colormaps["magma"](0)[:3]) * 255 + 0.5).astype(np.uint8)
    assert np.all(image == first)


@pytest.mark.parametrize("scale", ["linear", "log", "mel"])
def test_nan_and_infinite_cells_are_left_white(scale):
    rng = np.random.default_rng(11)
    matrix = rng.normal(-40, 10, size=(65, 30)).astype(np.float32)
    matrix[5:9, 3] = np.nan
    matrix[20, 10:14] = np.inf
    matrix[40, 20] = -np.inf
    image = assert_same_image(matrix, sample_rate=22050, nfft=128, scale=scale, size=130)
    assert np.any(np.all(image == 255, axis=-1))


def test_nan_in_every_cell_but_one():
    matrix = np.full((10, 8), np.nan)
    matrix[4, 4] = 1.0
    assert_same_image(matrix, sample_rate=8000, nfft=18, scale="mel", size=40)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 31, 600, 1000])
@pytest.mark.parametrize("scale", ["linear", "mel"])
def test_very_small_and_very_large_images(size, scale):
    rng = np.random.default_rng(size)
    matrix = rng.normal(size=(257, 63)).astype(np.float32)
    assert_same_image(matrix, sample_rate=16000, nfft=512, scale=scale, cmap="inferno",
                      size=size)


@pytest.mark.parametrize("rows, frames", [(2, 1), (2, 2), (2, 40), (3, 5), (12, 1),
                                          (1, 30), (700, 3)])
@pytest.mark.parametrize("scale", ["linear", "log", "mel", "chroma"])
def test_tiny_and_unbalanced_matrices(rows, frames, scale):
    rng = np.random.default_rng(rows * 100 + frames)
    matrix = rng.normal(size=(rows, frames))
    if rows == 1 and scale in ("linear", "log"):
        # specshow divides by zero for a one-row frequency axis; so does the renderer,
        # with a clear message.
        with pytest.raises(ZeroDivisionError):
            plot_matrix(matrix, sample_rate=16000, nfft=512, scale=scale)
        with pytest.raises(ParameterError, match="at least 2 rows"):
            render_matrix(matrix, sample_rate=16000, nfft=512, scale=scale)
        return
    assert_same_image(matrix, sample_rate=16000, nfft=512, scale=scale, size=120)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int16, np.int64,
                                   np.uint8, np.complex64, bool])
def test_matrix_dtypes(dtype):
    rng = np.random.default_rng(2)
    values = rng.normal(0, 40, size=(40, 25))
    if dtype is np.complex64:
        matrix = (values + 1j * values[::-1]).astype(dtype)
    elif dtype is bool:
        matrix = values > 0
    else:
        matrix = np.abs(values).astype(dtype) if dtype is np.uint8 else values.astype(dtype)
    assert_same_image(matrix, sample_rate=16000, nfft=78, scale="linear", size=90)


@pytest.mark.parametrize("scale", ["mel"])
@pytest.mark.parametrize("ylim", [0, 50, 3000, 8000, 20000, 100000])
def test_mel_axis_top(scale, ylim):
    matrix = spectral(signal("chirp", 16000, 16000, seed=1), 16000, mode="mel", nfft=512,
                      nmel=64)
    assert_same_image(matrix, sample_rate=16000, nfft=512, scale=scale, size=227, ylim=ylim)


def test_every_colour_of_every_colour_map():
    """A ramp through all N entries of each map, one pixel column per entry.

    Catches a wrong rounding of colour bytes (``cmap(..., bytes=True)`` truncates and is
    off by one in most viridis entries) and wrong index arithmetic.
    """
    for name in COLOUR_MAPS:
        n_colours = matplotlib.colormaps[name].N
        ramp = np.tile(np.arange(n_colours, dtype=np.float64), (2, 1))
        assert_same_image(ramp, sample_rate=16000, nfft=512, scale="linear", cmap=name,
                          size=n_colours)


def test_colour_bytes_round_rather_than_truncate():
    viridis = matplotlib.colormaps["viridis"]
    table = colour_table("viridis")[:viridis.N].view(np.uint8).reshape(-1, 4)[:, :3]
    truncated = viridis(np.arange(viridis.N), bytes=True)[:, :3]
    assert np.any(table != truncated)
    assert np.all(np.abs(table.astype(int) - truncated) <= 1)


def test_geometry_is_cached_and_images_are_fresh():
    first = pixel_cells(257, 61, sample_rate=16000, scale="log", fmax=None, size=227)
    again = pixel_cells(257, 61, sample_rate=16000, scale="log", fmax=None, size=227)
    assert first[0] is again[0] and first[1] is again[1]
    assert not first[0].flags.writeable
    matrix = np.random.default_rng(0).normal(size=(257, 61)).astype(np.float32)
    image = render_matrix(matrix, sample_rate=16000, nfft=512, scale="log")
    image[:] = 0  # the caller owns the result; nothing cached is touched
    np.testing.assert_array_equal(render_matrix(matrix, sample_rate=16000, nfft=512,
                                                scale="log"),
                                  plot_matrix(matrix, sample_rate=16000, nfft=512, scale="log"))


@pytest.mark.parametrize("scale, shape", [("mel", (128, 61)), ("linear", (257, 31)),
                                          ("chroma", (12, 61)), ("mel", (1, 61))])
def test_drawing_into_a_given_array_fills_it_with_the_picture(scale, shape):
    matrix = np.random.default_rng(3).normal(size=shape)
    out = np.full((227, 227, 3), 7, dtype=np.uint8)
    got = render_matrix(matrix, sample_rate=16000, nfft=512, scale=scale, out=out)
    assert got is out
    np.testing.assert_array_equal(out, plot_matrix(matrix, sample_rate=16000, nfft=512,
                                                   scale=scale))


@pytest.mark.parametrize("matrix, kwargs, message", [
    (np.zeros((5, 5)), dict(scale="hz"), "scale='hz'"),
    (np.zeros((5, 5)), dict(scale="mel", cmap="no_such_map"), "cmap='no_such_map'"),
    (np.zeros((5, 5)), dict(scale="mel", size=0), "size=0"),
    (np.zeros((0, 5)), dict(scale="mel"), "non-empty"),
    (np.zeros(5), dict(scale="mel"), "2-D"),
    (np.full((5, 5), np.nan), dict(scale="mel"), "no finite value"),
    (np.full((5, 5), "a"), dict(scale="mel"), "real numbers"),
])
def test_invalid_input_is_refused_with_the_value_named(matrix, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        render_matrix(matrix, sample_rate=16000, nfft=8, **kwargs)


# -- (3) matplotlib itself changed? ------------------------------------------------------

# sha256 of plot_matrix's bytes for GOLDEN_MATRIX below, recorded with matplotlib 3.11.2
# and librosa 0.11.0. The matrix is exact integer arithmetic (no platform-dependent
# floats) and the geometry has no rounding ties, so only a change in how matplotlib or
# librosa draws can move it. Regenerate with:
#   python -c "import hashlib, test_render as t; print(hashlib.sha256(
#       t.plot_matrix(t.golden_matrix(), **t.GOLDEN_KWARGS).tobytes()).hexdigest())"
GOLDEN_SHA256 = "8529abeb6645fb0d5b3bdd06fdb0b37ea0a0c1579cb14571985148b3dad37772"
GOLDEN_KWARGS = dict(sample_rate=16000, nfft=46, scale="linear", cmap="viridis", size=48)


def golden_matrix() -> np.ndarray:
    rows, columns = np.indices((24, 16))
    matrix = (((rows * 7 + columns * 13) % 31) - 15).astype(np.float32)
    matrix[5, 3] = np.nan
    return matrix


def test_matplotlib_draws_as_when_the_renderer_was_validated():
    digest = hashlib.sha256(plot_matrix(golden_matrix(), **GOLDEN_KWARGS).tobytes()).hexdigest()
    assert digest == GOLDEN_SHA256, (
        f"plot_matrix output changed: matplotlib {matplotlib.__version__} is installed, the "
        f"renderer's drawing rules were derived from matplotlib {VALIDATED_MATPLOTLIB}. "
        "matplotlib now draws the golden matrix differently, so render_matrix no longer "
        "reproduces the original images: re-check the rules in images/render.py against "
        "this version (the property test shows where they differ) before relying on it.")
    assert_same_image(golden_matrix(), **GOLDEN_KWARGS)


def test_installed_matplotlib_is_the_validated_version():
    assert matplotlib.__version__ == VALIDATED_MATPLOTLIB, (
        f"render_matrix was validated pixel for pixel against matplotlib "
        f"{VALIDATED_MATPLOTLIB}, but {matplotlib.__version__} is installed. Run this test "
        "module (the property test especially); if everything else passes, update "
        "VALIDATED_MATPLOTLIB in images/render.py.")


def test_runtime_guard_accepts_the_installed_matplotlib():
    verify_renderer()
