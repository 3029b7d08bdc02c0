"""The units of work of a run: a range of positions, drawn and (optionally) extracted.

The process that walks the plan reads the audio (each input once, in order) and puts
into a :class:`RangeJob` the samples its chunks need; a worker draws the images
(:func:`render_range`), and the network turns them into features, in the worker
(:func:`extract_range`, on a cluster) or in the walking process (:func:`run_network`).
A job carries no file handle and no network, so it can be run anywhere.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..audio import Chunk, default_nfft
from ..errors import DeepSpectrumError, OutputError
from ..images import min_chunk_length, plot_matrix, spectral_matrix
from ..output.guard import output_errors
from ..settings import FeatureSettings


@dataclass(frozen=True)
class ExtraOutput:
    """Optional per-chunk side outputs: the network's images (``-specout``), the audio
    (``-wavout``) and labelled figures for people (``deepspectrum plot --labelled``, in
    ``figure_format``)."""

    spectrogram_dir: Path | None = None
    wav_dir: Path | None = None
    figure_dir: Path | None = None
    figure_format: str = "png"


@dataclass
class FileFeatures:
    """All feature rows of one input, or why it produced none."""

    index: int
    path: Path
    timestamps: list[Decimal | None] = field(default_factory=list)
    features: np.ndarray | None = None
    error: str | None = None
    durations: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PieceAudio:
    """Chunks ``start:stop`` of input ``index`` at run position ``position``, with the
    samples they need.

    ``samples`` holds the signal from sample ``offset`` on; chunk ``n`` is
    ``signal[n*hop : min(n*hop + window, length)]`` (the whole signal without a window).
    ``shared``: the samples lie at ``[first, last)`` in the samples of the job's shared
    slot instead (``samples`` is then empty).
    """

    index: int
    start: int
    stop: int
    position: int
    relative: Path
    samples: np.ndarray
    offset: int
    length: int
    window: int | None
    hop: int | None
    sample_rate: int
    nfft: int
    timestamps: tuple[Decimal | None, ...]
    shared: tuple[int, int] | None = None

    def chunks(self, start: int, stop: int) -> list[Chunk]:
        """Chunks ``start:stop`` (run numbering of the input) as chunk_signal cuts them."""
        if self.window is None or self.hop is None:
            return [Chunk(self.samples, None, 0)]
        result = []
        for number in range(start, stop):
            first = number * self.hop
            last = min(first + self.window, self.length)
            result.append(Chunk(self.samples[first - self.offset:last - self.offset],
                                self.timestamps[number - self.start], number))
        return result


@dataclass(frozen=True)
class RangeJob:
    """Positions ``[begin, end)`` of a run: everything needed to draw (and extract) them.

    ``slot``: the slot of the worker's shared memory (:class:`~.executors.SharedSlots`)
    to draw into (and to find the pieces' samples in, where they say so), None to return
    the pictures with the result.
    """

    begin: int
    end: int
    pieces: tuple[PieceAudio, ...]
    settings: FeatureSettings
    batch_size: int
    renderer: str = "numpy"
    extra: ExtraOutput = ExtraOutput()
    slot: int | None = None


@dataclass(frozen=True)
class Failure:
    """A segment that could not be read or drawn."""

    index: int
    segments: range
    message: str


@dataclass
class PieceRows:
    """Chunks ``start:stop`` of input ``index``: timestamps, durations and features."""

    index: int
    start: int
    stop: int
    position: int
    timestamps: list[Decimal | None]
    durations: list[float]
    features: np.ndarray | None = None


@dataclass
class RenderedRange:
    """The images (or features) of a :class:`RangeJob` in position order, or its failures.

    ``slot``: the images were drawn into that slot of the shared picture buffer
    (``images`` is None until the executor puts the slot's view there).
    """

    begin: int
    end: int
    images: np.ndarray | None
    rows: list[PieceRows] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    features: np.ndarray | None = None
    slot: int | None = None


def error_text(exc: BaseException) -> str:
    """Why an input is skipped: the message of our errors, the type and message of others."""
    return str(exc) if isinstance(exc, DeepSpectrumError) else f"{type(exc).__name__}: {exc}"


def render_range(job: RangeJob) -> RenderedRange:
    """Draw the chunks of a range (runs in a worker).

    Chunks are drawn segment by segment (a segment: chunks ``s*B .. (s+1)*B`` of one
    input), so that a failure is named by its segment.  Every failure in the range is
    returned, and then no image: the caller drops those segments and plans again.  An
    unexpected error in an input's first segment drops the whole input, a
    DeepSpectrumError only the segment, as the original pipeline did.  Side outputs that
    cannot be written stop the run (OutputError).

    Returns
    -------
    RenderedRange
        ``images`` [shape=(end - begin, size, size, 3), uint8].
    """
    size = job.batch_size
    slots = None if job.slot is None else _shared_slots()
    shared = None if slots is None else slots.slot(job.slot)
    blocks, rows, failures, drawn = [], [], [], 0
    for piece in job.pieces:
        if piece.shared is not None and slots is not None:
            first, last = piece.shared
            piece = dataclasses.replace(piece, samples=slots.samples(job.slot)[first:last])
        start = piece.start
        while start < piece.stop:
            segment = start // size
            stop = min(piece.stop, (segment + 1) * size)
            chunks = piece.chunks(start, stop)
            try:
                images = render_chunks(chunks, piece.sample_rate, piece.nfft, job.settings,
                                       renderer=job.renderer, relative=piece.relative,
                                       extra=job.extra,
                                       out=None if shared is None else
                                       shared[drawn:drawn + len(chunks)])
            except OutputError:
                raise
            except Exception as exc:  # one odd input must not stop a corpus-wide run
                whole = segment == 0 and not isinstance(exc, DeepSpectrumError)
                segments = range(1 << 62) if whole else range(segment, segment + 1)
                failures.append(Failure(piece.index, segments, error_text(exc)))
            else:
                blocks.append(images)
                drawn += len(chunks)
                rows.append(PieceRows(piece.index, start, stop,
                                      piece.position + start - piece.start,
                                      [chunk.timestamp for chunk in chunks],
                                      [len(chunk.samples) / piece.sample_rate
                                       for chunk in chunks]))
            start = stop
    if failures:
        return RenderedRange(job.begin, job.end, None, failures=failures)
    if shared is not None:  # the pictures are in the slot, not in the result
        return RenderedRange(job.begin, job.end, None, rows, slot=job.slot)
    shape = (0, job.settings.size, job.settings.size, 3)
    images = np.concatenate(blocks) if blocks else np.empty(shape, np.uint8)
    return RenderedRange(job.begin, job.end, images, rows)


#: The shared slots of this worker process (set by :func:`init_worker`).
_SHARED: list = []


def _shared_slots():
    """This worker's :class:`~.executors.SharedSlots`."""
    if not _SHARED:
        raise RuntimeError("a job asks for a shared slot in a process without the slots")
    return _SHARED[0]


def run_network(network, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Features of ``images``, computed in batches of ``batch_size`` from the first.

    Returns
    -------
    np.ndarray [shape=(n, n_features), float32]
    """
    if not len(images):
        return np.empty((0, 0), np.float32)
    outputs = [network.features(images[first:first + batch_size])
               for first in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def attach_features(rendered: RenderedRange, features: np.ndarray) -> list[PieceRows]:
    """Split the features of a rendered range among its pieces."""
    offset = 0
    for rows in rendered.rows:
        count = rows.stop - rows.start
        rows.features = features[offset:offset + count]
        offset += count
    return rendered.rows


def extract_range(job: RangeJob, network) -> RenderedRange:
    """Draw a range and run the network on it (both in the worker): the rows, no images."""
    rendered = render_range(job)
    if rendered.images is not None:
        attach_features(rendered, run_network(network, rendered.images,
                                              batch_size=job.batch_size))
        rendered.images = None
    return rendered


# --- drawing ----------------------------------------------------------------------------

def timestamp_text(timestamp: Decimal) -> str:
    """A timestamp for file names: ``1.5``, ``0``, ``12.25`` (at most 4 decimals)."""
    return f"{timestamp:.4f}".rstrip("0").rstrip(".")


def side_output_name(relative: Path, timestamp: Decimal | None, suffix: str) -> Path:
    """``<folder>/<stem>_<timestamp><suffix>`` (``<stem><suffix>`` without timestamp).

    ``relative`` is the audio file's path relative to the input folder, so equal file
    names in different folders never collide.
    """
    stem = relative.stem if timestamp is None else f"{relative.stem}_{timestamp_text(timestamp)}"
    return relative.parent / (stem + suffix)


def _drawing_function(renderer: str):
    """``draw(matrix, out=image, **options)``, drawing into ``image``."""
    if renderer != "matplotlib":
        from ..images.render import render_matrix

        return render_matrix

    def plot_into(matrix, *, out, **options):
        out[...] = plot_matrix(matrix, **options)
        return out

    return plot_into


def render_chunks(chunks, sample_rate: int, nfft: int, settings: FeatureSettings, *,
                  renderer: str = "numpy", relative: Path | None = None,
                  extra: ExtraOutput = ExtraOutput(),
                  out: np.ndarray | None = None) -> np.ndarray:
    """Images of ``chunks`` [shape=(n, size, size, 3), uint8], with their side outputs
    (drawn into ``out`` when given)."""
    draw = _drawing_function(renderer)
    images = out if out is not None else np.empty(
        (len(chunks), settings.size, settings.size, 3), dtype=np.uint8)
    for position, chunk in enumerate(chunks):
        matrix = spectral_matrix(chunk.samples, sample_rate, mode=settings.mode, nfft=nfft,
                                 ylim=settings.ylim, delta=settings.delta, nmel=settings.nmel)
        draw(matrix, sample_rate=sample_rate, nfft=nfft, scale=settings.plot_scale,
             cmap=settings.cmap, size=settings.size, ylim=settings.ylim, out=images[position])
        if relative is not None:
            _write_side_outputs(extra, relative, chunk, sample_rate, images[position])
        if relative is not None and extra.figure_dir is not None:
            _save_labelled_figure(extra, relative, chunk, matrix, nfft, settings, sample_rate)
    return images


_PROBES: dict[tuple, str | None] = {}


def probe_failure(sample_rate: int, nfft: int, settings: FeatureSettings,
                  renderer: str) -> str | None:
    """Why no chunk at this sample rate and FFT size can be drawn, or None.

    Draws one synthetic chunk of the shortest drawable length (seeded noise), once per
    process and combination: failures that depend only on the settings, the sample rate
    and the FFT size (``-ylim`` keeping fewer than two frequency rows ...) make an input
    count no chunk, with the message the drawing itself raises.
    """
    key = (sample_rate, nfft, settings, renderer)
    if key not in _PROBES:
        length = min_chunk_length(nfft, settings.delta)
        samples = 0.1 * np.random.default_rng(0).standard_normal(length)
        try:
            render_chunks([Chunk(samples, None, 0)], sample_rate, nfft, settings,
                          renderer=renderer)
            _PROBES[key] = None
        except Exception as exc:  # the same isolation as drawing a real chunk
            _PROBES[key] = error_text(exc)
    return _PROBES[key]


def _save_labelled_figure(extra: ExtraOutput, relative: Path, chunk, matrix: np.ndarray,
                          nfft: int, settings: FeatureSettings, sample_rate: int) -> None:
    """A figure of one chunk for people: axes in seconds and Hz, a title, a colour bar."""
    from ..images import figures

    begin = settings.start if chunk.timestamp is None else chunk.timestamp
    end = begin + Decimal(len(chunk.samples)) / Decimal(sample_rate)
    title = (f"{relative.as_posix()}, {timestamp_text(begin)} to {timestamp_text(end)} s "
             f"({settings.mode})")
    figure = figures.labelled_figure(
        matrix, sample_rate=sample_rate, nfft=nfft, mode=settings.mode,
        scale=settings.plot_scale, cmap=settings.cmap, ylim=settings.ylim,
        delta=settings.delta, offset=float(begin), title=title)
    folder = extra.figure_dir
    if folder is None:
        return
    target = folder / side_output_name(relative, chunk.timestamp, f".{extra.figure_format}")
    with output_errors(target):
        figures.save_figure(figure, target, format=extra.figure_format)


def _write_side_outputs(extra: ExtraOutput, relative: Path, chunk, sample_rate: int,
                        image: np.ndarray) -> None:
    if extra.spectrogram_dir is not None:
        from PIL import Image

        target = extra.spectrogram_dir / side_output_name(relative, chunk.timestamp, ".png")
        with output_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
    if extra.wav_dir is not None:
        import soundfile

        target = extra.wav_dir / side_output_name(relative, chunk.timestamp, ".wav")
        with output_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(target, chunk.samples, sample_rate)


#: How much lower than the network's process a worker's scheduling priority is (``nice``).
WORKER_NICENESS = 10


def init_worker(settings: FeatureSettings | None = None, renderer: str = "numpy",
                shared=None) -> None:
    """Prepare a worker: a lower priority and one BLAS thread (it runs beside
    TensorFlow), and a first plot.

    On a CPU the network sets the pace, and its threads wait for each other at every
    layer: a worker that takes a core from one of them slows all of them.  At
    :data:`WORKER_NICENESS` the workers draw when a core is free (between layers and
    batches, or while the network waits for pictures, which gives them the cores back).

    librosa loads its submodules lazily, so the first spectral matrix of a process costs
    about two seconds; drawing one synthetic chunk with the run's settings
    (:func:`warm_up`) pays that (and fills the filter-bank caches) while the network
    loads, not on the first file.

    ``shared``: the pool's :class:`~.executors.SharedSlots`, which jobs with a slot
    draw into (and take their samples from).
    """
    from threadpoolctl import threadpool_limits

    try:
        os.nice(WORKER_NICENESS)
    except (AttributeError, OSError):  # not POSIX, or not permitted: the default priority
        pass
    threadpool_limits(1)
    _SHARED[:] = [shared] if shared is not None else []
    import soundfile  # noqa: F401

    if settings is not None:
        warm_up(settings, renderer)


def warm_up(settings: FeatureSettings, renderer: str = "numpy") -> None:
    """Draw one synthetic chunk with ``settings``, as real chunks are drawn (float64).

    librosa compiles some functions with numba on first use and keeps the machine code in
    numba's on-disk cache; processes compiling the same function at once can leave that
    cache inconsistent (later runs then crash).  So the processes of this machine draw
    their warm-up chunk one at a time (:func:`one_at_a_time`): the first compiles and
    fills the cache, the others load from it.

    Settings that cannot plot (DeepSpectrumError, e.g. ``-ylim`` keeping too few
    frequency rows) are left to the real files, which report why they are skipped.  Any
    other failure is a fault of the program: it is warned about (RuntimeWarning; on
    stderr in a worker), and the run goes on, as the files may still plot.
    """
    try:
        sample_rate = settings.sample_rate or 16000
        nfft = settings.nfft or default_nfft(sample_rate)
        length = 2 * min_chunk_length(nfft, settings.delta)
        noise = 0.1 * np.random.default_rng(0).standard_normal(length)
        with one_at_a_time("warm-up"):
            render_chunks([Chunk(noise, None, 0)], sample_rate, nfft, settings,
                          renderer=renderer)
    except DeepSpectrumError:
        pass
    except Exception as exc:  # reported, but a warm-up must not stop a run
        warnings.warn(f"the warm-up plot of a worker process failed ({type(exc).__name__}: "
                      f"{exc}); please report this with the command line", RuntimeWarning,
                      stacklevel=1)


@contextlib.contextmanager
def one_at_a_time(name: str) -> Iterator[None]:
    """Hold a lock that every process of this machine shares: a file
    ``deep-spectrum-<name>.lock`` in the temporary folder, locked with ``flock`` (released
    when its holder ends, however it ends).  Where it cannot be opened or locked (not
    POSIX, a folder not writable) the block runs unlocked."""
    try:
        import fcntl

        handle = os.open(os.path.join(tempfile.gettempdir(), f"deep-spectrum-{name}.lock"),
                         os.O_RDONLY | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(handle)
