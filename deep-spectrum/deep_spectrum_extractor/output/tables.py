"""Binary outputs: Parquet (``.parquet``) and NumPy (``.npz``).

Both hold the same columns as the ARFF/CSV files -- ``name``, ``timeStamp`` (seconds as
float64, only with timestamps), ``neuron_0 ...`` (float32) and the label columns (strings,
or float64 for numeric labels) -- and the provenance record as metadata.  Like the text
writers they write beside the target and rename it into place only when complete.

* Parquet: one row group per input file, written as it comes (pyarrow); the provenance is
  the schema metadata key ``deep_spectrum``.
* NPZ: arrays ``name`` (str), ``timeStamp`` (float64), ``features`` (float32, rows x
  neurons), ``label_<column>`` per label column and ``provenance`` (a JSON string);
  ``numpy.load(path)`` reads it without pickle.  Features are spooled to a temporary
  file while the run goes on, so memory stays flat.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from decimal import Decimal
from typing import Any

import numpy as np

from ..labels import LabelAttribute
from .guard import output_errors
from .writers import OutputFile, feature_names, printable_name


class _BinaryWriter(OutputFile):
    """Shared bookkeeping of the binary formats (a part file cannot be continued)."""

    streams = False  # rows cannot be taken back: they come when an input is complete

    def __init__(self, path: str | os.PathLike, *, timestamps: bool,
                 labels: list[LabelAttribute] | None, record: dict | None = None,
                 statistics: bool = False):
        self.timestamps = timestamps
        self.statistics = statistics
        self.labels = labels or []
        self.record = record or {}
        self.rows = 0
        super().__init__(path)

    def flush(self) -> int:
        return self.rows

    def write(self, name: str, timestamps: list[Decimal | None], features: np.ndarray,
              labels: list[list[str]] | None = None) -> None:
        """Append the rows of one file (as :meth:`FeatureWriter.write`)."""
        with output_errors(self.path):
            self._write(printable_name(name), timestamps, features, labels)
        self.rows += len(features)

    def close(self) -> None:
        self.discard()

    def _write(self, name: str, timestamps: list[Decimal | None], features: np.ndarray,
               labels: list[list[str]] | None) -> None:
        raise NotImplementedError

    def _label_column(self, attribute: LabelAttribute, values: list[str]):
        return np.array([float(v) for v in values], dtype=np.float64) if attribute.numeric \
            else np.array(values, dtype=str)


class ParquetFeatureWriter(_BinaryWriter):
    """Feature rows as a Parquet table, one row group per input file."""

    def _open(self) -> None:
        self._writer: Any = None  # a pyarrow ParquetWriter once the first rows came

    def _write(self, name: str, timestamps: list[Decimal | None], features: np.ndarray,
               labels: list[list[str]] | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        features = np.asarray(features, dtype=np.float32)
        columns = {"name": pa.array([name] * len(features), pa.string())}
        if self.timestamps:
            columns["timeStamp"] = pa.array([float(t) if t is not None else np.nan
                                             for t in timestamps], pa.float64())
        names = feature_names(features.shape[1], statistics=self.statistics)
        for index, column in enumerate(names):
            columns[column] = pa.array(features[:, index], pa.float32())
        for position, attribute in enumerate(self.labels):
            columns[attribute.name] = pa.array(
                self._label_column(attribute, [row[position] for row in labels or []]))
        table = pa.table(columns)
        if self._writer is None:
            metadata = {b"deep_spectrum": json.dumps(self.record).encode("utf-8")}
            self._writer = pq.ParquetWriter(self.part, table.schema.with_metadata(metadata))
        self._writer.write_table(table.replace_schema_metadata(self._writer.schema.metadata))

    def _finish(self) -> None:
        self._writer.close()

    def _abandon(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()


class NumpyFeatureWriter(_BinaryWriter):
    """Feature rows as an ``.npz`` archive of plain (pickle-free) arrays."""

    def _open(self) -> None:
        self._spool = tempfile.TemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}.")
        self._names: list[str] = []
        self._times: list[float] = []
        self._labels: list[list[str]] = [[] for _ in self.labels]
        self._width = 0

    def _write(self, name: str, timestamps: list[Decimal | None], features: np.ndarray,
               labels: list[list[str]] | None) -> None:
        features = np.ascontiguousarray(features, dtype=np.float32)
        self._width = features.shape[1]
        self._spool.write(features.tobytes())
        self._names += [name] * len(features)
        self._times += [float(t) if t is not None else np.nan for t in timestamps]
        for position, column in enumerate(self._labels):
            column += [row[position] for row in labels or []]

    def _finish(self) -> None:
        self._spool.flush()
        features = np.memmap(self._spool, dtype=np.float32, mode="r",
                             shape=(self.rows, self._width))
        arrays: dict[str, Any] = {"name": np.array(self._names, dtype=str), "features": features,
                  "provenance": np.array(json.dumps(self.record))}
        if self.timestamps:
            arrays["timeStamp"] = np.array(self._times, dtype=np.float64)
        if self.statistics:  # which statistic of which neuron each column holds
            arrays["columns"] = np.array(feature_names(self._width, statistics=True), dtype=str)
        for attribute, values in zip(self.labels, self._labels):
            arrays[f"label_{attribute.name}"] = self._label_column(attribute, values)
        with open(self.part, "wb") as handle:
            np.savez(handle, **arrays)
        del features
        self._spool.close()

    def _abandon(self) -> None:
        self._spool.close()
