"""A job's feature file: rows written as batches finish, resumable, with its provenance.

:class:`FeatureFile` is the sink :func:`~deep_spectrum_extractor.run.run_job` uses for a
job with an output file: it takes the driver's events and writes the rows into a
:class:`~deep_spectrum_extractor.output.FeatureWriter` as batches become final, in a
thread of their own.  Next to the part file it keeps a *journal* (``.<name>.journal``,
JSON lines): first the job's fingerprint, then a line per finished input (with its size
and SHA-256) and a checkpoint per batch (position, next input, the part file's size and
rows, the input being written, the plan's drops).  An interrupted job is continued with
``resume=True`` from the last checkpoint whose inputs are unchanged and whose rows the
part file holds: the part file is cut back to it, and the driver starts at its position,
so every chunk meets the network in the batch it had in an uninterrupted run and the
final file is byte-identical.

It also records how the output was made (:func:`provenance`): tool and library versions,
every setting that changes the features and the network file's SHA-256.
"""
from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import platform
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ParameterError
from .output.guard import output_errors, write_text_atomically
from .output.writers import open_writer, part_path
from .run import FileFeatures
from .run.driver import Checkpoint, Finished, Rows, Walk
from .run.reader import display_path, relative_path
from .settings import FeatureSettings, RunOptions

LIBRARIES = ("numpy", "scipy", "librosa", "soundfile", "matplotlib", "tensorflow-cpu",
             "tensorflow", "pillow")


def journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.journal")


def statistics_path(journal: Path, position: int) -> Path:
    """Where a checkpoint at ``position`` keeps the statistics of open inputs."""
    return journal.with_name(f"{journal.name}.{position}.npz")


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
               model_sha256: str | None = None, device: str | None = None) -> dict:
    """How a feature file is made: everything that can change its bytes.

    ``batch_size`` is included because the network's float results may differ in the
    last bits between batch shapes; ``device`` (where the network ran: ``CPU`` or
    ``GPU:0 (<name>)``) because a GPU's results differ from a CPU's in the last bits.
    """
    from .backend.tf import default_threads, onednn_enabled

    return {
        "tool": f"deep-spectrum {__version__}",
        # TensorFlow's thread count and kernels, like the batch size, can change the last bits
        "settings": {**settings.to_dict(), "batch_size": options.batch_size,
                     "tensorflow_threads": default_threads(),
                     "tensorflow_onednn": onednn_enabled()},
        "network": network_record(model_path, model_sha256 or file_sha256(model_path),
                                  device),
        "libraries": library_versions(),
    }


def network_record(model_path: Path, sha256: str, device: str | None) -> dict:
    """The provenance of the network: its file, SHA-256 and, when known, its device."""
    return {"file": model_path.name, "sha256": sha256, **({"device": device} if device else {})}


def provenance_comments(record: dict) -> list[str]:
    """The provenance as ARFF comment lines (without the leading ``%``)."""
    settings = ", ".join(f"{key}={value}" for key, value in record["settings"].items())
    libraries = ", ".join(f"{key} {value}" for key, value in record["libraries"].items())
    return [f"Deep Spectrum features written by {record['tool']}",
            f"settings: {settings}",
            f"network: {record['network']['file']} sha256={record['network']['sha256']}"
            + (f" device={record['network']['device']}" if "device" in record["network"]
               else ""),
            f"libraries: {libraries}"]


def sidecar_path(output: Path) -> Path:
    """``<output>.json``, beside the output."""
    return output.with_name(output.name + ".json")


def write_sidecar(output: Path, record: dict, report) -> Path:
    """Write the sidecar: provenance and the files done and skipped (atomically)."""
    path = sidecar_path(output)
    write_text_atomically(path, json.dumps({"provenance": record,
                                            "summary": report.to_dict(output)},
                                           indent=2) + "\n")
    return path


def job_record(job, model) -> dict:
    """The provenance of a job's output (:func:`provenance`; for pictures, the network
    and batch size only)."""
    if job.kind == "audio":
        record = provenance(job.settings, job.options, model.path, model.sha256,
                            model.device)
        if job.statistics:
            record["settings"]["file_statistics"] = True
        return record
    return {"tool": f"deep-spectrum {__version__}",
            "settings": {"input": "images", "net": job.settings.net,
                         "layer": job.settings.layer, "batch_size": job.options.batch_size},
            "network": network_record(model.path, model.sha256, model.device),
            "libraries": library_versions()}


