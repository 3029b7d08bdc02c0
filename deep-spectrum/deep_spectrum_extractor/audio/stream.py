"""Reading a recording block by block, with exactly the samples and chunks of
:func:`~.reading.read_audio` followed by :func:`~.chunking.chunk_signal`.

:class:`AudioStream` never holds a whole file: it finds the trimmed range (the first
and the last sample that is not zero after the channel mean) by scanning blocks from
both ends, knows the final signal length and the number of chunks before decoding the
signal, and yields chunks from a buffer of one window plus one block.

Exactness rests on facts checked in ``tests/test_stream.py``:

* reading a file in blocks gives the samples of one whole-file read, bit for bit,
  provided the reads are not separated by seeks.  python-soundfile seeks to the current
  position before and after every ``read`` call, and for MP3 (libmpg123) such a seek
  changes the decoded values of the following frames (by about 1e-7; even the seek to
  frame 0 that ``soundfile.read`` does before reading matters, at 8 to 22.05 kHz).  This
  module therefore seeks once, as ``soundfile.read`` does, and then reads through a
  SoundFile subclass (:func:`_unseeking_class`) whose reads do not seek;
* seeking is sample exact for uncompressed PCM/float files and FLAC, but not for
  Ogg/Vorbis, Ogg/Opus and MP3.  Those, and every other compressed encoding (IMA ADPCM
  and GSM 6.10 are tested), are read from their first frame on, and their trimmed range
  is found by decoding the whole file once more before the chunks are read;
* the channel mean of a block equals the rows of the whole-file mean (C-ordered blocks,
  as libsndfile returns them);
* :class:`soxr.ResampleStream` fed the trimmed signal block by block gives the samples
  of one :func:`soxr.resample` call, and the number of output samples for ``n`` input
  samples is :func:`resampled_length`.
"""
from __future__ import annotations

import contextlib
import os
from decimal import Decimal
from pathlib import Path
from collections.abc import Generator

import numpy as np

from ..errors import AudioError, ParameterError
from .chunking import Chunk, chunk_samples
from .reading import InMemoryAudio, decoding_errors, in_memory_data, readable_name

#: Frames decoded per read unless told otherwise.
DEFAULT_BLOCK_FRAMES = 1 << 16

#: Containers whose PCM/float subtypes (:data:`_PLAIN_SUBTYPES`) are stored sample by
#: sample, so that libsndfile seeks to an exact byte offset.
_PLAIN_CONTAINERS = frozenset({"WAV", "WAVEX", "AIFF", "AU", "CAF", "W64", "RF64",
                               "RAW", "IRCAM", "NIST"})
_PLAIN_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT",
                             "DOUBLE", "ULAW", "ALAW"})

_NOT_FINITE = "the audio contains NaN or infinite samples"
_ALL_ZERO = "the audio is all silence (every sample is zero)"
_NO_SAMPLES = "the file holds no samples"


def resampled_length(frames: int, in_rate: float, out_rate: float) -> int:
    """The number of samples :func:`soxr.resample` returns for ``frames`` samples.

    That is ``int(frames / (in_rate / out_rate) + 0.5)`` computed in double precision,
    as libsoxr computes it when flushing (checked against soxr, including sizes whose
    exact output is halfway between two integers).  (The exact rational
    ``floor(frames*out/in + 1/2)`` differs from it when ``frames*out/in`` is exactly
    halfway between two integers and the double quotient rounds below it, e.g. 131920
    samples from 48000 to 44100 Hz give 121201, not 121202.)

    Parameters
    ----------
    frames : int
        Input samples (per channel).
    in_rate, out_rate : float
        Sample rates.

    Returns
    -------
    int
    """
    if frames <= 0:
        return 0
    return int(frames / (in_rate / out_rate) + 0.5)


