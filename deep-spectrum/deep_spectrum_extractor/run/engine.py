"""Running a :class:`~deep_spectrum_extractor.job.Job`: the one function every way of
running calls.

:func:`run_job` checks the job, takes the output's lock, starts the executor (this
process, local worker processes while the network loads, or a Dask cluster), loads the
network, and walks the plan with the :class:`~.driver.Driver`.  The driver's events go
to the job's *sink*, which is where the ways of running differ:

* a feature file (:class:`~deep_spectrum_extractor.extraction.FeatureFile`): rows
  written batch by batch, a journal to resume from, a sidecar;
* one shard of a job array (:class:`~deep_spectrum_extractor.sharding.ShardFile`);
* no file (:class:`Frames`): each input's rows are handed back (the Python API,
  ``deepspectrum plot``).

A sink has four steps: ``begin(driver)`` (returns the part of the plan to walk),
``take(event)`` (returns an input's :class:`~.work.FileFeatures` when it is complete),
``finish()`` and ``abort()``.

A job with several (network, layer) pairs (``Job.networks``) draws every picture once
and runs each network once per batch for all its layers; :class:`Outputs` hands each
pair's columns to a sink of its own (the sink of ``job.for_pair(net, layer)``), so each
file is the file a job with that pair alone writes.  Per-input statistics are computed
per sink, on its columns.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
from pathlib import Path
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from ..errors import DeepSpectrumError
from .driver import Checkpoint, Driver, Finished, Rows, RunError, Walk
from .reader import display_path
from .work import FileFeatures, PieceRows


class StopOnError(DeepSpectrumError):
    """A job with ``stop_on_error`` met an input it cannot use."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def run_job(job, network=None, *, executor=None, on_load=None) -> Run:
    """Run ``job``; iterate the result for each input's outcome as it is complete.

    Nothing happens until the returned :class:`Run` is iterated (or :meth:`Run.wait`
    is called); stopping the iteration early stops the run (workers end, a part file
    stays for ``--resume``).

    Parameters
    ----------
    job : Job
    network : object with ``features(images) -> np.ndarray``, optional
        A loaded network (left open); by default the job's is loaded and closed here.
    executor : Inline or LocalProcesses, optional
        Workers started already (:func:`~deep_spectrum_extractor.run.start_executor`),
        used instead of starting some; the caller closes them.
    on_load : callable, optional
        Called with no argument once the job is checked and its output locked, before
        anything is loaded or started (a command announces what it loads).

    Returns
    -------
    Run
    """
    return Run(job, network, executor=executor, on_load=on_load)


