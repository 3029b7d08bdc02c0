"""One feature vector per recording: statistics of every feature over its chunks.

With ``Job(statistics=True)`` (``--file_statistics``, ``--file-statistics``) each input
gets one row instead of one row per chunk: the mean, the standard deviation (ddof 0),
the minimum and the maximum of every feature over the input's chunks, in that order
(:data:`STATISTICS`).  They are computed as the chunk rows stream past, so a recording
of any length needs memory for one vector of each, and exact percentiles (which would
need every row) are not offered.

The mean and the variance are accumulated with Welford's update, in float64, one chunk
after another in chunk order; every way of running (one machine, workers, a resumed
run, shards, a cluster) hands the chunks of an input to :func:`per_input` in that order,
so the values are the same bytes on every path.  They are written as float32, like the
chunk features.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from collections.abc import Sequence
from typing import Any

import numpy as np

from .driver import Checkpoint, Finished, Rows
from .work import PieceRows

#: The statistics of a per-input row, in column order.
STATISTICS = ("mean", "std", "min", "max")


@dataclass
class Accumulator:
    """The running statistics of one input's chunks (float64)."""

    index: int
    count: int
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    first: Decimal | None = None   # timestamp of the first chunk
    span: float = 0.0              # seconds from the first chunk's start to the last's end

    @classmethod
    def start(cls, index: int, row: np.ndarray, timestamp, duration: float,
              settings_start: Decimal) -> Accumulator:
        value = row.astype(np.float64)
        return cls(index, 1, value.copy(), np.zeros_like(value), value.copy(), value.copy(),
                   timestamp, duration)

    def add(self, row: np.ndarray, timestamp, duration: float, settings_start) -> None:
        value = row.astype(np.float64)
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        np.minimum(self.minimum, value, out=self.minimum)
        np.maximum(self.maximum, value, out=self.maximum)
        begin = self.first if self.first is not None else settings_start
        at = timestamp if timestamp is not None else settings_start
        self.span = float(at - begin) + duration

    def row(self) -> np.ndarray:
        """``[mean..., std..., min..., max...]`` [shape=(1, 4 * n_features), float32]."""
        std = np.sqrt(self.m2 / self.count)
        return np.concatenate([self.mean, std, self.minimum, self.maximum])[np.newaxis] \
            .astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (a checkpoint of a resumable run)."""
        return {"index": np.array(self.index), "count": np.array(self.count),
                "mean": self.mean, "m2": self.m2, "minimum": self.minimum,
                "maximum": self.maximum,
                "first": np.array("" if self.first is None else str(self.first)),
                "span": np.array(self.span)}

    @classmethod
    def from_arrays(cls, arrays) -> Accumulator:
        first = str(arrays["first"])
        return cls(int(arrays["index"]), int(arrays["count"]), np.array(arrays["mean"]),
                   np.array(arrays["m2"]), np.array(arrays["minimum"]),
                   np.array(arrays["maximum"]), Decimal(first) if first else None,
                   float(arrays["span"]))


class PerInput:
    """Turns the driver's chunk rows into one statistics row per input.

    Hand it the driver's events one by one (:meth:`take`): every input's rows are folded
    into an :class:`Accumulator`; when the input is finished without error, one
    :class:`~.driver.Rows` event with its statistics row comes before its
    :class:`~.driver.Finished`.  A :class:`~.driver.Checkpoint` carries copies of the
    accumulators of the inputs still open as ``accumulators``, so that a resumed run can
    continue inside a recording (``state``).
    """

    def __init__(self, settings, state: Sequence[Accumulator] = ()):
        self.settings = settings
        self.open: dict[int, Accumulator] = {item.index: item for item in state}

    def take(self, event) -> list:
        """The events that ``event`` (the next of the driver's) turns into."""
        if isinstance(event, Rows):
            self._add(event.rows)
            return []
        if isinstance(event, Finished):
            done = self.open.pop(event.index, None)
            if event.error is None and done is not None:
                return [Rows(PieceRows(event.index, 0, 1, 0, [done.first], [done.span],
                                       done.row())), event]
        elif isinstance(event, Checkpoint):
            event.accumulators = [dataclasses.replace(
                item, mean=item.mean.copy(), m2=item.m2.copy(),
                minimum=item.minimum.copy(), maximum=item.maximum.copy())
                for item in self.open.values()]
        return [event]

    def _add(self, rows: PieceRows) -> None:
        start, features = self.settings.start, rows.features
        if features is None:
            raise ValueError("rows reach the statistics with their features")
        for number in range(rows.stop - rows.start):
            row, stamp, seconds = (features[number], rows.timestamps[number],
                                   rows.durations[number])
            item = self.open.get(rows.index)
            if item is None:
                self.open[rows.index] = Accumulator.start(rows.index, row, stamp, seconds,
                                                          start)
            else:
                item.add(row, stamp, seconds, start)


def statistics_names(n_features: int) -> list[str]:
    """Column names of a statistics row of ``n_features`` features:
    ``mean_neuron_0 ... std_neuron_0 ... min_neuron_0 ... max_neuron_0 ...``."""
    return [f"{name}_neuron_{index}" for name in STATISTICS for index in range(n_features)]


def save_accumulators(path, accumulators: list[Accumulator]) -> None:
    """Write the accumulators of a checkpoint to ``path`` (``.npz``, replaced whole)."""
    import os

    arrays: dict[str, Any] = {f"{number}.{key}": value
                              for number, item in enumerate(accumulators)
                              for key, value in item.to_arrays().items()}
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as handle:
        np.savez(handle, count=np.array(len(accumulators)), **arrays)
    os.replace(partial, path)


def load_accumulators(path) -> list[Accumulator]:
    """The accumulators :func:`save_accumulators` wrote (OSError, ValueError, KeyError
    when the file is missing or damaged)."""
    with np.load(path, allow_pickle=False) as data:
        return [Accumulator.from_arrays({key: data[f"{number}.{key}"] for key in
                                         ("index", "count", "mean", "m2", "minimum",
                                          "maximum", "first", "span")})
                for number in range(int(data["count"]))]
