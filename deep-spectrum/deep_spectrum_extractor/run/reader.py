"""Opening the inputs of a run and reading their chunks in order, each sample once.

:func:`open_input` counts an input's chunks without decoding it (the header and the
trimmed ends are enough, see :class:`~deep_spectrum_extractor.audio.stream.AudioStream`);
a :class:`ChunkReader` then hands out the samples of consecutive chunk ranges, reading
the recording front to back with one window plus one block in memory.  Only a re-plan
(a segment that could not be drawn) can ask for chunks it has passed; the input is then
opened again.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np

from ..audio import AudioStream, InMemoryAudio, default_nfft
from ..audio.chunking import chunk_samples
from ..errors import AudioError
from ..images import min_chunk_length
from ..settings import FeatureSettings
from .work import PieceAudio, error_text, probe_failure


def display_path(source) -> Path:
    """How an input is named in reports: the path, or the name of an in-memory signal."""
    return Path(source.name) if isinstance(source, InMemoryAudio) else Path(source)


def relative_path(source, root: Path | None) -> Path:
    """An input's path relative to the input folder (side outputs keep it)."""
    if root is None or isinstance(source, InMemoryAudio):
        return Path(source.name)
    return Path(source).relative_to(root)


@dataclass
class OpenedInput:
    """An input as the plan sees it: its chunks, or why it has none."""

    count: int
    error: str | None
    stream: AudioStream | None = None
    nfft: int = 0
    min_length: int = 0


def open_input(source, settings: FeatureSettings, renderer: str = "numpy", *,
               probe: Callable[..., str | None] = probe_failure) -> OpenedInput:
    """Open ``source`` and count its chunks (no decoding of the signal in the common case).

    Whatever goes wrong is the reason the input is skipped; the run goes on.  ``probe``
    says why no chunk of its sample rate and FFT size can be drawn
    (:func:`~.work.probe_failure`, or an executor's ``probe``, which draws where the
    chunks are drawn).
    """
    try:
        stream = AudioStream(source, start=settings.start, end=settings.end,
                             target_rate=settings.sample_rate)
        nfft = settings.nfft or default_nfft(stream.sample_rate)
        need = min_chunk_length(nfft, settings.delta)
        count = stream.chunk_count(settings.window, settings.hop, min_length=need)
        if not count:
            raise AudioError(f"no chunk has the {need} samples needed for one plot "
                             f"({stream.length} samples after trimming at "
                             f"{stream.sample_rate} Hz)")
    except Exception as exc:  # one odd input must not stop a corpus-wide run
        return OpenedInput(0, error_text(exc))
    problem = probe(stream.sample_rate, nfft, settings, renderer)
    if problem:
        return OpenedInput(0, problem)
    return OpenedInput(count, None, stream, nfft, need)


class ReadFailure(Exception):
    """Chunk ``chunk`` of an input could not be read; ``cause`` says why."""

    def __init__(self, chunk: int, cause: Exception):
        super().__init__(str(cause))
        self.chunk, self.cause = chunk, cause


class ChunkReader:
    """The samples of one input's chunks, range after range, read front to back.

    Blocks of the signal (:meth:`~deep_spectrum_extractor.audio.AudioStream.signal_blocks`)
    are copied straight into each range's array; what the next range needs of them (where
    windows overlap, and the rest of the last block) is kept for it.
    """

    def __init__(self, index: int, opened: OpenedInput, settings: FeatureSettings,
                 relative: Path):
        self.index = index
        self.opened = opened
        self.settings = settings
        self.relative = relative
        self._blocks: Generator[np.ndarray, None, None] | None = None
        self._read_to = 0            # the signal's samples read so far end here
        self._kept = np.empty(0)     # the samples just before that, kept for the next range
        self._next = 0

    def piece(self, start: int, stop: int, position: int) -> PieceAudio:
        """Chunks ``start:stop`` with their samples, for a job at ``position``.

        Raises
        ------
        ReadFailure
            Naming the first chunk that could not be read and why (AudioError, or
            whatever decoding raised).
        """
        stream, settings = self.opened.stream, self.settings
        if stream is None:
            raise ValueError("an input without chunks has no reader")
        if settings.window is None or settings.hop is None:  # the whole signal: one chunk
            try:
                samples = stream.read()
            except Exception as exc:
                raise ReadFailure(start, exc) from exc
            return PieceAudio(self.index, start, stop, position, self.relative, samples, 0,
                              stream.length, None, None, stream.sample_rate,
                              self.opened.nfft, (None,))
        try:
            window, hop = chunk_samples(settings.window, settings.hop, stream.sample_rate)
            if start != self._next or self._blocks is None:
                self.close()
                begin, end = stream.chunk_span(settings.window, settings.hop,
                                               min_length=self.opened.min_length, first=start)
                self._blocks = stream.signal_blocks(begin, end)
                self._read_to, self._kept = begin, np.empty(0)
        except Exception as exc:
            self.close()
            raise ReadFailure(start, exc) from exc
        offset = start * hop
        end = min((stop - 1) * hop + window, stream.length)
        samples = np.empty(end - offset, dtype=np.float64)
        sources = [(self._kept, self._read_to - len(self._kept))]  # (samples, where they begin)
        _copy(*sources[0], samples, offset)
        while self._read_to < end:
            try:
                block = next(self._blocks)
            except Exception as exc:
                self.close()
                if isinstance(exc, StopIteration):
                    exc = AudioError(f"the recording ended after {self._read_to} of its "
                                     f"{stream.length} samples")
                # the first chunk of the range that the samples read do not cover
                first = max(start, (self._read_to - window) // hop + 1)
                raise ReadFailure(min(first, stop - 1), exc) from exc
            _copy(block, self._read_to, samples, offset)
            sources[1:] = [(block, self._read_to)]  # only the last block can reach past end
            self._read_to += len(block)
        # the next range begins with chunk ``stop``
        following = stop * hop
        kept = np.empty(max(self._read_to - following, 0), dtype=np.float64)
        for source, at in [(samples, offset), *sources]:
            _copy(source, at, kept, following)
        self._kept, self._next = kept, stop
        return PieceAudio(self.index, start, stop, position, self.relative, samples, offset,
                          stream.length, window, hop, stream.sample_rate, self.opened.nfft,
                          tuple(stream.start + number * settings.hop
                                for number in range(start, stop)))

    def close(self) -> None:
        if self._blocks is not None:
            self._blocks.close()
            self._blocks = None


def _copy(source: np.ndarray, source_at: int, target: np.ndarray, target_at: int) -> None:
    """Copy into ``target`` (the signal from ``target_at``) what it shares with ``source``
    (the signal from ``source_at``)."""
    lo = max(source_at, target_at)
    hi = min(source_at + len(source), target_at + len(target))
    if hi > lo:
        target[lo - target_at:hi - target_at] = source[lo - source_at:hi - source_at]
