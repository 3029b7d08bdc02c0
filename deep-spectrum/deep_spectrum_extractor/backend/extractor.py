"""Running a frozen graph: load it once, check the layer, turn image batches into features."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .convention import IMPORT_PREFIX, INPUT_NAME, layer_names
from . import graph_safety
from .graph_safety import check_graph_ops, check_graph_sizes, format_bytes
from .tf import tensorflow


def read_graph_def(path: str | os.PathLike):
    """Parse a ``.pb`` file into a checked GraphDef, with a ModelError naming the file on failure.

    The graph's ops (:func:`~.graph_safety.check_graph_ops`) and the sizes of its
    tensors (:func:`~.graph_safety.check_graph_sizes`) are checked here, before anything
    imports the graph into TensorFlow; a file larger than the machine's memory is not read.
    """
    from google.protobuf.message import DecodeError
    tf = tensorflow()

    path = Path(path)
    graph_def = tf.compat.v1.GraphDef()
    try:
        size, limit = path.stat().st_size, graph_safety.memory_limit()
        if limit is not None and size > limit:
            raise ModelError(f"model file {path} is refused: it is {format_bytes(size)}, more "
                             f"than this machine's {format_bytes(limit)} of memory")
        graph_def.ParseFromString(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    except DecodeError as exc:
        raise ModelError(f"model file {path} is not a TensorFlow GraphDef (.pb): {exc}") from exc
    if not any(node.name == INPUT_NAME for node in graph_def.node):
        raise ModelError(f"model file {path} has no placeholder named {INPUT_NAME!r}")
    check_graph_ops(graph_def, str(path))
    check_graph_sizes(graph_def, str(path))
    return graph_def


def available_layers(path: str | os.PathLike) -> list[str]:
    """Sorted names of the layers a model file exposes (see the graph convention)."""
    return layer_names(node.name for node in read_graph_def(path).node)


class FrozenGraphExtractor:
    """Features from one or more layers of a frozen graph, in one forward pass.

    Parameters
    ----------
    model_path : path-like
        A ``.pb`` in deep-spectrum's graph convention.
    layer : str or sequence of str
        Layer(s) whose activations are the features; ModelError lists the available
        layers when one does not exist.  With several layers, :meth:`features` returns
        their flattened activations side by side, in the order given (:attr:`widths`
        says how many columns each has), from a single run of the graph.
    gpu : bool
        Use a GPU when TensorFlow sees one (memory growth on); otherwise the CPU.
    threads : int or None
        TensorFlow intra-op threads; None lets TensorFlow decide.

    Attributes
    ----------
    layers : list of str
        Every layer the graph exposes.
    requested : tuple of str
        The layers :meth:`features` returns.
    widths : tuple of int or None
        The feature count of each requested layer (None until known: a graph whose input
        size is not fixed tells it at the first run).
    device : str
        Where the graph runs: ``"CPU"`` or ``"GPU:0 (<name>)"``.
    gpu_missing : bool
        A GPU was allowed but TensorFlow sees none, so the graph runs on the CPU.

    Examples
    --------
    >>> extractor = FrozenGraphExtractor("AlexNet.pb", "fc7")     # doctest: +SKIP
    >>> extractor.features(images).shape                           # doctest: +SKIP
    (32, 4096)
    """

    def __init__(self, model_path: str | os.PathLike, layer: str | Sequence[str], *,
                 gpu: bool = True, threads: int | None = None):
        tf = tensorflow()

        self.model_path = Path(model_path)
        graph_def = read_graph_def(self.model_path)
        self.layers = layer_names(node.name for node in graph_def.node)
        self.requested = (layer,) if isinstance(layer, str) else tuple(layer)
        if not self.requested:
            raise ValueError("FrozenGraphExtractor needs at least one layer")
        for name in self.requested:
            if name not in self.layers:
                raise ModelError(f"layer {name!r} is not in {self.model_path.name}; "
                                 f"available: {', '.join(self.layers) or 'none'}")
        self.layer = self.requested[0]
        self.device, self.gpu_missing = configure_devices(gpu)
        self.graph = tf.Graph()
        with self.graph.as_default():
            # Pictures are fed as the bytes they are and made float32 inside the graph:
            # a quarter of the data to hand over, the same values (0..255 are exact).
            # Other inputs are fed as float32 where the cast's result would be.
            self._pixels = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3],
                                                    name="pixels")
            self._input = tf.cast(self._pixels, tf.float32, name="pixel_values")
            try:
                tf.compat.v1.import_graph_def(graph_def, name=IMPORT_PREFIX,
                                              input_map={f"{INPUT_NAME}:0": self._input})
            except ValueError as exc:  # an inconsistent graph: a problem of the file
                raise ModelError(f"model file {self.model_path} is not a valid graph: "
                                 f"{str(exc).splitlines()[0]}") from exc
            self._outputs, widths = [], []
            for name in self.requested:
                output = self.graph.get_tensor_by_name(f"{IMPORT_PREFIX}/{name}/{name}:0")
                widths.append(_static_width(output))
                self._outputs.append(tf.reshape(output, [tf.shape(output)[0], -1]))
        known = tuple(width for width in widths if width is not None)
        self.widths: tuple[int, ...] | None = known if len(known) == len(widths) else None
        config = tf.compat.v1.ConfigProto()
        config.gpu_options.allow_growth = True
        # Grappler's graph rewriting costs a full-size AlexNet 10 s and gigabytes on its
        # first run (VGG16: a minute and 8 GB) for ~2 % of speed afterwards: not worth it.
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        if threads:
            config.intra_op_parallelism_threads = threads
        if not gpu:
            config.device_count["GPU"] = 0
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Flattened layer activations.

        Parameters
        ----------
        images : np.ndarray [shape=(n, height, width, 3)]
            RGB pixel values 0..255 (uint8 or float).

        Returns
        -------
        np.ndarray [shape=(n, features), dtype=float32]
            The requested layers side by side (see :attr:`widths`).
        """
        if len(images) == 0:
            raise ValueError("features() needs at least one image")
        outputs = self.session.run(self._outputs, self._feed(images))
        if self.widths is None:
            self.widths = tuple(output.shape[1] for output in outputs)
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=1)

    def layer_outputs(self, images: np.ndarray, layers: list[str] | None = None):
        """Unflattened outputs of several layers, in graph order.

        Parameters
        ----------
        images : np.ndarray [shape=(n, height, width, 3)]
        layers : list of str, optional
            Default: every layer of the graph.

        Returns
        -------
        list of (str, np.ndarray)
            ``(layer, output)`` ordered as the layers appear in the graph (input to output
            for the bundled networks).
        """
        position = {op.name: number for number, op in enumerate(self.graph.get_operations())}
        names = sorted(layers or self.layers,
                       key=lambda layer: position[f"{IMPORT_PREFIX}/{layer}/{layer}"])
        tensors = [self.graph.get_tensor_by_name(f"{IMPORT_PREFIX}/{layer}/{layer}:0")
                   for layer in names]
        outputs = self.session.run(tensors, self._feed(images))
        return list(zip(names, outputs))

    def _feed(self, images) -> dict:
        """The feed of a batch: uint8 pictures as they are, anything else as float32."""
        if isinstance(images, np.ndarray) and images.dtype == np.uint8:
            return {self._pixels: images}
        return {self._input: np.asarray(images, dtype=np.float32)}

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class NetworkSet:
    """Several networks run on the same images: their requested layers side by side.

    Parameters
    ----------
    extractors : dict of str to FrozenGraphExtractor
        By network name; each returns its requested layers from one run of its graph.

    Attributes
    ----------
    pairs : tuple of (str, str)
        The (network, layer) of each block of columns, in column order.
    """

    def __init__(self, extractors: dict[str, FrozenGraphExtractor]):
        self.extractors = extractors
        self.pairs = tuple((net, layer) for net, extractor in extractors.items()
                           for layer in extractor.requested)
        self.device = next(iter(extractors.values())).device
        self.gpu_missing = any(each.gpu_missing for each in extractors.values())

    @property
    def widths(self) -> tuple[int, ...] | None:
        """The feature count of each pair (None until every network's is known)."""
        widths: list[int] = []
        for extractor in self.extractors.values():
            if extractor.widths is None:
                return None
            widths += extractor.widths
        return tuple(widths)

    def columns(self) -> dict[tuple[str, str], slice]:
        """Where each pair's features lie in what :meth:`features` returns (known once
        every network has run, or when its graph fixes the sizes)."""
        widths = self.widths
        if widths is None:
            raise RuntimeError("the feature widths of these networks are known once they "
                               "have run")
        columns, first = {}, 0
        for pair, width in zip(self.pairs, widths):
            columns[pair] = slice(first, first + width)
            first += width
        return columns

    def features(self, images: np.ndarray) -> np.ndarray:
        """Every pair's features of ``images``, side by side [shape=(n, sum(widths))]."""
        return np.concatenate([extractor.features(images)
                               for extractor in self.extractors.values()], axis=1)

    def close(self) -> None:
        for extractor in self.extractors.values():
            extractor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def load_networks(models: Mapping[str, tuple[str | os.PathLike, Sequence[str]]], *,
                  gpu: bool = True,
                  threads: int | None = None) -> FrozenGraphExtractor | NetworkSet:
    """Load the layers of each network: ``{net: (model file, layers)}``.

    One network with one layer is returned as its :class:`FrozenGraphExtractor`;
    anything more as a :class:`NetworkSet` (networks already loaded are closed when a
    later one fails).
    """
    extractors: dict[str, FrozenGraphExtractor] = {}
    try:
        for net, (path, layers) in models.items():
            extractors[net] = FrozenGraphExtractor(path, list(layers), gpu=gpu,
                                                   threads=threads)
    except BaseException:
        for extractor in extractors.values():
            extractor.close()
        raise
    if len(extractors) == 1:
        (only,) = extractors.values()
        if len(only.requested) == 1:
            return only
    return NetworkSet(extractors)


def configure_devices(gpu: bool) -> tuple[str, bool]:
    """Memory growth on every GPU, or no GPU at all; the CPU when TensorFlow sees none.

    Returns where a graph will run (``"CPU"`` or ``"GPU:0 (<name>)"``) and whether a GPU
    was allowed but none is visible (no GPU, or no CUDA libraries for TensorFlow).
    """
    tf = tensorflow()
    try:
        gpus = tf.config.list_physical_devices("GPU")
    except RuntimeError:
        gpus = []
    try:
        if not gpu:
            tf.config.set_visible_devices([], "GPU")
        for device in gpus:
            tf.config.experimental.set_memory_growth(device, True)
    except RuntimeError:
        pass  # devices were initialised earlier in this process; settings already fixed
    if not gpu or not gpus:
        return "CPU", bool(gpu and not gpus)
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    except (RuntimeError, ValueError):
        name = None
    return f"GPU:0 ({name})" if name else "GPU:0", False


def _static_width(tensor) -> int | None:
    """The number of columns of an output once flattened, when the graph fixes it."""
    dimensions = tensor.shape.as_list()[1:] if tensor.shape.rank else None
    if not dimensions or None in dimensions:
        return None
    return int(np.prod(dimensions))
