"""Job arrays: a run cut into shards that merge into the bytes of a single run.

The network's float32 results for an image depend on the batch it is computed in (its
position and the batch's shape), so the parts of a run cannot simply take every N-th
file: each part must feed the network exactly the batches a single run feeds it.  Every
shard therefore counts the chunks of all inputs (opening each one, without decoding it,
see :mod:`~deep_spectrum_extractor.run.reader`), which gives the run's
:class:`~deep_spectrum_extractor.run.plan.Plan`, and walks its contiguous range of whole
batches with the same :class:`~deep_spectrum_extractor.run.driver.Driver` as a single
run: ``-shard i/N`` (or ``-shard slurm`` in a SLURM job array, see
:func:`resolve_shard`) gives a job an ``Output(shard=(i, N))``, whose
:class:`ShardFile` writes the ``i``-th of ``N`` ranges into its own file, and
:func:`merge_shards` (the ``ds_merge_shards`` command, :func:`main`) joins the shard
files into one that is byte-identical to the file a single run writes.

Failures that depend only on the settings and the sample rate (``-ylim`` leaving fewer
than two frequency rows ...) are found while counting, so such files count as skipped
from the start, as in a single run.  A shard that meets any other chunk it cannot read
or draw stops with a :class:`ShardError`, because the shards after it were cut without
knowing.

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
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Mapping

from .errors import DeepSpectrumError, ParameterError, exit_status
from .extraction import file_sha256
from .output.guard import lock_output, output_errors, write_text_atomically
from .output.writers import BINARY_FORMATS, part_path
from .run import FileFeatures
from .run.driver import Finished, Rows, Walk
from .run.reader import display_path, relative_path

#: Marks a shard record (the JSON file beside each shard).
RECORD_FORMAT = "deep-spectrum shard 1"
MERGE_PROG = "ds_merge_shards"


class ShardError(DeepSpectrumError):
    """A shard cannot be run or shard files cannot be merged."""


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


def shard_bounds(plan, shard: tuple[int, int]) -> tuple[int, int]:
    """Positions ``[begin, end)`` of shard ``i`` of ``N`` of a counted
    :class:`~deep_spectrum_extractor.run.plan.Plan`: a contiguous range of batches."""
    index, count = shard
    batches = plan.batches
    first, last = (index - 1) * batches // count, index * batches // count
    return first * plan.batch_size, min(last * plan.batch_size, plan.end)


def _job_fingerprint(job, plan, record: dict, timestamps: bool) -> dict:
    root, labels = job.root, job.labels
    keys = [str(relative_path(path, root)) for path in job.inputs]
    return json.loads(json.dumps({  # as it reads back from the record
        "provenance": record, "timestamps": timestamps,
        "labels": [[a.name, a.values] for a in labels.attributes] if labels else None,
        "names": job.output.names, "statistics": job.statistics,
        "files": {"count": len(keys),
                  "sha256": hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()},
        "chunks": plan.end}))


def _kind(output: Path) -> str:
    """The format ``open_writer`` picks for ``output``: ``arff``, ``csv`` or a binary one."""
    suffix = output.suffix.lower()
    return suffix[1:] if suffix in (".arff",) + BINARY_FORMATS else "csv"


class ShardFile:
    """The sink of a job with ``Output(shard=(i, N))``: shard ``i`` of ``N`` of the run.

    Counts the chunks of every input first (each shard does, so all agree on the cut),
    then takes the rows of its contiguous range of whole batches.  The shard file is a
    complete ARFF or CSV file (header and the rows of its range, in order; an input's
    rows may be split between two shards); beside it, ``<shard file>.json`` records the
    job's fingerprint, the header's length and the inputs done and skipped that belong to
    the shard (those whose first position it holds), for :func:`merge_shards`.  A chunk
    that counting did not see coming and that cannot be read or drawn stops the shard
    with a :class:`ShardError` (the later shards were cut without knowing); nothing is
    written then.
    """

    drops = None
    accumulators = ()

    def __init__(self, job, model, report):
        from .extraction import job_record

        self.job, self.report = job, report
        self.record = job_record(job, model)
        self.timestamps = (job.output.timestamps and job.settings.chunked
                           and not job.statistics)
        self.path = job.output.target
        self._names = job.row_names()
        self._writer = None
        self._header = 0

    def begin(self, driver) -> Walk:
        from .extraction import provenance_comments
        from .output.writers import open_writer

        driver.count_until(None)
        self.plan = plan = driver.plan
        index, count = self.job.output.shard
        begin, end = shard_bounds(plan, self.job.output.shard)
        self.report.positions, self.report.batches = (begin, end), plan.batches
        # each input's outcome is reported by the shard holding its first position
        inputs = len(self.job.inputs)
        self._owned = range(bisect.bisect_left(plan.starts, begin, hi=inputs),
                            inputs if index == count else
                            bisect.bisect_left(plan.starts, end, hi=inputs))
        if self.job.statistics:  # walk every chunk of the inputs it owns, and only those
            size, owned = plan.batch_size, self._owned
            first, last = plan.starts[owned.start], plan.starts[owned.stop]
            begin, end = (first // size * size, min(-(-last // size) * size, plan.end)) \
                if owned else (begin, begin)
            self.report.positions = (begin, end)
        labels = self.job.labels
        self._writer = open_writer(self.path, timestamps=self.timestamps,
                                   labels=labels.attributes if labels else None,
                                   record=self.record,
                                   comments=provenance_comments(self.record),
                                   statistics=self.job.statistics)
        return Walk(begin, end, replan=False)

    def take(self, event) -> FileFeatures | None:
        job = self.job
        if isinstance(event, Rows):
            rows = event.rows
            if job.statistics and rows.index not in self._owned:
                return None  # another shard has all of its chunks
            if rows.features is None:
                raise ValueError("rows reach the shard file with their features")
            if not self._header:
                self._writer.write("", [], rows.features[:0])  # the header alone
                self._header = self._writer.flush()
            path = display_path(job.inputs[rows.index])
            labels = ([job.labels.row(path, ts) for ts in rows.timestamps] if job.labels
                      else None)
            self._writer.write(self._names[rows.index], rows.timestamps, rows.features,
                               labels)
        elif isinstance(event, Finished) and event.index in self._owned:
            return FileFeatures(event.index, display_path(job.inputs[event.index]),
                                error=event.error)
        return None

    def finish(self) -> None:
        report, job = self.report, self.job
        report.rows = self._writer.rows
        self._writer.commit()
        report.committed = True
        index, count = job.output.shard
        begin, end = report.positions
        fingerprint = _job_fingerprint(job, self.plan, self.record, self.timestamps)
        shard_record = {
            "format": RECORD_FORMAT, "shard": index, "shards": count,
            "output": _kind(job.output.path), "fingerprint": fingerprint,
            "positions": [begin, end], "header_bytes": self._header, "rows": report.rows,
            "size": self.path.stat().st_size, "sha256": file_sha256(self.path),
            "files_done": [str(path) for path in report.done],
            "files_skipped": [{"file": str(path), "reason": reason}
                              for path, reason in report.skipped]}
        write_text_atomically(record_path(self.path), json.dumps(shard_record, indent=2) + "\n")

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.discard()


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
    for key, what in (("timestamps", "timestamps"), ("labels", "labels"), ("names", "names"),
                      ("statistics", "per-file statistics"),
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
    from .extraction import write_sidecar
    from .job import Report

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

    summary = Report(output, rows=rows, committed=True)
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
    from .cli.options import CLASSIC, StrictParser

    parser = StrictParser(
        prog=MERGE_PROG, family=CLASSIC, description="Merge the shard files written by "
        "extract_ds_features "
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
