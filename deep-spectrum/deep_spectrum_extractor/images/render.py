"""Matrix -> image in plain numpy, byte for byte what :func:`.plot_matrix` draws.

:func:`.plot_matrix` builds a matplotlib figure for every chunk; that costs 15..30 ms
per image. The picture it produces is simple: ``librosa.display.specshow`` draws one
axis-aligned, opaque, non-antialiased quadrilateral per matrix cell (a
``pcolormesh``), filling the whole canvas. This module reproduces that picture with
a few array look-ups (about 0.1 ms for 227 x 227), following the same arithmetic:

Geometry (depends on matrix shape, sample rate, scale, ``ylim`` and size only)
    * Cell centres as ``specshow`` computes them: ``x = 0 .. frames-1``;
      ``y = fft_frequencies(sr, n_fft=2 * (rows - 1))`` for linear and log,
      ``mel_frequencies(rows, fmin=0, fmax=ylim or sr / 2, htk=False)`` for mel,
      ``0 .. rows-1`` for chroma. ``nfft`` does not enter: ``specshow`` derives
      the FFT size from the number of rows.
    * Cell edges as ``pcolormesh(shading='nearest')`` computes them, in data space:
      ``c[i] + (c[i+1] - c[i]) * 0.5`` between centres and half a step beyond the
      outer ones. The view limits are exactly the outer edges.
    * The y axis transform: symlog (base 2) with ``linthresh=1000`` for mel and
      ``linthresh=note_to_hz('C2'), linscale=0.5`` for log; affine for the others.
    * Device coordinates with the same floating-point operations as matplotlib's
      transforms and Agg (y grows downwards), then every vertex snapped to
      ``floor(v + 0.5)``. Pixel ``p`` shows the cell whose snapped interval
      ``[lo, hi)`` contains it; a cell whose interval is empty is not visible.
      A matrix with a single column (or a single mel/chroma row) has no extent:
      nothing is drawn and the image is white.

Colour (depends on the data and the colour map)
    * ``Normalize`` with ``vmin, vmax`` the minimum and maximum of the finite
      values, computed in the dtype matplotlib uses (float32 stays float32, the
      bounds enter as float64), ``x * N`` truncated to an index, ``x == 1`` mapped
      to ``N - 1``; constant data gives index 0.
    * NaN and +-inf cells are masked: matplotlib paints them with the colour map's
      "bad" colour, which is fully transparent, so the white (transparent) canvas
      shows through.
    * Bytes as Agg converts colours: ``floor(c * 255 + 0.5)``.

These rules were checked against matplotlib 3.11.2 and librosa 0.11.0
(:data:`VALIDATED_MATPLOTLIB`); :func:`verify_renderer` re-checks them against the
installed matplotlib at run time.
"""
from __future__ import annotations

import functools

from typing import Any

import numpy as np

from ..errors import DeepSpectrumError, ParameterError

PLOT_SCALES = ("linear", "log", "mel", "chroma")
VALIDATED_MATPLOTLIB = "3.11.2"

MEL_LINTHRESH = 1000.0  # librosa.display: y_axis='mel' -> symlog, base 2
LOG_LINSCALE = 0.5  # librosa.display: y_axis='log' -> symlog, base 2, linthresh C2
SYMLOG_BASE = 2
WHITE = (255, 255, 255)
# Layout of colour_table: N colours, then under, over, bad (as in Colormap._lut), then
# the canvas colour where no cell is drawn.
_EXTRA_ENTRIES = 4
_VERIFIED: set[int] = set()  # probe sizes that matched in this process
_BACKGROUND = -1


class RendererMismatch(DeepSpectrumError):
    """:func:`render_matrix` no longer reproduces matplotlib's drawing."""


