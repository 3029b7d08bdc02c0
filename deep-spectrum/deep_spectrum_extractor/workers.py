"""The process pool that reads and plots: workers that never hang a run nor outlive it.

Every pool of the package is a :class:`WorkerPool`, a
:class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method (workers
start clean, never inheriting TensorFlow's threads) and three guarantees:

* **Interrupts belong to the calling process.**  Ctrl-C in a terminal sends SIGINT to
  the whole foreground process group, workers included.  A worker interrupted while it
  reads a task or writes a result leaves the pool's pipes half-written, and the pool's
  manager thread can then wait forever for the rest of a message (the calling process
  hangs in ``shutdown`` or at interpreter exit); each worker also prints its own
  KeyboardInterrupt traceback.  So workers ignore SIGINT from their first instruction:
  SIGINT is blocked while a worker is started (a blocked signal mask is inherited across
  fork and exec), and the worker sets SIGINT to ``SIG_IGN`` before unblocking it, which
  discards an interrupt that arrived while it was starting.

* **Workers end with the pool.**  Each worker holds the read end of a pipe whose only
  write end belongs to the pool in the calling process; a daemon thread of the worker
  waits on it and ends the worker when it reads end-of-file.  That happens when the
  calling process dies, however it dies (SIGKILL, out of memory), and when the pool is
  abandoned (:meth:`WorkerPool.abandon`, or the pool is garbage collected).  The standard
  pool gives no such guarantee: each worker holds both ends of the pool's queues, so a
  worker whose parent was killed waits for its next task forever, and keeps
  multiprocessing's resource tracker alive with it.

* **Stopping never waits.**  :meth:`WorkerPool.abandon` cancels the queued tasks, tells
  the workers to exit now and returns at once; the pool's manager thread then sees the
  workers gone and ends by itself.  A pool still running when the interpreter exits is
  abandoned, instead of being waited for until its queued tasks are done.
"""
from __future__ import annotations

import concurrent.futures
import concurrent.futures.process  # registers its interpreter-exit hook before ours
import contextlib
import multiprocessing.context
import os
import signal
import threading
import weakref

