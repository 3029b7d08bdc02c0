"""Walking the plan: the one loop every way of running shares.

:class:`Driver` opens the inputs in order (counting their chunks into the
:class:`~.plan.Plan`), reads the samples of one range of whole batches after another
(:class:`~.reader.ChunkReader`, each input front to back), hands the ranges to an
executor (:mod:`.executors`) with a bounded number in flight, runs the network on the
drawn images where the executor does not, and yields what is final, in order:

* :class:`Rows` -- feature rows of consecutive chunks of one input,
* :class:`Finished` -- an input is complete (or skipped, with the reason),
* :class:`Checkpoint` -- everything before a position has been yielded.

A segment that cannot be read or drawn is dropped from the plan and the ranges after it
are planned again, exactly as the original pipeline shifted them.  Only the range being
drawn can report such a failure, and it can move chunks back to the start of the batch
before it, so rows become final one batch after they are drawn.  An input whose later
segment fails after some of its rows were yielded is reported as skipped: whoever
consumes the rows drops that input's rows (:class:`Finished` with an error).

One machine, a resumed run, a shard of a job array and a Dask cluster all use this
loop; they differ in the executor and in the range of positions walked (``begin``,
``end``).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from collections.abc import Iterator

from ..errors import DeepSpectrumError
from .plan import Plan
from .reader import ChunkReader, ReadFailure, display_path, open_input, relative_path
from .work import Failure, PieceRows, RangeJob, attach_features, error_text, run_network


class RunError(DeepSpectrumError):
    """A run cannot go on (a shard met a failure it cannot re-plan, an input changed)."""


@dataclass
class Rows:
    """Final feature rows of chunks ``rows.start:rows.stop`` of input ``rows.index``."""

    rows: PieceRows


@dataclass
class Finished:
    """Input ``index`` is complete; ``error`` says why it has no rows (None: it has)."""

    index: int
    error: str | None


@dataclass
class Checkpoint:
    """Every position before ``position`` and every input before ``next_input`` is out.

    ``accumulators``: the per-input statistics still open (:mod:`.statistics`), when the
    run writes them.
    """

    position: int
    next_input: int
    accumulators: list | None = None


@dataclass(frozen=True)
class Walk:
    """Which part of the plan a driver walks, and how it treats failures.

    ``begin`` must be a multiple of the batch size (a checkpoint of a resumed run, or a
    shard's first position); ``end`` None walks to the end of the run.  Without
    ``replan`` a failure raises :class:`RunError` (a shard cannot move the positions of
    the shards after it).  ``next_input``: inputs before it were reported already.
    """

    begin: int = 0
    end: int | None = None
    replan: bool = True
    next_input: int = 0
    batches_per_job: int = 1


class Driver:
    """Runs a job's inputs through ``executor`` (and ``network``), yielding final results.

    Parameters
    ----------
    job : Job
        Its inputs, settings, options (``batch_size``, ``renderer``), root and side
        outputs.
    executor : Inline, LocalProcesses or DaskExecutor
    network : object with ``features(images)``, optional
        Runs the network on drawn images (not needed when the executor does).
    drops : list of (input, segments, error), optional
        Segments an earlier part of the run dropped (:meth:`Plan.dropped`), replayed as
        the inputs are counted.
    """

    def __init__(self, job, executor, network=None, *, drops: list | None = None):
        self.inputs = job.inputs
        self.settings = job.settings
        self.executor = executor
        self.network = network
        self.batch_size = job.options.batch_size
        self.renderer = job.options.renderer
        self.root = job.root
        self.extra = job.extra
        self.plan = Plan(self.batch_size)
        self._replay = collections.defaultdict(list)
        for index, segments, error in drops or ():
            self._replay[index].append((range(min(segments), max(segments) + 1)
                                        if segments else range(0), error))
        self.readers: dict[int, ChunkReader] = {}
        self.pending: collections.deque = collections.deque()  # (begin, end, handle)
        self.held: collections.deque = collections.deque()     # PieceRows not yet final
        self.walk_range = Walk()
        self.cursor = self.confirmed = self.emitted = self.checkpoint = 0
        self.next_input = 0

    # -- counting ---------------------------------------------------------------------------
    def count_until(self, position: int | None) -> None:
        """Open inputs until the plan reaches ``position`` (None: all of them)."""
        while self.opened_to < len(self.inputs) and (position is None
                                                      or self.plan.end < position):
            index = len(self.plan)
            opened = open_input(self.inputs[index], self.settings, self.renderer,
                                probe=self.executor.probe)
            self.plan.add(opened.count, opened.error)
            for segments, error in self._replay.pop(index, ()):
                self.plan.drop(index, segments, error)
            if opened.stream is not None:
                self.readers[index] = ChunkReader(
                    index, opened, self.settings, relative_path(self.inputs[index], self.root))

    @property
    def opened_to(self) -> int:
        return len(self.plan)

    @property
    def counted_all(self) -> bool:
        return len(self.plan) == len(self.inputs)

    @property
    def stop(self) -> int | None:
        """The position the walk ends at, once known."""
        if self.walk_range.end is not None:
            return self.walk_range.end
        return self.plan.end if self.counted_all else None

    # -- planning ---------------------------------------------------------------------------
    def _plan_more(self) -> bool:
        """Submit ranges until the window is full; False when a read failure re-planned."""
        span = self.walk_range.batches_per_job * self.batch_size
        while len(self.pending) < self.executor.window:
            target = self.cursor + span
            if self.walk_range.end is not None:
                target = min(target, self.walk_range.end)
            self.count_until(target)
            end = min(target, self.plan.end)
            if end <= self.cursor:
                return True
            pieces = []
            for piece in self.plan.pieces(self.cursor, end):
                reader = self.readers[piece.index]
                try:
                    pieces.append(reader.piece(piece.start, piece.stop, piece.position))
                except ReadFailure as failure:  # a block that cannot be decoded, NaN ...
                    segment = failure.chunk // self.batch_size
                    self._failed([Failure(piece.index, range(segment, 1 << 62),
                                          error_text(failure.cause))])
                    return False
                except Exception as exc:  # opening it again for a re-plan failed
                    self._failed([Failure(piece.index, range(piece.start // self.batch_size,
                                                             1 << 62), error_text(exc))])
                    return False
            job = RangeJob(self.cursor, end, tuple(pieces), self.settings, self.batch_size,
                           self.renderer, self.extra)
            self.pending.append((job.begin, job.end, self.executor.submit(job)))
            self.cursor = end
        return True

    def _failed(self, failures: list[Failure]) -> None:
        """Drop the failed segments and plan everything after them again."""
        if not self.walk_range.replan:
            failure = failures[0]
            raise RunError(f"{display_path(self.inputs[failure.index])}: chunks from "
                           f"{failure.segments.start * self.batch_size} on could not be read "
                           f"or drawn ({failure.message}), which counting could not foresee; "
                           "the later shards were cut without knowing and would not merge "
                           "into the bytes of a single run: remove the file or extract "
                           "without -shard")
        size = self.batch_size
        changed = min(self.plan.drop(failure.index, failure.segments, failure.message)
                      for failure in failures)
        restart = min(changed // size * size, self.confirmed)
        if restart < self.emitted:
            raise RunError(f"{self.inputs[failures[0].index]} gave other results when read "
                           "again; was it changed during the run?")
        self.executor.cancel([handle for *_range, handle in self.pending])
        self.pending.clear()
        self.held = collections.deque(rows for rows in self.held if rows.position < restart)
        if self.held and self.held[-1].position + self.held[-1].stop - \
                self.held[-1].start > restart:
            last = self.held[-1]
            count = restart - last.position
            last.stop = last.start + count
            last.timestamps, last.durations = last.timestamps[:count], last.durations[:count]
            last.features = last.features[:count]
        self.cursor = self.confirmed = restart

    # -- collecting -------------------------------------------------------------------------
    def _collect(self) -> None:
        _begin, end, handle = self.pending.popleft()
        rendered = self.executor.result(handle)
        if rendered.failures:
            self._failed(rendered.failures)
            return
        if not self.executor.runs_network:
            attach_features(rendered, run_network(self.network, rendered.images,
                                                  batch_size=self.batch_size))
            rendered.images = None
        self.executor.release(handle)  # its pictures are used
        self.held.extend(rendered.rows)
        self.confirmed = end

    def _final(self) -> Iterator:
        """Yield what no failure can change any more."""
        size = self.batch_size
        done = self.stop is not None and self.confirmed >= self.stop and not self.pending
        limit = float("inf") if done else self.confirmed - size
        while self.held and self.held[0].position + self.held[0].stop - \
                self.held[0].start <= limit:
            rows = self.held.popleft()
            if self.plan.errors[rows.index] is None:
                yield Rows(rows)
        out = min(limit, self.confirmed)
        if self.held:
            out = min(out, self.held[0].position)
        self.emitted = max(self.emitted, int(out))
        while self.next_input < self.opened_to:
            index = self.next_input
            if not done and self.plan.starts[index] + self.plan.kept(index) > self.emitted:
                break
            reader = self.readers.pop(index, None)
            if reader is not None:
                reader.close()
            self.next_input += 1
            yield Finished(index, self.plan.errors[index])
        checkpoint = self.emitted // size * size
        if checkpoint > self.checkpoint:
            self.checkpoint = checkpoint
            yield Checkpoint(checkpoint, self.next_input)

    def walk(self, walk: Walk = Walk()) -> Iterator:
        """Walk ``walk.begin .. walk.end`` of the plan; yields Rows, Finished, Checkpoint."""
        if walk.begin % self.batch_size:
            raise ValueError(f"a walk starts at a batch boundary, not at {walk.begin}")
        self.walk_range = walk
        self.cursor = self.confirmed = self.emitted = self.checkpoint = walk.begin
        self.next_input = walk.next_input
        try:
            while True:
                if not self._plan_more():
                    continue
                yield from self._final()
                if not self.pending:
                    if self.stop is not None and self.cursor >= self.stop:
                        self.count_until(None)
                        yield from self._final()
                        return
                    raise RunError("the run stopped before every input was done")
                self._collect()
        finally:
            self.executor.cancel([handle for *_range, handle in self.pending])
            self.pending.clear()
            for reader in self.readers.values():
                reader.close()
