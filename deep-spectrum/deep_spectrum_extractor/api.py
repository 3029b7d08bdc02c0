"""The Python API: Deep Spectrum features as pandas DataFrames.

:class:`DeepSpectrum` takes the settings once (those of the command line), loads the
network once, and then turns signals, files and folders into DataFrames indexed by
``(file, start, end)`` (seconds) with one column per neuron, like opensmile-python's
``Smile``::

    >>> import deep_spectrum_extractor as ds                              # doctest: +SKIP
    >>> with ds.DeepSpectrum(window=1, hop=0.5, mode="mel",             # doctest: +SKIP
    ...                      net="efficientnet_lite0") as extractor:
    ...     features = extractor.process_folder("examples/audio")
    ...     one = extractor.process_file("examples/audio/birdsong/birdsong_0.wav")
    >>> features.shape                                                   # doctest: +SKIP
    (33, 1280)

:func:`extract` (one DataFrame) and :func:`iter_extract` (one DataFrame per file, for
corpora that do not fit in memory) do the same in one call, loading the network for that
call.  All use the same pipeline as ``extract_ds_features``, so the numbers are the same
as in the files the command writes.
"""
from __future__ import annotations

import contextlib
from decimal import Decimal
import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .audio import InMemoryAudio, find_audio_files
from .config import DeepConfig, load_config
from .errors import AudioError, ParameterError
from .settings import (DEFAULT_BATCH_SIZE, DEFAULT_CMAP, DEFAULT_LAYER, DEFAULT_MODE,
                       DEFAULT_NET, DEFAULT_NMEL, DEFAULT_RENDERER, DEFAULT_SCALE,
                       FeatureSettings, RunOptions, layers_by_network, network_layers)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DeepSpectrum", "INDEX_NAMES", "extract", "iter_extract"]

INDEX_NAMES = ("file", "start", "end")
ERRORS = ("raise", "skip")
#: The file name of a signal given to :meth:`DeepSpectrum.process_signal` without a name
#: (the name :func:`extract` gives the first array).
SIGNAL_NAME = "signal_0"


