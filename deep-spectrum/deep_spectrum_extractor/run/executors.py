"""Where the jobs of a run are drawn: one small interface, three executors.

An executor takes :class:`~.work.RangeJob` objects and gives back
:class:`~.work.RenderedRange` results, in the order asked for; the driver
(:mod:`.driver`) never knows which one it talks to:

* :class:`Inline` draws in the calling process (``-np 1``);
* :class:`LocalProcesses` draws in worker processes of this machine
  (:class:`~deep_spectrum_extractor.workers.WorkerPool`: they ignore Ctrl-C and end with
  the run); a worker that dies is replaced, and a job that kills a fresh worker too
  fails its inputs;
* :class:`DaskExecutor` (in :mod:`deep_spectrum_extractor.distributed`) draws *and*
  extracts on the workers of a Dask cluster (``runs_network`` is True there).

``window`` is how many jobs may be in flight: enough to keep the workers busy, few
enough to bound memory (each job holds one batch of images).
"""
from __future__ import annotations

import concurrent.futures

from ..settings import FeatureSettings
from ..workers import WorkerPool
from .work import Failure, RangeJob, RenderedRange, init_worker, render_range

WORKER_DIED = "the worker process reading and plotting it died"


class Inline:
    """Draws each job in the calling process when its result is asked for."""

    runs_network = False
    window = 1

    def submit(self, job: RangeJob):
        return job

    def result(self, job: RangeJob) -> RenderedRange:
        return render_range(job)

    def cancel(self, handles) -> None:
        pass

    def close(self) -> None:
        pass

    abandon = close


class LocalProcesses:
    """Draws jobs in ``processes`` worker processes of this machine.

    Parameters
    ----------
    processes : int
    settings : FeatureSettings, optional
        Each worker draws one warm-up plot with them when it starts.
    renderer : str
    pool : WorkerPool, optional
        Workers started already (e.g. while the network loaded), with init_worker.
    """

    runs_network = False

    def __init__(self, processes: int, settings: FeatureSettings | None = None,
                 renderer: str = "numpy", *, pool: WorkerPool | None = None):
        self.processes = processes
        self.window = processes + 2
        self._initargs = (settings, renderer)
        self._pool = pool or self._start()

    def _start(self) -> WorkerPool:
        pool = WorkerPool(self.processes, init_worker, self._initargs)
        pool.start_all()
        return pool

    def submit(self, job: RangeJob):
        return job, self._pool, self._pool.submit(render_range, job)

    def result(self, handle) -> RenderedRange:
        job, pool, future = handle
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool:
            pass
        # Every job in flight failed with the pool; which one killed it is unknown.  Start
        # a new pool (once), run each such job alone, and blame it only if it breaks
        # that one too.
        if pool is self._pool:
            self._restart()
        try:
            return self._pool.submit(render_range, job).result()
        except concurrent.futures.process.BrokenProcessPool:
            self._restart()
            return RenderedRange(job.begin, job.end, None, failures=[
                Failure(piece.index, range(1 << 62), WORKER_DIED) for piece in job.pieces])

    def _restart(self) -> None:
        self._pool.abandon()
        self._pool = self._start()

    def cancel(self, handles) -> None:
        """Forget these jobs: their results are dropped when they come.

        They are not cancelled one by one: Python 3.11's pool fails (its manager thread
        dies and the run hangs) when it breaks or is abandoned while holding a future
        cancelled that way.
        """

    def close(self) -> None:
        """Let the workers exit (the run is done)."""
        self._pool.shutdown(wait=False)

    def abandon(self) -> None:
        """Stop the workers at once (the run was interrupted or failed)."""
        self._pool.abandon()
