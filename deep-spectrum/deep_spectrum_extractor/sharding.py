"""Splitting one extraction into parts that reproduce the single-machine bytes exactly.

The network's float32 results for an image depend on the batch it is computed in (its
position and the batch's shape), so the parts of a run cannot simply take every N-th
file: each part must feed the network exactly the batches a single run feeds it.  A
single run (:func:`~deep_spectrum_extractor.pipeline.extract_features`) puts chunk
``g`` of the run (all chunks of all files counted in input order, files that fail
counting none) at position ``g % B`` of batch ``g // B``, ``B`` being the batch size.

So a split run goes in two passes:

1. **Counting** (:func:`survey_file`): read and chunk every file (no plotting) to get
   its number of chunks; the prefix sums give each file's first *position* in the run.
   A :class:`Layout` holds them.
2. **Ranges of whole batches** (:class:`RangeJob`): positions ``[k*B, m*B)`` are
   rendered by :func:`render_range` (reading only the files that overlap the range) and
   sent through the network batch by batch by :func:`run_network`.

This module does it for job arrays without a scheduler: ``-shard i/N`` (or ``-shard
slurm`` in a SLURM job array, see :func:`resolve_shard`) makes :func:`run_shard` process
the ``i``-th of ``N`` contiguous ranges of whole batches into its own file, and
:func:`merge_shards` (the ``ds_merge_shards`` command, :func:`main`) joins the shard
files into one that is byte-identical to the file a single run writes.  The
:mod:`~deep_spectrum_extractor.distributed` module runs the same ranges on a Dask
cluster.

A chunk the single run cannot plot drops the part of its file being plotted (up to
``B`` chunks), which moves every later chunk to another batch position.  Failures that
depend only on the settings and the sample rate (``-ylim`` leaving fewer than two
frequency rows ...) are found while counting by plotting a probe chunk once per sample
rate, so such files count as skipped from the start, as in a single run.  A shard that
meets any other chunk it cannot plot stops with a :class:`ShardError`, because the
shards after it were cut without knowing; the distributed run re-plans instead.

Every shard runs the counting pass over the whole corpus itself (reading every file
once, no plotting), so that all shards agree on the cut without talking to each other.

Examples
--------
Three jobs, then the merge::

    extract_ds_features -i corpus -o features.arff -t 1 0.5 -shard 1/3    # job 1
    extract_ds_features -i corpus -o features.arff -t 1 0.5 -shard 2/3    # job 2
    extract_ds_features -i corpus -o features.arff -t 1 0.5 -shard 3/3    # job 3
    ds_merge_shards -o features.arff features.shard-*-of-3.arff

or, as a SLURM array (``sbatch --array=0-7 job.sh`` with this in ``job.sh``)::

    extract_ds_features -i corpus -o features.arff -t 1 0.5 -shard slurm
"""
from __future__ import annotations

import argparse
import bisect
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from .audio import InMemoryAudio
from .errors import DeepSpectrumError, ParameterError, exit_status
from .extraction import file_sha256
from .output.guard import lock_output, output_errors, write_text_atomically
from .output.writers import BINARY_FORMATS, part_path
from .pipeline import ExtraOutput, start_workers
from .settings import FeatureSettings, RunOptions

#: Marks a shard record (the JSON file beside each shard).
RECORD_FORMAT = "deep-spectrum shard 1"
MERGE_PROG = "ds_merge_shards"


class ShardError(DeepSpectrumError):
    """A shard cannot be run or shard files cannot be merged."""


def error_text(exc: BaseException) -> str:
    """The reason a file is skipped, worded as the single-machine pipeline words it."""
    return str(exc) if isinstance(exc, DeepSpectrumError) else f"{type(exc).__name__}: {exc}"


def display_path(source) -> Path:
    """``FileFeatures.path`` of an input: the path, or the name of an in-memory signal."""
    return Path(source.name) if isinstance(source, InMemoryAudio) else Path(source)


def relative_path(source, root: Path | None) -> Path:
    """An input's path relative to the input folder, for side outputs (``-specout``)."""
    if root is None or isinstance(source, InMemoryAudio):
        return Path(source.name)
    return Path(source).relative_to(root)


# --- the counting pass ----------------------------------------------------------------------

_PROBES: dict[tuple, str | None] = {}