class DeepSpectrum:
    """Deep Spectrum features with settings given once, for any number of calls.

    The constructor validates the settings, runs the numpy renderer's self-check
    against matplotlib (``renderer="numpy"``), and loads the network: all of that
    happens once, here, so a bad net, layer or model file fails at construction, and
    every ``process_*`` call only reads, draws and extracts.  Worker processes
    (``processes > 1``) are started for each call and end with it.  :meth:`close` (or
    leaving a ``with`` block) releases the network; the object cannot be used after.

    Parameters
    ----------
    window, hop : float, optional
        Chunking in seconds (``-t``); without them each input is one chunk.
    start, end, mode, scale, ylim, delta, nmel, nfft, cmap :
        As the command-line options of the same names.
    net, layer : str or list of str
        As ``-net`` and ``-layer``: one network and layer, or several (a layer ``LAYER``
        for every network, ``NET:LAYER`` for one).  With more than one (network, layer)
        pair, every picture is drawn once, each network runs once per batch, and every
        ``process_*`` call returns a dict of DataFrames keyed by ``(net, layer)``.
    config : path, optional
        A deep.conf; the package's default otherwise.
    processes : int
        Worker processes reading and plotting (1: all in this process).
    batch_size : int
    renderer : {'numpy', 'matplotlib'}
    resample : int, optional
        Resample every input to this rate (``-sr``).
    statistics : bool
        One row per input instead of one per chunk: the mean, standard deviation,
        minimum and maximum of every feature over its chunks (``--file_statistics``);
        the row's ``start`` and ``end`` span all its chunks.

    Attributes
    ----------
    settings : FeatureSettings
        With the first (network, layer) pair.
    pairs : tuple of (str, str)
        Every (network, layer) pair extracted.
    options : RunOptions
    model_path : Path
        The first network's model file.

    Examples
    --------
    >>> with DeepSpectrum(window=0.5, hop=0.25, net="efficientnet_lite0") as extractor:
    ...     frame = extractor.process_signal(tone, 16000)              # doctest: +SKIP
    """

    def __init__(self, *, window: float | None = None, hop: float | None = None,
                 start: float = 0, end: float | None = None, mode: str = DEFAULT_MODE,
                 scale: str = DEFAULT_SCALE, ylim: int | None = None, delta: int | None = None,
                 nmel: int = DEFAULT_NMEL, nfft: int | None = None, cmap: str = DEFAULT_CMAP,
                 net: str | Sequence[str] = DEFAULT_NET,
                 layer: str | Sequence[str] | None = None,
                 config: str | os.PathLike | None = None, processes: int = 1,
                 batch_size: int = DEFAULT_BATCH_SIZE, renderer: str = DEFAULT_RENDERER,
                 resample: int | None = None, statistics: bool = False):
        self._network = None
        deep_config = load_config(config)
        self.pairs = _pairs(deep_config, net, layer)
        self.settings = FeatureSettings(
            size=deep_config.size, net=self.pairs[0][0], layer=self.pairs[0][1],
            window=_seconds(window), hop=_seconds(hop), start=Decimal(str(start)),
            end=_seconds(end), mode=mode, scale=scale, ylim=ylim, delta=delta, nmel=nmel,
            nfft=nfft, cmap=cmap, sample_rate=resample)
        self.options = RunOptions(processes=processes, batch_size=batch_size, renderer=renderer)
        self.statistics = bool(statistics)
        if renderer == "numpy":
            from .images.render import verify_renderer

            verify_renderer()  # the installed matplotlib still draws what the renderer draws
        self.model_path, self._network = _load_network(deep_config, self.pairs)

    def process_signal(self, signal: np.ndarray, sampling_rate: int, *,
                       name: str | None = None) -> pd.DataFrame:
        """Features of one signal ``[shape=(n,) or (n, channels)]``.

        ``name`` is its ``file`` in the index (default ``"signal_0"``, as :func:`extract`
        names a single array).  AudioError if it yields no features.
        """
        audio = InMemoryAudio(SIGNAL_NAME if name is None else str(name), np.asarray(signal),
                              int(sampling_rate))
        return self._single(audio)

    def process_file(self, path: str | os.PathLike) -> pd.DataFrame:
        """Features of one audio file; AudioError naming it if it yields none."""
        return self._single(Path(path))

    def process_files(self, paths: Iterable[str | os.PathLike], *,
                      errors: str = "raise") -> pd.DataFrame:
        """Features of several files in one DataFrame, in the order given.

        ``errors="raise"``: an input that yields no features raises AudioError naming it;
        ``"skip"``: it is left out.  ParameterError when no input yields features.
        """
        if isinstance(paths, (str, os.PathLike)):
            raise ParameterError("process_files takes a list of paths; use process_file for "
                                 "one file and process_folder for a folder")
        return _concat(self.iter_files(paths, errors=errors))

    def process_folder(self, folder: str | os.PathLike, *,
                       errors: str = "raise") -> pd.DataFrame:
        """Features of every audio file under ``folder`` (recursively, sorted by path)."""
        return self.process_files(find_audio_files(folder), errors=errors)

    def iter_files(self, paths: Iterable, *, errors: str = "raise") -> Iterator:
        """One DataFrame per input (paths or InMemoryAudio), in order, as each is done.

        For corpora that do not fit in memory; ``errors`` as in :meth:`process_files`.
        Stopping early stops the worker processes.
        """
        _check_errors(errors)
        self._open_network()  # closed: an error now, not when iterated
        return self._frames(list(paths), errors)

    def _frames(self, sources: list, errors: str) -> Iterator:
        from .job import Job
        from .run import run_job

        network = self._open_network()
        if not sources:
            return
        job = Job(sources, self.settings, self.options, statistics=self.statistics,
                  networks=self.pairs)
        results = run_job(job, network).__iter__()
        with contextlib.closing(results):  # stopped early: the workers stop too
            for result in results:
                failure = _failure(result)
                if failure is not None:
                    if errors == "raise":
                        raise AudioError(failure)
                    continue
                features = np.asarray(result.features)
                if len(self.pairs) == 1:
                    yield _frame(result, features, self.settings, self.statistics)
                else:
                    yield {pair: _frame(result, features[:, columns], self.settings,
                                        self.statistics)
                           for pair, columns in _pair_columns(network, self.pairs,
                                                              self.statistics).items()}

    def _single(self, source) -> pd.DataFrame:
        (frame,) = self._frames([source], "raise")  # run to the end: the workers exit
        return frame

    def _open_network(self):
        if self._network is None:
            raise RuntimeError(f"this {type(self).__name__} is closed; create a new one to "
                               "extract more features")
        return self._network

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has released the network."""
        return self._network is None

    def close(self) -> None:
        """Release the network (its TensorFlow session); calling it again does nothing."""
        network, self._network = self._network, None
        if network is not None:
            network.close()

    def __enter__(self):
        self._open_network()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self) -> str:
        shown = {key: value for key, value in self.settings.to_dict().items()
                 if key in ("net", "layer", "mode", "scale", "window", "hop")}
        arguments = ", ".join(f"{key}={value!r}" for key, value in shown.items())
        return f"{type(self).__name__}({arguments}){' (closed)' if self.closed else ''}"


def _seconds(value: float | None) -> Decimal | None:
    """A number of seconds as the settings hold it (the decimal of its shortest repr)."""
    return None if value is None else Decimal(str(value))


def _pairs(config: DeepConfig, net, layer) -> tuple[tuple[str, str], ...]:
    """The (network, layer) pairs of ``net`` and ``layer`` (see :class:`DeepSpectrum`)."""
    def default_layer(name: str) -> str:
        return config.net(name).default_layer or DEFAULT_LAYER

    pairs = network_layers([net] if isinstance(net, str) else list(net),
                           [layer] if isinstance(layer, str) else layer,
                           default_net=DEFAULT_NET, default_layer=default_layer)
    return tuple((config.net(name).name, layer) for name, layer in pairs)


def _load_network(config: DeepConfig, pairs):
    """The first network's model file and the loaded networks (model files built first
    where they can be)."""
    from .backend.extractor import load_networks
    from .backend.networks import resolve_model

    models = {net: (resolve_model(config, net)[1], layers)
              for net, layers in layers_by_network(pairs).items()}
    network = load_networks(models, gpu=config.gpu)
    return next(iter(models.values()))[0], network


def _pair_columns(network, pairs, statistics: bool) -> dict:
    """Which columns of the network's output (or of its statistics rows) each pair has."""
    offsets = {pair: np.arange(span.start, span.stop)
               for pair, span in network.columns().items()}
    if statistics:  # [mean..., std..., min..., max...] of all columns
        total = sum(network.widths)
        offsets = {pair: np.concatenate([columns + block * total for block in range(4)])
                   for pair, columns in offsets.items()}
    return {pair: offsets[pair] for pair in pairs}


