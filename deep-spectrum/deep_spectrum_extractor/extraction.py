"""A whole extraction job: files in, one feature file out, resumable.

:func:`extract_to_file` runs the pipeline over a list of files and streams the rows into a
:class:`~deep_spectrum_extractor.output.FeatureWriter`.  Next to the part file it keeps a
*journal* (``.<name>.journal``, JSON lines): first the job's fingerprint, then one line per
finished file with the part file's size after it.  An interrupted job can be continued with
``resume=True``: the part file is cut back to the last finished file, finished files are not
processed again, and the first batch is padded so that every chunk meets the network at the
same batch position as in an uninterrupted run, which makes the final file byte-identical.

It also records how the output was made (:func:`provenance`): tool and library versions,
every setting that changes the features and the network file's SHA-256.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import platform
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import ParameterError
from .output.guard import lock_output, output_errors, write_text_atomically
from .output.writers import BINARY_FORMATS, open_writer, part_path
from .run import ExtraOutput, FileFeatures, extract_features
from .settings import FeatureSettings, RunOptions

LIBRARIES = ("numpy", "scipy", "librosa", "soundfile", "matplotlib", "tensorflow-cpu",
             "tensorflow", "pillow")


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.journal")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(settings: FeatureSettings, options: RunOptions, model_path: Path,
               model_sha256: str | None = None) -> dict:
    """How a feature file is made: everything that can change its bytes.

    ``batch_size`` is included because the network's float results may differ in the
    last bits between batch shapes.
    """
    from .backend.tf import default_threads, onednn_enabled

    return {
        "tool": f"deep-spectrum {__version__}",
        # TensorFlow's thread count and kernels, like the batch size, can change the last bits
        "settings": {**settings.to_dict(), "batch_size": options.batch_size,
                     "tensorflow_threads": default_threads(),
                     "tensorflow_onednn": onednn_enabled()},
        "network": {"file": model_path.name,
                    "sha256": model_sha256 or file_sha256(model_path)},
        "libraries": library_versions(),
    }


def provenance_comments(record: dict) -> list[str]:
    """The provenance as ARFF comment lines (without the leading ``%``)."""
    settings = ", ".join(f"{key}={value}" for key, value in record["settings"].items())
    libraries = ", ".join(f"{key} {value}" for key, value in record["libraries"].items())
    return [f"Deep Spectrum features written by {record['tool']}",
            f"settings: {settings}",
            f"network: {record['network']['file']} sha256={record['network']['sha256']}",
            f"libraries: {libraries}"]


@dataclass
class ExtractionReport:
    """What a job did: rows written and the files done and skipped (with reasons)."""

    output: Path
    rows: int = 0
    done: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    resumed_files: int = 0
    resume_note: str | None = None  # why fewer files than journalled were kept
    committed: bool = False

    def to_dict(self) -> dict:
        return {"output": self.output.name, "rows": self.rows, "files_done": len(self.done),
                "files_skipped": [{"file": str(path), "reason": reason}
                                  for path, reason in self.skipped]}


def sidecar_path(output: Path) -> Path:
    """``<output>.json``, beside the output."""
    return output.with_name(output.name + ".json")


def write_sidecar(output: Path, record: dict, report: ExtractionReport) -> Path:
    """Write the sidecar: provenance and the files done and skipped (atomically)."""
    path = sidecar_path(output)
    write_text_atomically(path, json.dumps({"provenance": record,
                                            "summary": report.to_dict()}, indent=2) + "\n")
    return path


class StopOnError(Exception):
    """Raised inside a job when ``stop_on_error`` is set and a file fails."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def extract_to_file(files: list[Path], output: Path, settings: FeatureSettings, extractor,
                    options: RunOptions, *, record: dict, labels=None, timestamps: bool,
                    root: Path | None = None, extra: ExtraOutput = ExtraOutput(),
                    resume: bool = False, stop_on_error: bool = False,
                    on_file: Callable[[FileFeatures], None] | None = None,
                    executor=None, source: Callable | None = None) -> ExtractionReport:
    """Extract features of ``files`` into ``output``; see the module docstring.

    ``source`` replaces the local pipeline (:func:`extract_features`) by another producer
    of the same FileFeatures, e.g. :func:`~deep_spectrum_extractor.distributed.distributed_source`.
    The output is committed only when every file has been handled and at least one row
    was written.  On an exception (Ctrl-C, a signal turned into an exception, a
    :class:`StopOnError`) the part file and journal stay for ``resume``.
    """
    with lock_output(output):
        return _extract_to_file(files, output, settings, extractor, options, record=record,
                                labels=labels, timestamps=timestamps, root=root, extra=extra,
                                resume=resume, stop_on_error=stop_on_error, on_file=on_file,
                                executor=executor, source=source)


