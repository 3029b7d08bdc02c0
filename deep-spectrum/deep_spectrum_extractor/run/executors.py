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
enough to bound memory (each job holds one batch of images).  ``release(handle)`` is
called once the images of a result have been through the network.

Local workers take their samples from :class:`SharedSlots`, memory the pool shares with
them, and draw into it, so that neither the samples of a job nor its pictures are
pickled, piped and copied.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import mmap
import os
import threading
import weakref

import numpy as np

from ..images.render import renderer_verified, verify_renderer
from ..settings import FeatureSettings
from ..workers import WorkerPool
from .work import Failure, RangeJob, RenderedRange, init_worker, probe_failure, render_range

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

    def release(self, handle) -> None:
        pass

    probe = staticmethod(probe_failure)

    def close(self) -> None:
        pass

    abandon = close


class SharedSlots:
    """Slots of memory shared with the worker processes (Linux): one per job in flight,
    each with room for the job's pictures and, after them, its samples.

    The process that reads the audio copies a job's samples into its slot
    (:meth:`hand_over`), the worker draws from there into the slot's pictures, and the
    network reads those: neither samples nor pictures are pickled, piped and copied.

    An anonymous memory file (``memfd_create``): it has no name to leak, and it is
    freed when the last process holding it ends, however the run ends.  Pages are taken
    only where written, so the room for samples costs what the largest jobs use.  Its
    descriptor reaches a worker when the worker is spawned (the pool's initializer
    arguments), so an object of this class can be pickled only then.

    Parameters
    ----------
    slots : int
    capacity : int
        Pictures per slot (a job's positions).
    size : int
        Picture width and height.
    samples : int
        Samples (float64) per slot; 0 for none (jobs then carry their samples).
    """

    def __init__(self, slots: int, capacity: int, size: int, samples: int = 0, *,
                 fd: int | None = None):
        self.slots, self.capacity, self.size = slots, capacity, size
        self.sample_capacity = samples
        pictures = slots * capacity * size * size * 3
        start = -(-pictures // 4096) * 4096  # the samples begin on a page of their own
        length = start + slots * samples * 8
        self._fd = fd if fd is not None else os.memfd_create("deep-spectrum-slots",
                                                             os.MFD_CLOEXEC)
        if fd is None:
            os.ftruncate(self._fd, length)
        # the descriptor is closed with this object; the mapping lasts as long as a view
        self._closed = weakref.finalize(self, os.close, self._fd)
        memory = mmap.mmap(self._fd, length)
        self.pictures = np.frombuffer(memory, np.uint8, pictures).reshape(
            slots, capacity, size, size, 3)
        self._samples = np.frombuffer(memory, np.float64, slots * samples, start).reshape(
            slots, samples)

    @classmethod
    def create(cls, slots: int, capacity: int, size: int,
               samples: int = 0) -> SharedSlots | None:
        """The slots, or None where memory files are not available (not Linux)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            return cls(slots, capacity, size, samples)
        except OSError:
            return None

    def slot(self, number: int) -> np.ndarray:
        """The pictures of slot ``number`` [shape=(capacity, size, size, 3), uint8]."""
        return self.pictures[number]

    def samples(self, number: int) -> np.ndarray:
        """The samples of slot ``number`` [shape=(sample capacity,), float64]."""
        return self._samples[number]

    def hand_over(self, job: RangeJob, number: int) -> RangeJob:
        """``job`` drawn into slot ``number``, its samples copied there if they fit (its
        pieces then carry only where their samples lie)."""
        job = dataclasses.replace(job, slot=number)
        lengths = [len(piece.samples) for piece in job.pieces]
        if (sum(lengths) > self.sample_capacity
                or any(piece.samples.dtype != np.float64 for piece in job.pieces)):
            return job
        area, pieces, first = self.samples(number), [], 0
        for piece, length in zip(job.pieces, lengths):
            area[first:first + length] = piece.samples
            pieces.append(dataclasses.replace(piece, samples=_NO_SAMPLES,
                                              shared=(first, first + length)))
            first += length
        return dataclasses.replace(job, pieces=tuple(pieces))

    def __reduce__(self):
        from multiprocessing import reduction

        return (_attach_slots, (reduction.DupFd(self._fd), self.slots, self.capacity,
                                self.size, self.sample_capacity))

    def close(self) -> None:
        """Close the descriptor; the memory is freed once no process maps it (here: when
        the last view of it is gone)."""
        self._closed()


_NO_SAMPLES = np.empty(0, np.float64)


def _attach_slots(duplicate, slots: int, capacity: int, size: int,
                  samples: int) -> SharedSlots:
    return SharedSlots(slots, capacity, size, samples, fd=duplicate.detach())


#: The most samples per second a slot has room for (beyond it jobs carry their samples).
SLOT_SAMPLE_RATE = 48000


def slot_samples(settings: FeatureSettings, capacity: int) -> int:
    """Room for samples in a slot: ``capacity`` whole chunks at :data:`SLOT_SAMPLE_RATE`
    (or ``-sr``), none when an input is one chunk (its length is not bounded)."""
    if settings.window is None:
        return 0
    rate = settings.sample_rate or SLOT_SAMPLE_RATE
    return int(capacity * settings.window * rate) + 1


class LocalProcesses:
    """Draws jobs in ``processes`` worker processes of this machine.

    Parameters
    ----------
    processes : int
    settings : FeatureSettings, optional
        Each worker draws one warm-up plot with them when it starts.  With them and the
        fast renderer not yet checked in this process, a worker runs the renderer's
        self-check (:func:`~deep_spectrum_extractor.images.render.verify_renderer`);
        its verdict is awaited before the first result is given (``checks_renderer``).
    renderer : str
    batch_size : int, optional
        Positions per job: with it (and ``settings``), the workers draw into
        :class:`SharedSlots` of one slot per job in flight.
    pool : WorkerPool, optional
        Workers started already (e.g. while the network loaded), with init_worker.

    The workers import what drawing needs, warm up and check the renderer while this
    process does other work (loads the network), and the sample rates of the inputs are
    probed in a worker (:meth:`probe`): this process never loads librosa.
    """

    runs_network = False

    def __init__(self, processes: int, settings: FeatureSettings | None = None,
                 renderer: str = "numpy", *, batch_size: int | None = None,
                 pool: WorkerPool | None = None):
        self.processes = processes
        self.window = processes + 2
        self._settings, self._renderer, self._batch_size = settings, renderer, batch_size
        self._lock = threading.Lock()
        self._shared: SharedSlots | None = None
        self._free: list[int] = []
        self._probes: dict[tuple, str | None] = {}
        self._pool = pool or self._start()
        self._verdict = None
        if settings is not None and renderer == "numpy" and not renderer_verified():
            self._verdict = self._pool.submit(verify_renderer)
        self.checks_renderer = self._verdict is not None

    def _start(self) -> WorkerPool:
        """A new pool (with a new shared buffer: a worker of an abandoned pool may still
        be drawing into the old one)."""
        self._close_shared()
        if self._settings is not None and self._batch_size is not None:
            # a slot per job in flight, and as many for jobs dropped but still drawn
            self._shared = SharedSlots.create(
                2 * self.window, self._batch_size, self._settings.size,
                slot_samples(self._settings, self._batch_size))
        self._free = list(range(self._shared.slots)) if self._shared else []
        pool = WorkerPool(self.processes, init_worker,
                          (self._settings, self._renderer, self._shared))
        pool.start_all()
        return pool

    def submit(self, job: RangeJob):
        slot = None
        if self._shared is not None and job.end - job.begin <= self._shared.capacity:
            with self._lock:
                slot = self._free.pop() if self._free else None
        sent = job if slot is None or self._shared is None else self._shared.hand_over(job, slot)
        return job, self._pool, self._pool.submit(render_range, sent), self._shared, slot

    def result(self, handle) -> RenderedRange:
        self._check_renderer()
        job, pool, future, shared, slot = handle
        try:
            rendered = future.result()
        except concurrent.futures.process.BrokenProcessPool:
            self.release(handle)
        else:
            if rendered.slot is None:
                self.release(handle)  # failures: nothing was left in the slot
            else:
                rendered.images = shared.slot(slot)[:sum(rows.stop - rows.start
                                                         for rows in rendered.rows)]
            return rendered
        job = dataclasses.replace(job, slot=None)
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

    def _check_renderer(self) -> None:
        """The self-check's verdict, once: RendererMismatch raised here if it failed."""
        verdict, self._verdict = self._verdict, None
        if verdict is None:
            return
        try:
            verdict.result()
        except concurrent.futures.process.BrokenProcessPool:
            verify_renderer()  # its worker died: check here

    def probe(self, sample_rate: int, nfft: int, settings: FeatureSettings,
              renderer: str) -> str | None:
        """:func:`~.work.probe_failure`, drawn in a worker (once per combination)."""
        key = (sample_rate, nfft, settings, renderer)
        if key not in self._probes:
            try:
                self._probes[key] = self._pool.submit(probe_failure, *key).result()
            except concurrent.futures.process.BrokenProcessPool:
                self._restart()
                self._probes[key] = probe_failure(*key)
        return self._probes[key]

    def _restart(self) -> None:
        self._pool.abandon()
        self._pool = self._start()

    def cancel(self, handles) -> None:
        """Forget these jobs: their results are dropped when they come (and their slots
        are free again once their workers are done with them).

        They are not cancelled one by one: Python 3.11's pool fails (its manager thread
        dies and the run hangs) when it breaks or is abandoned while holding a future
        cancelled that way.
        """
        for handle in handles:
            handle[2].add_done_callback(lambda _future, handle=handle: self.release(handle))

    def release(self, handle) -> None:
        """The pictures of ``handle`` are used: its slot may take another job."""
        _job, _pool, _future, shared, slot = handle
        if slot is not None and shared is self._shared:
            with self._lock:
                if slot not in self._free:
                    self._free.append(slot)

    def close(self) -> None:
        """End the workers (the run is done, every result is in: nothing is lost, and
        the command does not wait for each worker to unload its libraries)."""
        self._pool.abandon()
        self._close_shared()

    def abandon(self) -> None:
        """Stop the workers at once (the run was interrupted or failed)."""
        self._pool.abandon()
        self._close_shared()

    def _close_shared(self) -> None:
        if self._shared is not None:
            self._shared.close()
            self._shared = None
