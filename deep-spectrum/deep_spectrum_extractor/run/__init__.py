"""Running a job: the plan, the units of work, the executors, the driver and the engine.

``plan`` (the batch grid as a value) -> ``reader`` (inputs opened and read in order,
each sample once) -> ``work`` (a range of positions drawn, and extracted) ->
``executors`` (in-process, local worker processes, Dask) -> ``driver`` (the one loop
that walks the plan) -> ``engine`` (:func:`run_job`: a
:class:`~deep_spectrum_extractor.job.Job` from its checks to its report).
"""
from __future__ import annotations

from ..settings import FeatureSettings
from .driver import Driver, Walk
from .engine import Run, StopOnError, run_job
from .executors import Inline, LocalProcesses
from .work import ExtraOutput, FileFeatures, render_chunks, side_output_name

__all__ = ["Driver", "ExtraOutput", "FileFeatures", "Inline", "LocalProcesses", "Run",
           "StopOnError", "Walk", "render_chunks", "run_job", "side_output_name",
           "start_executor"]


def start_executor(processes: int, settings: FeatureSettings | None = None,
                   renderer: str = "numpy", batch_size: int | None = None):
    """Where the images are drawn: this process (``processes=1``) or that many workers,
    started now (each draws one warm-up plot with ``settings``, see
    :class:`LocalProcesses`), e.g. while the network loads; with ``batch_size``, they
    draw into memory shared with this process."""
    if processes == 1:
        return Inline()
    return LocalProcesses(processes, settings, renderer, batch_size=batch_size)
