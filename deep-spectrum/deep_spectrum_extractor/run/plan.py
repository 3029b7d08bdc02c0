"""The batch grid of a run, as a value.

The network's float32 results for an image depend (in the last bits) on the batch it is
computed in: its position and the batch's shape.  So every way of running a job -- one
process, worker processes, a resumed run, a shard of a job array, a Dask cluster --
feeds the network exactly the same batches: the chunks of all inputs, counted in input
order, are *positions*; position ``g`` is image ``g % B`` of batch ``g // B``.

A :class:`Plan` knows each input's number of chunks (or why it has none) and where its
first chunk sits.  Inputs are added in order as they are opened, so a run can start
before the last input is counted.  What the single-process pipeline of the original
design drew in one piece -- up to ``B`` consecutive chunks of one input, chunks
``s*B .. (s+1)*B`` -- is a *segment*; a segment that cannot be read or drawn is
dropped (:meth:`Plan.drop`), which moves every later chunk to another position.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass



@dataclass(frozen=True)
class Piece:
    """Chunks ``start:stop`` of input ``index``, the first at run position ``position``."""

    index: int
    start: int
    stop: int
    position: int


class Plan:
    """Where every chunk of a run meets the network.

    Parameters
    ----------
    batch_size : int
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.counts: list[int] = []
        self.errors: list[str | None] = []
        self.starts: list[int] = [0]     # starts[f]: position of input f's first chunk
        self._dropped: dict[int, set[int]] = {}

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def end(self) -> int:
        """The position after the last chunk of the inputs added so far."""
        return self.starts[-1]

    @property
    def batches(self) -> int:
        """Batches needed for the positions of the inputs added so far."""
        return -(-self.end // self.batch_size)

    def segments(self, index: int) -> int:
        """Segments of input ``index`` (dropped ones included)."""
        return -(-self.counts[index] // self.batch_size)

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
        size, ranges = self.batch_size, list[tuple[int, int]]()
        for segment in range(self.segments(index)):
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

    def drop(self, index: int, segments: range, error: str) -> int:
        """Remove ``segments`` of input ``index``; it keeps the first error it got.

        Returns the first position whose chunk changed.
        """
        size = self.batch_size
        changed = self.position(index, segments.start * size)
        self._dropped.setdefault(index, set()).update(
            range(segments.start, min(segments.stop, self.segments(index))))
        if self.errors[index] is None:
            self.errors[index] = error
        for later in range(index, len(self.counts)):
            kept = sum(stop - start for start, stop in self.kept_ranges(later))
            self.starts[later + 1] = self.starts[later] + kept
        return changed

    def dropped(self) -> list[tuple[int, list[int], str | None]]:
        """Every drop so far: ``(input, segments, error)``, to replay it on a new plan."""
        return [(index, sorted(segments), self.errors[index])
                for index, segments in sorted(self._dropped.items())]

    def owner(self, position: int) -> int:
        """The input whose chunk is at ``position`` (``position < end``)."""
        return bisect.bisect_right(self.starts, position) - 1

    def pieces(self, begin: int, end: int) -> list[Piece]:
        """The chunks at positions ``[begin, end)``, as pieces in order.

        Inputs up to ``end`` must have been added.
        """
        pieces = []
        position = begin
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

    def last_batch(self, index: int) -> int | None:
        """The batch holding input ``index``'s last kept chunk (None: it has none)."""
        kept = self.kept(index)
        if not kept:
            return None
        return (self.starts[index] + kept - 1) // self.batch_size
