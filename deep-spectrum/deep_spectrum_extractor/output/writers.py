"""Writing feature rows as ARFF or CSV, exactly in the original tool's layout.

ARFF::

    @relation 'Deep Spectrum Features'

    @attribute name string
    @attribute timeStamp numeric        (only with -t and without --no_timestamps)
    @attribute neuron_0 numeric
    ...
    @attribute class {a,b}             (label attributes, unless --no_labels)

    @data
    file.wav,0.5,0.123,...,a

CSV: a header row with the same attribute names, then the same rows.

Rows are written as they come; the file is written under a temporary name beside the
target and renamed into place only by :meth:`FeatureWriter.commit`, so an interrupted
run never leaves a half-written output.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import LabelAttribute
from .float_text import float32_text
from .guard import OutputLock, lock_output, output_errors

RELATION = "Deep Spectrum Features"
_NEEDS_QUOTES = re.compile(r"[\s,'\"%{}\\?]|[\x00-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def arff_quote(value: str) -> str:
    """``value`` as an ARFF token: single-quoted (with backslash escapes) when needed."""
    if value and not _NEEDS_QUOTES.search(value):
        return value
    escaped = "".join(_ESCAPES.get(char, char) if char in _ESCAPES or ord(char) >= 32
                      else f"\\u{ord(char):04x}" for char in value)
    return f"'{escaped}'"


def printable_name(name: str) -> str:
    """``name`` as valid UTF-8 text, recognisably.

    A file name whose bytes are not UTF-8 reaches Python with those bytes as surrogate
    escapes, which no UTF-8 file can hold; they are written as ``\\xNN`` instead
    (``caf\\xe9.wav``), so the file still parses and the name can still be matched.
    """
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name decoding produced
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def feature_names(n_features: int, *, statistics: bool = False) -> list[str]:
    """The feature columns: ``neuron_0 ...``, or for per-input statistics (a quarter of
    the values each) ``mean_neuron_0 ... std_... min_... max_...``."""
    if statistics:
        from ..run.statistics import statistics_names

        return statistics_names(n_features // 4)
    return [f"neuron_{index}" for index in range(n_features)]


def attribute_names(n_features: int, *, timestamps: bool,
                    labels: list[LabelAttribute] | None, statistics: bool = False) -> list[str]:
    names = ["name"] + (["timeStamp"] if timestamps else [])
    names += feature_names(n_features, statistics=statistics)
    return names + [attribute.name for attribute in labels or []]


def format_features(features: np.ndarray) -> list[str]:
    """Each row's feature values, comma-separated, in the original's format.

    A value is written as ``str(numpy.float32(value))``: the shortest text that reads back
    as the same float32 (see :mod:`.float_text`, which computes it for whole arrays).
    """
    return float32_text(features)


def _csv_field(value: str) -> str:
    """``value`` as ``csv.writer(lineterminator="\\n")`` writes it inside a row."""
    if not value:
        return value
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([value])  # quotes fields with "\n"
    return buffer.getvalue()[:-1]


def part_path(path: Path) -> Path:
    """Where the rows of ``path`` are written until it is complete: ``.<name>.part`` beside it."""
    return path.with_name(f".{path.name}.part")


class OutputFile:
    """What every feature writer shares: a part file beside the target, moved into place
    by :meth:`commit`, and the output's lock (:func:`~.guard.lock_output`), held from
    opening to commit, discard or close.  Until the commit the target (and any previous
    version of it) is untouched; an OSError on the way becomes an OutputError naming
    the path and the reason.

    Subclasses open the part in ``_open`` and finish or abandon it in ``_finish`` and
    ``_abandon``.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.part = part_path(self.path)
        self._lock: OutputLock | None = lock_output(self.path)
        try:
            with output_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._open()
        except BaseException:
            self._release()
            raise

    def _open(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _abandon(self) -> None:
        raise NotImplementedError

    def commit(self) -> Path:
        """Finish the part file and move it into place; returns the output path."""
        try:
            with output_errors(self.path):
                self._finish()
                os.replace(self.part, self.path)
        finally:
            self._release()
        return self.path

    def discard(self) -> None:
        """Drop the part file; the target is left untouched."""
        try:
            with output_errors(self.path):
                try:
                    self._abandon()
                finally:
                    self.part.unlink(missing_ok=True)
        finally:
            self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    @property
    def closed(self) -> bool:
        return self._lock is None

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if not self.closed:
            if exc_type is None:
                self.commit()
            else:
                self.discard()


class FeatureWriter(OutputFile):
    """Streams feature rows into an ARFF or CSV file, committed atomically.

    Rows go to :func:`part_path` beside the target, which is renamed into place by
    :meth:`commit`; until then the target (and any previous version of it) is untouched.

    Parameters
    ----------
    path : path-like
        Output file; ``.arff`` selects ARFF, anything else CSV.
    timestamps : bool
        Write the ``timeStamp`` column.
    labels : list of LabelAttribute or None
        Label columns, or None for ``--no_labels``.
    comments : list of str
        ARFF only: ``%`` comment lines written before ``@relation`` (provenance).
    resume_offset : int or None
        Continue an interrupted part file: keep its first ``resume_offset`` bytes (a
        point where a file's rows ended) and append after them.
    resume_rows : int
        Rows already in the kept part.
    """

    def __init__(self, path: str | os.PathLike[str], *, timestamps: bool,
                 labels: list[LabelAttribute] | None, comments: Sequence[str] = (),
                 resume_offset: int | None = None, resume_rows: int = 0,
                 statistics: bool = False) -> None:
        self.arff = Path(path).suffix.lower() == ".arff"
        self.timestamps = timestamps
        self.statistics = statistics
        self.labels = labels
        self.comments = list(comments)
        self._resume_offset, self.rows = resume_offset, resume_rows
        self._header_written = resume_offset is not None and resume_offset > 0
        super().__init__(path)

    def _open(self) -> None:
        if self._resume_offset is None:
            self._file = open(self.part, "w", encoding="utf-8", newline="")
            self.rows = 0
        else:
            with open(self.part, "r+b") as raw:
                raw.truncate(self._resume_offset)
            self._file = open(self.part, "a", encoding="utf-8", newline="")

    def _write_header(self, n_features: int) -> None:
        names = attribute_names(n_features, timestamps=self.timestamps, labels=self.labels,
                                statistics=self.statistics)
        if not self.arff:
            self._file.write(",".join(_csv_field(name) for name in names) + "\n")
            return
        lines = [f"% {comment}" for comment in self.comments]
        lines += [f"@relation '{RELATION}'", ""]
        lines.append("@attribute name string")
        if self.timestamps:
            lines.append("@attribute timeStamp numeric")
        lines += [f"@attribute {name} numeric"
                  for name in feature_names(n_features, statistics=self.statistics)]
        for attribute in self.labels or []:
            kind = "numeric" if attribute.values is None else \
                "{" + ",".join(arff_quote(value) for value in attribute.values) + "}"
            lines.append(f"@attribute {arff_quote(attribute.name)} {kind}")
        lines += ["", "@data"]
        self._file.write("\n".join(lines) + "\n")

    def write(self, name: str, timestamps: list[Decimal | None], features: np.ndarray,
              labels: list[list[str]] | None = None) -> None:
        """Append the rows of one file.

        Parameters
        ----------
        name : str
            Value of the ``name`` column.
        timestamps : list of Decimal or None
            One per row.
        features : np.ndarray [shape=(rows, n_features)]
        labels : list of list of str, optional
            Label values per row (ignored when the writer has no label columns).
        """
        with output_errors(self.path):
            self._write(name, timestamps, features, labels)

    def _write(self, name: str, timestamps: list[Decimal | None], features: np.ndarray,
               labels: list[list[str]] | None) -> None:
        if not self._header_written:
            self._write_header(features.shape[1])
            self._header_written = True
        values = format_features(features)
        quote = arff_quote if self.arff else _csv_field
        first = quote(printable_name(name))
        for index, row_values in enumerate(values):
            row = [first]
            if self.timestamps:
                row.append(str(timestamps[index]))
            if row_values:  # empty only for a layer without units
                row.append(row_values)
            if self.labels and labels is not None:
                row += [value if attribute.numeric and self.arff else quote(value)
                        for attribute, value in zip(self.labels, labels[index])]
            self._file.write(",".join(row) + "\n")
        self.rows += len(values)

    def flush(self) -> int:
        """Push written rows to the operating system; returns the part file's size."""
        with output_errors(self.path):
            self._file.flush()
            return self._file.tell()

    #: Rows can be taken back (:meth:`mark`, :meth:`rollback`), so they are written as
    #: they come; a writer without it gets each input's rows when the input is complete.
    streams = True

    def mark(self) -> tuple[int, int, bool]:
        """Where the part file stands now, for :meth:`rollback`."""
        return self.flush(), self.rows, self._header_written

    def rollback(self, mark: tuple[int, int, bool]) -> None:
        """Take back every row written since ``mark`` (an input that failed late)."""
        offset, rows, header = mark
        with output_errors(self.path):
            self._file.flush()
            self._file.seek(offset)
            self._file.truncate()
        self.rows, self._header_written = rows, header

    def _finish(self) -> None:
        self._file.close()

    def _abandon(self) -> None:
        """Close even when the last buffered rows cannot be written (a full disk)."""
        with contextlib.suppress(OSError):
            self._file.close()  # closes the file even if its final flush fails

    def close(self) -> None:
        """Close the part file and keep it (an interrupted run can be resumed)."""
        try:
            with output_errors(self.path):
                self._abandon()
        finally:
            self._release()


#: Output formats by file extension; anything else is CSV.
BINARY_FORMATS = (".parquet", ".npz")


def open_writer(path: str | os.PathLike[str], *, timestamps: bool,
                labels: list[LabelAttribute] | None, record: dict[str, Any] | None = None,
                comments: Sequence[str] = (), resume: tuple[int, int] | None = None,
                statistics: bool = False) -> OutputFile:
    """A writer for ``path`` chosen by its extension.

    ``.arff``: ARFF (with ``comments`` as ``%`` lines), ``.parquet``: Parquet, ``.npz``:
    NumPy, anything else: CSV.  Only ARFF and CSV can continue a part file (``resume``:
    the bytes and rows to keep).  ``statistics``: the rows hold per-input statistics
    (:func:`feature_names`).
    """
    suffix = Path(path).suffix.lower()
    if suffix in BINARY_FORMATS:
        from .tables import NumpyFeatureWriter, ParquetFeatureWriter

        cls = ParquetFeatureWriter if suffix == ".parquet" else NumpyFeatureWriter
        return cls(path, timestamps=timestamps, labels=labels, record=record,
                   statistics=statistics)
    offset, rows = resume if resume else (None, 0)
    return FeatureWriter(path, timestamps=timestamps, labels=labels,
                         comments=comments if suffix == ".arff" else (),
                         resume_offset=offset, resume_rows=rows, statistics=statistics)
