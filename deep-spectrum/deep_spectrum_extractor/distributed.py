"""Extraction on a Dask cluster, with the bytes of a single-machine run.

A :class:`~deep_spectrum_extractor.job.Job` with a
:class:`~deep_spectrum_extractor.job.Cluster` gives the same results as on one machine,
in input order, but the drawing and the network run on the workers of a
``dask.distributed`` cluster: a local one, one started by ``dask-scheduler`` and
``dask-worker`` on a few machines, one on SLURM, PBS or SGE through ``dask-jobqueue``, or
on Kubernetes through ``dask-kubernetes`` (anything a ``distributed.Client`` can connect
to).

It is the run of one machine with another executor (:class:`DaskExecutor`): the client
walks the same plan with the same :class:`~deep_spectrum_extractor.run.driver.Driver`,
reads the audio (each input once, in order) and sends each task the samples of a
contiguous range of whole batches, which the worker draws and runs through the network.
Every worker process loads the network once and keeps it (:func:`worker_extractor`).

The number of TensorFlow threads changes the last bits too (the work is split by
thread), so the workers use as many as a single-machine run on the client machine
would (``threads``); beyond that, byte identity needs the same TensorFlow build and
CPU instruction set on the workers as on the machine of the run compared with.

The client keeps a bounded window of tasks in flight and yields every file as soon as
its rows are final, so memory stays flat on any corpus.  Tasks are pure: a worker that
dies (killed, out of memory, a lost node) has its tasks run again elsewhere by the
scheduler, and the output is still complete and identical.  A task is given up, with a
:class:`DistributedError`, after ``distributed.scheduler.allowed-failures`` (a
scheduler setting, default 3) workers died running it.  A chunk that cannot be drawn
makes the run re-plan the batches after it exactly as on one machine, and its file is
reported as skipped with the same reason.

The model reaches the workers in one of two ways:

- **by path**, when every worker sees the same file (a shared filesystem): each worker
  checks its SHA-256 against the client's once;
- **sent once** (``ship_model=True``), when the workers cannot see the path: the bytes
  are registered with the scheduler as a worker plugin (:class:`ModelFilePlugin`), which
  writes them to a file in each worker's local directory, including workers that join
  or restart later.

``ship_model=None`` (the default) sends the model unless every connected worker already
has an identical file at the path.

Examples
--------
On a laptop::

    >>> from distributed import LocalCluster                                 # doctest: +SKIP
    >>> from deep_spectrum_extractor.job import Cluster, Job, Output
    >>> from deep_spectrum_extractor.run import run_job
    >>> with LocalCluster(n_workers=4, threads_per_worker=1) as cluster:     # doctest: +SKIP
    ...     job = Job(files, settings, output=Output("features.arff"),
    ...               cluster=Cluster(cluster))
    ...     report = run_job(job).wait()

On SLURM with ``dask-jobqueue`` (one single-threaded worker per job)::

    >>> from dask_jobqueue import SLURMCluster                               # doctest: +SKIP
    >>> cluster = SLURMCluster(cores=1, processes=1, memory="8GB")           # doctest: +SKIP
    >>> cluster.scale(jobs=32)                                               # doctest: +SKIP
    >>> report = run_job(Job(files, settings, output=Output("features.arff"),  # doctest: +SKIP
    ...                      cluster=Cluster(cluster))).wait()

With a running scheduler: ``scheduler="tcp://10.0.0.5:8786"`` or the path of a
scheduler file (``dask-scheduler --scheduler-file sched.json``).
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from distributed import Client, KilledWorker, WorkerPlugin

from .backend.tf import default_threads
from .errors import DeepSpectrumError, ModelError
from .run.work import RangeJob, RenderedRange, probe_failure
from .run.work import extract_range as extract_range_with

#: How often a task whose worker raised an exception is tried again (worker deaths are
#: counted apart, by the scheduler's ``allowed-failures``).
RETRIES = 2


class DistributedError(DeepSpectrumError):
    """The cluster cannot be reached or cannot finish the run."""


# --- the worker side ------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRef:
    """The network as a task names it: a path, its SHA-256, the layer and the device."""

    path: str
    sha256: str
    layer: str
    gpu: bool = True
    threads: int | None = None
    shipped: bool = False


_EXTRACTORS: dict[tuple, object] = {}          # one loaded network per model, per process
_MODEL_FILES: dict[str, Path] = {}             # sha256 -> file written by ModelFilePlugin
_VERIFIED: set[tuple] = set()                  # (path, size, mtime, sha256) checked here
_LOCK = threading.Lock()                       # guards _MODEL_FILES
_LOADING = threading.Lock()                    # guards _EXTRACTORS


class ModelFilePlugin(WorkerPlugin):
    """Puts a model file on every worker, present and future.

    Registered once with the scheduler, it is run by each worker as it starts (also one
    that joins or is restarted later) and writes the bytes to the worker's local
    directory, where :func:`worker_extractor` finds them by their SHA-256.

    Parameters
    ----------
    data : bytes
        The ``.pb`` file.
    sha256 : str
        Its SHA-256 (hex).
    filename : str
        The model file's name (kept for error messages).
    """

    idempotent = True

    def __init__(self, data: bytes, sha256: str, filename: str):
        self.data = data
        self.sha256 = sha256
        self.filename = filename
        self.name = f"deep-spectrum-model-{sha256[:16]}"

    def setup(self, worker) -> None:
        folder = Path(worker.local_directory) / "deep-spectrum-models"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.sha256[:16]}-{Path(self.filename).name}"
        if not (target.is_file() and target.stat().st_size == len(self.data)):
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            partial.write_bytes(self.data)
            os.replace(partial, target)
        with _LOCK:
            _MODEL_FILES[self.sha256] = target


def shipped_models() -> dict[str, str]:
    """SHA-256 -> local file of the models this process received by :class:`ModelFilePlugin`."""
    with _LOCK:
        return {sha256: str(path) for sha256, path in _MODEL_FILES.items()}


def single_machine_threads() -> int:
    """TensorFlow's intra-op threads of a single-machine run here (see ``default_threads``)."""
    return default_threads()


