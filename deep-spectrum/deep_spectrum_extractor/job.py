"""A job: everything one run needs, as one value, checked before any work.

Every way of running builds a :class:`Job` and hands it to
:func:`~deep_spectrum_extractor.run.run_job`: ``extract_ds_features`` and
``deepspectrum features`` (a feature file, possibly resumed, a shard or on a Dask
cluster), ``deepspectrum plot`` (images only), ``deepspectrum image-features`` (existing
pictures) and the Python API (features returned as data).  What comes back is a
:class:`Report`.

* :class:`Output` -- where the features go: a file, with or without timestamps,
  resumed or not, or one shard of a job array;
* :class:`Cluster` -- a Dask scheduler that runs the drawing and the network;
* :class:`Job` -- the inputs, the settings, the network, the labels, the output and the
  side outputs.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DeepConfig
from .errors import DeepSpectrumWarning, ParameterError
from .output.writers import BINARY_FORMATS
from .run.work import ExtraOutput
from .settings import FeatureSettings, RunOptions

if TYPE_CHECKING:
    from .labels import Labels

#: What a job's inputs are: audio to draw, or pictures drawn already.
KINDS = ("audio", "images")
#: What the name column of a feature file holds (:class:`Output`).
NAMES = ("file", "relative")


@dataclass(frozen=True)
class Output:
    """Where a job's features go.

    Parameters
    ----------
    path : Path
        The feature file; its extension picks the format (``.arff``, ``.parquet``,
        ``.npz``; anything else CSV).
    timestamps : bool
        Write each chunk's timestamp (only chunked runs have them).
    resume : bool
        Continue an interrupted run into the same file (ARFF and CSV).
    shard : (int, int), optional
        Write only shard ``i`` of ``N`` (:mod:`~deep_spectrum_extractor.sharding`), into
        ``<stem>.shard-i-of-N<ext>``.
    names : {'file', 'relative'}
        The name column: each input's file name (the 2018 tool) or its path relative to
        the input folder (DeepSpectrum 0.6.x).
    """

    path: Path
    timestamps: bool = True
    resume: bool = False
    shard: tuple[int, int] | None = None
    names: str = "file"

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if self.names not in NAMES:
            raise ParameterError(f"names={self.names!r} is not one of {', '.join(NAMES)}")
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 1 <= index <= count:
                raise ParameterError(f"shard {index}/{count}: shards are numbered 1 to N")

    def for_pair(self, net: str, layer: str) -> Output:
        """The output of one (network, layer) pair of a job that extracts several:
        ``<stem>.<net>.<layer><ext>`` beside :attr:`path`."""
        name = f"{self.path.stem}.{net}.{layer}{self.path.suffix}"
        return replace(self, path=self.path.with_name(name))

    @property
    def target(self) -> Path:
        """The file this job writes (the shard file for a shard)."""
        if self.shard is None:
            return self.path
        from .sharding import shard_path

        return shard_path(self.path, self.shard)


@dataclass(frozen=True)
class Cluster:
    """A Dask cluster that draws and extracts (see :mod:`~deep_spectrum_extractor.distributed`).

    Parameters
    ----------
    scheduler : str, path-like, distributed.Client or a cluster object
        A scheduler address, a scheduler file (``.json``), a client (left open) or a
        cluster such as ``LocalCluster`` or ``SLURMCluster``.
    ship_model : bool or None
        Send the model's bytes to the workers (True), let them read it from the same path
        (False), or send it unless every worker has an identical file there (None).
    threads : int, optional
        TensorFlow threads per worker (None: as a single-machine run here, for identical
        bytes).
    batches_per_task : int
        Batches per task.
    window : int, optional
        Tasks in flight at most (None: twice the cluster's threads, at least 4).
    timeout : float, optional
        Seconds to wait for any one task (None: no limit).
    """

    scheduler: object
    ship_model: bool | None = None
    threads: int | None = None
    batches_per_task: int = 1
    window: int | None = None
    timeout: float | None = None

    def __post_init__(self):
        for name in ("threads", "window"):
            _positive(name, getattr(self, name), optional=True)
        _positive("batches_per_task", self.batches_per_task)


@dataclass(frozen=True)
class Job:
    """What one run needs.

    Parameters
    ----------
    inputs : sequence of Path or InMemoryAudio
        In output order (paths of pictures for ``kind="images"``).
    settings : FeatureSettings
    options : RunOptions
    output : Output, optional
        None: the features are returned, not written (the Python API, ``plot``).
    labels : Labels, optional
    root : Path, optional
        The input folder: side outputs and the job's fingerprint keep paths relative
        to it.
    extra : ExtraOutput
        Chunk plots, audio and labelled figures written beside the features.
    cluster : Cluster, optional
        Run on a Dask cluster instead of this machine's processes.
    stop_on_error : bool
        Stop at the first input that cannot be used instead of skipping it.
    config : DeepConfig, optional
        Where the network of ``settings.net`` is found (the package's deep.conf by
        default) and whether a GPU may be used.
    model : Path, optional
        A model file to use instead of the one ``config`` names for ``settings.net``.
    kind : {'audio', 'images'}
    networks : sequence of (str, str)
        Several (network, layer) pairs whose features are extracted from the same
        pictures, each network running once per batch for all its layers; with an
        output, each pair is written to a file of its own (:meth:`Output.for_pair`).
        Empty: the one pair ``(settings.net, settings.layer)``.
    statistics : bool
        One row per input instead of one per chunk: the mean, standard deviation,
        minimum and maximum of every feature over the input's chunks
        (:mod:`~deep_spectrum_extractor.run.statistics`).
    """

    inputs: Sequence[Any]
    settings: FeatureSettings
    options: RunOptions = RunOptions()
    output: Output | None = None
    labels: Labels | None = None
    root: Path | None = None
    extra: ExtraOutput = ExtraOutput()
    cluster: Cluster | None = None
    stop_on_error: bool = False
    config: DeepConfig | None = None
    model: Path | None = None
    kind: str = "audio"
    statistics: bool = False
    networks: Sequence[tuple[str, str]] = ()

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "networks", tuple((str(net), str(layer))
                                                   for net, layer in self.networks))
        if self.kind not in KINDS:
            raise ParameterError(f"kind={self.kind!r} is not one of {', '.join(KINDS)}")
        pairs = self.pairs
        if len(set(pairs)) < len(pairs):
            raise ParameterError(f"a (network, layer) pair is given twice: {pairs}")
        if len(pairs) > 1 and self.model is not None:
            raise ParameterError("a model file given for the job runs one network; it cannot "
                                 "be used with several (network, layer) pairs")

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The (network, layer) pairs extracted, in output order."""
        return tuple(self.networks) or ((self.settings.net, self.settings.layer),)

    @property
    def outputs(self) -> list[Output]:
        """The output of each pair, in pair order (none without an output)."""
        if self.output is None:
            return []
        if len(self.pairs) == 1:
            return [self.output]
        return [self.output.for_pair(net, layer) for net, layer in self.pairs]

    def for_pair(self, net: str, layer: str) -> Job:
        """The job of one of the pairs alone: its settings, its output file."""
        if (net, layer) not in self.pairs:
            raise ValueError(f"({net!r}, {layer!r}) is not a pair of this job")
        output = self.outputs[self.pairs.index((net, layer))] if self.output else None
        return replace(self, settings=replace(self.settings, net=net, layer=layer),
                       networks=(), output=output)

    def check(self) -> None:
        """Refuse what cannot work, before anything is loaded or drawn.

        Checks the output (not an input, not a folder, a format that can do what is
        asked), and with time-continuous labels that every chunk of every input has a
        label (which reads every input once).  Warns (:class:`DeepSpectrumWarning`) about
        settings that lose data silently.
        """
        if not self.inputs:
            raise ParameterError("the job has no inputs")
        settings = self.settings
        if (settings.window is not None and settings.hop is not None
                and settings.hop > settings.window):
            warnings.warn(f"-t {settings.window} {settings.hop}: the hop is longer than the "
                          f"window, so {settings.hop - settings.window} s after every window "
                          "are never seen", DeepSpectrumWarning, stacklevel=2)
        if self.statistics and self.kind == "images":
            raise ParameterError("per-file statistics summarise the chunks of a recording; "
                                 "pictures have one feature vector each")
        if self.statistics and self.labels is not None and self.labels.time_continuous:
            raise ParameterError("time-continuous labels (--tc) label each chunk; per-file "
                                 "statistics write one row per file")
        if len(self.pairs) > 1 and self.cluster is not None:
            raise ParameterError("-scheduler runs one network and layer; run the cluster job "
                                 "once per (network, layer) pair, or extract several pairs on "
                                 "one machine or with -shard")
        for output in self.outputs:
            self._check_output(output)
        if self.labels is not None:
            unknown = self.labels.unknown(list(self._paths()))
            if unknown:
                shown = "; ".join(unknown[:5]) + (f"; and {len(unknown) - 5} more"
                                                  if len(unknown) > 5 else "")
                warnings.warn(f"{len(unknown)} row(s) of {self.labels.source} name no input "
                              f"file ({shown})", DeepSpectrumWarning, stacklevel=2)
        if self.labels is not None and self.labels.time_continuous:
            if settings.window is None or settings.hop is None:
                raise ParameterError("time-continuous labels (--tc) need -t")
            from .run.reader import open_input

            counts = {path: open_input(path, settings).count for path in self.inputs}
            self.labels.check_timestamps(counts, start=settings.start, hop=settings.hop)

    def _paths(self):
        return (path for path in self.inputs if isinstance(path, (str, os.PathLike)))

    def row_names(self) -> list[str]:
        """What the name column says of each input (see :attr:`Output.names`)."""
        from .run.reader import display_path, relative_path

        if self.output is not None and self.output.names == "relative":
            return [relative_path(path, self.root).as_posix() for path in self.inputs]
        return [display_path(path).name for path in self.inputs]

    def _check_output(self, output: Output) -> None:
        from .audio import AUDIO_EXTENSIONS
        from .images.loading import IMAGE_EXTENSIONS
        from .output.guard import check_outputs

        if output.path.is_dir():
            raise ParameterError(f"-o {output.path} is a directory; give a file name")
        suffix = output.path.suffix.lower()
        if output.resume and suffix in BINARY_FORMATS:
            raise ParameterError(f"--resume works for ARFF and CSV output, not {suffix}; run "
                                 "without --resume to start over")
        if output.shard is not None:
            if output.resume or self.cluster is not None:
                raise ParameterError("-shard runs on its own: without --resume and -scheduler")
            if suffix in BINARY_FORMATS:
                raise ParameterError(f"-shard writes ARFF or CSV, whose shards can be joined "
                                     f"byte for byte; {output.path.name} would be {suffix[1:]}:"
                                     " name the output .arff or .csv")
        extensions = IMAGE_EXTENSIONS if self.kind == "images" else AUDIO_EXTENSIONS
        check_outputs(output.path, list(self._paths()), root=self.root,
                      input_extensions=extensions,
                      side_outputs={"-wavout": (self.extra.wav_dir, (".wav",))})


@dataclass
class Report:
    """What a job did: rows written, the inputs done and skipped (with reasons).

    For a resumed run also what was kept from before; for a shard its positions.
    """

    output: Path | None = None
    outputs: list[Path] = field(default_factory=list)  # one per (network, layer) pair
    rows: int = 0
    done: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    committed: bool = False
    resumed_files: int = 0
    resumed_position: int = 0  # chunk positions before it were not drawn again
    resume_note: str | None = None  # why fewer files than journalled were kept
    positions: tuple[int, int] | None = None  # a shard's [begin, end)
    batches: int = 0  # of the whole job (a shard)
    gpu_missing: bool = False  # a GPU was allowed (gpu = 1) but TensorFlow saw none

    @property
    def resumed(self) -> bool:
        return bool(self.resumed_files or self.resumed_position or self.resume_note)

    def to_dict(self, output: Path | None = None) -> dict:
        """What a sidecar records of the run (of ``output``, one of :attr:`outputs`)."""
        output = output or self.output
        return {"output": output.name if output else None, "rows": self.rows,
                "files_done": len(self.done),
                "files_skipped": [{"file": str(path), "reason": reason}
                                  for path, reason in self.skipped]}


def _positive(name: str, value, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name}={value!r} must be a positive integer")
