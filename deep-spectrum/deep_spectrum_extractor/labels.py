"""Labels for the feature rows: folder names, one explicit label, or a label file.

Every source yields a :class:`Labels` object: the label attributes (name and nominal
values, or numeric) and a lookup from a file (and, for time-continuous labels, a chunk
timestamp) to that row's label values.  Sources are checked against the input files
before any plotting, so a missing label stops the run at once.

A label file names each file by its bare name (``x.wav``, as the 2018 tool did) or by
its path relative to the input folder (``dog/x.wav``, as DeepSpectrum 0.6.x did);
:meth:`Labels.bind` matches the names to the inputs and refuses a bare name that two
input files share.
"""
from __future__ import annotations

import collections
import csv
import io
import math
import os
import warnings
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .errors import DeepSpectrumWarning, LabelError


@dataclass(frozen=True)
class LabelAttribute:
    """A label column: nominal with sorted ``values``, or numeric when ``values`` is None."""

    name: str
    values: tuple[str, ...] | None

    @property
    def numeric(self) -> bool:
        return self.values is None


class Labels:
    """Label values for every input file (and timestamp, when time-continuous)."""

    def __init__(self, attributes: list[LabelAttribute], by_file: dict, *,
                 time_continuous: bool = False, source: str = "", by_path: bool = False,
                 lines: dict[str, int] | None = None):
        self.attributes = attributes
        self._by_file = by_file
        self._lines = lines or {}  # label-file line of each name
        self.time_continuous = time_continuous
        self.source = source
        self._by_path = by_path  # keyed by full path (folder labels), else by file name
        self._bound: dict[Path, str] | None = None  # input -> its name in the file

    def _key(self, path: Path):
        if self._by_path:
            return path
        if self._bound is not None:
            return self._bound.get(path)
        return path.name

    def bind(self, files: list[Path], root: Path | None = None) -> Labels:
        """Match the label file's names to ``files`` (returns self).

        A name with folders is the file's path relative to ``root`` (the input folder);
        a bare name is the file's name, and is refused when two input files have it.
        """
        if self._by_path:
            return self
        bound: dict[Path, str] = {}
        by_name: dict[str, list[Path]] = collections.defaultdict(list)
        for path in files:
            relative = relative_name(path, root)
            if relative in self._by_file:
                bound[path] = relative
            elif path.name in self._by_file:
                by_name[path.name].append(path)
        for name, paths in by_name.items():
            if len(paths) > 1:
                raise LabelError(
                    f"{self.source}, line {self._lines.get(name, '?')}: {name} names no "
                    f"folder, but {len(paths)} input files have that name ({paths[0]} and "
                    f"{paths[1]}{' ...' if len(paths) > 2 else ''}); name them by their "
                    f"path relative to the input folder, e.g. {relative_name(paths[0], root)}")
            bound[paths[0]] = name
        self._bound = bound
        return self

    def listed(self, files: list[Path]) -> list[Path]:
        """The files that have labels, in order."""
        return [path for path in files if self._key(path) in self._by_file]

    def check(self, files: list[Path]) -> None:
        """Raise LabelError naming every file that has no label."""
        missing = sorted({str(self._key(path) or relative_name(path, None)) for path in files
                          if self._key(path) not in self._by_file})
        if missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more"
                                               if len(missing) > 20 else "")
            raise LabelError(f"no labels{' in ' + self.source if self.source else ''} for "
                             f"{len(missing)} file(s): {shown}")

    def check_timestamps(self, counts: dict[Path, int], *, start: Decimal,
                         hop: Decimal) -> None:
        """Raise LabelError unless every chunk has a time-continuous label.

        ``counts`` gives each file's number of chunks; chunk ``n`` is at ``start + n*hop``.
        Every file lacking labels is named, with its first unlabelled timestamp and the
        timestamps the label file has for it.
        """
        if not self.time_continuous:
            return
        problems = []
        for path, count in counts.items():
            have = self._by_file[self._key(path)]
            missing = [start + number * hop for number in range(count)
                       if start + number * hop not in have]
            if missing:
                known = sorted(have)
                span = f"{known[0]} to {known[-1]}" if known else "none"
                problems.append(f"{path.name}: {len(missing)} of its {count} chunks have no "
                                f"label, the first at {missing[0]} (labelled: {span})")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more file(s)"
                                               if len(problems) > 5 else "")
            raise LabelError(f"{self.source}: the time-continuous labels do not match the "
                             f"chunks of -t ... {hop} ({shown}); label every hop from "
                             f"{start} s or change -t")

    def unknown(self, files: list[Path]) -> list[str]:
        """Label-file rows that name no input file, as ``"line N: name"`` texts."""
        known = {self._key(path) for path in files}
        return [f"line {self._lines.get(name, '?')}: {name}"
                for name in self._by_file if name not in known]

    def row(self, path: Path, timestamp: Decimal | None) -> list[str]:
        """Label values of the row of ``path`` at ``timestamp``."""
        values = self._by_file[self._key(path)]
        if not self.time_continuous:
            return values
        try:
            return values[timestamp]
        except KeyError:
            raise LabelError(f"{self.source}: no label for {path.name} at timestamp "
                             f"{timestamp}") from None