class FeatureFile:
    """The sink of a job with an output file (see the module docstring).

    The output is committed only when every input has been handled and at least one
    row was written; the sidecar is written in both cases.  When the run stops by an
    exception (Ctrl-C, a signal turned into an exception, a stop at a bad input, a full
    disk) the part file and journal stay for ``resume``.
    """

    def __init__(self, job, model, report, *, resume_at: int | None = None):
        output = job.output
        self.job, self.report, self.path = job, report, output.path
        self.record = job_record(job, model)
        self.labels = job.labels
        self.timestamps = output.timestamps and job.settings.chunked and not job.statistics
        files = job.inputs
        self.keys = [str(relative_path(path, job.root)) for path in files]
        self.fingerprint = json.loads(json.dumps({  # as it reads back from the journal
            "provenance": self.record, "timestamps": self.timestamps,
            "labels": ([[a.name, a.values] for a in self.labels.attributes]
                       if self.labels else None),
            "names": output.names, "statistics": job.statistics, "files": self.keys}))
        self.journal = journal_path(output.path)
        self.state = self.resume_note = None
        if output.resume and self.journal.exists() and part_path(output.path).exists():
            self.state, self.resume_note = _resume_state(
                self.journal, self.fingerprint, files, part_path(output.path),
                at_most=resume_at)
        #: Where the walk starts: the checkpoint resumed from (``resume_at`` at most).
        self.resume_position = self.state.position if self.state else 0
        self.drops = self.state.drops if self.state else None
        self.accumulators = self.state.accumulators if self.state else []
        self._log: Any = None
        self._background: Any = None
        self._writer: Any = None
        self._driver: Any = None

    def report_resume(self) -> None:
        """Put what the resumed run keeps from before into the report."""
        state, report = self.state, self.report
        if state is not None:
            report.done += [path for path, error in state.before if error is None]
            report.skipped += [(path, error) for path, error in state.before
                               if error is not None]
            report.resumed_files, report.resumed_position = state.next_input, state.position
        report.resume_note = self.resume_note

    def begin(self, driver) -> Walk:
        """Write the journal's head, open the writer; the part of the plan to walk."""
        state, output = self.state, self.path
        with output_errors(output):
            output.parent.mkdir(parents=True, exist_ok=True)
            lines = state.lines if state else [json.dumps({"fingerprint": self.fingerprint})]
            self.journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._writer = open_writer(
            output, timestamps=self.timestamps,
            labels=self.labels.attributes if self.labels else None, record=self.record,
            comments=provenance_comments(self.record),
            resume=(state.offset, state.rows) if state else None,
            statistics=self.job.statistics)
        self._driver = driver
        with output_errors(output):
            self._log = open(self.journal, "a", encoding="utf-8")
        self._background = _WriterThread(
            self._writer, self._log, self.job, self.keys,
            max_rows=4 * self.job.options.batch_size,
            open_input=state.open_input if state else None)
        return Walk(begin=state.position, next_input=state.next_input) if state else Walk()

    def take(self, event) -> FileFeatures | None:
        if isinstance(event, Checkpoint):
            event = (event, self._driver.plan.dropped())
        with output_errors(self.path):
            self._background.put(event)
        if isinstance(event, Finished):
            return FileFeatures(event.index, display_path(self.job.inputs[event.index]),
                                error=event.error)
        return None

    def _drain(self) -> None:
        """Everything handed over is written and journalled."""
        try:
            with output_errors(self.path):
                self._background.finish()
        finally:
            self._log.close()

    def finish(self) -> None:
        self._drain()
        writer, report = self._writer, self.report
        report.rows = writer.rows
        if writer.rows == 0:
            writer.discard()
        else:
            writer.commit()
            report.committed = True
        with output_errors(self.path):
            self.journal.unlink(missing_ok=True)
            for path in self.journal.parent.glob(f"{glob.escape(self.journal.name)}.*.npz"):
                path.unlink(missing_ok=True)
        write_sidecar(self.path, self.record, report)

    def abort(self) -> None:
        """Keep the part file and journal for ``resume``."""
        if self._writer is None:
            return
        try:
            if self._background is not None:
                self._drain()
        except BaseException:  # the run's own exception is the one to see
            pass
        finally:
            self._writer.close()


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