def number_of_chunks(length: int, sample_rate: int, *, window: Decimal | None,
                     hop: Decimal | None, min_length: int = 1) -> int:
    """``len(chunk_signal(x, sample_rate, ...))`` for any ``x`` of ``length`` samples.

    Chunk ``n`` has ``min(w, length - n*h)`` samples, which never grows with ``n``, so
    the chunks dropped for being shorter than ``min_length`` are always the last ones:
    the kept chunks are numbered ``0 .. count-1``, their position in chunk_signal's list
    equals their ``index``.

    Parameters
    ----------
    length : int
        Samples of the signal.
    sample_rate : int
        Its rate.
    window, hop : Decimal or None
        Chunk length and step in seconds; without a window the signal is one chunk.
    min_length : int
        Shorter chunks are dropped.

    Returns
    -------
    int
    """
    if window is None or hop is None:
        return 1 if length >= min_length else 0
    window_samples, hop_samples = chunk_samples(window, hop, sample_rate)
    total = max(length // hop_samples, 1)
    if window_samples < min_length or length < min_length:
        return 0
    return min(total, (length - min_length) // hop_samples + 1)


_UNSEEKING_CLASS = None


def _unseeking_class():
    """A SoundFile subclass whose ``read`` does not seek before and after reading.

    python-soundfile wraps every read in ``tell()`` and ``seek(current + frames)``; for
    a seekable file libsndfile passes such a seek on to the decoder, and libmpg123
    restarts decoding there, with slightly different samples.  Reporting the file as
    not seekable to soundfile's own read path skips both; ``seek`` still seeks when
    asked to, and ``can_seek`` tells whether the file really is seekable.
    """
    global _UNSEEKING_CLASS
    if _UNSEEKING_CLASS is None:
        import soundfile

        class UnseekingSoundFile(soundfile.SoundFile):
            def seekable(self) -> bool:  # consulted by SoundFile._cdata_io
                return False

            @property
            def can_seek(self) -> bool:
                return soundfile.SoundFile.seekable(self)

        _UNSEEKING_CLASS = UnseekingSoundFile
    return _UNSEEKING_CLASS


@contextlib.contextmanager
def _open_sound_file(path):
    """The file opened as read_audio opens it, as an unseeking SoundFile."""
    name = readable_name(path)
    with decoding_errors(path):
        sound = _unseeking_class()(name)
    try:
        yield sound
    finally:
        with contextlib.suppress(Exception):
            sound.close()


def _mono(block: np.ndarray) -> np.ndarray:
    """read_audio's channel mix of a ``(frames, channels)`` block."""
    return block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]


def _nonzero_ends(signal: np.ndarray) -> tuple[int, int] | None:
    """Positions of the first and the last sample that np.trim_zeros keeps, or None."""
    kept = signal != 0
    if not kept.any():
        return None
    return int(kept.argmax()), len(kept) - 1 - int(kept[::-1].argmax())


class AudioStream:
    """One input read block by block, giving read_audio's signal and chunk_signal's chunks.

    ``AudioStream(path, start=s, end=e, target_rate=r)`` stands for the signal
    ``read_audio(path, start=s, end=e, target_rate=r)[0]`` without ever holding it:
    :meth:`chunks` yields the same :class:`~.chunking.Chunk` objects (samples equal bit
    for bit, float64; same timestamps and indices) as ``chunk_signal(signal, rate, ...,
    start=s)``, holding at most one window plus one block of samples.

    Opening scans the file: its first non-zero sample forward from the start, its last
    one backward from the end (seeking), so that :attr:`length` and
    :meth:`chunk_count` are known before anything else is decoded.  Files whose seeking
    is not sample exact (Ogg/Vorbis, Ogg/Opus, MP3 and other compressed encodings,
    :attr:`exact_seek` false) are decoded once in full for this scan instead, and again
    from their start whenever chunks are read.

    Errors are read_audio's :class:`~deep_spectrum_extractor.errors.AudioError` with
    its messages.  A file that cannot be opened, has no samples or is all zeros is
    refused on opening.  NaN or infinite samples are found where they are decoded: on
    opening when they lie in the scanned ends, otherwise by :meth:`chunks` when it
    reaches their block, possibly after earlier chunks were yielded; samples never
    decoded (before ``start`` or after ``end``, outside the chunks asked for) are not
    checked, where read_audio would refuse the file.

    The object holds no open file (each :meth:`chunks` call opens its own), so it can be
    pickled and read several times.  An :class:`~.reading.InMemoryAudio` is mixed to
    mono on opening (exactly as read_audio does) and kept so.

    Parameters
    ----------
    source : path-like or InMemoryAudio
        Any file libsndfile can decode, or a signal already in memory.
    start, end : Decimal
        Seconds of the trimmed (and resampled) signal to keep, as in read_audio:
        ``x[int(start*sr):int(end*sr)]``; ``end=None`` keeps the rest.
    target_rate : int, optional
        Resample the trimmed signal to this rate (soxr, high quality).
    block_frames : int
        Frames decoded per read (and the most samples one step adds to the buffer).

    Attributes
    ----------
    name : str
        The file's name, or the InMemoryAudio's.
    input_rate : int
        The file's sample rate.
    channels : int
        Its channels.
    frames : int
        Frames decoded from it (read_audio's ``len(data)``).
    trim_start, trim_stop : int
        The trimmed signal is file frames ``trim_start:trim_stop``.
    sample_rate : int
        Rate of the final signal (``target_rate`` when resampling).
    length : int
        ``len(read_audio(source, start=start, end=end, target_rate=target_rate)[0])``.
    exact_seek : bool
        Whether reading may seek into the file (PCM/float files, FLAC, in memory).
    """

    def __init__(self, source: str | os.PathLike | InMemoryAudio, *,
                 start: Decimal = Decimal(0), end: Decimal | None = None,
                 target_rate: int | None = None,
                 block_frames: int = DEFAULT_BLOCK_FRAMES) -> None:
        if int(block_frames) < 1:
            raise ParameterError(f"block_frames must be at least 1, not {block_frames}")
        self.source = source
        self.start = start
        self.end = end
        self.target_rate = target_rate
        self.block_frames = int(block_frames)
        self._memory: np.ndarray | None = None
        if isinstance(source, InMemoryAudio):
            self.name = source.name
            self._open_memory(source)
        else:
            self.name = Path(source).name
            self._open_file(source)
        rate = self.input_rate
        resample_to = target_rate if target_rate is not None and target_rate != rate else None
        self.resampled = resample_to is not None
        self.sample_rate = int(resample_to) if resample_to is not None else int(rate)
        trimmed = self.trim_stop - self.trim_start
        signal_length = resampled_length(trimmed, rate, resample_to) \
            if resample_to is not None else trimmed
        # the same expressions as read_audio (sample_rate there is target_rate or the
        # file's rate as given), sliced with Python's rules
        slice_rate = resample_to if resample_to is not None else rate
        first = int(start * slice_rate)
        last = int(end * slice_rate) if end is not None else None
        self._cut_start, cut_stop, _ = slice(first, last).indices(signal_length)
        self.length = max(cut_stop - self._cut_start, 0)

    # -- opening ------------------------------------------------------------------------

    def _open_memory(self, audio: InMemoryAudio) -> None:
        """read_audio's checks and channel mix of an in-memory signal."""
        data, sample_rate = in_memory_data(audio)
        if data.size == 0:
            raise AudioError(_NO_SAMPLES)
        if not np.isfinite(data).all():
            raise AudioError(_NOT_FINITE)
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        ends = _nonzero_ends(mono)
        if ends is None:
            raise AudioError(_ALL_ZERO)
        self._memory = mono
        self.input_rate = sample_rate
        self.channels = data.shape[1]
        self.frames = len(mono)
        self.trim_start, self.trim_stop = ends[0], ends[1] + 1
        self.exact_seek = True

    def _open_file(self, path) -> None:
        """Probe the file and find its trimmed range."""
        with _open_sound_file(path) as sound:
            self.input_rate = sound.samplerate
            self.channels = sound.channels
            declared = sound.frames
            self.exact_seek = bool(sound.can_seek and (
                sound.format == "FLAC" or (sound.format in _PLAIN_CONTAINERS
                                           and sound.subtype in _PLAIN_SUBTYPES)))
        if declared <= 0:
            raise AudioError(_NO_SAMPLES)
        self.frames = declared
        if self.exact_seek:
            self._scan_ends(path)
        else:
            self._scan_all(path)

    def _scan_all(self, path) -> None:
        """Decode the whole file once: its frames and first and last non-zero samples."""
        first = last = None
        position = 0
        for position, block in self._decoded_blocks(path, 0, self.frames, scan=True):
            ends = _nonzero_ends(_mono(block))
            if ends is not None:
                if first is None:
                    first = position + ends[0]
                last = position + ends[1]
        self.frames = self._decoded_frames
        if self.frames == 0:
            raise AudioError(_NO_SAMPLES)
        if first is None or last is None:
            raise AudioError(_ALL_ZERO)
        self.trim_start, self.trim_stop = first, last + 1

    def _scan_ends(self, path) -> None:
        """Find the trimmed range from both ends, seeking (exact-seek files only)."""
        first = None
        blocks = self._decoded_blocks(path, 0, self.frames, scan=True)
        for position, decoded in blocks:
            ends = _nonzero_ends(_mono(decoded))
            if ends is not None:
                first = position + ends[0]
                break
        blocks.close()
        if first is None:
            if self._decoded_frames == 0:
                raise AudioError(_NO_SAMPLES)
            raise AudioError(_ALL_ZERO)
        last = None
        with _open_sound_file(path) as sound:
            buffer = np.empty((self.block_frames, self.channels), dtype=np.float64)
            stop = self.frames
            while stop > first and last is None:
                begin = max(stop - self.block_frames, first)
                block: np.ndarray | None
                try:
                    with decoding_errors(path):
                        sound.seek(begin)
                        block = sound.read(out=buffer[:stop - begin])
                except AudioError:
                    block = None
                if block is None or len(block) < stop - begin:
                    # a damaged file (seeking fails, or it ends before its header says):
                    # decode it all from the start, as read_audio does
                    self._scan_all(path)
                    return
                if not np.isfinite(block).all():
                    raise AudioError(_NOT_FINITE)
                ends = _nonzero_ends(_mono(block))
                if ends is not None:
                    last = begin + ends[1]
                stop = begin
        if last is None:  # the scan from the start found a non-zero sample
            raise AudioError(_ALL_ZERO)
        self.trim_start, self.trim_stop = first, last + 1

    # -- decoding ------------------------------------------------------------------------

    def _decoded_blocks(self, path, begin: int, stop: int, *, scan: bool = False,
                        block_frames: int | None = None
                        ) -> Generator[tuple[int, np.ndarray], None, None]:
        """``(position, block)`` for file frames ``begin:stop`` (multichannel, checked).

        Blocks are views of one reused buffer: use each before asking for the next.  An
        exact-seek file is sought to ``begin``; any other file is decoded from frame 0,
        the frames before ``begin`` being checked for NaN and dropped.  With ``scan``,
        a file ending before ``stop`` just ends (``_decoded_frames`` says where);
        otherwise that is an error.
        """
        size = block_frames or self.block_frames
        self._decoded_frames = 0
        with _open_sound_file(path) as sound:
            position = begin if self.exact_seek else 0
            if sound.can_seek:  # soundfile.read seeks once to its start frame too
                with decoding_errors(path):
                    sound.seek(position)
            buffer = np.empty((size, self.channels), dtype=np.float64)
            while position < stop:
                limit = begin if position < begin else stop
                want = min(size, limit - position)
                with decoding_errors(path):
                    block = sound.read(out=buffer[:want])
                if not np.isfinite(block).all():
                    raise AudioError(_NOT_FINITE)
                if len(block) and position >= begin:
                    yield position, block
                position += len(block)
                self._decoded_frames = position
                if len(block) < want:
                    if scan:
                        return
                    raise AudioError(f"cannot decode audio in {self.name} (it ended at "
                                     f"frame {position} of {stop})")

    def _trimmed_blocks(self, begin: int, stop: int,
                        block_frames: int | None = None) -> Generator[np.ndarray, None, None]:
        """The mono trimmed signal's samples ``begin:stop`` (relative to trim_start)."""
        size = block_frames or self.block_frames
        begin += self.trim_start
        stop += self.trim_start
        if self._memory is not None:
            for position in range(begin, stop, size):
                yield self._memory[position:min(position + size, stop)]
            return
        for _, block in self._decoded_blocks(self.source, begin, stop, block_frames=size):
            yield _mono(block)

    def signal_blocks(self, begin: int = 0,
                      stop: int | None = None) -> Generator[np.ndarray, None, None]:
        """The final signal's samples ``begin:stop``, in consecutive blocks.

        Each block has at most :attr:`block_frames` samples and may be a view of a
        buffer that the next block overwrites: copy what you keep.

        Parameters
        ----------
        begin, stop : int
            Sample range of ``read_audio(...)[0]`` (clipped to ``0 .. length``).

        Yields
        ------
        np.ndarray [shape=(m,), dtype=float64]
        """
        stop = self.length if stop is None else min(stop, self.length)
        begin = max(begin, 0)
        if stop <= begin:
            return
        size = self.block_frames
        if not self.resampled:
            yield from self._trimmed_blocks(self._cut_start + begin, self._cut_start + stop)
            return
        import soxr

        # the resampler must see the trimmed signal from its start; feed it blocks that
        # give about one block of output each
        want_from, want_to = self._cut_start + begin, self._cut_start + stop
        in_size = size if self.sample_rate <= self.input_rate else \
            max(1, size * self.input_rate // self.sample_rate)
        resampler = soxr.ResampleStream(self.input_rate, self.sample_rate, 1,
                                        dtype="float64", quality="HQ")
        produced = 0
        trimmed = self.trim_stop - self.trim_start
        pieces = self._trimmed_blocks(0, trimmed, block_frames=in_size)
        finished = False
        while not finished:
            block = next(pieces, None)
            if block is None:
                output = resampler.resample_chunk(np.empty(0, dtype=np.float64), last=True)
                finished = True
            else:
                output = resampler.resample_chunk(np.ascontiguousarray(block))
            lo = max(want_from - produced, 0)
            hi = min(want_to - produced, len(output))
            produced += len(output)
            for position in range(lo, hi, size):
                yield output[position:min(position + size, hi)]
            if produced >= want_to:
                pieces.close()
                return

    def read(self, begin: int = 0, stop: int | None = None) -> np.ndarray:
        """The final signal's samples ``begin:stop`` as one array (held whole).

        ``AudioStream(p, ...).read()`` equals ``read_audio(p, ...)[0]``.

        Returns
        -------
        np.ndarray [shape=(m,), dtype=float64]
        """
        parts = [np.array(block) for block in self.signal_blocks(begin, stop)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)

    # -- chunks --------------------------------------------------------------------------

    def chunk_count(self, window: Decimal | None, hop: Decimal | None, *,
                    min_length: int = 1) -> int:
        """``len(chunk_signal(*read_audio(...), window=window, hop=hop, ...))``, undecoded.

        Parameters
        ----------
        window, hop : Decimal or None
            As for chunk_signal.
        min_length : int
            Shorter chunks are dropped (always the last ones).

        Returns
        -------
        int
        """
        return number_of_chunks(self.length, self.sample_rate, window=window, hop=hop,
                                min_length=min_length)

    def chunk_span(self, window: Decimal | None, hop: Decimal | None, *,
                   min_length: int = 1, first: int = 0,
                   stop: int | None = None) -> tuple[int, int]:
        """The samples ``(begin, end)`` of the final signal that chunks ``first:stop`` cover.

        ``first`` and ``stop`` are chunk indices (positions in chunk_signal's list, see
        :func:`number_of_chunks`), clipped to the chunk count; an empty selection gives
        ``(b, b)``.  For a job that renders one segment of a file.

        Returns
        -------
        tuple of int
        """
        count = self.chunk_count(window, hop, min_length=min_length)
        stop = count if stop is None else min(stop, count)
        first = max(first, 0)
        if window is None or hop is None:
            return (0, self.length) if first < stop else (0, 0)
        window_samples, hop_samples = chunk_samples(window, hop, self.sample_rate)
        if first >= stop:
            begin = min(first * hop_samples, self.length)
            return begin, begin
        return first * hop_samples, min((stop - 1) * hop_samples + window_samples,
                                        self.length)

    def chunks(self, window: Decimal | None, hop: Decimal | None, *, min_length: int = 1,
               first: int = 0, stop: int | None = None) -> Generator[Chunk, None, None]:
        """Chunks ``first:stop`` of ``chunk_signal(*read_audio(...), start=start, ...)``.

        ``list(stream.chunks(w, h, min_length=m))`` equals chunk_signal's list (samples
        bit for bit, timestamps ``start + n*hop``, indices); ``first=k, stop=m`` gives its
        slice ``[k:m]``, reading only what those chunks need (without resampling, an
        exact-seek file is sought to the first chunk; a resampled signal is streamed
        from its trimmed start, without building the chunks before ``first``).  Each
        chunk's samples are a new array; the stream holds one window plus one block.

        Without a window the whole selection is the one chunk (timestamp None), and is
        held whole.

        Parameters
        ----------
        window, hop : Decimal or None
            Chunk length and step in seconds, as for chunk_signal.
        min_length : int
            Chunks shorter than this are dropped.
        first, stop : int
            The chunk indices to yield (``stop=None``: to the end).

        Yields
        ------
        Chunk

        Raises
        ------
        AudioError
            NaN or infinite samples in a block read (after the chunks before it were
            yielded), or a decoding failure.
        ParameterError
            A window or hop of less than one sample.
        """
        count = self.chunk_count(window, hop, min_length=min_length)
        stop = count if stop is None else min(stop, count)
        first = max(first, 0)
        if first >= stop:
            return
        if window is None or hop is None:
            yield Chunk(self.read(), None, 0)
            return
        window_samples, hop_samples = chunk_samples(window, hop, self.sample_rate)
        begin, end = self.chunk_span(window, hop, min_length=min_length, first=first,
                                     stop=stop)
        blocks = self.signal_blocks(begin, end)
        buffer = np.empty(window_samples + self.block_frames, dtype=np.float64)
        lo = hi = 0          # buffer[lo:hi] holds signal[position : position + hi - lo]
        position = begin
        skip = 0             # samples still to drop from the blocks (hop > window)
        try:
            for number in range(first, stop):
                chunk_start = number * hop_samples
                chunk_end = min(chunk_start + window_samples, self.length)
                if chunk_start > position:
                    drop = chunk_start - position
                    if drop >= hi - lo:
                        skip += drop - (hi - lo)
                        lo = hi = 0
                    else:
                        lo += drop
                    position = chunk_start
                while hi - lo < chunk_end - chunk_start:
                    block = next(blocks)
                    if skip:
                        cut = min(skip, len(block))
                        block, skip = block[cut:], skip - cut
                    if hi + len(block) > len(buffer):
                        buffer[:hi - lo] = buffer[lo:hi]
                        lo, hi = 0, hi - lo
                    buffer[hi:hi + len(block)] = block
                    hi += len(block)
                yield Chunk(buffer[lo:lo + chunk_end - chunk_start].copy(),
                            self.start + number * hop, number)
        finally:
            blocks.close()

    def __repr__(self) -> str:
        return (f"AudioStream({self.name!r}, {self.input_rate} Hz x {self.channels}, "
                f"trimmed {self.trim_start}:{self.trim_stop}, {self.length} samples at "
                f"{self.sample_rate} Hz)")
