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
from ..errors import AudioError
from ..images import min_chunk_length
from ..settings import FeatureSettings
from .work import Chunk, PieceAudio, error_text, probe_failure

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
    """The samples of one input's chunks, range after range, read front to back."""

    def __init__(self, index: int, opened: OpenedInput, settings: FeatureSettings,
                 relative: Path):
        self.index = index
        self.opened = opened
        self.settings = settings
        self.relative = relative
        self._chunks: Generator[Chunk, None, None] | None = None
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
        if start != self._next or self._chunks is None:
            self.close()
            self._chunks = stream.chunks(settings.window, settings.hop,
                                         min_length=self.opened.min_length, first=start)
            self._next = start
        chunks = []
        try:
            for _ in range(start, stop):
                chunks.append(next(self._chunks))
                self._next += 1
        except Exception as exc:
            self.close()
            raise ReadFailure(self._next, exc) from exc
        if settings.window is None or settings.hop is None:
            samples, offset, window, hop = chunks[0].samples, 0, None, None
        else:
            window = int(settings.window * stream.sample_rate)
            hop = int(settings.hop * stream.sample_rate)
            offset = start * hop
            end = min((stop - 1) * hop + window, stream.length)
            samples = np.empty(end - offset, dtype=np.float64)
            for chunk in chunks:  # overlapping chunks write the same values
                begin = chunk.index * hop - offset
                samples[begin:begin + len(chunk.samples)] = chunk.samples
        return PieceAudio(self.index, start, stop, position, self.relative, samples, offset,
                          stream.length, window, hop, stream.sample_rate, self.opened.nfft,
                          tuple(chunk.timestamp for chunk in chunks))

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None