def render_matrix(matrix: np.ndarray, *, sample_rate: int, nfft: int, scale: str,
                  cmap: str = "viridis", size: int = 227,
                  ylim: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Draw a spectral matrix exactly as :func:`.plot_matrix` does, without matplotlib.

    Parameters
    ----------
    matrix : np.ndarray [shape=(rows, frames)]
        Real (or complex: its magnitude is drawn) values; NaN and +-inf allowed,
        but at least one value must be finite.
    sample_rate, nfft : int
        As for :func:`.plot_matrix`; ``nfft`` does not change the picture.
    scale : {'linear', 'log', 'mel', 'chroma'}
        ``y_axis`` of ``specshow``.
    cmap : str
        Name of a matplotlib colour map.
    size : int
        Width and height of the image in pixels.
    ylim : int or None
        ``fmax`` of ``specshow`` (used by the mel scale only).
    out : np.ndarray [shape=(size, size, 3), dtype=uint8], optional
        Where to draw (e.g. a slot of shared memory).

    Returns
    -------
    np.ndarray [shape=(size, size, 3), dtype=uint8]
        RGB image, row 0 at the top (highest frequency): ``out`` when given.

    Raises
    ------
    ParameterError
        Unknown scale or colour map, a size below 1, a matrix that is not 2-D,
        empty, without finite values, or with a single row on a linear/log axis
        (``specshow`` fails on all of these too).

    Examples
    --------
    >>> image = render_matrix(np.arange(12.0).reshape(3, 4), sample_rate=16000,
    ...                       nfft=4, scale="linear", size=8)
    >>> image.shape, image.dtype
    ((8, 8, 3), dtype('uint8'))
    """
    data = _checked_matrix(matrix)
    rows, frames = data.shape
    if scale not in PLOT_SCALES:
        raise ParameterError(f"scale={scale!r} is not one of {', '.join(PLOT_SCALES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ParameterError(f"size={size!r} must be a positive integer")
    if rows < 2 and scale in ("linear", "log"):
        raise ParameterError(f"a {scale!r} frequency axis needs at least 2 rows, got {rows}")
    table = colour_table(cmap)
    indices = colour_indices(data, len(table) - _EXTRA_ENTRIES)
    row_cells, column_cells = pixel_cells(
        rows, frames, sample_rate=None if scale == "chroma" else sample_rate, scale=scale,
        fmax=ylim if scale == "mel" else None, size=int(size))
    image = out if out is not None else np.empty((size, size, 3), dtype=np.uint8)
    if row_cells is None or column_cells is None:
        image[...] = WHITE
        return image

    # One packed RGBX word per cell, plus a last row and column for "no cell": white.
    cell_words = np.empty((rows + 1, frames + 1), dtype=np.uint32)
    cell_words[:-1, :-1] = table.take(indices)
    cell_words[-1, :] = table[_BACKGROUND]
    cell_words[:, -1] = table[_BACKGROUND]
    # Every pixel row shows one matrix row, with the same columns: spread the columns
    # of every matrix row once, then copy whole pixel rows.
    spread = cell_words.take(column_cells, axis=1).view(np.uint8).reshape(rows + 1, size, 4)
    colours = np.empty((rows + 1, size, 3), dtype=np.uint8)
    for channel in range(3):  # three plane copies are much faster than one (.., 3) copy
        colours[:, :, channel] = spread[:, :, channel]
    return colours.take(row_cells, axis=0, out=image)


def colour_indices(data: np.ndarray, n_colours: int) -> np.ndarray:
    """Colour-map index of every cell, as ``Normalize`` and ``Colormap`` compute it.

    Parameters
    ----------
    data : np.ndarray [shape=(rows, frames)]
        Real values with at least one finite value.
    n_colours : int
        ``Colormap.N``.

    Returns
    -------
    np.ndarray [shape=(rows, frames), dtype=intp]
        ``0 .. N-1`` for colours, ``N`` under, ``N + 1`` over (never produced by
        min/max scaling, kept for fidelity) and ``N + 2`` for NaN/inf ("bad").
    """
    bad = ~np.isfinite(data)
    any_bad = bool(bad.any())
    finite = data[~bad] if any_bad else data
    if finite.size == 0:
        raise ParameterError("the matrix has no finite value to scale the colours by")
    # Normalize.process_value: floats keep their dtype, small integers become float32,
    # larger ones float64; vmin/vmax enter the arithmetic as float64 scalars.
    dtype = data.dtype
    if dtype.kind in "biu":
        dtype = np.promote_types(dtype, np.float32)
    vmin = np.float64(finite.min().item())
    vmax = np.float64(finite.max().item())
    values = data.astype(dtype, copy=True)
    if any_bad:
        values[bad] = vmin  # masked: overwritten with the bad index below
    if vmin == vmax:
        values.fill(0)
    else:
        values -= vmin
        values /= vmax - vmin
    # Colormap.__call__ on floats.
    values *= n_colours
    values[values == n_colours] = n_colours - 1
    under = values < 0
    over = values >= n_colours
    indices = values.astype(np.intp)
    indices[under] = n_colours
    indices[over] = n_colours + 1
    if any_bad:
        indices[bad] = n_colours + 2
    return indices


@functools.cache
def colour_table(cmap: str) -> np.ndarray:
    """RGB bytes of a colour map as Agg paints them, packed one per uint32 word.

    Parameters
    ----------
    cmap : str
        Name of a matplotlib colour map.

    Returns
    -------
    np.ndarray [shape=(N + 4,), dtype=uint32], read-only
        Entries ``0 .. N-1`` are the colours, then under, over and bad, then the
        canvas (white). Viewed as uint8, each word is ``R, G, B, 255``; a colour
        whose alpha rounds to 0 (the bad colour) leaves the white canvas visible.
    """
    from matplotlib import colormaps

    try:
        colour_map = colormaps[cmap]
    except (KeyError, TypeError) as exc:
        raise ParameterError(f"cmap={cmap!r} is not a matplotlib colour map; "
                             f"see deep_spectrum_extractor.settings.available_colormaps()") from exc
    colours = np.vstack([colour_map(np.arange(colour_map.N)), colour_map.get_under(),
                         colour_map.get_over(), colour_map.get_bad(), (1.0, 1.0, 1.0, 0.0)])
    # agg::rgba8 from agg::rgba: unsigned(c * 255 + 0.5) per channel.
    rgba = (colours * 255.0 + 0.5).astype(np.uint8)
    transparent = rgba[:, 3] == 0
    if not np.all(transparent | (rgba[:, 3] == 255)):
        raise ParameterError(f"cmap={cmap!r} has semi-transparent colours, which the renderer "
                             "does not blend; use an opaque colour map")
    rgba[transparent, :3] = WHITE
    rgba[:, 3] = 255
    table = np.ascontiguousarray(rgba).view(np.uint32).reshape(-1)
    table.flags.writeable = False
    return table


def pixel_cells(rows: int, frames: int, *, sample_rate: int | None, scale: str,
                fmax: float | None, size: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Which matrix row and column every pixel row and column shows (cached).

    Parameters
    ----------
    rows, frames : int
        Matrix shape.
    sample_rate : int or None
        Needed by the linear, log and mel scales.
    scale : {'linear', 'log', 'mel', 'chroma'}
    fmax : float or None
        Top of the mel axis (``specshow``'s ``fmax``); None means ``sample_rate / 2``.
    size : int

    Returns
    -------
    row_cells : np.ndarray [shape=(size,), dtype=intp] or None
        Matrix row shown by each image row (image row 0 is the top); ``rows``
        where no cell is drawn.
    column_cells : np.ndarray [shape=(size,), dtype=intp] or None
        Matrix column shown by each image column; ``frames`` where no cell is drawn.
        Both are None when the mesh has no extent and the image is blank.
    """
    return _pixel_cells(rows, frames, sample_rate, scale, fmax, size)


@functools.lru_cache(maxsize=256)
def _pixel_cells(rows, frames, sample_rate, scale, fmax, size):
    x_edges = _cell_edges(np.arange(frames))
    y_edges = _cell_edges(_row_centres(rows, sample_rate, scale, fmax))
    x_low, x_high = x_edges.min(), x_edges.max()
    y_low, y_high = y_edges.min(), y_edges.max()
    if x_low == x_high or y_low == y_high:
        return None, None  # zero-width or zero-height cells: matplotlib draws nothing
    transform = _y_transform(scale)
    if transform is not None:
        y_edges = transform.transform_non_affine(y_edges)
        y_low, y_high = transform.transform_non_affine(np.array([y_low, y_high]))

    # Axes.transData = BboxTransformFrom(view limits) then BboxTransformTo(0..size);
    # the composed matrix entries, as numpy computes them.
    extent = float(size)
    x_factor = extent * (1.0 / (x_high - x_low))
    x_offset = extent * (-x_low * (1.0 / (x_high - x_low)))
    y_factor = extent * (1.0 / (y_high - y_low))
    y_offset = extent * (-y_low * (1.0 / (y_high - y_low)))
    x_device = x_edges * x_factor + x_offset
    if transform is None:
        # Agg folds its y flip into the affine matrix: y' = y * -a + (height - b).
        y_device = y_edges * -y_factor + (extent - y_offset)
    else:
        # Non-affine: matplotlib transforms the vertices in numpy first, Agg flips.
        y_device = extent - (y_edges * y_factor + y_offset)
    column_cells = _snapped_cells(x_device, size)
    row_cells = _snapped_cells(y_device, size)
    column_cells.flags.writeable = False
    row_cells.flags.writeable = False
    return row_cells, column_cells


def _row_centres(rows, sample_rate, scale, fmax):
    """y coordinate of every row centre, as ``specshow`` computes it."""
    import librosa

    if scale in ("linear", "log"):
        return librosa.fft_frequencies(sr=sample_rate, n_fft=2 * (rows - 1))
    if scale == "mel":
        return librosa.mel_frequencies(rows, fmin=0.0,
                                       fmax=0.5 * sample_rate if fmax is None else fmax,
                                       htk=False)
    return np.linspace(0, float(rows), num=rows, endpoint=False)  # chroma: 12 per octave


def _cell_edges(centres):
    """Cell edges from centres, as ``pcolormesh(shading='nearest')`` computes them."""
    centres = np.asarray(centres)
    if centres.size == 1:
        return np.array([centres[0], centres[0]], dtype=float)
    half_steps = np.diff(centres) * 0.5
    return np.hstack((centres[:1] - half_steps[:1], centres[:-1] + half_steps,
                      centres[-1:] + half_steps[-1:]))


def _y_transform(scale):
    """The non-affine y transform ``specshow`` sets up, or None for an affine axis."""
    from matplotlib.scale import SymmetricalLogTransform

    if scale == "mel":
        return SymmetricalLogTransform(SYMLOG_BASE, MEL_LINTHRESH, 1.0)
    if scale == "log":
        import librosa

        return SymmetricalLogTransform(SYMLOG_BASE, float(librosa.note_to_hz("C2")),
                                       LOG_LINSCALE)
    return None


def _snapped_cells(device_edges, size):
    """Cell index per pixel from the device coordinates of the cell edges.

    Agg snaps every vertex to ``floor(v + 0.5)`` and fills the pixels in between; a
    later cell overwrites an earlier one where they overlap. ``len(edges) - 1`` marks
    pixels that no cell covers.
    """
    snapped = np.floor(device_edges + 0.5)
    n_cells = len(device_edges) - 1
    cells = np.full(size, n_cells, dtype=np.intp)
    low = np.clip(np.minimum(snapped[:-1], snapped[1:]), 0, size).astype(np.intp)
    high = np.clip(np.maximum(snapped[:-1], snapped[1:]), 0, size).astype(np.intp)
    for cell in np.nonzero(high > low)[0]:
        cells[low[cell]:high[cell]] = cell
    return cells


def renderer_verified(*, size: int = 64) -> bool:
    """Whether :func:`verify_renderer` passed in this process for ``size``."""
    return size in _VERIFIED


def verify_renderer(*, size: int = 64) -> None:
    """Check that :func:`render_matrix` still matches :func:`.plot_matrix`.

    Draws a fixed probe matrix (uneven values, a NaN and an infinite cell) on every
    scale with both and compares the bytes. Cheap enough (about 0.1 s) to run before
    every job that relies on the fast renderer; a size that passed is not drawn again in
    the same process (matplotlib cannot change under a running process).

    Raises
    ------
    RendererMismatch
        With the installed matplotlib version, if any pixel differs.
    """
    if size in _VERIFIED:
        return
    import matplotlib

    from .plotting import plot_matrix

    rows, frames = 33, 21
    grid = np.add.outer(np.sin(np.arange(rows) * 0.7) * 30.0,
                        np.cos(np.arange(frames) * 1.3) * 20.0)
    probe = (grid + np.arange(rows * frames).reshape(rows, frames) % 7).astype(np.float32)
    probe[3, 4] = np.nan
    probe[10, 2] = np.inf
    cases: list[dict[str, Any]] = [
        dict(scale="linear", cmap="viridis"), dict(scale="log", cmap="magma"),
        dict(scale="mel", cmap="gray", ylim=6000), dict(scale="chroma", cmap="tab10")]
    for case in cases:
        matrix = probe[:12] if case["scale"] == "chroma" else probe
        expected = plot_matrix(matrix, sample_rate=16000, nfft=64, size=size, **case)
        got = render_matrix(matrix, sample_rate=16000, nfft=64, size=size, **case)
        differing = int(np.any(expected != got, axis=-1).sum())
        if differing:
            raise RendererMismatch(
                f"render_matrix differs from plot_matrix in {differing} of {size * size} pixels "
                f"({case}) with matplotlib {matplotlib.__version__}; the renderer was validated "
                f"against matplotlib {VALIDATED_MATPLOTLIB}. Use plot_matrix (-renderer "
                "matplotlib), or re-derive the drawing rules for this matplotlib version.")
    _VERIFIED.add(size)


def _checked_matrix(matrix):
    if np.ma.isMaskedArray(matrix):
        raise ParameterError("masked arrays are not supported; mark missing cells with NaN")
    data = np.asarray(matrix)
    if np.iscomplexobj(data):
        data = np.abs(data)  # specshow draws the magnitude of complex input
    if data.ndim != 2 or 0 in data.shape:
        raise ParameterError(f"matrix must be 2-D and non-empty, got shape {data.shape}")
    if data.dtype.kind not in "biuf" or data.dtype.itemsize > 8:
        raise ParameterError(f"matrix must hold real numbers of at most 64 bits, "
                             f"got dtype {data.dtype}")
    return data