def _file_sha256(path: Path) -> str:
    from .extraction import file_sha256

    return file_sha256(path)


def has_model(path: str, sha256: str) -> bool:
    """Whether this machine has the model file at ``path`` with this SHA-256."""
    file = Path(path)
    try:
        return file.is_file() and _checked(file, sha256)
    except OSError:
        return False


def _checked(path: Path, sha256: str) -> bool:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, sha256)
    if key not in _VERIFIED:
        if _file_sha256(path) != sha256:
            return False
        _VERIFIED.add(key)
    return True


def _local_model_file(model: ModelRef) -> Path:
    if model.shipped:
        path = _MODEL_FILES.get(model.sha256)
        if path is None or not path.is_file():
            raise ModelError(f"{Path(model.path).name} was to be sent to worker "
                             f"{socket.gethostname()} but has not arrived there")
        return path
    path = Path(model.path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist on worker {socket.gethostname()};"
                         " put it on a filesystem every worker sees, or send it with "
                         "ship_model=True")
    if not _checked(path, model.sha256):
        raise ModelError(f"model file {path} on worker {socket.gethostname()} differs from "
                         f"the client's (SHA-256 {model.sha256[:12]}...); give the workers the "
                         "same file or send it with ship_model=True")
    return path


def worker_extractor(model: ModelRef):
    """The network of ``model`` in this process, loaded on first use and kept.

    Keyed by path, SHA-256, layer and device options, so a worker serves several runs
    and models without loading any of them twice.
    """
    from .backend.extractor import FrozenGraphExtractor

    key = (model.path, model.sha256, model.layer, model.gpu, model.threads, model.shipped)
    with _LOADING:  # one load at a time; the threads waiting then find it loaded
        extractor = _EXTRACTORS.get(key)
        if extractor is None:
            extractor = FrozenGraphExtractor(_local_model_file(model), model.layer,
                                             gpu=model.gpu, threads=model.threads)
            _EXTRACTORS[key] = extractor
    return extractor


def worker_device(gpu: bool) -> str:
    """Where the network runs in this worker (``CPU``, ``GPU:0 (<name>)``)."""
    from .backend.extractor import configure_devices

    return configure_devices(gpu)[0]


def extract_range(job: RangeJob, model: ModelRef) -> RenderedRange:
    """One task: draw the positions of ``job`` and run them through the network.

    Returns the rows with their features (no images), or the failures if a segment
    could not be drawn (then nothing is computed).
    """
    return extract_range_with(job, worker_extractor(model))


# --- the client side ------------------------------------------------------------------------