# Held back while a worker is started: SIGINT, which workers ignore, and SIGTERM, which
# the command turns into an exception.  Either raised in the middle of starting a worker
# would leave it half-started (see WorkerPool.submit).
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_blocked():
    """Block SIGINT and SIGTERM in this thread (a process started here inherits that)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _interrupts_held():
    """Hold back KeyboardInterrupt (and SIGTERM's exception) until the block is done.

    Blocking the signals in this thread is not enough: the kernel then delivers them to
    another thread, and Python still runs the handler in the main thread, between any
    two instructions.  So in the main thread the handlers are replaced by ones that note
    the signal, and the original handler is called when the block is done.
    """
    if threading.current_thread() is not threading.main_thread():
        with _signals_blocked():  # only the main thread runs Python signal handlers
            yield
        return
    caught = []
    originals = {}
    for signum in _HELD_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):  # SIG_DFL, SIG_IGN and foreign C handlers stay in place
            originals[signum] = handler
            signal.signal(signum, lambda number, frame: caught.append((number, frame)))
    try:
        with _signals_blocked():
            yield
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)
        for signum, frame in caught:
            originals[signum](signum, frame)  # e.g. raises KeyboardInterrupt now


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned worker that ignores SIGINT from its first instruction on."""

    def start(self):
        # the child inherits the blocked mask; CPython keeps a blocked signal pending
        # through its start-up, so an interrupt to the process group cannot reach it
        with _signals_blocked():
            super().start()

    def run(self):
        # SIG_IGN discards an interrupt that arrived while the worker was starting;
        # SIGTERM keeps its default action
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
        super().run()


class _WorkerContext(multiprocessing.context.SpawnContext):
    Process = _WorkerProcess


_CONTEXT = _WorkerContext()


def _watch_lifeline(lifeline) -> None:
    """Wait (in a worker) until the pool's end of the pipe is closed, then exit at once.

    Nothing is ever sent: reading returns only at end-of-file, when the calling process
    closed the pipe or died.  ``os._exit`` because the worker's main thread may be
    anywhere, mid-task; the calling process no longer wants what it is doing.
    """
    try:
        while True:
            lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _start_worker(lifeline, initializer, initargs) -> None:
    """The initializer of every worker: watch the lifeline, then the pool's initializer."""
    threading.Thread(target=_watch_lifeline, args=(lifeline,), name="lifeline",
                     daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _stop(lifeline, result_queue) -> None:
    """Tell the workers of a pool to exit, and let its manager thread see them go.

    Closing the only write end of the lifeline ends every worker.  The pool's manager
    thread must then end too (the interpreter joins it at exit).  A worker that ends
    while writing a result leaves half a message in the result pipe, and the manager
    thread reading it waits for the rest for as long as any writer of that pipe is open;
    this process holds one that it never uses (workers write results; the manager thread
    is woken through a pipe of its own), so it is closed too: once the workers are gone
    the manager thread reads end-of-file, marks the pool broken and ends.  (The manager
    thread itself closes the pool's other pipes when it sees the workers gone.)
    """
    lifeline.close()
    result_queue._writer.close()


_live_pools: weakref.WeakSet = weakref.WeakSet()


def _abandon_live_pools() -> None:
    for pool in list(_live_pools):
        pool.abandon()


# At interpreter exit, concurrent.futures joins the manager thread of every pool, which
# waits until all tasks already queued are done; multiprocessing then joins every worker
# still alive.  Hooks registered here run in the reverse order of registration, so this
# one runs before concurrent.futures' own (registered when concurrent.futures.process was
# imported above): whatever pool is still running is abandoned, not waited for.
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_abandon_live_pools)


class WorkerPool(concurrent.futures.ProcessPoolExecutor):
    """A pool of spawned worker processes; see the module docstring.

    Parameters
    ----------
    processes : int
        Number of workers, started as tasks are submitted.
    initializer : callable, optional
        Called in each worker before its first task, with ``initargs``.  An exception
        escaping it breaks the pool (the standard pool's behaviour).
    initargs : tuple
    """

    def __init__(self, processes: int, initializer=None, initargs: tuple = ()):
        # the read end stays open here, in the initializer's arguments, for workers
        # started later; it does not keep the workers from reading end-of-file
        lifeline_reader, lifeline = _CONTEXT.Pipe(duplex=False)
        self.processes = processes
        super().__init__(max_workers=processes, mp_context=_CONTEXT,
                         initializer=_start_worker,
                         initargs=(lifeline_reader, initializer, tuple(initargs)))
        self._stop_workers = weakref.finalize(self, _stop, lifeline, self._result_queue)
        self._stop_workers.atexit = False  # _abandon_live_pools runs earlier
        _live_pools.add(self)

    def submit(self, fn, /, *args, **kwargs):
        """Schedule ``fn(*args, **kwargs)``; see :meth:`ProcessPoolExecutor.submit`.

        The pool starts a worker inside ``submit`` when it has fewer than ``processes``.
        An interrupt raised in the middle of that would leave a worker the pool does not
        know of (or one still waiting for its start-up data), so interrupts arriving
        meanwhile are raised when ``submit`` returns.

        When a worker has died (killed, out of memory) the pool is broken, which a caller
        may learn first from ``submit`` rather than from a task's result; ``submit`` then
        returns a future failed with BrokenProcessPool, like those of the tasks that were
        in flight, so that callers handle a dying worker in one place.
        """
        with _interrupts_held():
            try:
                return super().submit(fn, *args, **kwargs)
            except concurrent.futures.process.BrokenProcessPool as exc:
                future = concurrent.futures.Future()
                future.set_exception(exc)
                return future

    def start_all(self) -> None:
        """Start every worker now, rather than one per task as tasks come."""
        for _ in range(self.processes):
            self.submit(os.getpid)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the workers exit once their queued tasks are done; see
        :meth:`ProcessPoolExecutor.shutdown`.  Use :meth:`abandon` to stop at once."""
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:  # no task is left: a worker still there may go at once
            self._stop_workers()
            _live_pools.discard(self)

    def abandon(self) -> None:
        """Stop at once, never waiting: cancel queued tasks and end the workers now.

        Tasks running are dropped (their futures fail with BrokenProcessPool).  Safe to
        call more than once, and after :meth:`shutdown`.
        """
        self.shutdown(wait=False, cancel_futures=True)
        self._stop_workers()
        _live_pools.discard(self)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers started so far and not yet gone."""
        return list(self._processes or ())
