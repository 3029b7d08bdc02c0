"""Cutting a signal into (possibly overlapping) chunks with exact timestamps."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from ..errors import ParameterError


@dataclass(frozen=True)
class Chunk:
    """One piece of a recording.

    ``timestamp`` is the chunk's start in seconds as a Decimal (``start + n*hop``, so it
    prints as ``0.3`` rather than ``0.30000000000000004``), or None when the whole file
    is one chunk.
    """

    samples: np.ndarray
    timestamp: Decimal | None
    index: int


def default_nfft(sample_rate: int) -> int:
    """The next power of two of 25 ms worth of samples (512 at 16 kHz)."""
    samples = max(int(0.025 * sample_rate), 1)
    return 1 << (samples - 1).bit_length()


def chunk_samples(window: Decimal, hop: Decimal, sample_rate: int) -> tuple[int, int]:
    """``(w, h)``: window and hop in samples; ParameterError if either is below one sample."""
    window_samples = int(window * sample_rate)
    hop_samples = int(hop * sample_rate)
    if window_samples < 1 or hop_samples < 1:
        raise ParameterError(
            f"-t {window} {hop} gives {window_samples} and {hop_samples} samples at "
            f"{sample_rate} Hz; both must be at least one sample")
    return window_samples, hop_samples


def chunk_signal(signal: np.ndarray, sample_rate: int, *, window: Decimal | None,
                 hop: Decimal | None, start: Decimal = Decimal(0),
                 min_length: int = 1) -> list[Chunk]:
    """Cut ``signal`` into chunks as the original tool does.

    With ``w = int(window*sr)`` and ``h = int(hop*sr)``, chunk ``n`` is
    ``signal[n*h : min(n*h + w, len(signal))]`` for ``n`` in
    ``range(max(len(signal) // h, 1))``; its timestamp is ``start + n*hop``.
    Without a window the whole signal is one chunk without timestamp.  Chunks shorter
    than ``min_length`` samples (the FFT length: they cannot be plotted) are dropped,
    so the result may be empty.
    """
    if window is None or hop is None:
        chunks = [Chunk(signal, None, 0)]
    else:
        window_samples, hop_samples = chunk_samples(window, hop, sample_rate)
        count = max(len(signal) // hop_samples, 1)
        chunks = [Chunk(signal[n * hop_samples:min(n * hop_samples + window_samples, len(signal))],
                        start + n * hop, n)
                  for n in range(count)]
    return [chunk for chunk in chunks if len(chunk.samples) >= min_length]
