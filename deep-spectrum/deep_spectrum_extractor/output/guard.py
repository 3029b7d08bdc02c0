"""Keeping outputs safe: one run per output, I/O failures in one line, inputs untouched.

Every way of writing a feature file goes through three things defined here:

* :func:`lock_output` -- an exclusive ``flock`` on ``.<name>.lock`` beside the output,
  held for the whole run.  A second run on the same output is refused at once with the
  other run's process named; the lock dies with its holder (a SIGKILLed run leaves no
  lock that blocks the next one).  It is re-entrant within a process, so the command, the
  job and the writer can each take it.
* :func:`output_errors` -- turns an ``OSError`` while writing into an :class:`OutputError`
  that names the path and says what is wrong (read-only, no space, permission ...).
* :func:`check_outputs` -- refuses, before any work, an output that is one of the inputs,
  an output named like an audio file, and side-output folders whose files would be read
  back as input.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator

from ..errors import OutputError, ParameterError, describe_os_error

@contextlib.contextmanager
def output_errors(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, an OSError becomes ``OutputError("cannot write PATH: reason")``.

    ``path`` is what the user knows: the output, not the part or lock file beside it.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {os.fsdecode(path)}: "
                          f"{describe_os_error(exc)}") from exc


def write_text_atomically(path: Path, text: str) -> None:
    """Write a small text file (a sidecar, a record) under a temporary name, then rename."""
    partial = path.with_name(f".{path.name}.part")
    with output_errors(path):
        try:
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``.<name>.lock`` beside it."""
    return output.with_name(f".{output.name}.lock")


class OutputLock:
    """An exclusive lock on one output, held by this process; see :func:`lock_output`."""

    _held: dict[str, OutputLock] = {}
    _guard = threading.Lock()

    def __init__(self, output: Path):
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None
        self._depth = 0

    @classmethod
    def acquire(cls, output: str | os.PathLike) -> OutputLock:
        output = Path(output)
        key = os.path.abspath(output)
        with cls._guard:
            lock = cls._held.get(key)
            if lock is None:
                lock = cls(output)
                lock._lock()
                cls._held[key] = lock
            lock._depth += 1
            return lock

    def release(self) -> None:
        with self._guard:
            self._depth -= 1
            if self._depth:
                return
            del self._held[os.path.abspath(self.output)]
            fd, self._fd = self._fd, None
            # unlink before unlocking: a run waiting on this inode sees it was removed
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            if fd is not None:
                os.close(fd)

    def _lock(self) -> None:
        with output_errors(self.output):
            self.output.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(100):
            with output_errors(self.output):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(f"{self.output} is being written by another run ({holder}); "
                                  "wait for it to end, or give another output name") from None
            except OSError as exc:
                os.close(fd)
                raise OutputError(f"cannot lock {self.output} (with {self.path.name}): "
                                  f"{describe_os_error(exc)}") from exc
            try:  # the holder before us may have removed the file we opened
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            with output_errors(self.output):
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(_holder_record()).encode("utf-8"))
            return
        raise OutputError(f"cannot lock {self.path}: it keeps being replaced")

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *_exc_info) -> None:
        self.release()


def lock_output(output: str | os.PathLike) -> OutputLock:
    """Lock ``output`` for this process until ``release()`` (or the end of a ``with``).

    Raises
    ------
    OutputError
        Another process holds the lock (the message names it), or the lock file cannot
        be created (a read-only folder, a full disk ...).
    """
    return OutputLock.acquire(output)


def _holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else ""}


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        text = f"process {record['pid']} on {record['host']}, started {record['started']}"
        return text + (f": {record['command']}" if record.get("command") else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is still starting"


# --- checks before any work ---------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def check_outputs(output: Path, inputs: list[Path], *, root: Path | None,
                  side_outputs: dict[str, tuple[Path | None, tuple[str, ...]]] | None = None,
                  input_extensions: tuple[str, ...] = ()) -> None:
    """Refuse outputs that would overwrite an input or be read back as one.

    Parameters
    ----------
    output : Path
        The feature file (``-o``).
    inputs : list of Path
        The input files of the run.
    root : Path or None
        The input folder (None for a single input file).
    side_outputs : dict
        Option name -> (folder or None, extensions of the files written there), e.g.
        ``{"-wavout": (Path("chunks"), (".wav",))}``.
    input_extensions : tuple of str
        Extensions the input search picks up.

    Raises
    ------
    ParameterError
    """
    if output.suffix.lower() in input_extensions:
        raise ParameterError(f"-o {output} names an input file type ({output.suffix}); the "
                             "features are written as ARFF, CSV, Parquet or NPZ by the "
                             "output's extension: give e.g. -o features.arff")
    for path in inputs:
        if _same_file(output, path):
            raise ParameterError(f"-o {output} is one of the input files; give another name")
    if root is None:
        return
    for option, (folder, extensions) in (side_outputs or {}).items():
        if folder is not None and set(extensions) & set(input_extensions) \
                and _inside(folder, root):
            raise ParameterError(f"{option} {folder} is inside the input folder {root}: its "
                                 f"{'/'.join(extensions)} files would be read as input by "
                                 "the next run (or overwrite inputs); choose a folder "
                                 "outside it")
