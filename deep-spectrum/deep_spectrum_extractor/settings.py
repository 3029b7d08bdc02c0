"""Settings: every choice that changes the features, defined once.

:class:`FeatureSettings` holds what determines the output numbers (plot type,
FFT size, window, network, layer ...) and is frozen and validated on creation.
:class:`RunOptions` holds knobs that change how fast a run goes but never its
result (worker processes, batch size, progress).  The CLI, the library and the
README all take the closed sets of choices from here.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from .errors import ParameterError

MODES = ("spectrogram", "mel", "chroma")
SCALES = ("linear", "log", "mel")
DEFAULT_MODE = "spectrogram"
DEFAULT_SCALE = "linear"
DEFAULT_NMEL = 128
DEFAULT_CMAP = "viridis"
DEFAULT_NET = "alexnet"
DEFAULT_LAYER = "fc7"
DEFAULT_BATCH_SIZE = 128
DEFAULT_SIZE = 227
#: How chunks are drawn: ``numpy`` (direct, pixel-identical to matplotlib, fast) or
#: ``matplotlib`` (the original figure path, the reference).
RENDERERS = ("numpy", "matplotlib")
DEFAULT_RENDERER = "numpy"


def available_colormaps() -> list[str]:
    """Names of the matplotlib colour maps accepted by ``-cmap``, sorted."""
    from matplotlib import colormaps

    return sorted(colormaps)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that changes the extracted features.

    Parameters
    ----------
    mode : {'spectrogram', 'mel', 'chroma'}
        Kind of plot.
    scale : {'linear', 'log', 'mel'}
        Frequency axis of the plot; chroma plots always use the chroma axis.
    window, hop : Decimal or None
        Chunk length and hop in seconds (``-t``); both None: the whole file is one chunk.
    start, end : Decimal or None
        Part of each (zero-trimmed) file to use, in seconds.
    nfft : int or None
        FFT length; None picks the next power of two of 25 ms per file.
    ylim : int or None
        Highest frequency (Hz) kept in the plot.
    delta : int or None
        Order of the derivative to plot instead of the features themselves.
    nmel : int
        Number of mel bands (mel mode).
    cmap : str
        matplotlib colour map.
    size : int
        Image width and height in pixels (deep.conf ``size``).
    net, layer : str
        Network name from deep.conf and the layer whose activations are the features.
    sample_rate : int or None
        Resample every file to this rate (``-sr``); None keeps each file's own rate.
    """

    mode: str = DEFAULT_MODE
    scale: str = DEFAULT_SCALE
    window: Decimal | None = None
    hop: Decimal | None = None
    start: Decimal = Decimal(0)
    end: Decimal | None = None
    nfft: int | None = None
    ylim: int | None = None
    delta: int | None = None
    nmel: int = DEFAULT_NMEL
    cmap: str = DEFAULT_CMAP
    size: int = DEFAULT_SIZE
    net: str = DEFAULT_NET
    layer: str = DEFAULT_LAYER
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParameterError(f"-mode={self.mode!r} is not one of {', '.join(MODES)}")
        if self.scale not in SCALES:
            raise ParameterError(f"-scale={self.scale!r} is not one of {', '.join(SCALES)}")
        for name in ("window", "hop", "start", "end"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Decimal):
                object.__setattr__(self, name, Decimal(str(value)))
        if (self.window is None) != (self.hop is None):
            raise ParameterError("-t needs both a window and a hop length")
        if self.window is not None and (not self.window.is_finite() or self.window <= 0):
            raise ParameterError(f"-t window={self.window} must be a positive number of seconds")
        if self.hop is not None and (not self.hop.is_finite() or self.hop <= 0):
            raise ParameterError(f"-t hop={self.hop} must be a positive number of seconds")
        if not self.start.is_finite() or self.start < 0:
            raise ParameterError(f"-start={self.start} must be a non-negative number of seconds")
        if self.end is not None and (not self.end.is_finite() or self.end <= self.start):
            raise ParameterError(f"-end={self.end} must be greater than -start={self.start}")
        _positive_int("nfft", self.nfft, optional=True)
        if self.nfft is not None and self.nfft < 2:
            raise ParameterError(f"-nfft={self.nfft} must be at least 2")
        _positive_int("ylim", self.ylim, optional=True)
        _positive_int("delta", self.delta, optional=True)
        _positive_int("nmel", self.nmel)
        _positive_int("size", self.size)
        _positive_int("sr", self.sample_rate, optional=True)
        if not self.net:
            raise ParameterError("-net must name a network")
        if not self.layer:
            raise ParameterError("-layer must name a layer")

    @property
    def chunked(self) -> bool:
        """True when ``-t`` was given (chunks carry timestamps)."""
        return self.window is not None

    @property
    def plot_scale(self) -> str:
        """The y axis actually drawn: chroma mode always draws the chroma axis."""
        return "chroma" if self.mode == "chroma" else self.scale

    def to_dict(self) -> dict[str, object]:
        """Plain values (Decimals as strings) for provenance records."""
        return {key: (str(value) if isinstance(value, Decimal) else value)
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class RunOptions:
    """How a run is executed; never changes the features."""

    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = False
    renderer: str = DEFAULT_RENDERER

    def __post_init__(self) -> None:
        _positive_int("np", self.processes)
        _positive_int("batch_size", self.batch_size)
        if self.renderer not in RENDERERS:
            raise ParameterError(f"-renderer={self.renderer!r} is not one of "
                                 f"{', '.join(RENDERERS)}")


def network_layers(nets: Sequence[str] | None, layers: Sequence[str] | None, *,
                   default_net: str, default_layer: Callable[[str], str]
                   ) -> tuple[tuple[str, str], ...]:
    """The (network, layer) pairs that ``-net`` and ``-layer`` ask for.

    A layer is ``LAYER`` (for every network) or ``NET:LAYER`` (for that network only); a
    network that none of the layers is for gets ``default_layer(net)``.  Without
    ``nets``, the networks are those the ``NET:LAYER`` layers name, else ``default_net``.
    What could mean two things is refused (ParameterError): a ``NET:LAYER`` whose network
    ``nets`` does not give, a network or a pair given twice.

    >>> network_layers(["alexnet", "vgg16"], ["fc6", "alexnet:fc7"], default_net="alexnet",
    ...                default_layer=lambda net: "fc2")
    (('alexnet', 'fc6'), ('alexnet', 'fc7'), ('vgg16', 'fc6'))
    """
    specs: list[tuple[str | None, str]] = []
    for text in layers or ():
        net, colon, layer = text.rpartition(":")
        if colon and not (net and layer):
            raise ParameterError(f"-layer {text!r}: give LAYER or NET:LAYER")
        specs.append((net.lower() if colon else None, layer))
    named = [net for net, _layer in specs if net is not None]
    chosen = [net.lower() for net in nets] if nets else list(dict.fromkeys(named)) or [default_net]
    for net in dict.fromkeys(chosen):
        if chosen.count(net) > 1:
            raise ParameterError(f"-net names {net} twice")
    for owner, layer in specs:
        if owner is not None and owner not in chosen:
            raise ParameterError(f"-layer {owner}:{layer} is for network {owner}, which -net does "
                                 f"not give (-net {' '.join(chosen)}); add it to -net or "
                                 "leave the layer out")
    pairs = []
    for net in chosen:
        own = [layer for owner, layer in specs if owner is None or owner == net]
        for layer in dict.fromkeys(own):
            if own.count(layer) > 1:
                raise ParameterError(f"-layer asks for layer {layer} of {net} twice")
        pairs += [(net, layer) for layer in own] or [(net, default_layer(net))]
    return tuple(pairs)


def layers_by_network(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The layers of each network of ``pairs``, networks and layers in their order.

    >>> layers_by_network([("alexnet", "fc6"), ("vgg16", "fc2"), ("alexnet", "fc7")])
    {'alexnet': ['fc6', 'fc7'], 'vgg16': ['fc2']}
    """
    layers: dict[str, list[str]] = {}
    for net, layer in pairs:
        layers.setdefault(net, []).append(layer)
    return layers


def _positive_int(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(f"-{name}={value!r} must be a positive integer")
