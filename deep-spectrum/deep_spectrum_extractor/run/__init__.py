"""Running a job: the plan, the units of work, the executors and the driver.

``plan`` (the batch grid as a value) -> ``reader`` (inputs opened and read in order,
each sample once) -> ``work`` (a range of positions drawn, and extracted) ->
``executors`` (in-process, local worker processes, Dask) -> ``driver`` (the one loop
that walks the plan).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from ..settings import FeatureSettings, RunOptions
from .driver import Driver, Walk, file_features
from .executors import Inline, LocalProcesses
from .work import ExtraOutput, FileFeatures, render_chunks, side_output_name, warm_up

__all__ = ["Driver", "ExtraOutput", "FileFeatures", "Walk", "executor_for", "extract_features",
           "render_chunks", "side_output_name", "start_executor"]


def start_executor(processes: int, settings: FeatureSettings | None = None,
                   renderer: str = "numpy"):
    """Where the images are drawn: this process (``processes=1``) or that many workers,
    started now (each draws one warm-up plot with ``settings``), e.g. while the network
    loads."""
    if processes == 1:
        return Inline()
    if settings is not None:
        warm_up(settings, renderer)  # compiled here once, loaded by the workers
    return LocalProcesses(processes, settings, renderer)


@contextlib.contextmanager
def executor_for(executor, settings: FeatureSettings, options: RunOptions):
    """``executor``, or one started now for ``options``.

    When the block ends by an exception (Ctrl-C, an early stop ...) the executor is
    stopped at once; when it ends normally, one started here is closed.
    """
    own = executor is None
    executor = executor or start_executor(options.processes, settings, options.renderer)
    try:
        yield executor
    except BaseException:
        executor.abandon()
        raise
    if own:
        executor.close()


def extract_features(files: list, settings: FeatureSettings, network,
                     options: RunOptions = RunOptions(), *, root=None,
                     extra: ExtraOutput = ExtraOutput(), align: int = 0,
                     executor=None) -> Iterator[FileFeatures]:
    """Features of every input, one :class:`FileFeatures` per input, in input order.

    Parameters
    ----------
    files : list of Path or InMemoryAudio
    settings : FeatureSettings
    network : object with ``features(images) -> np.ndarray``
        e.g. :class:`~deep_spectrum_extractor.backend.extractor.FrozenGraphExtractor`.
    options : RunOptions
    root : Path, optional
        Input folder; side outputs keep the files' paths relative to it.
    extra : ExtraOutput
        Where to write chunk plots and audio, if anywhere.
    align : int
        Blank images before the first chunk (their features are dropped), so that a
        resumed run feeds every chunk at the batch position it had in an uninterrupted
        run.
    executor : optional
        From :func:`start_executor`; by default one is started here (see
        :func:`executor_for`).
    """
    with executor_for(executor, settings, options) as executor:
        driver = Driver(list(files), settings, executor, network, options=options, root=root,
                        extra=extra, lead=align)
        yield from file_features(driver)
