"""Running a frozen graph: load it once, check the layer, turn image batches into features."""
from __future__ import annotations

import os
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
    """Features from one layer of a frozen graph.

    Parameters
    ----------
    model_path : path-like
        A ``.pb`` in deep-spectrum's graph convention.
    layer : str
        Layer whose activations are the features; ModelError lists the available
        layers when it does not exist.
    gpu : bool
        Use a GPU when TensorFlow sees one (memory growth on); otherwise the CPU.
    threads : int or None
        TensorFlow intra-op threads; None lets TensorFlow decide.

    Examples
    --------
    >>> extractor = FrozenGraphExtractor("AlexNet.pb", "fc7")     # doctest: +SKIP
    >>> extractor.features(images).shape                           # doctest: +SKIP
    (32, 4096)
    """

    def __init__(self, model_path: str | os.PathLike, layer: str, *, gpu: bool = True,
                 threads: int | None = None):
        tf = tensorflow()

        self.model_path = Path(model_path)
        graph_def = read_graph_def(self.model_path)
        self.layers = layer_names(node.name for node in graph_def.node)
        if layer not in self.layers:
            raise ModelError(f"layer {layer!r} is not in {self.model_path.name}; "
                             f"available: {', '.join(self.layers) or 'none'}")
        self.layer = layer
        _configure_devices(tf, gpu)
        self.graph = tf.Graph()
        with self.graph.as_default():
            try:
                tf.compat.v1.import_graph_def(graph_def, name=IMPORT_PREFIX)
            except ValueError as exc:  # an inconsistent graph: a problem of the file
                raise ModelError(f"model file {self.model_path} is not a valid graph: "
                                 f"{str(exc).splitlines()[0]}") from exc
            self._input = self.graph.get_tensor_by_name(f"{IMPORT_PREFIX}/{INPUT_NAME}:0")
            output = self.graph.get_tensor_by_name(f"{IMPORT_PREFIX}/{layer}/{layer}:0")
            self._output = tf.reshape(output, [tf.shape(output)[0], -1])
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
        """
        if len(images) == 0:
            raise ValueError("features() needs at least one image")
        batch = np.asarray(images, dtype=np.float32)
        return self.session.run(self._output, {self._input: batch})

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
        outputs = self.session.run(tensors, {self._input: np.asarray(images, np.float32)})
        return list(zip(names, outputs))

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _configure_devices(tf, gpu: bool) -> None:
    """Memory growth on every GPU, or no GPU at all; silently the CPU when none exists."""
    try:
        gpus = tf.config.list_physical_devices("GPU")
        if not gpu:
            tf.config.set_visible_devices([], "GPU")
        for device in gpus:
            tf.config.experimental.set_memory_growth(device, True)
    except RuntimeError:
        pass  # devices were initialised earlier in this process; settings already fixed