@dataclass
class _ResumeState:
    """Where an interrupted run is continued: a checkpoint of its journal."""

    lines: list[str]          # the journal up to the checkpoint
    position: int
    next_input: int
    offset: int
    rows: int
    open_input: list | None   # [input, offset, rows, header written, fingerprint]
    drops: list
    accumulators: list        # statistics of the inputs open at the checkpoint
    before: list              # (path, error) of the inputs done before it


def _resume_state(journal: Path, fingerprint: dict, files: tuple, part: Path, *,
                  at_most: int | None = None) -> tuple[_ResumeState | None, str | None]:
    """The last checkpoint (at ``at_most`` or before) whose inputs are unchanged and
    whose rows the part file holds, and why a later one was not taken.

    Everything after it is done again; None: nothing can be kept.
    """
    previous, entries = _read_journal(journal)
    _check_same_job(previous, fingerprint, journal)
    size = part.stat().st_size
    inputs: dict[int, dict] = {}
    hashes: dict[int, dict | None] = {}

    def unchanged(index: int, recorded) -> bool:
        if index not in hashes:
            hashes[index] = input_fingerprint(files[index])
        return recorded is not None and recorded == hashes[index]

    checkpoints = []
    for number, entry in enumerate(entries):
        if "checkpoint" in entry:
            checkpoints.append((number, entry, dict(inputs)))
        elif "input" in entry:
            inputs[entry["input"]] = entry
    note = None
    for number, entry, done in reversed(checkpoints):
        if at_most is not None and entry["checkpoint"] > at_most:
            continue
        if entry["offset"] > size:
            note = (f"the part file holds {size} bytes but its journal says "
                    f"{entry['offset']}; the run goes on from an earlier point")
            continue
        changed = [index for index in range(entry["next_input"])
                   if not unchanged(index, done.get(index, {}).get("fingerprint"))]
        opened = entry.get("open")
        if opened is not None and not unchanged(opened[0], opened[4]):
            changed.append(opened[0])
        statistics = entry.get("statistics") or {"file": None, "inputs": []}
        changed += [index for index, recorded in statistics["inputs"]
                    if not unchanged(index, recorded)]
        if changed:
            note = (f"{display_path(files[min(changed)]).name} changed after it was "
                    "processed; the run goes on from it")
            continue
        accumulators = []
        if statistics["file"]:
            from .run.statistics import load_accumulators

            try:
                accumulators = load_accumulators(journal.with_name(statistics["file"]))
            except (OSError, ValueError, KeyError):
                note = (f"the statistics kept at position {entry['checkpoint']} are missing "
                        "or damaged; the run goes on from an earlier point")
                continue
        before = [(display_path(files[index]), done[index]["error"])
                  for index in range(entry["next_input"])]
        lines = [json.dumps({"fingerprint": previous})]
        lines += [json.dumps(line) for line in entries[:number + 1]]
        return _ResumeState(lines, entry["checkpoint"], entry["next_input"], entry["offset"],
                            entry["rows"], opened, entry["drops"], accumulators,
                            before), note
    return None, note