def _check_errors(errors: str) -> None:
    if errors not in ERRORS:
        raise ParameterError(f"errors={errors!r} must be 'raise' or 'skip'")


def _failure(result) -> str | None:
    """Why a FileFeatures holds no rows (naming its input), or None when it holds some."""
    if not result.ok:
        return f"{result.path}: {result.error}"
    if result.features is None or len(result.features) == 0:
        return f"{result.path}: yields no features"
    return None


def _frame(result, features: np.ndarray, settings: FeatureSettings,
           statistics: bool = False) -> pd.DataFrame:
    """One input's rows as a DataFrame indexed by ``(file, start, end)`` in seconds."""
    import pandas as pd

    starts = [float(ts) if ts is not None else float(settings.start)
              for ts in result.timestamps]
    ends = [first + seconds for first, seconds in zip(starts, result.durations)]
    index = pd.MultiIndex.from_arrays([[str(result.path)] * len(starts), starts, ends],
                                      names=INDEX_NAMES)
    from .output.writers import feature_names

    columns = feature_names(features.shape[1], statistics=statistics)
    return pd.DataFrame(features, index=index, columns=columns)


def _concat(frames: Iterable):
    """One DataFrame of the inputs' frames (one per pair when they are dicts by pair)."""
    import pandas as pd

    frames = list(frames)
    if not frames:
        raise ParameterError("no features were extracted from the inputs")
    if isinstance(frames[0], dict):
        return {pair: pd.concat([each[pair] for each in frames]) for pair in frames[0]}
    return pd.concat(frames)


