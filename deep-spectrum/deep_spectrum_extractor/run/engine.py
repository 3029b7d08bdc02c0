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
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
from pathlib import Path
from collections.abc import Generator, Iterator

import numpy as np

from ..errors import DeepSpectrumError
from .driver import Driver, Finished, Rows, RunError, Walk
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
        self.report = Report(job.output.target if job.output else None)

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
        if job.kind == "audio" and job.options.renderer == "numpy":
            from ..images.render import verify_renderer

            verify_renderer()  # the installed matplotlib still draws what the renderer draws
        with contextlib.ExitStack() as stack:
            if job.output is not None:
                from ..output.guard import lock_output

                stack.enter_context(lock_output(job.output.target))
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
        network, model = self._network(stack)
        if job.cluster is not None:
            from ..distributed import dask_executor

            executor = stack.enter_context(dask_executor(job.cluster, model))
        sink = _sink(job, model, report)
        driver = None
        if job.kind == "audio":
            driver = Driver(job, executor, network, drops=sink.drops)
        try:
            walk = sink.begin(driver)
            if job.cluster is not None:
                walk = dataclasses.replace(walk, batches_per_job=job.cluster.batches_per_task)
            events = driver.walk(walk) if driver is not None else _image_events(job, network)
            if job.statistics:
                from .statistics import PerInput

                events = PerInput(job.settings, sink.accumulators).events(events)
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
                    raise StopOnError(result.path, result.error)
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
        """The network that runs here (None on a cluster) and the model's description."""
        job = self.job
        if self.network is not None and job.output is None and job.cluster is None:
            return self.network, None
        model = _model(job)
        if job.cluster is not None:
            from ..backend.extractor import FrozenGraphExtractor, available_layers

            if model.layer not in available_layers(model.path):  # before any work
                FrozenGraphExtractor(model.path, model.layer, gpu=False)  # names the layers
            return None, model
        if self.network is not None:
            return self.network, model
        from ..backend.extractor import FrozenGraphExtractor

        network = FrozenGraphExtractor(model.path, model.layer, gpu=model.gpu)
        stack.callback(network.close)
        return network, model


@dataclasses.dataclass(frozen=True)
class Model:
    """The network file of a job, its layer, its SHA-256 and whether a GPU may be used."""

    path: Path
    layer: str
    gpu: bool
    sha256: str


def _model(job) -> Model:
    from ..backend.networks import resolve_model
    from ..config import load_config
    from ..extraction import file_sha256

    config = job.config or load_config(None)
    path = job.model or resolve_model(config, job.settings.net)[1]
    return Model(Path(path), job.settings.layer, config.gpu, file_sha256(path))


def _local_executor(job):
    if job.cluster is not None or job.kind != "audio":
        return None
    from . import start_executor

    return start_executor(job.options.processes, job.settings, job.options.renderer)


def _abandon_on_error(executor):
    def exit_(kind, value, traceback):
        if kind is not None:
            executor.abandon()
        return False

    return exit_


def _sink(job, model, report):
    if job.output is None:
        return Frames(job)
    if job.output.shard is not None:
        from ..sharding import ShardFile

        return ShardFile(job, model, report)
    from ..extraction import FeatureFile

    return FeatureFile(job, model, report)


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