class Run:
    """A job being run: yields a :class:`~.work.FileFeatures` per input, in input order
    (with ``features`` when the job has no output file); :attr:`report` says what was
    done."""

    def __init__(self, job, network=None, *, executor=None, on_load=None):
        from ..job import Report

        self.job = job
        self.network = network
        self.executor = executor
        self.on_load = on_load
        self._started = False
        targets = [output.target for output in job.outputs]
        self.report = Report(targets[0] if targets else None, targets)

    def wait(self):
        """Run to the end; returns the report."""
        for _result in self:
            pass
        return self.report

    def __iter__(self) -> Generator[FileFeatures, None, None]:
        if self._started:
            raise RuntimeError("a run is iterated once; call run_job again to run the job "
                               "again")
        self._started = True
        job = self.job
        job.check()
        with contextlib.ExitStack() as stack:
            if job.output is not None:
                from ..output.guard import lock_output

                for target in self.report.outputs:
                    stack.enter_context(lock_output(target))
            yield from self._run(stack)

    def _run(self, stack: contextlib.ExitStack) -> Iterator[FileFeatures]:
        job, report = self.job, self.report
        if self.on_load is not None:
            self.on_load()
        executor = own = None
        if self.executor is not None:
            executor = self.executor
        else:
            executor = own = _local_executor(job)  # starts while the network loads
        if own is not None:
            stack.push(_abandon_on_error(own))
        if (job.kind == "audio" and job.options.renderer == "numpy"
                and not getattr(executor, "checks_renderer", False)):
            from ..images.render import verify_renderer

            # the installed matplotlib still draws what the renderer draws (workers that
            # check it themselves give their verdict before their first result)
            verify_renderer()
        network, models = self._network(stack)
        report.gpu_missing = bool(getattr(network, "gpu_missing", False))
        if job.cluster is not None:
            from ..distributed import dask_executor

            executor = stack.enter_context(dask_executor(job.cluster, models[job.settings.net]))
        sink = Outputs(job, models, report, network)
        driver = None
        if job.kind == "audio":
            driver = Driver(job, executor, network, drops=sink.drops)
        try:
            walk = sink.begin(driver)
            if job.cluster is not None:
                walk = dataclasses.replace(walk, batches_per_job=job.cluster.batches_per_task)
            events = driver.walk(walk) if driver is not None else _image_events(job, network)
            for event in events:
                result = sink.take(event)
                if result is None:
                    continue
                if result.ok:
                    report.done.append(result.path)
                else:
                    report.skipped.append((result.path, result.error))
                yield result
                if job.stop_on_error and not result.ok:
                    raise StopOnError(result.path, result.error or "")
        except BaseException as exc:
            sink.abort()
            if isinstance(exc, RunError) and job.output is not None and job.output.shard:
                from ..sharding import ShardError

                raise ShardError(str(exc)) from exc
            raise
        sink.finish()
        if own is not None:
            own.close()

    def _network(self, stack):
        """The network that runs here (None on a cluster) and the model of each network
        by name (none when a loaded network was given for a job without a file)."""
        job = self.job
        if self.network is not None and job.output is None and job.cluster is None:
            return self.network, {}
        from ..extraction import file_sha256

        models = {net: _model(job, net) for net, _layer in job.pairs}
        # the model files' SHA-256 in a thread while TensorFlow loads (hashlib and file
        # reads let other threads run): a full-size AlexNet's takes half a second
        hashing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-hash")
        hashes = {net: hashing.submit(file_sha256, model.path) for net, model in models.items()}
        hashing.shutdown(wait=False)
        try:
            network = self._load(stack, models)
        finally:
            for net, model in models.items():
                model.sha256 = hashes[net].result()
        return network, models

    def _load(self, stack, models):
        job = self.job
        if job.cluster is not None:
            from ..backend.extractor import FrozenGraphExtractor, available_layers

            model = models[job.settings.net]
            if model.layer not in available_layers(model.path):  # before any work
                FrozenGraphExtractor(model.path, model.layer, gpu=False)  # names the layers
            return None
        if self.network is not None:
            for model in models.values():
                model.device = getattr(self.network, "device", None)
            return self.network
        from ..backend.extractor import load_networks
        from ..settings import layers_by_network

        network = load_networks({net: (models[net].path, names)
                                 for net, names in layers_by_network(job.pairs).items()},
                                gpu=models[job.settings.net].gpu)
        stack.callback(network.close)
        for model in models.values():
            model.device = network.device
        return network


@dataclasses.dataclass
class Model:
    """The network file of a job, its layer, whether a GPU may be used, its SHA-256 and,
    once loaded, the device it runs on."""

    path: Path
    layer: str
    gpu: bool
    sha256: str = ""
    device: str | None = None


def _model(job, net: str) -> Model:
    from ..backend.networks import resolve_model
    from ..config import load_config

    config = job.config or load_config(None)
    path = job.model or resolve_model(config, net)[1]
    layer = next(layer for name, layer in job.pairs if name == net)
    return Model(Path(path), layer, config.gpu)


def _local_executor(job):
    if job.cluster is not None or job.kind != "audio":
        return None
    from . import start_executor

    return start_executor(job.options.processes, job.settings, job.options.renderer,
                          job.options.batch_size)


def _abandon_on_error(executor):
    def exit_(kind, value, traceback):
        if kind is not None:
            executor.abandon()
        return False

    return exit_


def _sink(job, model, report, *, resume_at: int | None = None):
    if job.output is None:
        return Frames(job)
    if job.output.shard is not None:
        from ..sharding import ShardFile

        return ShardFile(job, model, report)
    from ..extraction import FeatureFile

    return FeatureFile(job, model, report, resume_at=resume_at)


