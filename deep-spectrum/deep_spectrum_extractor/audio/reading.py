"""Finding and reading audio files.

Reading follows the original tool: libsndfile decodes the file to float64, several
channels are averaged to mono, exact zeros at both ends are trimmed, and then
``-start``/``-end`` cut the trimmed signal.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..errors import AudioError, describe_os_error

#: Extensions searched for in an input folder (case-insensitive): the formats the
#: bundled libsndfile decodes that are used for recordings.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif",
                    ".au", ".caf", ".w64", ".rf64")


@dataclass(frozen=True)
class InMemoryAudio:
    """A signal given as an array instead of a file (Python API).

    ``samples`` has shape ``(n,)`` or ``(n, channels)``; ``name`` stands in for the file
    name in the output.
    """

    name: str
    samples: np.ndarray
    sample_rate: int


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


def in_memory_data(audio: InMemoryAudio) -> tuple[np.ndarray, int]:
    """An in-memory signal as float64 ``(n, channels)`` and its rate, or AudioError."""
    data, sample_rate = np.asarray(audio.samples, dtype=np.float64), audio.sample_rate
    if data.ndim == 1:
        data = data[:, np.newaxis]
    if data.ndim != 2 or sample_rate <= 0:
        raise AudioError(f"{audio.name}: a signal must have shape (n,) or (n, channels) "
                         "and a positive sample rate")
    return data, sample_rate


def readable_name(path) -> bytes:
    """``path`` as libsndfile opens it, after checking that it can be opened at all.

    Opening it here first gives a precise reason (a folder, permission denied, a symlink
    loop ...) as AudioError, where libsndfile says "System error".  libsndfile then opens
    the file by its name (as bytes, so that a name that is not UTF-8 works too), not
    through Python callbacks: an interrupt is never raised, and lost, inside one.
    """
    if Path(path).is_dir():
        raise AudioError(f"{os.fspath(path)} is a directory, not an audio file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise AudioError(f"cannot open the file: {describe_os_error(exc)}") from exc
    return os.fsencode(path)


@contextlib.contextmanager
def decoding_errors(path):
    """Within the block, decoder and I/O failures become AudioError with their reason."""
    import soundfile

    try:
        yield
    except soundfile.LibsndfileError as exc:
        raise AudioError(f"cannot decode audio in {Path(path).name} "
                         f"({exc.error_string})") from exc
    except OSError as exc:
        raise AudioError(f"cannot read the file: {describe_os_error(exc)}") from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"cannot decode audio ({exc})") from exc


def read_audio(path: str | os.PathLike | InMemoryAudio, *, start: Decimal = Decimal(0),
               end: Decimal | None = None,
               target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file as a mono float64 signal with the zeros at both ends trimmed.

    Parameters
    ----------
    path : path-like or InMemoryAudio
        Any file libsndfile can decode, or a signal already in memory.
    start, end : Decimal
        Seconds of the trimmed signal to keep: ``x[int(start*sr):int(end*sr)]``.
    target_rate : int, optional
        Resample the trimmed signal to this rate (soxr, high quality) before cutting.

    Returns
    -------
    signal : np.ndarray [shape=(n,), dtype=float64]
    sample_rate : int
    """
    import soundfile

    if isinstance(path, InMemoryAudio):
        data, sample_rate = in_memory_data(path)
    else:
        name = readable_name(path)
        with decoding_errors(path):
            data, sample_rate = soundfile.read(name, dtype="float64", always_2d=True)
    if data.size == 0:
        raise AudioError("the file holds no samples")
    if not np.isfinite(data).all():
        raise AudioError("the audio contains NaN or infinite samples")
    signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    signal = np.trim_zeros(signal)
    if signal.size == 0:
        raise AudioError("the audio is all silence (every sample is zero)")
    if target_rate is not None and target_rate != sample_rate:
        import soxr

        signal = soxr.resample(signal, sample_rate, target_rate, quality="HQ")
        sample_rate = target_rate
    first = int(start * sample_rate)
    last = int(end * sample_rate) if end is not None else None
    return signal[first:last], int(sample_rate)