def _extract_to_file(files, output, settings, extractor, options, *, record, labels,
                     timestamps, root, extra, resume, stop_on_error, on_file, executor,
                     source) -> ExtractionReport:
    report = ExtractionReport(output)
    keys = [str(path.relative_to(root)) if root is not None else path.name for path in files]
    fingerprint = json.loads(json.dumps({  # as it reads back from the journal
        "provenance": record, "timestamps": timestamps,
        "labels": [[a.name, a.values] for a in labels.attributes] if labels else None,
        "files": keys}))
    journal = journal_path(output)
    finished: list[dict] = []
    if resume and output.suffix.lower() in BINARY_FORMATS:
        raise ParameterError(f"--resume works for ARFF and CSV output, not "
                             f"{output.suffix}; run without --resume to start over")
    position = {key: number for number, key in enumerate(keys)}
    if resume and journal.exists() and part_path(output).exists():
        previous, entries = _read_journal(journal)
        _check_same_job(previous, fingerprint, journal)
        finished, report.resume_note = _still_valid(entries, files, position,
                                                    part_path(output))
    resume_offset = finished[-1]["offset"] if finished else None
    report.rows = finished[-1]["rows"] if finished else 0
    if not finished:
        with output_errors(output):
            output.parent.mkdir(parents=True, exist_ok=True)
            journal.write_text(json.dumps({"fingerprint": fingerprint}) + "\n",
                               encoding="utf-8")
    for entry in finished:
        path = files[position[entry["file"]]]
        if entry["error"] is None:
            report.done.append(path)
        else:
            report.skipped.append((path, entry["error"]))
    report.resumed_files = len(finished)
    todo = files[len(finished):]
    todo_keys = keys[len(finished):]

    writer = open_writer(output, timestamps=timestamps,
                         labels=labels.attributes if labels else None, record=record,
                         comments=provenance_comments(record), resume_offset=resume_offset,
                         resume_rows=report.rows)
    align = report.rows % options.batch_size
    try:
        with output_errors(output), open(journal, "a", encoding="utf-8") as log:
            background = _WriterThread(writer, log, todo_keys,
                                       max_rows=4 * options.batch_size)
            try:
                results = (source(todo, settings, extractor, options, root=root, extra=extra,
                                  align=align) if source is not None else
                           extract_features(todo, settings, extractor, options, root=root,
                                            extra=extra, align=align, executor=executor))
                for result in results:
                    if result.ok:
                        rows = ([labels.row(result.path, ts) for ts in result.timestamps]
                                if labels else None)
                        report.done.append(result.path)
                    else:
                        rows = None
                        report.skipped.append((result.path, result.error))
                    background.put(result, rows, todo[result.index])
                    if on_file is not None:
                        on_file(result)
                    if stop_on_error and not result.ok:
                        raise StopOnError(result.path, result.error)
            finally:
                background.finish()  # everything handed over is written and journalled
    except BaseException:
        writer.close()  # keep the part file and journal for resume
        raise
    report.rows = writer.rows
    if writer.rows == 0:
        writer.discard()
    else:
        writer.commit()
        report.committed = True
    with output_errors(output):
        journal.unlink(missing_ok=True)
    return report