def _connect(scheduler, timeout: float | None) -> tuple[Client, bool]:
    """A client for ``scheduler`` and whether this module owns (and closes) it."""
    if isinstance(scheduler, Client):
        return scheduler, False
    options: dict[str, Any] = {"set_as_default": False}
    if timeout is not None:
        options["timeout"] = timeout
    try:
        if hasattr(scheduler, "scheduler_address"):  # a cluster object
            return Client(scheduler, **options), True
        text = os.fspath(scheduler)
        if text.endswith(".json") and Path(text).is_file():
            return Client(scheduler_file=text, **options), True
        return Client(text, **options), True
    except (OSError, TimeoutError) as exc:
        raise DistributedError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc


def _model_ref(client: Client, model, *, threads: int,
               ship_model: bool | None) -> ModelRef:
    path = str(model.path)
    if ship_model is None:
        seen = client.run(has_model, path, model.sha256)
        ship_model = not seen or not all(seen.values())
    if ship_model:
        client.register_plugin(ModelFilePlugin(model.path.read_bytes(), model.sha256,
                                               model.path.name))
    return ModelRef(path, model.sha256, model.layer, model.gpu, threads, bool(ship_model))


class DaskExecutor:
    """Draws and extracts the jobs of a run on the workers of a Dask cluster.

    Jobs carry their samples (the client reads the audio), so workers need no access to
    the inputs; they load the network once each (:func:`worker_extractor`).  A task is
    given to another worker when one dies, up to the scheduler's ``allowed-failures``.

    Parameters
    ----------
    client : distributed.Client
    model : ModelRef
    window : int, optional
        Tasks in flight at most (None: twice the cluster's threads, at least 4, checked
        every 10 s as workers come and go).
    timeout : float, optional
        Seconds to wait for any one task's result (None: no limit).
    """

    runs_network = True

    def __init__(self, client: Client, model: ModelRef, *, window: int | None = None,
                 timeout: float | None = None):
        self.client = client
        self.model = model
        self.timeout = timeout
        self._fixed = window
        self._window, self._checked = window or 4, -1e9
        self._token = uuid.uuid4().hex[:12]
        self._serial = 0

    @property
    def window(self) -> int:
        if not self._fixed and time.monotonic() - self._checked >= 10:
            self._checked = time.monotonic()
            self._window = max(4, 2 * sum(self.client.nthreads().values()))
        return self._window

    def submit(self, job: RangeJob):
        self._serial += 1
        return self.client.submit(extract_range, job, self.model, pure=False, retries=RETRIES,
                                  key=f"deep-spectrum-range-{self._token}-{self._serial}")

    def result(self, future) -> RenderedRange:
        try:
            return future.result(timeout=self.timeout)
        except KilledWorker as exc:
            raise DistributedError(
                f"the workers running task {future.key} died too often (killed, out of "
                "memory ...); the scheduler gave it up after its allowed-failures") from exc
        except TimeoutError as exc:
            raise DistributedError(f"task {future.key} gave no result within "
                                   f"{self.timeout} s") from exc

    def cancel(self, futures) -> None:
        if futures:
            self.client.cancel(list(futures))

    def release(self, future) -> None:
        pass

    probe = staticmethod(probe_failure)  # in the client: the workers draw with the same code

    def close(self) -> None:
        pass

    abandon = close


@contextlib.contextmanager
def dask_executor(cluster, model) -> Iterator[DaskExecutor]:
    """A :class:`DaskExecutor` on ``cluster`` for ``model``.

    Parameters
    ----------
    cluster : Cluster
        The scheduler and how to use it (:class:`~deep_spectrum_extractor.job.Cluster`).
    model : Model
        The network file, its layer, SHA-256 and device option
        (:class:`~deep_spectrum_extractor.run.engine.Model`).

    A client opened here is closed when the block ends.

    Raises
    ------
    DistributedError
        The scheduler cannot be reached.
    """
    client, owned = _connect(cluster.scheduler, cluster.timeout)
    try:
        reference = _model_ref(client, model, threads=cluster.threads or single_machine_threads(),
                               ship_model=cluster.ship_model)
        devices = sorted(set(client.run(worker_device, model.gpu).values()))
        if devices:  # the provenance says where the workers run the network
            model.device = devices[0] if len(devices) == 1 else f"mixed ({', '.join(devices)})"
        yield DaskExecutor(client, reference, window=cluster.window, timeout=cluster.timeout)
    finally:
        if owned:
            client.close()