def probe_failure(sample_rate: int, nfft: int, settings: FeatureSettings,
                  renderer: str) -> str | None:
    """Why no chunk at this sample rate and FFT size can be plotted, or None.

    Plots one synthetic chunk of the shortest plottable length (seeded noise), once per
    process and combination.  Failures that depend only on the settings, the sample rate
    and the FFT size (``-ylim`` keeping fewer than two frequency rows, a linear axis
    with a single row) are caught here with the message the plot itself raises.
    """
    from . import pipeline
    from .audio import Chunk
    from .images import min_chunk_length

    key = (sample_rate, nfft, settings, renderer)
    if key not in _PROBES:
        length = min_chunk_length(nfft, settings.delta)
        samples = 0.1 * np.random.default_rng(0).standard_normal(length)
        try:
            pipeline.render_chunks([Chunk(samples, None, 0)], sample_rate, nfft, settings,
                                   renderer=renderer)
            _PROBES[key] = None
        except Exception as exc:  # the same isolation as the pipeline's
            _PROBES[key] = error_text(exc)
    return _PROBES[key]


def survey_file(source, settings: FeatureSettings, *,
                renderer: str = "numpy") -> tuple[int, str | None]:
    """Chunks of one input in the run, or 0 and the reason it yields none.

    Like :func:`~deep_spectrum_extractor.pipeline.count_chunks` (read and chunk, no
    plotting), and a file whose sample rate cannot be plotted at all with these
    settings (see :func:`probe_failure`) counts 0 chunks with that reason, as it
    contributes no chunk to a single run either.

    Returns
    -------
    chunks : int
    error : str or None
    """
    from . import pipeline

    try:
        chunks, sample_rate, nfft = pipeline.file_chunks(source, settings)
    except Exception as exc:  # one odd file must not stop a corpus-wide run
        return 0, error_text(exc)
    problem = probe_failure(sample_rate, nfft, settings, renderer)
    return (0, problem) if problem else (len(chunks), None)


def survey_files(sources: list, settings: FeatureSettings,
                 renderer: str = "numpy") -> list[tuple[int, str | None]]:
    """:func:`survey_file` of several inputs (one task of a counting pass)."""
    return [survey_file(source, settings, renderer=renderer) for source in sources]


# --- global positions -----------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """Chunks ``start:stop`` of input ``index``, the first at run position ``position``."""

    index: int
    start: int
    stop: int
    position: int


