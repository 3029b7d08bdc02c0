"""The Python API: Deep Spectrum features as pandas DataFrames.

One call takes files, a folder, or signals with their sample rate, and the same settings
as the command line, and returns a DataFrame indexed by ``(file, start, end)`` (seconds)
with one column per neuron, like opensmile-python's ``process_files``::

    >>> import deep_spectrum_extractor as ds                              # doctest: +SKIP
    >>> features = ds.extract("examples/audio", window=1, hop=0.5, mode="mel",
    ...                       net="efficientnet_lite0")                  # doctest: +SKIP
    >>> features.shape                                                   # doctest: +SKIP
    (33, 1280)

:func:`iter_extract` yields one DataFrame per file instead, for corpora that do not fit in
memory.  Both load the network once and use the same pipeline as ``extract_ds_features``,
so the numbers are the same as in the files the command writes.
"""
from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .audio import InMemoryAudio, find_audio_files
from .config import load_config
from .errors import ParameterError
from .settings import DEFAULT_BATCH_SIZE, DEFAULT_LAYER, FeatureSettings, RunOptions

INDEX_NAMES = ("file", "start", "end")


def _sources(inputs, sample_rate: int | None) -> list:
    """Paths and in-memory signals from what the caller passed."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if isinstance(inputs, (str, os.PathLike)):
        return find_audio_files(inputs)
    sources = []
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


def _decimal(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def iter_extract(inputs, *, sample_rate: int | None = None, window: float | None = None,
                 hop: float | None = None, start: float = 0, end: float | None = None,
                 mode: str = "spectrogram", scale: str = "linear", ylim: int | None = None,
                 delta: int | None = None, nmel: int = 128, nfft: int | None = None,
                 cmap: str = "viridis", net: str = "alexnet", layer: str | None = None,
                 config: str | os.PathLike | None = None, processes: int = 1,
                 batch_size: int = DEFAULT_BATCH_SIZE, renderer: str = "numpy",
                 resample: int | None = None, errors: str = "raise") -> Iterator:
    """Features file by file, as DataFrames indexed by ``(file, start, end)``.

    Parameters
    ----------
    inputs : path, list of paths, np.ndarray or list of np.ndarray
        A folder (searched recursively for .wav), files, or mono/multichannel signals
        ``[shape=(n,) or (n, channels)]`` with ``sample_rate``.
    sample_rate : int, optional
        Sample rate of signals given as arrays.
    window, hop : float, optional
        Chunking in seconds (``-t``); without them each input is one chunk.
    start, end, mode, scale, ylim, delta, nmel, nfft, cmap, net, layer :
        As the command-line options of the same names.
    config : path, optional
        A deep.conf; the package's default otherwise.
    processes : int
        Worker processes reading and plotting (1: all in this process).
    batch_size : int
    renderer : {'numpy', 'matplotlib'}
    resample : int, optional
        Resample every input to this rate (``-sr``).
    errors : {'raise', 'skip'}
        What to do with an input that yields no features.

    Yields
    ------
    pandas.DataFrame
        One row per chunk, columns ``neuron_0 ...``; ``start``/``end`` in seconds.
    """
    import pandas as pd

    from .backend.extractor import FrozenGraphExtractor
    from .backend.networks import resolve_model
    from .errors import AudioError
    from .run import extract_features

    if errors not in ("raise", "skip"):
        raise ParameterError(f"errors={errors!r} must be 'raise' or 'skip'")
    deep_config = load_config(config)
    entry = deep_config.net(net)
    settings = FeatureSettings(mode=mode, scale=scale, window=_decimal(window), hop=_decimal(hop),
                               start=Decimal(str(start)), end=_decimal(end), nfft=nfft,
                               ylim=ylim, delta=delta, nmel=nmel, cmap=cmap,
                               size=deep_config.size, net=entry.name,
                               layer=layer or entry.default_layer or DEFAULT_LAYER,
                               sample_rate=resample)
    options = RunOptions(processes=processes, batch_size=batch_size, renderer=renderer)
    sources = _sources(inputs, sample_rate)
    _entry, model_path = resolve_model(deep_config, settings.net)
    with FrozenGraphExtractor(model_path, settings.layer, gpu=deep_config.gpu) as extractor:
        for result in extract_features(sources, settings, extractor, options):
            if not result.ok:
                if errors == "raise":
                    raise AudioError(f"{result.path}: {result.error}")
                continue
            starts = [float(ts) if ts is not None else float(settings.start)
                      for ts in result.timestamps]
            ends = [first + seconds for first, seconds in zip(starts, result.durations)]
            name = str(result.path)
            index = pd.MultiIndex.from_arrays([[name] * len(starts), starts, ends],
                                              names=INDEX_NAMES)
            columns = [f"neuron_{i}" for i in range(result.features.shape[1])]
            yield pd.DataFrame(result.features, index=index, columns=columns)


def extract(inputs, **kwargs):
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
    import pandas as pd

    frames = list(iter_extract(inputs, **kwargs))
    if not frames:
        raise ParameterError("no features were extracted from the inputs")
    return pd.concat(frames)