class Outputs:
    """The sinks of a job, one per (network, layer) pair written (one without a file).

    Every event goes to each sink with that sink's columns of the features (the network
    returns all pairs side by side, :attr:`widths` of ``network``), through the sink's
    per-input statistics when the job asks for them.  The sinks agree on where the walk
    begins: resumed feature files go back to the latest checkpoint they all hold.
    """

    def __init__(self, job, models: dict, report, network=None):
        self.network = network
        pairs = job.pairs if job.output is not None else job.pairs[:1]
        jobs = [job.for_pair(*pair) for pair in pairs]
        self.pairs = pairs if len(pairs) > 1 else None
        sinks = [_sink(each, models.get(each.settings.net), report) for each in jobs]
        starts = [getattr(sink, "resume_position", 0) for sink in sinks]
        while len(set(starts)) > 1:  # killed between the journal lines of two files
            first = min(starts)
            sinks = [sink if start == first else _sink(each, models[each.settings.net], report,
                                                        resume_at=first)
                     for sink, start, each in zip(sinks, starts, jobs)]
            starts = [sink.resume_position for sink in sinks]
        if sinks and hasattr(sinks[0], "report_resume"):
            sinks[0].report_resume()
        self.sinks = sinks
        self.statistics: list[Any] = [None] * len(sinks)
        if job.statistics:
            from .statistics import PerInput

            self.statistics = [PerInput(job.settings, sink.accumulators) for sink in sinks]
        self.drops = sinks[0].drops
        self._columns: list | None = None

    def begin(self, driver) -> Walk:
        walks = [sink.begin(driver) for sink in self.sinks]
        if any(walk != walks[0] for walk in walks):
            raise RuntimeError(f"the outputs of one job start at different points: {walks}")
        return walks[0]

    def take(self, event) -> FileFeatures | None:
        result = None
        for number, (sink, statistics) in enumerate(zip(self.sinks, self.statistics)):
            part = self._part(event, number)
            for item in statistics.take(part) if statistics else (part,):
                outcome = sink.take(item)
                if number == 0 and outcome is not None:
                    result = outcome
        return result

    def _part(self, event, number: int):
        """``event`` as sink ``number`` sees it: its own copy, with its columns."""
        if self.pairs is None:
            return event
        if isinstance(event, Rows):
            if self._columns is None:
                self._columns = self._pair_columns()
            rows = event.rows
            if rows.features is None:
                raise ValueError("rows reach the outputs with their features")
            return Rows(dataclasses.replace(rows, features=np.ascontiguousarray(
                rows.features[:, self._columns[number]])))
        if isinstance(event, Checkpoint):
            return dataclasses.replace(event)
        return event

    def _pair_columns(self) -> list[slice]:
        """Where each pair's features lie in the network's output."""
        columns = self.network.columns()
        return [columns[pair] for pair in self.pairs or ()]

    def finish(self) -> None:
        for sink in self.sinks:
            sink.finish()

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()


class Frames:
    """A sink that hands each input's rows back (no file): one FileFeatures per input.

    An input's rows are held until it is complete; for recordings of any length write a
    file instead.
    """

    drops = None
    accumulators = ()

    def __init__(self, job):
        self.job = job
        self._rows: dict[int, list[PieceRows]] = collections.defaultdict(list)

    def begin(self, driver) -> Walk:
        return Walk()

    def take(self, event) -> FileFeatures | None:
        if isinstance(event, Rows):
            self._rows[event.rows.index].append(event.rows)
            return None
        if not isinstance(event, Finished):
            return None
        parts = self._rows.pop(event.index, [])
        path = display_path(self.job.inputs[event.index])
        if event.error is not None or not parts:
            return FileFeatures(event.index, path, error=event.error)
        return FileFeatures(
            event.index, path,
            timestamps=[stamp for part in parts for stamp in part.timestamps],
            features=np.concatenate([part.features for part in parts]),
            durations=[seconds for part in parts for seconds in part.durations])

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _image_events(job, network) -> Iterator:
    """The events of a job whose inputs are pictures: each one chunk, in input order."""
    from ..images.loading import image_features

    for result in image_features(job.inputs, network, batch_size=job.options.batch_size):
        if result.ok and result.features is not None:
            yield Rows(PieceRows(result.index, 0, 1, result.index, [None], [0.0],
                                 result.features[np.newaxis]))
        yield Finished(result.index, result.error)
