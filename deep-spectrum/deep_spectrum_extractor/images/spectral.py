"""Spectral matrices of audio chunks, computed with librosa as the original tool did.

* ``spectrogram``: ``|STFT|`` (rows above ``ylim`` cut), optional delta, then dB
  relative to the maximum with no floor (``top_db=None``).
* ``mel``: the (ylim-cut) power spectrogram through a mel filter bank of ``nmel``
  bands, optional delta, then dB.
* ``chroma``: ``chroma_stft`` of the power spectrogram, optional delta, no dB.

The STFT uses ``n_fft = nfft``, ``hop_length = nfft // 2`` and no centring.

Filter banks depend only on the sample rate, FFT size and band count (and, for
chroma, the estimated tuning), so they are built once and reused: the arithmetic on
each chunk is then exactly librosa's, without rebuilding a filter bank per chunk.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from ..errors import ParameterError

DELTA_WIDTH = 9  # librosa.feature.delta's default
_PAIR = ["einsum_path", (0, 1)]  # what optimize=True finds for two operands


def stft_frames(n_samples: int, nfft: int) -> int:
    """Number of STFT frames of a chunk (``center=False``)."""
    return 0 if n_samples < nfft else 1 + (n_samples - nfft) // (nfft // 2)


def min_chunk_length(nfft: int, delta: int | None) -> int:
    """Fewest samples a chunk needs to be plotted.

    One FFT frame; with ``-delta`` three frames, the smallest window a derivative can
    be estimated on.
    """
    return nfft if not delta else nfft + 2 * (nfft // 2)


def delta_width(n_frames: int) -> int:
    """Window for ``librosa.feature.delta``: 9 frames, or the largest odd count that fits."""
    if n_frames >= DELTA_WIDTH:
        return DELTA_WIDTH
    return n_frames if n_frames % 2 else n_frames - 1


def limited_stft(samples: np.ndarray, sample_rate: int, nfft: int,
                 ylim: int | None) -> np.ndarray:
    """Complex STFT with the rows above ``ylim`` Hz removed.

    ``librosa.stft(samples, n_fft=nfft, hop_length=nfft // 2, center=False)`` step by
    step -- the same Hann window, frames, FFT function, blocks and output layout, so the
    same numbers -- with the window built once per FFT size instead of once per chunk.
    """
    import librosa

    if ylim:
        rows = int(min(ylim * 2 / sample_rate, 1) * (1 + nfft / 2))
        if rows < 2:
            raise ParameterError(f"-ylim={ylim} keeps {rows} frequency row(s) at {sample_rate} "
                                 f"Hz with nfft {nfft}; a plot needs at least 2: raise -ylim "
                                 "or -nfft")
    librosa.util.valid_audio(samples)
    if nfft > samples.shape[-1]:
        raise ParameterError(f"n_fft={nfft} is too large for uncentered analysis of input "
                             f"signal of length={samples.shape[-1]}")
    hop = nfft // 2
    # librosa.util.frame(samples, frame_length=nfft, hop_length=hop): the same view
    step = samples.strides[-1]
    frames = np.lib.stride_tricks.as_strided(
        samples, shape=(nfft, stft_frames(samples.shape[-1], nfft)), strides=(step, hop * step),
        writeable=False)
    stft = np.zeros((1 + nfft // 2, frames.shape[-1]),
                    dtype=librosa.util.dtype_r2c(samples.dtype), order="F")
    window = hann_window(nfft)
    fft = librosa.get_fftlib()
    block = max(int(librosa.util.MAX_MEM_BLOCK // (frames.shape[0] * frames.itemsize)), 1)
    for first in range(0, frames.shape[-1], block):
        last = min(first + block, frames.shape[-1])
        stft[:, first:last] = fft.rfft(window * frames[:, first:last], axis=-2)
    if ylim:
        stft = stft[:rows, :]
    return stft


@functools.lru_cache(maxsize=16)
def hann_window(nfft: int) -> np.ndarray:
    """The periodic Hann window ``librosa.stft`` uses, as a column (read-only)."""
    import scipy.signal

    window = scipy.signal.get_window("hann", nfft, fftbins=True).reshape(-1, 1)
    window.flags.writeable = False
    return window


def spectral_matrix(samples: np.ndarray, sample_rate: int, *, mode: str, nfft: int,
                    ylim: int | None = None, delta: int | None = None,
                    nmel: int = 128) -> np.ndarray:
    """The matrix the original tool plots for one chunk.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)]
        Mono signal, at least :func:`min_chunk_length` samples.
    sample_rate : int
    mode : {'spectrogram', 'mel', 'chroma'}
    nfft : int
    ylim, delta, nmel : see :class:`~deep_spectrum_extractor.settings.FeatureSettings`.

    Returns
    -------
    np.ndarray [shape=(rows, frames)]
        dB values for spectrogram and mel, chroma energies for chroma.
    """
    import librosa

    stft = limited_stft(samples, sample_rate, nfft, ylim)
    with warnings.catch_warnings():
        # librosa warns about empty filters when nmel is large for the FFT size and
        # about complex input to amplitude_to_db; the plots are what the original drew.
        warnings.simplefilter("ignore")
        if mode == "spectrogram":
            matrix = _delta(stft, delta)
            return librosa.amplitude_to_db(np.abs(matrix), ref=np.max, top_db=None)
        power = np.abs(stft) ** 2
        # librosa infers the FFT size of a given spectrogram from its number of rows
        n_fft = 2 * (power.shape[0] - 1)
        if mode == "mel":
            # librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=nmel)
            # librosa contracts with np.einsum("...ft,mf->...mt", optimize=True), which
            # for two operands is one np.matmul of the float32 bank, cast to float64,
            # and the power: the same product without einsum's planning and the cast
            mel = np.matmul(mel_filter_bank(sample_rate, n_fft, nmel), power)
            return power_to_db(_delta(mel, delta))
        if mode == "chroma":
            # librosa.feature.chroma_stft(S=power, sr=sample_rate)
            tuning = librosa.estimate_tuning(S=power, sr=sample_rate, bins_per_octave=12)
            basis = chroma_filter_bank(sample_rate, n_fft, float(tuning))
            raw = np.einsum("cf,...ft->...ct", basis, power, optimize=_PAIR)
            chroma = librosa.util.normalize(raw, norm=np.inf, axis=-2)
            return _delta(chroma, delta)
    raise ValueError(f"unknown mode {mode!r}")


@functools.lru_cache(maxsize=64)
def mel_filter_bank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``librosa.filters.mel`` with its defaults, built once per argument set (read-only),
    converted from its float32 to float64 as ``np.matmul`` converts it for a float64
    spectrogram (exactly, C order)."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    basis = basis.astype(np.float64, order="C")
    basis.flags.writeable = False
    return basis


def power_to_db(power: np.ndarray) -> np.ndarray:
    """``librosa.power_to_db(power, ref=np.max, top_db=None)`` for real input, step by
    step (the same operations, without its argument checks)."""
    amin = 1e-10
    log_spec = 10.0 * np.log10(np.maximum(amin, power))
    log_spec -= 10.0 * np.log10(np.maximum(amin, np.max(power)))
    return log_spec


@functools.lru_cache(maxsize=256)
def chroma_filter_bank(sample_rate: int, n_fft: int, tuning: float) -> np.ndarray:
    """``librosa.filters.chroma`` (12 bins) for one tuning, built once (read-only)."""
    import librosa

    basis = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=tuning, n_chroma=12)
    basis.flags.writeable = False
    return basis


def _delta(matrix: np.ndarray, order: int | None) -> np.ndarray:
    if not order:
        return matrix
    import librosa

    return librosa.feature.delta(matrix, order=order, width=delta_width(matrix.shape[-1]))