def folder_labels(files: list[Path]) -> Labels:
    """Each file's parent folder name as its class (as the writers spell file names)."""
    from .output.writers import printable_name

    by_file = {path: [printable_name(path.parent.name)] for path in files}
    classes = tuple(sorted({values[0] for values in by_file.values()}))
    return Labels([LabelAttribute("class", classes)], by_file, source="folder names",
                  by_path=True)


def explicit_labels(files: list[Path], label: str) -> Labels:
    """The same class ``label`` for every file (``-el``)."""
    return Labels([LabelAttribute("class", (label,))], {path: [label] for path in files},
                  source="-el", by_path=True)


def read_label_file(path: str | os.PathLike, *, time_continuous: bool = False) -> Labels:
    """Labels from a CSV (or, by ``.tsv`` extension, tab separated) file with a header.

    The first column is the audio file name with extension; with ``time_continuous``
    the second column is the chunk timestamp in seconds.  The remaining columns are
    label attributes named by the header; a column whose values all parse as numbers
    is numeric, otherwise nominal with its sorted distinct values.
    """
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise LabelError(f"cannot read label file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise LabelError(f"label file {path}, line {line}: not UTF-8 text "
                         f"(byte 0x{exc.object[exc.start]:02x})") from exc
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise LabelError(f"label file {path} is empty; it needs a header row")
    header = [cell.strip() for cell in rows[0]]
    first_label = 2 if time_continuous else 1
    if len(header) <= first_label:
        need = "file name, timestamp and at least one label" if time_continuous \
            else "file name and at least one label"
        raise LabelError(f"label file {path}: the header {rows[0]!r} needs columns for {need}")
    names = header[first_label:]
    by_file: dict[str, Any] = {}
    lines: dict[str, int] = {}
    columns: list[list[str]] = [[] for _ in names]
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise LabelError(f"label file {path}, line {number}: {len(row)} columns, "
                             f"the header has {len(header)}")
        name = row[0].strip().replace("\\", "/").removeprefix("./")
        values = [cell.strip() for cell in row[first_label:]]
        lines.setdefault(name, number)
        if time_continuous:
            try:
                timestamp = Decimal(row[1].strip())
            except InvalidOperation:
                raise LabelError(f"label file {path}, line {number}: timestamp {row[1]!r} "
                                 "is not a number") from None
            per_time = by_file.setdefault(name, {})
            if timestamp in per_time:
                raise LabelError(f"label file {path}, line {number}: a second label for "
                                 f"{name} at {timestamp}")
            per_time[timestamp] = values
        else:
            if name in by_file:
                raise LabelError(f"label file {path}, line {number}: a second label row "
                                 f"for {name}")
            by_file[name] = values
        for column, value in zip(columns, values):
            column.append(value)
    attributes = [LabelAttribute(name, None if column and all(map(_is_number, column))
                                 else tuple(sorted(set(column))))
                  for name, column in zip(names, columns)]
    return Labels(attributes, by_file, time_continuous=time_continuous, source=str(path),
                  lines=lines)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def relative_name(path: Path, root: Path | None) -> str:
    """How a label file names ``path``: relative to ``root`` with ``/``, or its name."""
    if root is None:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def choose_labels(files: list[Path], *, root: Path | None = None, label_file=None,
                  explicit: str | None = None, no_labels: bool = False,
                  time_continuous: bool = False,
                  unlisted: str = "stop") -> tuple[Labels | None, list[Path]]:
    """The label source the options ask for, and the files to extract.

    ``no_labels``: None; ``label_file``: the label file, its names matched to ``files``
    (see :meth:`Labels.bind`); ``explicit``: one label; otherwise the folder names.  A
    file the label file does not name stops the run (``unlisted="stop"``, LabelError
    naming every such file) or is left out (``"skip"``, with a DeepSpectrumWarning saying
    how many: a label file then selects a partition of the corpus).

    Returns
    -------
    labels : Labels or None
    files : list of Path
        ``files``, without the left-out ones.
    """
    if unlisted not in ("stop", "skip"):
        raise ValueError(f"unlisted={unlisted!r} must be 'stop' or 'skip'")
    if no_labels:
        return None, files
    if label_file:
        labels = read_label_file(label_file, time_continuous=time_continuous).bind(files, root)
        if unlisted == "skip":
            listed = labels.listed(files)
            if not listed:
                raise LabelError(f"{label_file} names none of the {len(files)} input files")
            if len(listed) < len(files):
                warnings.warn(f"{len(files) - len(listed)} of {len(files)} input file(s) are "
                              f"not named in {label_file} and are left out",
                              DeepSpectrumWarning, stacklevel=2)
            files = listed
    elif explicit is not None:
        labels = explicit_labels(files, explicit)
    else:
        labels = folder_labels(files)
    labels.check(files)
    return labels, files