class _WriterThread:
    """Formats and writes rows in a thread of its own, and keeps the journal.

    Turning float32 values into text costs about as much per row as a CPU forward pass
    of a small network; done here it overlaps with the network's next batch (TensorFlow
    releases the GIL while it computes).  Up to ``max_rows`` rows wait for it, so the
    main thread rarely waits and memory stays bounded.

    It takes the driver's events in order: rows are written as they come (a writer that
    cannot take rows back gets each input's rows when the input is complete); an input
    that fails after some of its rows were written has them taken back; a checkpoint
    flushes the rows before its journal line is written, so the journal never claims
    rows the part file lacks.
    """

    def __init__(self, writer, log, job, keys: list[str], *, max_rows: int,
                 open_input: list | None = None):
        self._writer, self._log = writer, log
        self._files, self._keys, self._labels = job.inputs, keys, job.labels
        self._names = job.row_names()
        self._max_rows = max_rows
        self._open = open_input       # [input, offset, rows, header, fingerprint] being written
        self._fingerprints: dict[int, dict | None] = {}  # inputs with statistics open
        self._saved: list[Path] = []  # statistics files of the last checkpoints
        self._held: list = []         # rows of the open input (a writer that cannot stream)
        self._items: collections.deque = collections.deque()
        self._waiting_rows = 0
        self._closed = False
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="feature-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def _size(item) -> int:
        return item.rows.stop - item.rows.start if isinstance(item, Rows) else 0

    def put(self, item) -> None:
        size = self._size(item)
        with self._condition:
            while (self._items and self._waiting_rows + size > self._max_rows
                   and self._error is None):
                self._condition.wait()
            self._raise()
            self._items.append(item)
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
                item = self._items[0]
            try:
                if self._error is None:
                    self._handle(item)
            except BaseException as exc:  # handed to the main thread by put()/finish()
                self._error = exc
            with self._condition:
                self._items.popleft()
                self._waiting_rows -= self._size(item)
                self._condition.notify_all()

    def _handle(self, item) -> None:
        if isinstance(item, Rows):
            rows = item.rows
            if self._open is None or self._open[0] != rows.index:
                self._open = [rows.index, *self._writer_mark(),
                              input_fingerprint(self._files[rows.index])]
            if self._writer.streams:
                self._write(rows)
            else:
                self._held.append(rows)
        elif isinstance(item, Finished):
            opened = self._open if self._open and self._open[0] == item.index else None
            if opened is not None and item.error is not None and self._writer.streams:
                self._writer.rollback(tuple(opened[1:4]))
            if not self._writer.streams:
                if item.error is None:
                    for rows in self._held:
                        self._write(rows)
                self._held = []
            recorded = opened[4] if opened else input_fingerprint(self._files[item.index])
            self._journal({"input": item.index, "file": self._keys[item.index],
                           "error": item.error, "fingerprint": recorded})
            self._open = None
        else:
            checkpoint, drops = item
            offset = self._writer.flush()
            if not self._writer.streams:
                return  # binary outputs cannot be resumed
            entry = {"checkpoint": checkpoint.position, "next_input": checkpoint.next_input,
                     "offset": offset, "rows": self._writer.rows, "open": self._open,
                     "drops": drops}
            if checkpoint.accumulators is not None:
                entry["statistics"] = self._save_statistics(checkpoint.position,
                                                            checkpoint.accumulators)
            self._journal(entry)

    def _save_statistics(self, position: int, accumulators: list) -> dict:
        """Keep the per-input statistics of the inputs still open at a checkpoint in a
        file of their own (the journal names it); only the last two are kept."""
        from .run.statistics import save_accumulators

        if not accumulators:
            return {"file": None, "inputs": []}
        path = statistics_path(Path(self._log.name), position)
        save_accumulators(path, accumulators)
        self._saved.append(path)
        while len(self._saved) > 2:
            self._saved.pop(0).unlink(missing_ok=True)
        inputs = []
        for item in accumulators:
            if item.index not in self._fingerprints:
                self._fingerprints[item.index] = input_fingerprint(self._files[item.index])
            inputs.append([item.index, self._fingerprints[item.index]])
        return {"file": path.name, "inputs": inputs}

    def _writer_mark(self) -> tuple:
        return self._writer.mark() if self._writer.streams else (0, 0, False)

    def _write(self, rows) -> None:
        path = display_path(self._files[rows.index])
        labels = [self._labels.row(path, ts) for ts in rows.timestamps] if self._labels else None
        self._writer.write(self._names[rows.index], rows.timestamps, rows.features, labels)

    def _journal(self, entry: dict) -> None:
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
    for key, default in (("timestamps", None), ("labels", None), ("names", "file"),
                         ("statistics", False), ("files", None)):
        if previous.get(key, default) != current.get(key, default):
            differences.append(f"{key} differ" if key != "files" else "the input files differ")
    if differences:
        raise ParameterError("cannot resume: the interrupted run used other settings ("
                             + "; ".join(differences) + "); run without --resume to start over")
