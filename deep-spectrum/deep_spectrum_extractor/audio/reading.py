"""Finding and reading audio files.

Reading follows the original tool: libsndfile decodes the file to float64, several
channels are averaged to mono, exact zeros at both ends are trimmed, and then
``-start``/``-end`` cut the trimmed signal.
"""
from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..errors import AudioError

AUDIO_EXTENSIONS = (".wav",)


def find_audio_files(path: str | os.PathLike, extensions=AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``path`` (recursively, extension case-insensitive), sorted.

    A path to a single file is returned as is, whatever its extension.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise AudioError(f"input {str(path)!r} does not exist")
    # folders named like audio files are listed too, so that they are reported
    found = [Path(root) / name
             for root, dirs, names in os.walk(path)
             for name in names + dirs if name.lower().endswith(extensions)]
    return sorted(found)


def read_audio(path: str | os.PathLike, *, start: Decimal = Decimal(0),
               end: Decimal | None = None) -> tuple[np.ndarray, int]:
    """Read a file as a mono float64 signal with the zeros at both ends trimmed.

    Parameters
    ----------
    path : path-like
        Any file libsndfile can decode.
    start, end : Decimal
        Seconds of the trimmed signal to keep: ``x[int(start*sr):int(end*sr)]``.

    Returns
    -------
    signal : np.ndarray [shape=(n,), dtype=float64]
    sample_rate : int
    """
    import soundfile

    if Path(path).is_dir():
        raise AudioError(f"{os.fspath(path)} is a directory, not an audio file")
    try:
        data, sample_rate = soundfile.read(os.fspath(path), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, OSError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"cannot decode audio ({exc})") from exc
    if data.size == 0:
        raise AudioError("the file holds no samples")
    if not np.isfinite(data).all():
        raise AudioError("the audio contains NaN or infinite samples")
    signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    signal = np.trim_zeros(signal)
    if signal.size == 0:
        raise AudioError("the audio is all silence (every sample is zero)")
    first = int(start * sample_rate)
    last = int(end * sample_rate) if end is not None else None
    return signal[first:last], int(sample_rate)