def _sources(inputs, sample_rate: int | None) -> list:
    """Paths and in-memory signals from what the caller passed."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if isinstance(inputs, (str, os.PathLike)):
        return find_audio_files(inputs)
    sources: list[Any] = []
    for number, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            if sample_rate is None:
                raise ParameterError("signals given as arrays need sample_rate=")
            sources.append(InMemoryAudio(f"signal_{number}", np.asarray(item), int(sample_rate)))
        elif isinstance(item, InMemoryAudio):
            sources.append(item)
        else:
            path = Path(item)
            sources.extend(find_audio_files(path) if path.is_dir() else [path])
    return sources


_SETTINGS = inspect.signature(DeepSpectrum)


def _takes_settings(function):
    """Show DeepSpectrum's keyword settings in ``function``'s signature (help(), IDEs)
    in place of its ``**settings``, before its last keyword."""
    own = list(inspect.signature(function).parameters.values())
    settings = list(_SETTINGS.parameters.values())
    function.__signature__ = inspect.signature(function).replace(
        parameters=own[:-2] + settings + own[-2:-1])
    return function


@_takes_settings
def iter_extract(inputs, *, sample_rate: int | None = None, errors: str = "raise",
                 **settings) -> Iterator:
    """Features file by file, as DataFrames indexed by ``(file, start, end)``.

    Loads the network when iteration starts and releases it when iteration ends;
    to extract several times with the same settings, use :class:`DeepSpectrum`.

    Parameters
    ----------
    inputs : path, list of paths, np.ndarray or list of np.ndarray
        A folder (searched recursively for audio files), files, or mono/multichannel
        signals ``[shape=(n,) or (n, channels)]`` with ``sample_rate``.
    sample_rate : int, optional
        Sample rate of signals given as arrays.
    errors : {'raise', 'skip'}
        What to do with an input that yields no features.
    **settings
        The keyword settings of :class:`DeepSpectrum` (window, hop, start, end, mode,
        scale, ylim, delta, nmel, nfft, cmap, net, layer, config, processes, batch_size,
        renderer, resample, statistics).

    Yields
    ------
    pandas.DataFrame
        One row per chunk, columns ``neuron_0 ...``; ``start``/``end`` in seconds.
    """
    _SETTINGS.bind(**settings)  # an unknown keyword is a TypeError now, not when iterated
    return _iter_extract(inputs, sample_rate, errors, settings)


def _iter_extract(inputs, sample_rate: int | None, errors: str, settings: dict) -> Iterator:
    _check_errors(errors)
    sources = _sources(inputs, sample_rate)
    with DeepSpectrum(**settings) as extractor:
        yield from extractor.iter_files(sources, errors=errors)


def extract(inputs, **kwargs) -> pd.DataFrame:
    """All features in one DataFrame indexed by ``(file, start, end)``.

    Takes the same arguments as :func:`iter_extract`.

    Examples
    --------
    >>> import numpy as np
    >>> from deep_spectrum_extractor import extract
    >>> tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    >>> frame = extract([tone], sample_rate=16000, window=0.5, hop=0.25,
    ...                 net="efficientnet_lite0")                         # doctest: +SKIP
    >>> list(frame.index.names), frame.shape                            # doctest: +SKIP
    (['file', 'start', 'end'], (4, 1280))
    """
    return _concat(iter_extract(inputs, **kwargs))