class Layout:
    """Where every chunk of the run meets the network.

    Positions count the chunks of all inputs in input order, after ``lead`` blank
    images (the padding of a resumed run); position ``p`` is image ``p % B`` of batch
    ``p // B``.  Inputs are added in order as they are counted.  A *segment* is what the
    single-machine pipeline plots in one piece: chunks ``s*B`` to ``(s+1)*B`` of a file;
    :meth:`drop` removes one (or all of a file's) when it cannot be plotted, as the
    pipeline does, which moves every later chunk.

    Parameters
    ----------
    batch_size : int
    lead : int
        Blank images before the first chunk (``align`` of ``extract_features``).
    """

    def __init__(self, batch_size: int, lead: int = 0):
        if not 0 <= lead < batch_size:
            raise ParameterError(f"align={lead} must be at least 0 and below the batch size "
                                 f"{batch_size}")
        self.batch_size = batch_size
        self.lead = lead
        self.counts: list[int] = []
        self.errors: list[str | None] = []
        self.starts: list[int] = [lead]     # starts[f]: position of file f's first chunk
        self._dropped: dict[int, set[int]] = {}

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def end(self) -> int:
        """The position after the last chunk counted so far."""
        return self.starts[-1]

    @property
    def batches(self) -> int:
        """Batches needed for the positions counted so far."""
        return -(-self.end // self.batch_size)

    def add(self, count: int, error: str | None) -> None:
        """Append the next input: its number of chunks, or 0 and why it has none."""
        count = 0 if error is not None else count
        self.counts.append(count)
        self.errors.append(error)
        self.starts.append(self.starts[-1] + count)

    def kept(self, index: int) -> int:
        """Chunks of input ``index`` that are in the run."""
        return self.starts[index + 1] - self.starts[index]

    def kept_ranges(self, index: int) -> list[tuple[int, int]]:
        """``(start, stop)`` chunk ranges of input ``index`` that are in the run."""
        count, dropped = self.counts[index], self._dropped.get(index)
        if not dropped:
            return [(0, count)] if count else []
        size, ranges = self.batch_size, []
        for segment in range(-(-count // size)):
            if segment in dropped:
                continue
            start, stop = segment * size, min((segment + 1) * size, count)
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], stop)
            else:
                ranges.append((start, stop))
        return ranges

    def position(self, index: int, chunk: int) -> int:
        """Position of chunk ``chunk`` of input ``index`` (of the next kept one if dropped)."""
        position = self.starts[index]
        for start, stop in self.kept_ranges(index):
            if chunk < stop:
                return position + max(chunk - start, 0)
            position += stop - start
        return position

    def drop(self, index: int, segment: int, *, whole: bool, error: str) -> int:
        """Remove segment ``segment`` (``whole``: every segment) of input ``index``.

        The input keeps the first error it got.  Returns the first position whose
        chunk changed.
        """
        size = self.batch_size
        changed = self.starts[index] if whole else self.position(index, segment * size)
        segments = range(-(-self.counts[index] // size)) if whole else [segment]
        self._dropped.setdefault(index, set()).update(segments)
        if self.errors[index] is None:
            self.errors[index] = error
        for later in range(index, len(self.counts)):
            kept = sum(stop - start for start, stop in self.kept_ranges(later))
            self.starts[later + 1] = self.starts[later] + kept
        return changed

    def owner(self, position: int) -> int:
        """The input whose chunk is at ``position`` (``position < end``)."""
        return bisect.bisect_right(self.starts, position) - 1

    def pieces(self, begin: int, end: int) -> list[Piece]:
        """The chunks at positions ``[begin, end)``, as pieces in order.

        Blank lead positions are skipped; inputs up to ``end`` must have been added.
        """
        pieces = []
        position = max(begin, self.lead)
        index = self.owner(position) if position < self.end else len(self.counts)
        while position < end and index < len(self.counts):
            offset = position - self.starts[index]
            for start, stop in self.kept_ranges(index):
                if offset >= stop - start:
                    offset -= stop - start
                    continue
                first = start + offset
                last = min(stop, first + end - position)
                pieces.append(Piece(index, first, last, position))
                position += last - first
                offset = 0
                if position >= end:
                    break
            index += 1
        return pieces


# --- rendering a range of batches -----------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """An input a range job reads: the file (or signal), its side-output name and count."""

    source: object
    relative: Path
    chunks: int


@dataclass(frozen=True)
class RangeJob:
    """Positions ``[begin, end)`` of a run: everything a worker needs to plot them.

    ``begin`` is a multiple of the batch size and ``end`` too, except for the last range
    of a run; ``blanks`` blank images come first (only in the range starting at 0 of a
    resumed run).
    """

    begin: int
    end: int
    blanks: int
    pieces: tuple[Piece, ...]
    sources: Mapping[int, Source]
    settings: FeatureSettings
    batch_size: int
    renderer: str = "numpy"
    extra: ExtraOutput = ExtraOutput()


@dataclass(frozen=True)
class Failure:
    """A segment that could not be read or plotted while rendering a range."""

    index: int
    segment: int
    whole: bool          # the single run drops the whole file, not only this segment
    message: str


@dataclass
class PieceRows:
    """Chunks ``start:stop`` of input ``index``: their timestamps, durations, features."""

    index: int
    start: int
    stop: int
    position: int
    timestamps: list[Decimal | None]
    durations: list[float]
    features: np.ndarray | None = None


@dataclass
class RenderedRange:
    """The images of a :class:`RangeJob` in position order, or why some failed."""

    begin: int
    end: int
    images: np.ndarray | None
    rows: list[PieceRows] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def make_job(layout: Layout, files: list, begin: int, end: int, settings: FeatureSettings,
             options: RunOptions, *, root: Path | None = None,
             extra: ExtraOutput = ExtraOutput()) -> RangeJob:
    """The :class:`RangeJob` for positions ``[begin, end)`` of ``layout``."""
    pieces = tuple(layout.pieces(begin, end))
    sources = {piece.index: Source(files[piece.index], relative_path(files[piece.index], root),
                                   layout.counts[piece.index]) for piece in pieces}
    return RangeJob(begin, end, max(layout.lead - begin, 0), pieces, sources, settings,
                    options.batch_size, options.renderer, extra)


def render_range(job: RangeJob) -> RenderedRange:
    """Read and plot the chunks of a range (runs in a worker).

    Each input is read once.  Chunks are plotted segment by segment, as the single
    pipeline plots them, so that a failure can be named by its segment: every failure
    in the range is returned (and no image), for the caller to re-plan or stop.

    Returns
    -------
    RenderedRange
        ``images`` [shape=(end - begin - blanks, size, size, 3), uint8] in position
        order, with one :class:`PieceRows` per plotted segment part.
    """
    from . import pipeline

    size = job.batch_size
    loaded: dict[int, object] = {}
    blocks, rows, failures = [], [], []
    for piece in job.pieces:
        source = job.sources[piece.index]
        if piece.index not in loaded:
            try:
                chunks, sample_rate, nfft = pipeline.file_chunks(source.source, job.settings)
                if len(chunks) != source.chunks:
                    raise ShardError(f"the file changed during the run ({source.chunks} chunks "
                                     f"when counted, {len(chunks)} now)")
                loaded[piece.index] = (chunks, sample_rate, nfft)
            except Exception as exc:  # as the pipeline: the file is skipped, the run goes on
                loaded[piece.index] = exc
        if isinstance(loaded[piece.index], Exception):
            segment = piece.start // size
            failures.append(Failure(piece.index, segment, segment == 0,
                                    error_text(loaded[piece.index])))
            continue
        chunks, sample_rate, nfft = loaded[piece.index]
        start = piece.start
        while start < piece.stop:
            segment = start // size
            stop = min(piece.stop, (segment + 1) * size)
            part = chunks[start:stop]
            try:
                images = pipeline.render_chunks(part, sample_rate, nfft, job.settings,
                                                renderer=job.renderer,
                                                relative=source.relative, extra=job.extra)
            except Exception as exc:
                # the pipeline drops this segment; an unexpected error in the first
                # segment ends the whole file there
                failures.append(Failure(piece.index, segment, segment == 0 and not isinstance(
                    exc, DeepSpectrumError), error_text(exc)))
            else:
                blocks.append(images)
                rows.append(PieceRows(piece.index, start, stop,
                                      piece.position + start - piece.start,
                                      [chunk.timestamp for chunk in part],
                                      [len(chunk.samples) / sample_rate for chunk in part]))
            start = stop
    if failures:
        return RenderedRange(job.begin, job.end, None, failures=failures)
    shape = (0, job.settings.size, job.settings.size, 3)
    images = np.concatenate(blocks) if blocks else np.empty(shape, np.uint8)
    return RenderedRange(job.begin, job.end, images, rows)


def run_network(extractor, images: np.ndarray, *, batch_size: int,
                blanks: int = 0) -> np.ndarray:
    """Features of ``images``, computed in batches of ``batch_size`` from the first.

    Parameters
    ----------
    extractor : object with ``features(images) -> np.ndarray``
    images : np.ndarray [shape=(n, size, size, 3), uint8]
    batch_size : int
    blanks : int
        Blank images put first (their features are dropped).

    Returns
    -------
    np.ndarray [shape=(n, n_features), float32]
    """
    if blanks:
        images = np.concatenate([np.zeros((blanks,) + images.shape[1:], np.uint8), images])
    if not len(images):
        return np.empty((0, 0), np.float32)
    outputs = [extractor.features(images[first:first + batch_size])
               for first in range(0, len(images), batch_size)]
    return np.concatenate(outputs)[blanks:]


def attach_features(rendered: RenderedRange, features: np.ndarray) -> list[PieceRows]:
    """Split the features of a rendered range among its pieces."""
    offset = 0
    for rows in rendered.rows:
        count = rows.stop - rows.start
        rows.features = features[offset:offset + count]
        offset += count
    return rendered.rows


# --- running locally (shards) -----------------------------------------------------------------

class _Workers:
    """Worker processes for the local passes of a shard (none for ``processes=1``).

    :meth:`map` yields results in order with at most ``2 * processes`` items ahead.
    ``executor``: workers already started by
    :func:`~deep_spectrum_extractor.pipeline.start_workers` (the command starts them while
    the network loads); by default they are started here.
    """

    def __init__(self, processes: int, executor=None):
        self.processes = processes
        self.executor = None if processes == 1 else executor or start_workers(processes)
        self._pending: collections.deque = collections.deque()  # the last map's futures

    def map(self, function: Callable, items: Iterable) -> Iterator:
        if self.executor is None:
            yield from map(function, items)
            return
        items = iter(items)
        pending: collections.deque = collections.deque()
        self._pending = pending
        try:
            for item in items:
                pending.append(self.executor.submit(function, item))
                if len(pending) >= 2 * self.processes:
                    break
            while pending:
                result = pending.popleft().result()
                for item in items:
                    pending.append(self.executor.submit(function, item))
                    break
                yield result
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise ShardError("a worker process died (killed, out of memory ...); run the "
                             "shard again") from exc
        finally:
            for future in pending:
                future.cancel()

    def close(self, *, now: bool = False) -> None:
        """Shut the workers down.

        They exit once idle after a :meth:`map` that ran to its end.  With ``now``, or
        when a map was left with tasks unfinished (Ctrl-C, SIGTERM, an error), they are
        told to stop at once and nothing waits for them: those tasks are not wanted.
        """
        from .workers import abandon

        if self.executor is None:
            return
        if now or not all(future.done() for future in self._pending):
            abandon(self.executor)
        else:
            self.executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        self.close(now=exc_type is not None)


def _survey_group(item) -> list[tuple[int, str | None]]:
    sources, settings, renderer = item
    return survey_files(sources, settings, renderer)


def survey(files: list, settings: FeatureSettings, options: RunOptions, *,
           workers: _Workers | None = None, group: int = 32) -> Layout:
    """The counting pass on this machine, with ``options.processes`` processes.

    Returns
    -------
    Layout
        Every input's chunks (or reason to be skipped) and first position.
    """
    layout = Layout(options.batch_size)
    groups = ((files[first:first + group], settings, options.renderer)
              for first in range(0, len(files), group))
    with (_Workers(options.processes) if workers is None else contextlib.nullcontext(
            workers)) as pool:
        for counts in pool.map(_survey_group, groups):
            for count, error in counts:
                layout.add(count, error)
    return layout


# --- shards -------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)``: shard ``i`` (counted from 1) of ``N``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ParameterError(f"-shard {text!r} must be i/N, e.g. 2/8 for the second of eight "
                             "shards")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ParameterError(f"-shard {text}: shards are numbered 1 to N (N >= 1), so i/N "
                             f"needs 1 <= i <= N")
    return index, count


def shard_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of a SLURM job array task, or None outside one.

    Uses ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``, and
    ``SLURM_ARRAY_TASK_MIN`` and ``SLURM_ARRAY_TASK_STEP`` when present, so that
    ``--array=0-7``, ``--array=1-8`` and ``--array=0-14:2`` all give shards 1/8 to 8/8.
    """
    environ = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    try:
        task = int(environ["SLURM_ARRAY_TASK_ID"])
        count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", 1) or 1)
    except KeyError:
        raise ParameterError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; "
                             "give -shard i/N") from None
    except ValueError:
        raise ParameterError("the SLURM_ARRAY_TASK_* variables are not integers; give -shard "
                             "i/N") from None
    number, rest = divmod(task - first, step)
    if rest or not 0 <= number < count:
        raise ParameterError(f"SLURM array task {task} is not one of {count} evenly spaced ids "
                             f"from {first} (step {step}); submit the array as --array=0-"
                             f"{count - 1} or give -shard i/N")
    return number + 1, count


def resolve_shard(text: str | None,
                  environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard an option asks for: ``"i/N"``, ``"slurm"`` (the array task's) or None.

    A run is never split without being asked: with ``text=None`` it is one run even
    inside a job array (an array may run other corpora, not shards of one).
    """
    if text is None:
        return None
    if str(text).strip().lower() == "slurm":
        shard = shard_from_environment(environ)
        if shard is None:
            raise ParameterError("-shard slurm: this is not a SLURM array job "
                                 "(SLURM_ARRAY_TASK_ID is not set); give -shard i/N")
        return shard
    return parse_shard(text)


def shard_path(output: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """Where shard ``i`` of ``N`` of ``output`` goes: ``<stem>.shard-i-of-N<suffix>``."""
    output, (index, count) = Path(output), shard
    return output.with_name(f"{output.stem}.shard-{index:0{len(str(count))}d}-of-{count}"
                            f"{output.suffix}")


def record_path(shard_file: str | os.PathLike) -> Path:
    """The shard record beside a shard file: ``<shard file>.json``."""
    shard_file = Path(shard_file)
    return shard_file.with_name(shard_file.name + ".json")


def shard_bounds(layout: Layout, shard: tuple[int, int]) -> tuple[int, int]:
    """Positions ``[begin, end)`` of shard ``i`` of ``N``: a contiguous range of batches."""
    index, count = shard
    batches = layout.batches
    first, last = (index - 1) * batches // count, index * batches // count
    return first * layout.batch_size, min(last * layout.batch_size, layout.end)


def _job_fingerprint(files: list, layout: Layout, *, record: dict, labels, timestamps: bool,
                     root: Path | None) -> dict:
    keys = [str(Path(path).relative_to(root)) if root is not None and
            not isinstance(path, InMemoryAudio) else path.name for path in files]
    return json.loads(json.dumps({  # as it reads back from the record
        "provenance": record, "timestamps": timestamps,
        "labels": [[a.name, a.values] for a in labels.attributes] if labels else None,
        "files": {"count": len(keys),
                  "sha256": hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()},
        "chunks": layout.end}))


def _kind(output: Path) -> str:
    """The format ``open_writer`` picks for ``output``: ``arff``, ``csv`` or a binary one."""
    suffix = output.suffix.lower()
    return suffix[1:] if suffix in (".arff",) + BINARY_FORMATS else "csv"


@dataclass
class ShardReport:
    """What :func:`run_shard` wrote: the shard file, its positions and its files."""

    path: Path
    shard: tuple[int, int]
    begin: int
    end: int
    batches: int = 0  # of the whole job
    rows: int = 0
    done: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def run_shard(files: list, output: str | os.PathLike, settings: FeatureSettings, extractor,
              options: RunOptions, *, shard: tuple[int, int], record: dict, labels=None,
              timestamps: bool, root: Path | None = None,
              extra: ExtraOutput = ExtraOutput(), executor=None) -> ShardReport:
    """Extract shard ``i`` of ``N`` of a run into ``shard_path(output, shard)``.

    Counts the chunks of every input (each shard does, so all agree on the cut), then
    plots and extracts the positions of its contiguous range of whole batches with
    ``options.processes`` processes and ``extractor``.  The shard file is a complete
    ARFF or CSV file (header and the rows of its range, in order; a file's rows may be
    split between two shards); beside it, ``<shard file>.json`` records the job's
    fingerprint, the header's length and the files done and skipped that belong to the
    shard, for :func:`merge_shards`.  Arguments are those of
    :func:`~deep_spectrum_extractor.extraction.extract_to_file`.

    Parameters
    ----------
    files : list of Path
    output : path-like
        The merged output's name (``.arff`` or ``.csv``); the shard goes beside it.
    settings : FeatureSettings
    extractor : object with ``features(images) -> np.ndarray``
    options : RunOptions
    shard : (int, int)
        ``(i, N)``, ``1 <= i <= N`` (see :func:`resolve_shard`).
    record : dict
        The provenance record (:func:`~deep_spectrum_extractor.extraction.provenance`).
    labels : Labels or None
    timestamps : bool
    root : Path, optional
    extra : ExtraOutput
    executor : optional
        Worker processes from :func:`~deep_spectrum_extractor.pipeline.start_workers`;
        by default they are started here.  Shut down when the shard is done.

    Returns
    -------
    ShardReport

    Raises
    ------
    ShardError
        A chunk that the counting pass did not see coming could not be plotted (the
        later shards would be cut wrongly); nothing is written.
    """
    index, count = shard
    if count < 1 or not 1 <= index <= count:
        raise ParameterError(f"shard {index}/{count}: shards are numbered 1 to N")
    output = Path(output)
    if output.suffix.lower() in BINARY_FORMATS:
        raise ParameterError(f"-shard writes ARFF or CSV, whose shards can be joined byte for "
                             f"byte; {output.name} would be {output.suffix[1:]}: name the "
                             "output .arff or .csv")
    workers = _Workers(options.processes, executor)
    try:
        report = _run_shard(files, output, settings, extractor, options, workers, shard=shard,
                            record=record, labels=labels, timestamps=timestamps, root=root,
                            extra=extra)
    finally:
        workers.close()
    return report


def _run_shard(files, output, settings, extractor, options, workers, *, shard, record, labels,
               timestamps, root, extra) -> ShardReport:
    from .extraction import provenance_comments
    from .output.writers import open_writer

    index, count = shard
    layout = survey(files, settings, options, workers=workers)
    begin, end = shard_bounds(layout, shard)
    report = ShardReport(shard_path(output, shard), shard, begin, end, layout.batches)
    # each input's outcome is reported by the shard holding its first position
    first_owned = bisect.bisect_left(layout.starts, begin, hi=len(files))
    last_owned = len(files) if index == count else \
        bisect.bisect_left(layout.starts, end, hi=len(files))
    for number in range(first_owned, last_owned):
        path = display_path(files[number])
        if layout.errors[number] is None:
            report.done.append(path)
        else:
            report.skipped.append((path, layout.errors[number]))

    writer = open_writer(report.path, timestamps=timestamps,
                         labels=labels.attributes if labels else None, record=record,
                         comments=provenance_comments(record))
    header = 0
    jobs = (make_job(layout, files, first, min(first + options.batch_size, end), settings,
                     options, root=root, extra=extra)
            for first in range(begin, end, options.batch_size))
    try:
        for rendered in workers.map(render_range, jobs):
            if rendered.failures:
                failure = rendered.failures[0]
                raise ShardError(
                    f"{display_path(files[failure.index])}: chunks from "
                    f"{failure.segment * layout.batch_size} on could not be plotted "
                    f"({failure.message}), which counting could not foresee; the later "
                    "shards were cut without knowing and would not merge into the bytes of "
                    "a single run: remove the file or extract without -shard")
            features = run_network(extractor, rendered.images, batch_size=options.batch_size)
            if not header:
                writer.write("", [], features[:0])  # the header alone
                header = writer.flush()
            for rows in attach_features(rendered, features):
                path = display_path(files[rows.index])
                label_rows = [labels.row(path, ts) for ts in rows.timestamps] if labels else None
                writer.write(path.name, rows.timestamps, rows.features, label_rows)
    except BaseException:
        writer.discard()
        raise
    report.rows = writer.rows
    writer.commit()
    fingerprint = _job_fingerprint(files, layout, record=record, labels=labels,
                                   timestamps=timestamps, root=root)
    shard_record = {
        "format": RECORD_FORMAT, "shard": index, "shards": count,
        "output": _kind(output), "fingerprint": fingerprint,
        "positions": [begin, end], "header_bytes": header, "rows": report.rows,
        "size": report.path.stat().st_size, "sha256": file_sha256(report.path),
        "files_done": [str(path) for path in report.done],
        "files_skipped": [{"file": str(path), "reason": reason}
                          for path, reason in report.skipped]}
    write_text_atomically(record_path(report.path), json.dumps(shard_record, indent=2) + "\n")
    return report


# --- merging ------------------------------------------------------------------------------

@dataclass
class MergeReport:
    """What :func:`merge_shards` wrote."""

    output: Path
    shards: int
    rows: int
    files_done: int
    skipped: list[tuple[Path, str]]


def _read_record(path: Path) -> dict:
    target = record_path(path)
    if not path.is_file():
        raise ShardError(f"{path} does not exist or is not a file")
    try:
        record = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path} has no shard record {target.name} beside it; only files "
                         "written with -shard i/N can be merged") from None
    except (OSError, ValueError) as exc:
        raise ShardError(f"cannot read the shard record {target}: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ShardError(f"{target} is not a deep-spectrum shard record")
    return record


def _differences(first: dict, other: dict) -> list[str]:
    """What differs between two job fingerprints, named for a person."""
    differences = []
    for section in ("settings", "network", "libraries"):
        old, new = first["provenance"].get(section, {}), other["provenance"].get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                differences.append(f"{section} {key}: {old.get(key)} vs {new.get(key)}")
    if first["provenance"].get("tool") != other["provenance"].get("tool"):
        differences.append(f"tool: {first['provenance'].get('tool')} vs "
                           f"{other['provenance'].get('tool')}")
    for key, what in (("timestamps", "timestamps"), ("labels", "labels"),
                      ("files", "the input files"), ("chunks", "the number of chunks")):
        if first.get(key) != other.get(key):
            differences.append(f"{what} differ")
    return differences


def merge_shards(shard_paths: Iterable[str | os.PathLike],
                 output: str | os.PathLike) -> MergeReport:
    """Join the shard files of one run into ``output``, as a single run writes it.

    The first shard's header is kept and every shard's rows follow in shard order; the
    result is byte-identical to the single run's ARFF or CSV file.  ``<output>.json``
    gets the same provenance and summary a single run writes.  The output is written
    under a temporary name and moved into place when complete.

    Parameters
    ----------
    shard_paths : iterable of path-like
        All ``N`` shard files of the run, in any order.
    output : path-like
        The merged file; its extension must be the shards' (``.arff`` or ``.csv``).

    Returns
    -------
    MergeReport

    Raises
    ------
    ShardError
        A shard is missing or given twice, a shard was made with other settings, inputs
        or number of shards than the others, a shard file changed since it was written,
        or no shard holds a row.
    """
    from .extraction import ExtractionReport, write_sidecar

    paths = [Path(path) for path in shard_paths]
    output = Path(output)
    if not paths:
        raise ShardError("no shard files given")
    records = [_read_record(path) for path in paths]
    first_path, first = paths[0], records[0]
    for path, record in zip(paths[1:], records[1:]):
        if record["shards"] != first["shards"]:
            raise ShardError(f"{path} is shard {record['shard']}/{record['shards']} but "
                             f"{first_path} is shard {first['shard']}/{first['shards']}: "
                             "they come from runs cut into different numbers of shards")
        differences = _differences(first["fingerprint"], record["fingerprint"])
        if differences or record["fingerprint"] != first["fingerprint"]:
            raise ShardError(f"{path} and {first_path} come from different runs ("
                             + "; ".join(differences or ["their job records differ"])
                             + "); merge only the shards of one run")
    count = first["shards"]
    by_number: dict[int, Path] = {}
    for path, record in zip(paths, records):
        number = record["shard"]
        if number in by_number:
            raise ShardError(f"shard {number}/{count} is given twice: {by_number[number]} and "
                             f"{path}")
        by_number[number] = path
    missing = [f"{number}/{count}" for number in range(1, count + 1) if number not in by_number]
    if missing:
        raise ShardError(f"shard(s) {', '.join(missing)} missing; a merge needs all {count} "
                         f"shards (given: {', '.join(str(path) for path in paths)})")
    if _kind(output) != first["output"]:
        raise ShardError(f"the shards are {first['output'].upper()} files; name the merged "
                         f"output .{first['output']} (not {output.name})")
    if any(output.resolve() == path.resolve() for path in paths):
        raise ShardError(f"-o {output} is one of the shard files; give another name")

    ordered = [(by_number[number], records[paths.index(by_number[number])])
               for number in range(1, count + 1)]
    header = None
    for path, record in ordered:
        if path.stat().st_size != record["size"] or file_sha256(path) != record["sha256"]:
            raise ShardError(f"{path} changed since its shard was written (its size or "
                             f"SHA-256 differs from {record_path(path).name}); run that "
                             "shard again")
        if record["rows"]:
            with open(path, "rb") as handle:
                this = handle.read(record["header_bytes"])
            if header is not None and this != header:
                raise ShardError(f"{path} has another header than the shards before it")
            header = this
    rows = sum(record["rows"] for _path, record in ordered)
    if header is None:
        raise ShardError(f"no shard holds a feature row; a single run would not have written "
                         f"{output} either")

    summary = ExtractionReport(output, rows=rows, committed=True)
    for _path, record in ordered:
        summary.done += [Path(path) for path in record["files_done"]]
        summary.skipped += [(Path(entry["file"]), entry["reason"])
                            for entry in record["files_skipped"]]
    with lock_output(output):
        partial = part_path(output)
        try:
            with output_errors(output), open(partial, "wb") as target:
                for number, (path, record) in enumerate(
                        item for item in ordered if item[1]["rows"]):
                    with open(path, "rb") as source:
                        if number:
                            source.seek(record["header_bytes"])
                        shutil.copyfileobj(source, target, 1 << 20)
            with output_errors(output):
                os.replace(partial, output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        write_sidecar(output, first["fingerprint"]["provenance"], summary)
    return MergeReport(output, count, rows, len(summary.done), summary.skipped)


def build_merge_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ds_merge_shards``."""
    parser = argparse.ArgumentParser(
        prog=MERGE_PROG, description="Merge the shard files written by extract_ds_features "
        "-shard i/N into one feature file, byte-identical to the file of a single run.")
    parser.add_argument("-o", required=True, metavar="OUTPUT",
                        help="the merged feature file (.arff or .csv, as the shards)")
    parser.add_argument("shards", nargs="+", metavar="SHARD",
                        help="all shard files of the run (<name>.shard-i-of-N.<ext>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``ds_merge_shards -o OUTPUT SHARD...``; returns the exit status (2: refused, 3: output)."""
    args = build_merge_parser().parse_args(argv)
    try:
        report = merge_shards(args.shards, args.o)
    except DeepSpectrumError as exc:
        print(f"{MERGE_PROG}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    print(f"{MERGE_PROG}: {report.rows} feature vectors from {report.shards} shard(s) "
          f"written to {report.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
