"""Labelled figures of spectral matrices, for people rather than networks.

The images the network sees have no axes.  A labelled figure draws the same matrix with
``librosa.display.specshow`` on a normal-sized figure, with a time axis (seconds from
the start of the trimmed recording), a frequency axis, a title and a colour bar (dB, or
chroma energy), and is saved as PNG or PDF.  It uses matplotlib's object API
(:class:`~matplotlib.figure.Figure` with a ``FigureCanvasAgg``), never pyplot, so it
keeps no global state and is safe in worker processes.

Each row and column is placed at the frequency and time it really has:

* ``spectrogram``: row ``k`` is FFT bin ``k``, at ``k * sr / nfft`` Hz (also when
  ``-ylim`` removed the upper rows);
* ``mel``: band ``m`` at the peak of its triangular filter,
  ``mel_frequencies(nmel + 2, fmax=sr/2)[m + 1]`` (``specshow``'s default,
  ``mel_frequencies(nmel)``, is up to one band off).  The tool computes the bands from
  the (ylim-cut) power spectrogram as ``librosa.feature.melspectrogram(S=...)`` does,
  which takes a spectrogram of ``R`` rows to span 0 .. sr/2 with ``n_fft = 2 (R - 1)``;
  the centres are therefore scaled by ``2 (R - 1) / nfft`` (1 without ``-ylim``);
* ``chroma``: the 12 pitch classes;
* frames: STFT frame ``t`` (no centring) covers samples ``t * hop .. t * hop + nfft``
  and is drawn at its centre, ``offset + (t * hop + nfft / 2) / sr`` seconds.

The axis *scale* is the one chosen with ``-scale`` (chroma plots always use the chroma
axis).  The bare network images reproduce the original tool's drawing instead, which
derives the frequency of each row from the number of rows; for a ``-ylim``-cut
spectrogram, or a mel matrix on a linear axis, that places rows at other frequencies
than the ones they hold.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ParameterError

#: Output formats of :func:`save_figure`.
FIGURE_FORMATS = ("png", "pdf")
#: Size of a labelled figure in inches, and its resolution: 800 x 450 pixels as PNG.
FIGURE_SIZE = (8.0, 4.5)
FIGURE_DPI = 100
_Y_AXES = {"linear": "linear", "log": "log", "mel": "mel", "chroma": "chroma"}


def stft_rows(nfft: int, sample_rate: int, ylim: int | None) -> int:
    """Rows of the STFT after the ``-ylim`` cut, as the spectral matrices compute it.

    Parameters
    ----------
    nfft, sample_rate : int
    ylim : int or None

    Returns
    -------
    int
        ``1 + nfft // 2`` without ``ylim``, else ``int(min(2 ylim / sr, 1) (1 + nfft / 2))``.
    """
    if not ylim:
        return 1 + nfft // 2
    return int(min(ylim * 2 / sample_rate, 1) * (1 + nfft / 2))


def row_frequencies(mode: str, rows: int, *, sample_rate: int, nfft: int,
                    ylim: int | None = None) -> np.ndarray | None:
    """Frequency in Hz of every row of a spectral matrix (see the module docstring).

    Parameters
    ----------
    mode : {'spectrogram', 'mel', 'chroma'}
    rows : int
        Rows of the matrix (``nmel`` for mel).
    sample_rate, nfft : int
    ylim : int or None

    Returns
    -------
    np.ndarray [shape=(rows,)] or None
        None for chroma, whose rows are pitch classes.

    Examples
    --------
    >>> row_frequencies("spectrogram", 3, sample_rate=16000, nfft=512)
    array([ 0.  , 31.25, 62.5 ])
    """
    import librosa

    if mode == "spectrogram":
        return np.arange(rows) * (sample_rate / nfft)
    if mode == "mel":
        assumed_nfft = 2 * (stft_rows(nfft, sample_rate, ylim) - 1)
        peaks = librosa.mel_frequencies(rows + 2, fmin=0.0, fmax=0.5 * sample_rate,
                                        htk=False)[1:-1]
        return peaks * (assumed_nfft / nfft)
    if mode == "chroma":
        return None
    raise ParameterError(f"mode={mode!r} is not one of spectrogram, mel, chroma")


def frame_times(frames: int, *, sample_rate: int, nfft: int, offset: float = 0.0) -> np.ndarray:
    """Centre time in seconds of every STFT frame of a chunk starting at ``offset``.

    Returns
    -------
    np.ndarray [shape=(frames,)]
        ``offset + (t * (nfft // 2) + nfft / 2) / sample_rate``.
    """
    return offset + (np.arange(frames) * (nfft // 2) + nfft / 2) / sample_rate


def colorbar_label(mode: str, delta: int | None = None) -> str:
    """What the colours of a ``mode`` plot measure: ``'dB'`` or ``'chroma energy'``."""
    label = "chroma energy" if mode == "chroma" else "dB"
    return label if not delta else f"{label} (delta, order {delta})"


def labelled_figure(matrix: np.ndarray, *, sample_rate: int, nfft: int, mode: str,
                    scale: str, cmap: str = "viridis", ylim: int | None = None,
                    delta: int | None = None, offset: float = 0.0, title: str = ""):
    """Draw a spectral matrix with labelled time and frequency axes and a colour bar.

    Parameters
    ----------
    matrix : np.ndarray [shape=(rows, frames)]
        As :func:`~deep_spectrum_extractor.images.spectral.spectral_matrix` returns it.
    sample_rate, nfft : int
        Of the chunk's STFT (hop ``nfft // 2``).
    mode : {'spectrogram', 'mel', 'chroma'}
        What the matrix holds; places the rows (see :func:`row_frequencies`).
    scale : {'linear', 'log', 'mel', 'chroma'}
        Frequency axis scale (``FeatureSettings.plot_scale``).
    cmap : str
        matplotlib colour map.
    ylim : int or None
        The ``-ylim`` the matrix was computed with.
    delta : int or None
        The ``-delta`` order, named in the colour bar's label.
    offset : float
        Start of the chunk in seconds; the time axis starts there.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        :data:`FIGURE_SIZE` inches at :data:`FIGURE_DPI`, with an Agg canvas.
    """
    import librosa.display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = np.asarray(matrix)
    if data.ndim != 2 or 0 in data.shape:
        raise ParameterError(f"matrix must be 2-D and non-empty, got shape {data.shape}")
    if scale not in _Y_AXES:
        raise ParameterError(f"scale={scale!r} is not one of {', '.join(_Y_AXES)}")
    rows, frames = data.shape
    y_axis = "chroma" if mode == "chroma" else _Y_AXES[scale]
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty mel filters, complex input ...
        mesh = librosa.display.specshow(
            data, ax=axes, cmap=cmap, sr=sample_rate, hop_length=nfft // 2,
            x_axis="time", y_axis=y_axis,
            x_coords=frame_times(frames, sample_rate=sample_rate, nfft=nfft, offset=offset),
            y_coords=row_frequencies(mode, rows, sample_rate=sample_rate, nfft=nfft,
                                     ylim=ylim))
    axes.set_xlabel("Time (s)")
    axes.set_ylabel("Pitch class" if y_axis == "chroma" else "Frequency (Hz)")
    if title:
        axes.set_title(title)
    colorbar = figure.colorbar(mesh, ax=axes)
    colorbar.set_label(colorbar_label(mode, delta))
    return figure


def save_figure(figure, path: str | os.PathLike, *, format: str = "png") -> Path:
    """Save a figure as PNG or PDF, creating missing folders.

    The PDF carries no creation date, so the same figure gives the same bytes.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    path : path-like
    format : {'png', 'pdf'}

    Returns
    -------
    Path
    """
    if format not in FIGURE_FORMATS:
        raise ParameterError(f"--format={format!r} is not one of {', '.join(FIGURE_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"CreationDate": None} if format == "pdf" else None
    figure.savefig(path, format=format, dpi=FIGURE_DPI, metadata=metadata)
    return path
