"""The extraction pipeline: files -> chunks -> images -> features, in input order.

Worker processes read, chunk and plot; the calling process batches the images through
the network.  Work is shipped in *segments* (up to ``batch_size`` chunks of one file),
so a long recording never has to be held as images all at once, and only about two
batches of images (plus one segment per worker) are in flight, so memory stays flat
however large the corpus is while the workers stay ahead of the network.  Results are
consumed strictly in input order.

Batches are cut from the sequence of all chunks of all files in order: chunk ``g`` sits
at position ``g % batch_size`` of batch ``g // batch_size``.  The network's float32
results depend (in the last bits) on an image's position and on the batch's shape, so
every way of running a job -- resumed, sharded or distributed -- rebuilds exactly these
batches to write exactly the same bytes.
"""
from __future__ import annotations

import collections
import concurrent.futures
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import numpy as np

from .audio import Chunk, InMemoryAudio, chunk_signal, default_nfft, read_audio
from .errors import AudioError, DeepSpectrumError
from .images import min_chunk_length, plot_matrix, spectral_matrix
from .settings import FeatureSettings, RunOptions
from .workers import WorkerPool, abandon


@dataclass(frozen=True)
class ExtraOutput:
    """Optional per-chunk side outputs (``-specout``, ``-wavout``)."""

    spectrogram_dir: Path | None = None
    wav_dir: Path | None = None


@dataclass
class Segment:
    """Images of consecutive chunks of one file, as a worker returns them."""

    file_index: int
    number: int
    total: int
    timestamps: list[Decimal | None]
    images: np.ndarray | None
    error: str | None = None
    durations: list[float] = field(default_factory=list)  # seconds of audio per chunk


@dataclass
class FileFeatures:
    """All feature rows of one input file, or why it produced none."""

    index: int
    path: Path
    timestamps: list[Decimal | None] = field(default_factory=list)
    features: np.ndarray | None = None
    error: str | None = None
    durations: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


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
    if renderer == "matplotlib":
        return plot_matrix
    from .images.render import render_matrix

    return render_matrix


def render_segment(path: Path, relative: Path, file_index: int, number: int,
                   settings: FeatureSettings, segment_size: int, extra: ExtraOutput,
                   renderer: str = "numpy") -> Segment:
    """Read ``path`` and plot chunks ``number*segment_size ...`` of it (runs in a worker).

    Whatever goes wrong with one file comes back as the segment's ``error`` so that the
    run goes on with the others.
    """
    try:
        return _render_segment(path, relative, file_index, number, settings, segment_size,
                               extra, renderer)
    except Exception as exc:  # one odd file must not stop a corpus-wide run
        return Segment(file_index, number, 1, [], None, error=f"{type(exc).__name__}: {exc}")


def file_chunks(path, settings: FeatureSettings):
    """Read and chunk one input: ``(chunks, sample_rate, nfft)``.

    Raises DeepSpectrumError (AudioError) when the file cannot be used or yields no
    chunk long enough to plot.
    """
    signal, sample_rate = read_audio(path, start=settings.start, end=settings.end,
                                     target_rate=settings.sample_rate)
    nfft = settings.nfft or default_nfft(sample_rate)
    need = min_chunk_length(nfft, settings.delta)
    chunks = chunk_signal(signal, sample_rate, window=settings.window, hop=settings.hop,
                          start=settings.start, min_length=need)
    if not chunks:
        raise AudioError(f"no chunk has the {need} samples needed for one plot "
                         f"({len(signal)} samples after trimming at {sample_rate} Hz)")
    return chunks, sample_rate, nfft


def count_chunks(path, settings: FeatureSettings) -> tuple[int, str | None]:
    """How many chunks an input yields, or 0 and the reason it yields none."""
    try:
        return len(file_chunks(path, settings)[0]), None
    except Exception as exc:  # same isolation as render_segment
        return 0, str(exc) if isinstance(exc, DeepSpectrumError) else f"{type(exc).__name__}: {exc}"


def render_chunks(chunks, sample_rate: int, nfft: int, settings: FeatureSettings, *,
                  renderer: str = "numpy", relative: Path | None = None,
                  extra: ExtraOutput = ExtraOutput()) -> np.ndarray:
    """Images of ``chunks`` [shape=(n, size, size, 3), uint8], with their side outputs."""
    draw = _drawing_function(renderer)
    images = np.empty((len(chunks), settings.size, settings.size, 3), dtype=np.uint8)
    for position, chunk in enumerate(chunks):
        matrix = spectral_matrix(chunk.samples, sample_rate, mode=settings.mode, nfft=nfft,
                                 ylim=settings.ylim, delta=settings.delta, nmel=settings.nmel)
        images[position] = draw(matrix, sample_rate=sample_rate, nfft=nfft,
                                scale=settings.plot_scale, cmap=settings.cmap,
                                size=settings.size, ylim=settings.ylim)
        if relative is not None:
            _write_side_outputs(extra, relative, chunk, sample_rate, images[position])
    return images