def input_fingerprint(source) -> dict | None:
    """What identifies an input's content: its size and SHA-256 (None for in-memory audio).

    A file replaced by another of the same size and modification time is still told
    apart, which size and time alone would not do.
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        return {"size": os.path.getsize(source), "sha256": file_sha256(Path(source))}
    except OSError:
        return None  # unreadable now: never taken as unchanged


def _still_valid(entries: list[dict], files: list, position: dict[str, int],
                 part: Path) -> tuple[list[dict], str | None]:
    """The journal's leading entries that can be kept, and why the rest cannot.

    An entry is kept while its input's content is what was processed and the part file
    holds the rows it claims; the run goes on from the first entry that fails either.
    """
    size = part.stat().st_size
    for number, entry in enumerate(entries):
        key = entry.get("file")
        if position.get(key) != number:
            return entries[:number], f"the journal does not list {key} in input order"
        if entry["offset"] > size:
            return entries[:number], (f"the part file holds {size} bytes but its journal "
                                      f"says {entry['offset']} after {key}; the run goes on "
                                      f"from {key}")
        recorded = entry.get("input")
        if recorded is None or recorded != input_fingerprint(files[number]):
            return entries[:number], (f"{key} changed after it was processed; the run goes "
                                      "on from it")
    return entries, None


class _WriterThread:
    """Formats and writes finished files in a thread of its own.

    Turning float32 values into text costs about as much per row as a CPU forward pass
    of a small network; done here it overlaps with the network's next batch (TensorFlow
    releases the GIL while it computes).  Up to ``max_rows`` rows wait for it (at least
    one file), so the main thread rarely waits and memory stays bounded.  Each file's
    rows are flushed before its journal line is written, so the journal never claims
    rows the part file lacks.
    """

    def __init__(self, writer, log, keys: list[str], max_rows: int):
        self._writer, self._log, self._keys = writer, log, keys
        self._max_rows = max_rows
        self._items: collections.deque = collections.deque()
        self._waiting_rows = 0
        self._closed = False
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="feature-writer", daemon=True)
        self._thread.start()

    def put(self, result: FileFeatures, rows, source) -> None:
        size = len(result.timestamps)
        with self._condition:
            while (self._items and self._waiting_rows + size > self._max_rows
                   and self._error is None):
                self._condition.wait()
            self._raise()
            self._items.append((result, rows, source))
            self._waiting_rows += size
            self._condition.notify_all()

    def finish(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._items and not self._closed:
                    self._condition.wait()
                if not self._items:
                    return
                result, rows, source = self._items[0]
            try:
                if self._error is None:
                    self._write(result, rows, source)
            except BaseException as exc:  # handed to the main thread by put()/finish()
                self._error = exc
            with self._condition:
                self._items.popleft()
                self._waiting_rows -= len(result.timestamps)
                self._condition.notify_all()

    def _write(self, result: FileFeatures, rows, source) -> None:
        if result.ok:
            self._writer.write(result.path.name, result.timestamps, result.features, rows)
        offset = self._writer.flush()
        entry = {"file": self._keys[result.index], "offset": offset, "rows": self._writer.rows,
                 "error": result.error, "input": input_fingerprint(source)}
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()


def _read_journal(journal: Path) -> tuple[dict, list[dict]]:
    lines = journal.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])["fingerprint"]
    except (IndexError, ValueError, KeyError):
        raise ParameterError(f"cannot resume: {journal} is damaged; run without --resume") from None
    finished = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            break  # the last line was cut off when the run was killed
        finished.append(entry)
    return header, finished


def _check_same_job(previous: dict, current: dict, journal: Path) -> None:
    differences = []
    for section in ("settings", "network", "libraries"):
        old, new = previous["provenance"][section], current["provenance"][section]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                differences.append(f"{section} {key}: {old.get(key)} -> {new.get(key)}")
    for key in ("timestamps", "labels", "files"):
        if previous[key] != current[key]:
            differences.append(f"{key} differ" if key != "files" else "the input files differ")
    if differences:
        raise ParameterError("cannot resume: the interrupted run used other settings ("
                             + "; ".join(differences) + "); run without --resume to start over")
