"""Matrix -> image with matplotlib, exactly as the original tool drew it.

A 1x1 inch figure without frame, one axes filling it with the axis off,
``librosa.display.specshow`` of the matrix, saved as PNG at ``dpi = size`` and read
back without its alpha channel: a ``size x size x 3`` uint8 RGB image.
"""
from __future__ import annotations

import io
import warnings

import numpy as np


def plot_matrix(matrix: np.ndarray, *, sample_rate: int, nfft: int, scale: str,
                cmap: str = "viridis", size: int = 227, ylim: int | None = None) -> np.ndarray:
    """Draw a spectral matrix the way the original tool did.

    Parameters
    ----------
    matrix : np.ndarray [shape=(rows, frames)]
    sample_rate, nfft : int
        Give the frame hop (``nfft // 2``) and the frequency axis.
    scale : {'linear', 'log', 'mel', 'chroma'}
        ``y_axis`` of ``specshow``.
    cmap : str
    size : int
        Width and height of the image in pixels.
    ylim : int or None
        ``fmax`` of ``specshow``.

    Returns
    -------
    np.ndarray [shape=(size, size, 3), dtype=uint8]
    """
    import librosa.display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    figure = Figure(frameon=False)
    FigureCanvasAgg(figure)
    figure.set_size_inches(1, 1)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        librosa.display.specshow(matrix, hop_length=nfft // 2, fmax=ylim, sr=sample_rate,
                                 cmap=cmap, y_axis=scale, ax=axes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=size)
    buffer.seek(0)
    with Image.open(buffer) as png:
        image = np.asarray(png.convert("RGBA"))
    return np.ascontiguousarray(image[:, :, :3])