def _render_segment(path, relative, file_index, number, settings, segment_size, extra,
                    renderer) -> Segment:
    try:
        chunks, sample_rate, nfft = file_chunks(path, settings)
    except DeepSpectrumError as exc:
        return Segment(file_index, number, 1, [], None, error=str(exc))
    total = -(-len(chunks) // segment_size)
    selected = chunks[number * segment_size:(number + 1) * segment_size]
    try:
        images = render_chunks(selected, sample_rate, nfft, settings, renderer=renderer,
                               relative=relative, extra=extra)
    except DeepSpectrumError as exc:
        return Segment(file_index, number, total, [], None, error=str(exc))
    return Segment(file_index, number, total, [chunk.timestamp for chunk in selected], images,
                   durations=[len(chunk.samples) / sample_rate for chunk in selected])


def _write_side_outputs(extra: ExtraOutput, relative: Path, chunk, sample_rate: int,
                        image: np.ndarray) -> None:
    if extra.spectrogram_dir is not None:
        from PIL import Image

        target = extra.spectrogram_dir / side_output_name(relative, chunk.timestamp, ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target)
    if extra.wav_dir is not None:
        import soundfile

        target = extra.wav_dir / side_output_name(relative, chunk.timestamp, ".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(target, chunk.samples, sample_rate)


class _InlineExecutor:
    """Runs tasks in the calling process (``-np 1``), with the executor interface."""

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # delivered through result(), like a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass

    def abandon(self):
        pass


def _init_worker(settings: FeatureSettings | None = None, renderer: str = "numpy") -> None:
    """Prepare a worker: one BLAS thread (it runs beside TensorFlow) and a first plot.

    librosa loads its submodules lazily, so the first spectral matrix of a process costs
    about two seconds; drawing one synthetic chunk with the run's settings pays that
    (and fills the filter-bank caches) while the network loads, not on the first file.

    Settings that cannot plot (DeepSpectrumError, e.g. ``-ylim`` keeping too few
    frequency rows) are left to the real files, which report why they are skipped.  Any
    other failure is a fault of the program: it is warned about (RuntimeWarning, on
    stderr in a worker), and the worker goes on, as the files may still plot.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import soundfile  # noqa: F401

    if settings is None:
        return
    try:
        sample_rate = settings.sample_rate or 16000
        nfft = settings.nfft or default_nfft(sample_rate)
        length = 2 * min_chunk_length(nfft, settings.delta)
        noise = np.random.default_rng(0).standard_normal(length).astype(np.float32)
        render_chunks([Chunk(noise, None, 0)], sample_rate, nfft, settings, renderer=renderer)
    except DeepSpectrumError:
        pass
    except Exception as exc:  # noqa: BLE001  reported, but a warm-up must not stop a run
        warnings.warn(f"the warm-up plot of a worker process failed ({type(exc).__name__}: "
                      f"{exc}); this is a bug, please report it", RuntimeWarning)


def start_workers(processes: int, settings: FeatureSettings | None = None,
                  renderer: str = "numpy"):
    """Start the reading and plotting processes now; each draws one warm-up plot.

    Pass the result to :func:`extract_features` (``executor=``) to overlap the workers'
    start-up with loading the network; it is shut down when the extraction ends.
    """
    executor = _executor(processes, settings, renderer)
    if isinstance(executor, WorkerPool):
        executor.start_all()
    return executor


def _executor(processes: int, settings: FeatureSettings | None = None,
              renderer: str = "numpy"):
    if processes == 1:
        return _InlineExecutor()
    return WorkerPool(processes, _init_worker, (settings, renderer))


def _rendered_segments(files: list[Path], root: Path | None, settings: FeatureSettings,
                       options: RunOptions, extra: ExtraOutput,
                       executor=None) -> Iterator[Segment]:
    """Segments of all files, in order, with a bounded number in flight."""
    segment_size = options.batch_size
    executor = executor or _executor(options.processes, settings, options.renderer)
    rendered_segments = rendered_images = 0

    def limit() -> int:
        """Segments in flight: enough for two batches of images ahead of the network.

        Starts from the pessimistic assumption of full segments and adapts to the
        segments' real size (short files give small ones), so the workers keep up with
        the network without ever holding more than about two batches plus one segment
        per worker.
        """
        average = rendered_images / rendered_segments if rendered_segments else segment_size
        return 2 * options.processes + int(2 * options.batch_size / max(average, 1.0))
    pending: collections.deque = collections.deque()  # [(file_index, number), future|None]
    next_file = 0

    def relative(index: int) -> Path:
        path = files[index]
        if root is None or isinstance(path, InMemoryAudio):
            return Path(path.name)
        return path.relative_to(root)

    def submit(key):
        index, number = key
        return executor.submit(render_segment, files[index], relative(index), index, number,
                               settings, segment_size, extra, options.renderer)

    def refill():
        nonlocal next_file
        in_flight = sum(1 for _key, future in pending if future is not None)
        most = limit()
        for slot in pending:
            if in_flight >= most:
                return
            if slot[1] is None:
                slot[1] = submit(slot[0])
                in_flight += 1
        while in_flight < most and next_file < len(files):
            key = (next_file, 0)
            pending.append([key, submit(key)])
            next_file += 1
            in_flight += 1

    def result_of(key, future) -> Segment:
        """The segment, surviving worker processes that die (killed, out of memory ...)."""
        nonlocal executor
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool:
            pass
        # Every task in flight failed with the pool; which one killed it is unknown.
        # Start a new pool, run this task alone, and blame it only if it breaks that too.
        abandon(executor)
        executor = _executor(options.processes, settings, options.renderer)
        for slot in pending:
            slot[1] = None
        try:
            return submit(key).result()
        except concurrent.futures.process.BrokenProcessPool:
            abandon(executor)
            executor = _executor(options.processes, settings, options.renderer)
            return Segment(key[0], key[1], 1, [], None,
                           error="the worker process reading and plotting it died")

    finished = False
    try:
        refill()
        while pending:
            (index, number), future = pending.popleft()
            if future is None:
                future = submit((index, number))
            segment = result_of((index, number), future)
            rendered_segments += 1
            rendered_images += 0 if segment.images is None else len(segment.images)
            if number == 0 and segment.total > 1:
                for later in range(segment.total - 1, 0, -1):
                    pending.appendleft([(index, later), None])
            refill()
            if not pending and next_file == len(files):
                # all rendered: let the workers exit while the last batches run
                executor.shutdown(wait=False)
            yield segment
        finished = True
    finally:
        if finished:
            executor.shutdown(wait=True)
        else:
            # Ctrl-C, SIGTERM, an error or a consumer that stopped early: the tasks still
            # queued are not wanted, and nothing should wait for those running, so the
            # workers are told to stop now
            abandon(executor)


def extract_features(files: list[Path], settings: FeatureSettings, extractor,
                     options: RunOptions = RunOptions(), *, root: Path | None = None,
                     extra: ExtraOutput = ExtraOutput(), align: int = 0,
                     executor=None) -> Iterator[FileFeatures]:
    """Features of every file, yielded one file at a time in input order.

    Parameters
    ----------
    files : list of Path
    settings : FeatureSettings
    extractor : object with ``features(images) -> np.ndarray``
        e.g. :class:`~deep_spectrum_extractor.backend.extractor.FrozenGraphExtractor`.
    options : RunOptions
    root : Path, optional
        Input folder; side outputs keep the files' paths relative to it.
    extra : ExtraOutput
        Where to write chunk plots and audio, if anywhere.
    align : int
        Blank images put before the first chunk in the first batch (their features are
        dropped), so that a resumed run feeds every chunk at the batch position it had
        in an uninterrupted run.
    executor : optional
        Worker processes from :func:`start_workers`; by default they are started here.

    Yields
    ------
    FileFeatures
        ``features`` of shape (chunks, n_features); files that produce no chunk come
        with ``error`` set instead.
    """
    open_files: dict[int, FileFeatures] = {}
    parts: dict[int, list[np.ndarray]] = {}     # feature blocks per open file
    remaining: dict[int, int] = {}              # segments still to arrive per open file
    queue: collections.deque = collections.deque()  # (file index, images) awaiting the net
    queued = 0
    done_upto = 0
    if align:
        parts[-1] = []  # a pseudo-file whose features are never yielded
        queue.append((-1, np.zeros((align, settings.size, settings.size, 3), np.uint8)))
        queued = align

    def run_batch(size: int) -> None:
        nonlocal queued
        owners, blocks = [], []
        while size:
            index, images = queue[0]
            if len(images) <= size:
                queue.popleft()
            else:
                queue[0] = (index, images[size:])
                images = images[:size]
            owners.append((index, len(images)))
            blocks.append(images)
            size -= len(images)
        vectors = extractor.features(np.concatenate(blocks))
        offset = 0
        for index, rows in owners:
            parts[index].append(vectors[offset:offset + rows])
            offset += rows
        queued -= offset

    def completed() -> Iterator[FileFeatures]:
        nonlocal done_upto
        while (done_upto in open_files and remaining[done_upto] == 0
               and not any(index == done_upto for index, _ in queue)):
            result = open_files.pop(done_upto)
            blocks = parts.pop(done_upto)
            if result.error is not None:
                result.timestamps, result.durations = [], []
            elif blocks:
                result.features = np.concatenate(blocks)
            remaining.pop(done_upto)
            done_upto += 1
            yield result

    for segment in _rendered_segments(files, root, settings, options, extra, executor):
        index = segment.file_index
        if index not in open_files:
            source = files[index]
            open_files[index] = FileFeatures(index, Path(source.name) if isinstance(
                source, InMemoryAudio) else source, error=segment.error)
            parts[index] = []
            remaining[index] = segment.total
        remaining[index] -= 1
        if segment.error and open_files[index].error is None:
            open_files[index].error = segment.error  # a later part failed: drop the file
        if segment.images is not None and len(segment.images):
            open_files[index].timestamps.extend(segment.timestamps)
            open_files[index].durations.extend(segment.durations)
            queue.append((index, segment.images))
            queued += len(segment.images)
            while queued >= options.batch_size:
                run_batch(options.batch_size)
        yield from completed()
    while queued:
        run_batch(min(queued, options.batch_size))
    yield from completed()
