"""What the commands tell the user, on stderr: messages, warnings, progress.

A :class:`Voice` speaks for one command: every line starts with the command's name,
option names in the library's messages are given in the command's own spelling
(``-fql`` for ``deepspectrum``, ``-ylim`` for ``extract_ds_features``), and ``-v``/``-vv``
(verbosity) add detail.  :class:`Progress` is the one progress bar of a run, with each
skipped input printed above it.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import DeepSpectrumWarning
from .options import CLASSIC, translate


@dataclass(frozen=True)
class Voice:
    """How one command speaks: its name, its options' spelling, its verbosity."""

    prog: str
    family: str = CLASSIC
    verbosity: int = 0

    def say(self, text: str) -> None:
        print(f"{self.prog}: {self.words(text)}", file=sys.stderr)

    def words(self, text: str) -> str:
        """``text`` with option names in this command's spelling."""
        return translate(text, self.family)

    def warn(self, text: str) -> None:
        self.say(f"warning: {text}")

    def error(self, text: str) -> None:
        self.say(f"error: {text}")

    def detail(self, text: str, level: int = 1) -> None:
        """Said with ``-v`` (level 1) or ``-vv`` (level 2) only."""
        if self.verbosity >= level:
            self.say(text)

    @contextlib.contextmanager
    def warnings(self):
        """Within the block, library warnings are said as ``PROG: warning: MESSAGE``."""
        def show(message, category, filename, lineno, file=None, line=None):
            self.warn(str(message))

        with warnings.catch_warnings():
            warnings.simplefilter("always", DeepSpectrumWarning)
            warnings.showwarning = show
            yield

    def announce_loading(self, inputs: str, config, pairs) -> None:
        """The first line of a run: what it is about to load (that takes seconds)."""
        from ..backend.networks import BUILDERS
        from ..settings import layers_by_network

        layers = layers_by_network(pairs)
        entries = [config.net(net) for net in layers]
        loads = "; ".join(f"{entry.name} ({entry.path}, layer{'s' if len(names) > 1 else ''} "
                          f"{', '.join(names)})"
                          for entry, names in zip(entries, layers.values()))
        self.say(f"{inputs}; loading {loads}")
        for entry in entries:
            if not entry.path.exists() and entry.name in BUILDERS:
                self.say(f"building {entry.path} from the installed weights (first use only)")


    def device_note(self, report, config) -> None:
        """Say that the network ran on the CPU although the config allows a GPU."""
        if report.gpu_missing:
            self.say(f"the network ran on the CPU: gpu = 1 in {config.path}, but TensorFlow "
                     "sees no GPU (none here, or no CUDA libraries: pipenv sync --categories "
                     "'packages gpu'); set gpu = 0 to run on the CPU without this note")


class Progress:
    """A progress bar on stderr, shown from :meth:`start` (or the first input done);
    each skipped input is printed above it with its reason."""

    def __init__(self, voice: Voice, total: int, unit: str):
        self.voice, self.total, self.unit = voice, total, unit
        self._bar: Any = None  # a tqdm bar once started

    def start(self) -> None:
        from tqdm import tqdm

        if self._bar is None:
            # no monitor thread: while workers start, the process's threads block SIGINT
            # and Ctrl-C waits for the main thread (see workers.py); a thread of tqdm's
            # with SIGINT unblocked would take it then
            tqdm.monitor_interval = 0
            self._bar = tqdm(total=self.total, unit=self.unit, file=sys.stderr)

    def update(self, result) -> None:
        """One input is done (``result.ok``) or skipped (``result.error``)."""
        self.start()
        self._bar.update()
        voice = self.voice
        if not result.ok:
            self._bar.write(f"{voice.prog}: skipped {result.path}: {voice.words(result.error)}",
                            file=sys.stderr)
        elif voice.verbosity:
            self._bar.write(f"{voice.prog}: done {result.path}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
