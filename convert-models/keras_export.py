"""Keras applications (and local Keras model files) as frozen graphs in deep-spectrum's convention.

Later DeepSpectrum releases ran ten ``keras.applications`` networks besides AlexNet.
This module turns each of them, or any single-input image model saved as ``.keras``
or ``.h5``, into a TensorFlow 1.x ``GraphDef`` that follows the graph convention of
:mod:`deep_spectrum_extractor.backend.convention`, so that the extractor runs it
like ``AlexNet.pb``:

* one float32 placeholder ``input``, shape ``[None, None, None, 3]``, raw RGB 0..255
  of any size;
* preprocessing inside the graph: a bilinear resize to the network's input size
  (see *Resize* below), then the application's own ``preprocess_input``
  (:data:`PREPROCESSING` lists the modes; :data:`NETWORKS` says which network uses
  which, as Keras' code does);
* each exposed layer as an op ``<name>/<name>`` (an ``Identity`` of the Keras layer's
  output, in inference mode), and no other op whose name has that form;
* weights as constants, and only the ops the exposed layers need.

Resize
------
``ResizeBilinear`` with ``half_pixel_centers=True`` and ``align_corners=False``:
output pixel ``i`` samples the input at ``(i + 0.5) * in / out - 0.5``.  This is what
``tf.image.resize(method="bilinear")`` and ``keras.layers.Resizing`` (the resize of
TensorFlow 2 and Keras, the frameworks these networks come from) compute, it samples
the image symmetrically (the TensorFlow 1 rule that AlexNet's graph keeps shifts
the picture by up to half a pixel towards the top left), and it is the identity when
the plot already has the network's size, so setting deep-spectrum's ``size`` to the
input size (224 or 299) feeds the network the plot exactly as drawn.  There is no
anti-aliasing.  (The later DeepSpectrum releases resized with PIL's default filter
in Python, which no graph op reproduces.)

Freezing
--------
The Keras model is wrapped in a ``tf.function`` with the input signature
``[None, None, None, 3]`` float32 and traced once in inference mode.  The traced
graph is cut down to the exposed layers, every variable read (``ReadVariableOp``
on a captured variable) becomes a ``Const`` holding the variable's value, and the
``Identity`` ops marking the layers are renamed to ``<name>/<name>``.  That is what
``convert_variables_to_constants_v2`` does for such a graph, in a tenth of the time
and memory (VGG16: 2 GB instead of 6 GB); a graph that uses its variables in any
other way (control flow) goes through ``convert_variables_to_constants_v2`` itself.
Finally the graph is checked: one placeholder ``input``, exactly the exposed layers
under :func:`~deep_spectrum_extractor.backend.convention.layer_names`, and only ops
from :data:`~deep_spectrum_extractor.backend.graph_safety.ALLOWED_OPS`.

Examples
--------
>>> graph = build_application_graph("mobilenet_v2", weights=None, seed=0)  # doctest: +SKIP
>>> graph.default_layer, graph.feature_sizes[graph.default_layer]           # doctest: +SKIP
('avg_pool', 1280)
>>> export_graph(graph, "mobilenet_v2.pb").output                           # doctest: +SKIP
PosixPath('mobilenet_v2.pb')
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from deep_spectrum_extractor.backend.convention import INPUT_NAME, layer_names
from deep_spectrum_extractor.backend.graph_io import write_graph_def
from deep_spectrum_extractor.errors import ModelError

__all__ = [
    "IMAGENET",
    "KerasExportError",
    "KerasGraph",
    "KerasNetwork",
    "ExportResult",
    "LayerRef",
    "MODEL_SUFFIXES",
    "NETWORKS",
    "PREPROCESSING",
    "RESIZE",
    "available_networks",
    "build_application_graph",
    "build_model_file_graph",
    "export_graph",
    "freeze_keras_model",
    "get_network",
]

#: The ``weights`` value that asks Keras for its ImageNet weights (a download).
IMAGENET = "imagenet"

#: Preprocessing modes: name -> what the graph does to the resized RGB pixels.
#: ``caffe``, ``tf`` and ``torch`` are ``keras.applications.imagenet_utils.preprocess_input``
#: with that ``mode`` (the graph calls that very function on its tensor).
PREPROCESSING = {
    "caffe": "RGB to BGR, then the ImageNet mean (103.939, 116.779, 123.68) subtracted "
             "per BGR channel; no scaling",
    "tf": "x / 127.5 - 1, i.e. scaled to [-1, 1]",
    "torch": "x / 255, then (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225) per RGB "
             "channel",
    "bgr": "RGB to BGR only, no mean subtraction (what the later DeepSpectrum "
           "releases fed their VGG networks)",
    "none": "the raw 0..255 RGB values",
}

#: The resize every exported graph applies before the preprocessing.
RESIZE = "bilinear, half-pixel centres (tf.image.resize / keras.layers.Resizing), no antialiasing"

#: File name endings of Keras model files :func:`build_model_file_graph` reads.
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

_LAYER_NAME = re.compile(r"\w+")


class KerasExportError(ModelError):
    """A Keras network cannot be exported: unknown name, unreadable file, no weights."""


@dataclass(frozen=True)
class LayerRef:
    """Which Keras layer's output an exposed layer is.

    Keras gives some layers automatic names (``add_7``, ``global_average_pooling2d_1``)
    that depend on what was built before in the process, so a layer can also be
    found by its class.

    Attributes
    ----------
    name : str or None
        The Keras layer's name (``fc2``).
    kind : str or None
        The layer's class name (``GlobalAveragePooling2D``): without ``name`` and
        ``after`` the only layer of that class; with ``after`` the only layer of that
        class that takes the output of layer ``after`` as an input.
    after : str or None
        Name of the layer whose output feeds the wanted one.
    """

    name: str | None = None
    kind: str | None = None
    after: str | None = None

    def __post_init__(self):
        if (self.name is None) == (self.kind is None) or (self.after and not self.kind):
            raise ValueError("a LayerRef takes a name, or a kind with an optional after")

    def describe(self) -> str:
        """How the reference reads in messages (``fc2``, ``the Add after block4_pool``)."""
        if self.name is not None:
            return self.name
        if self.after is not None:
            return f"the {self.kind} layer after {self.after}"
        return f"the {self.kind} layer"

    def resolve(self, model):
        """The Keras layer of ``model`` this reference names.

        Raises
        ------
        KerasExportError
            If there is no such layer, or more than one.
        """
        if self.name is not None:
            try:
                return model.get_layer(self.name)
            except ValueError:
                raise KerasExportError(f"model {model.name!r} has no layer {self.name!r}") from None
        candidates = [layer for layer in model.layers if type(layer).__name__ == self.kind]
        if self.after is not None:
            source = LayerRef(self.after).resolve(model).output
            candidates = [layer for layer in candidates
                          if any(tensor is source for tensor in _flat_inputs(layer))]
        if len(candidates) != 1:
            raise KerasExportError(f"model {model.name!r} has {len(candidates)} candidates for "
                                   f"{self.describe()}, expected exactly one")
        return candidates[0]


@dataclass(frozen=True)
class KerasNetwork:
    """One supported ``keras.applications`` network.

    Attributes
    ----------
    name : str
        The name deep-spectrum and the command line use (``vgg16``).
    application : str
        The constructor in ``keras.applications`` (``VGG16``); see :meth:`constructor`.
    module : str
        The ``keras.applications`` module whose ``preprocess_input`` the network was
        trained with (``vgg16``).
    input_size : tuple of int
        ``(height, width)`` the graph resizes every image to.
    preprocessing : str
        The mode of the module's ``preprocess_input`` (a key of :data:`PREPROCESSING`),
        as read from Keras' code.
    layers : tuple of (str, LayerRef)
        The exposed layers in network order: graph name and Keras layer.
    default_layer : str
        The layer the features come from unless another is chosen.
    feature_size : int
        Length of the default layer's (flattened) features.
    """

    name: str
    application: str
    module: str
    input_size: tuple[int, int]
    preprocessing: str
    layers: tuple[tuple[str, LayerRef], ...]
    default_layer: str
    feature_size: int

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The exposed layers' graph names, in network order."""
        return tuple(name for name, _ in self.layers)

    def constructor(self):
        """The ``keras.applications`` constructor (imports Keras)."""
        return getattr(_keras().applications, self.application)

    def preprocess_input(self):
        """The module's own ``preprocess_input`` function (imports Keras)."""
        return self.module_object().preprocess_input

    def module_object(self):
        """The ``keras.applications`` submodule (imports Keras)."""
        return getattr(_keras().applications, self.module)


def _named(*names: str) -> tuple[tuple[str, LayerRef], ...]:
    return tuple((name, LayerRef(name)) for name in names)


_VGG_LAYERS = _named("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool",
                     "fc1", "fc2", "predictions")
_DENSENET_LAYERS = _named("conv1_relu", "pool2_pool", "pool3_pool", "pool4_pool", "relu",
                          "avg_pool", "predictions")
_AVG_POOL = (("avg_pool", LayerRef(kind="GlobalAveragePooling2D")),)

#: The supported ``keras.applications`` networks: name -> :class:`KerasNetwork`.
NETWORKS: dict[str, KerasNetwork] = {network.name: network for network in (
    KerasNetwork("vgg16", "VGG16", "vgg16", (224, 224), "caffe", _VGG_LAYERS, "fc2", 4096),
    KerasNetwork("vgg19", "VGG19", "vgg19", (224, 224), "caffe", _VGG_LAYERS, "fc2", 4096),
    KerasNetwork("resnet50", "ResNet50", "resnet50", (224, 224), "caffe",
                 _named("conv1_relu", "conv2_block3_out", "conv3_block4_out",
                        "conv4_block6_out", "conv5_block3_out", "avg_pool", "predictions"),
                 "avg_pool", 2048),
    KerasNetwork("inception_resnet_v2", "InceptionResNetV2", "inception_resnet_v2",
                 (299, 299), "tf",
                 _named("mixed_5b", "block35_10_ac", "mixed_6a", "block17_20_ac", "mixed_7a",
                        "conv_7b_ac", "avg_pool", "predictions"),
                 "avg_pool", 1536),
    KerasNetwork("xception", "Xception", "xception", (299, 299), "tf",
                 _named("block1_conv2_act")
                 + tuple((f"block{index}_out", LayerRef(kind="Add", after=after))
                         for index, after in ((2, "block2_pool"), (3, "block3_pool"),
                                              (4, "block4_pool"), (12, "block12_sepconv3_bn"),
                                              (13, "block13_pool")))
                 + _named("block14_sepconv2_act", "avg_pool", "predictions"),
                 "avg_pool", 2048),
    KerasNetwork("densenet121", "DenseNet121", "densenet", (224, 224), "torch",
                 _DENSENET_LAYERS, "avg_pool", 1024),
    KerasNetwork("densenet169", "DenseNet169", "densenet", (224, 224), "torch",
                 _DENSENET_LAYERS, "avg_pool", 1664),
    KerasNetwork("densenet201", "DenseNet201", "densenet", (224, 224), "torch",
                 _DENSENET_LAYERS, "avg_pool", 1920),
    KerasNetwork("mobilenet", "MobileNet", "mobilenet", (224, 224), "tf",
                 _named("conv1_relu", "conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu",
                        "conv_pw_11_relu", "conv_pw_13_relu") + _AVG_POOL
                 + _named("predictions"),
                 "avg_pool", 1024),
    KerasNetwork("mobilenet_v2", "MobileNetV2", "mobilenet_v2", (224, 224), "tf",
                 _named("expanded_conv_project_BN", "block_2_add", "block_5_add",
                        "block_9_add", "block_12_add", "block_15_add", "block_16_project_BN",
                        "out_relu") + _AVG_POOL + _named("predictions"),
                 "avg_pool", 1280),
)}


def available_networks() -> list[str]:
    """Names of the supported ``keras.applications`` networks, sorted."""
    return sorted(NETWORKS)


def get_network(name: str) -> KerasNetwork:
    """The table entry of a network, by name (case-insensitive).

    Raises
    ------
    KerasExportError
        If the name is unknown; the message lists the known names.
    """
    try:
        return NETWORKS[name.lower()]
    except KeyError:
        raise KerasExportError(f"unknown network {name!r}; available: "
                               f"{', '.join(available_networks())}") from None


@dataclass(frozen=True)
class KerasGraph:
    """A frozen graph built from a Keras model, with what describes it.

    Attributes
    ----------
    graph_def : tensorflow.compat.v1.GraphDef
        The graph in deep-spectrum's convention.
    source : str
        Where the model came from (``keras.applications.VGG16`` or a file path).
    network : str or None
        The table name, when the model is (or is shaped like) a table network.
    weights : str
        ``imagenet``, ``none (untrained, seed N)``, a weights file's path, or
        ``the model file's``.
    input_size : tuple of int
        ``(height, width)`` the graph resizes to.
    preprocessing : str
        The preprocessing mode (a key of :data:`PREPROCESSING`).
    feature_sizes : dict[str, int]
        Exposed layers in network order, each with its flattened feature length.
    default_layer : str
        The layer to extract from unless another is chosen.
    parameters : int
        Number of weights of the Keras model.
    """

    graph_def: object = field(repr=False)
    source: str
    network: str | None
    weights: str
    input_size: tuple[int, int]
    preprocessing: str
    feature_sizes: dict[str, int]
    default_layer: str
    parameters: int

    @property
    def layers(self) -> list[str]:
        """Exposed layers in network order."""
        return list(self.feature_sizes)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_graph` wrote.

    Attributes
    ----------
    output : pathlib.Path
        The ``.pb`` file.
    size_bytes : int
        Its size.
    graph : KerasGraph
        The graph it holds (without the need to read the file back).
    """

    output: Path
    size_bytes: int
    graph: KerasGraph


def build_application_graph(network: str, *, weights: str | os.PathLike | None = IMAGENET,
                            preprocessing: str | None = None, seed: int | None = None
                            ) -> KerasGraph:
    """Build a ``keras.applications`` network as a frozen graph.

    Parameters
    ----------
    network : str
        A name from :data:`NETWORKS` (``vgg16``, ``resnet50``, ...).
    weights : str, os.PathLike or None
        ``"imagenet"`` for Keras' ImageNet weights (downloaded into ``~/.keras/models``
        on first use, so the first time needs the network), the path of a weights file
        (such as the ``.h5`` Keras downloads), or None for untrained weights.
    preprocessing : str, optional
        A key of :data:`PREPROCESSING` to use instead of the network's own mode.
    seed : int, optional
        Seed Keras' random generators (``keras.utils.set_random_seed``) before the
        model is built, so that untrained weights are reproducible.

    Returns
    -------
    KerasGraph
        With the network's table layers and default layer.

    Raises
    ------
    KerasExportError
        For an unknown network, an unknown preprocessing mode, a weights file that is
        missing or does not fit, or ImageNet weights that cannot be downloaded.
    """
    spec = get_network(network)
    mode = _check_preprocessing(spec.preprocessing if preprocessing is None else preprocessing)
    if weights is None:
        weights_text = "none (untrained)" if seed is None else f"none (untrained, seed {seed})"
    elif str(weights) == IMAGENET:
        weights, weights_text = IMAGENET, IMAGENET
    else:
        weights = _readable_file(weights, "weights file")
        weights_text = str(weights)
    keras = _keras()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    constructor = spec.constructor()
    try:
        model = constructor(weights=None if weights is None else str(weights))
    except Exception as exc:  # Keras raises bare Exception for failed downloads
        if weights == IMAGENET:
            raise KerasExportError(
                f"cannot get the ImageNet weights of {spec.name} ({exc}); without network "
                f"access, download the weights file Keras names there on another machine "
                f"and pass it with --weights FILE") from exc
        if weights is None:
            raise
        raise KerasExportError(f"cannot load the weights file {weights} into {spec.name}: "
                               f"{exc}") from exc
    return _freeze_table_network(model, spec, mode, source=f"keras.applications.{spec.application}",
                                 weights_text=weights_text)


def build_model_file_graph(path: str | os.PathLike, *, network: str | None = None,
                           layers: list[str] | tuple[str, ...] | None = None,
                           preprocessing: str | None = None,
                           input_size: tuple[int, int] | None = None) -> KerasGraph:
    """Build a Keras model file (``.keras``, ``.h5``) as a frozen graph.

    The model must take one image batch ``(batch, height, width, 3)``.  It is loaded
    with ``safe_mode=True`` (no Python code stored in the file is run) and without
    compiling; still, only load model files from sources you trust.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    network : str, optional
        A name from :data:`NETWORKS` when the file holds that network (for example
        fine-tuned): its input size, preprocessing, layers and default layer are used.
    layers : sequence of str, optional
        Keras layer names to expose (each must be a word: letters, digits, ``_``).
        By default the table's layers with ``network``, otherwise every layer but the
        input whose name is a word and whose output is one tensor.
    preprocessing : str, optional
        A key of :data:`PREPROCESSING`; required without ``network``, since only the
        model's author knows what it was trained with (the later DeepSpectrum
        releases used ``tf`` for model files).
    input_size : tuple of int, optional
        ``(height, width)`` to resize to; by default the model's fixed input size.
        Required if the model accepts any size.

    Returns
    -------
    KerasGraph
        Default layer: the table's with ``network``; otherwise the layer that makes the
        model's output if it is exposed, else the last exposed layer.

    Raises
    ------
    KerasExportError
        If the file cannot be read or loaded, the model does not take one RGB image
        batch, a layer does not exist, or a setting is missing or invalid.
    """
    path = _readable_file(path, "Keras model file")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise KerasExportError(f"{path} is not a Keras model file: its name must end in "
                               f"{', '.join(MODEL_SUFFIXES)}")
    spec = get_network(network) if network is not None else None
    if preprocessing is None:
        if spec is None:
            raise KerasExportError(
                f"say how {path.name} expects its pixels: preprocessing must be one of "
                f"{', '.join(PREPROCESSING)} (the later DeepSpectrum releases used 'tf' for "
                f"model files)")
        preprocessing = spec.preprocessing
    mode = _check_preprocessing(preprocessing)
    if layers is not None:
        layers = _check_layer_names(layers)
    if input_size is not None:
        input_size = _check_input_size(input_size)

    keras = _keras()
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for bad files
        raise KerasExportError(f"cannot load the Keras model file {path}: {exc}") from exc
    model_size = _model_input_size(model, path)
    if input_size is None:
        if model_size is None:
            raise KerasExportError(f"{path.name} accepts images of any size; give the size to "
                                   f"resize to (--input-size HEIGHT WIDTH)")
        input_size = model_size
    elif model_size is not None and model_size != input_size:
        raise KerasExportError(f"{path.name} takes {model_size[0]}x{model_size[1]} images, "
                               f"not {input_size[0]}x{input_size[1]}")

    if layers is not None:
        refs = [(name, LayerRef(name)) for name in layers]
    elif spec is not None:
        refs = list(spec.layers)
    else:
        refs = [(layer.name, LayerRef(layer.name)) for layer in _default_layers(model)]
        if not refs:
            raise KerasExportError(f"{path.name} has no layer whose name is a word "
                                   f"(letters, digits, _); choose layers (--layers)")
    names = [name for name, _ in refs]
    if spec is not None and spec.default_layer in names:
        default = spec.default_layer
    else:
        outputs = [ref.resolve(model).output for _, ref in refs]
        default = next((name for name, output in zip(names, outputs)
                        if any(output is tensor for tensor in model.outputs)), names[-1])
    graph_def, sizes = freeze_keras_model(model, layers=refs, input_size=input_size,
                                          preprocessing=mode)
    return KerasGraph(graph_def=graph_def, source=str(path),
                      network=spec.name if spec else None, weights="the model file's",
                      input_size=input_size, preprocessing=mode, feature_sizes=sizes,
                      default_layer=default, parameters=int(model.count_params()))


def freeze_keras_model(model, *, layers, input_size: tuple[int, int], preprocessing: str):
    """Freeze a Keras model into a GraphDef in deep-spectrum's convention.

    Parameters
    ----------
    model : keras.Model
        A functional or sequential model with one input ``(batch, height, width, 3)``;
        run in inference mode.
    layers : sequence of (str, LayerRef or str)
        The layers to expose: graph name (a word) and Keras layer (a LayerRef or a
        Keras layer name).
    input_size : tuple of int
        ``(height, width)`` the graph resizes every image to (bilinear, see
        :data:`RESIZE`).
    preprocessing : str
        A key of :data:`PREPROCESSING`.

    Returns
    -------
    graph_def : tensorflow.compat.v1.GraphDef
        Placeholder ``input``; the exposed layers as ``<name>/<name>``.
    feature_sizes : dict[str, int]
        Flattened feature length of each exposed layer, in the given order.

    Raises
    ------
    KerasExportError
        If a layer cannot be found, names repeat, or the frozen graph breaks the
        convention (a stray ``x/x`` op, an op outside the allowlist).
    """
    from deep_spectrum_extractor.backend.graph_safety import check_graph_ops
    from deep_spectrum_extractor.backend.tf import tensorflow

    tf = tensorflow()
    keras = _keras()
    mode = _check_preprocessing(preprocessing)
    height, width = _check_input_size(input_size)
    refs = [(name, ref if isinstance(ref, LayerRef) else LayerRef(ref)) for name, ref in layers]
    names = _check_layer_names([name for name, _ in refs])
    if _model_input_size(model, model.name) not in (None, (height, width)):
        raise KerasExportError(f"model {model.name!r} takes {model.input_shape[1:3]} images, "
                               f"not {height}x{width}")
    outputs = []
    for name, ref in refs:
        output = ref.resolve(model).output
        if not hasattr(output, "shape") or isinstance(output, (list, tuple, dict)):
            raise KerasExportError(f"layer {ref.describe()!r} of {model.name!r} has several "
                                   f"outputs and cannot be exposed as {name!r}")
        outputs.append(output)
    probe = keras.Model(model.inputs[0], outputs)  # one tensor in, as the function passes it
    shapes: dict[str, tuple] = {}  # static shapes of the traced layer outputs

    exposed: dict[str, str] = {}  # op name inside the traced function -> graph layer name

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name=INPUT_NAME)], autograph=False)
    def serve(images):
        with tf.name_scope("preprocess"):
            size = tf.constant([height, width], dtype=tf.int32, name="size")
            net = tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=False,
                                            half_pixel_centers=True, name="resize")
            net = _preprocess_tensor(keras, net, mode)
        results = probe(net, training=False)
        if not isinstance(results, (list, tuple)):
            results = [results]
        marked = []
        for name, result in zip(names, results):
            result = tf.identity(result, name="exposed")
            exposed[result.op.name] = name
            shapes[name] = tuple(result.shape)
            marked.append(result)
        return marked

    graph_def = _frozen_graph_def(tf, serve.get_concrete_function(), list(exposed))
    sizes = {name: _flat_size(name, shapes[name], (height, width)) for name in names}
    taken = {node.name for node in graph_def.node}
    for node in graph_def.node:
        if node.name in exposed:
            target = f"{exposed[node.name]}/{exposed[node.name]}"
            if target in taken:
                raise KerasExportError(f"the graph of {model.name!r} already has an op "
                                       f"{target!r}; the layer {exposed[node.name]!r} cannot "
                                       f"be exposed under that name")
            node.name = target
    _check_convention(graph_def, names, model.name)
    try:
        check_graph_ops(graph_def, f"exported from {model.name!r}")
    except ModelError as exc:
        raise KerasExportError(f"{exc}; deep-spectrum would refuse the graph") from exc
    return graph_def, sizes


def export_graph(graph: KerasGraph, output: str | os.PathLike) -> ExportResult:
    """Write a built graph to a ``.pb`` file atomically (a temporary file, then a rename).

    Raises
    ------
    KerasExportError
        If the file cannot be written.
    """
    output = Path(output)
    if output.is_dir():
        raise KerasExportError(f"output {output} is a folder; give the .pb file's path")
    try:
        path = write_graph_def(graph.graph_def, output)
    except OSError as exc:
        raise KerasExportError(f"cannot write {output}: {exc.strerror or exc}") from exc
    return ExportResult(output=path, size_bytes=path.stat().st_size, graph=graph)


def _freeze_table_network(model, spec: KerasNetwork, mode: str, *, source: str,
                          weights_text: str) -> KerasGraph:
    graph_def, sizes = freeze_keras_model(model, layers=spec.layers, input_size=spec.input_size,
                                          preprocessing=mode)
    if sizes[spec.default_layer] != spec.feature_size:  # the table disagrees with Keras
        raise KerasExportError(f"{spec.name}'s layer {spec.default_layer!r} has "
                               f"{sizes[spec.default_layer]} features, the table says "
                               f"{spec.feature_size}")
    return KerasGraph(graph_def=graph_def, source=source, network=spec.name,
                      weights=weights_text, input_size=spec.input_size, preprocessing=mode,
                      feature_sizes=sizes, default_layer=spec.default_layer,
                      parameters=int(model.count_params()))


def _frozen_graph_def(tf, concrete, targets: list[str]):
    """The traced function as a GraphDef with its variables as constants, cut to ``targets``.

    The usual Keras inference graph only reads its variables (``ReadVariableOp`` on
    captured resource handles); each read becomes a ``Const`` holding the variable's
    value, and everything the targets do not need is dropped.  This is what
    ``convert_variables_to_constants_v2`` does for such graphs, without its detour
    through a new function (which takes VGG16 half a minute and 6 GB).  Any other
    use of a captured tensor (control flow, resource gathers) is left to
    ``convert_variables_to_constants_v2``.
    """
    graph_def = concrete.graph.as_graph_def()
    _prune(graph_def, targets)
    if not _inline_captures(tf, concrete, graph_def):
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    _prune(graph_def, targets)
    for node in graph_def.node:
        if "_class" in node.attr:  # colocation hints may name dropped nodes
            del node.attr["_class"]
    called = {node.op for node in graph_def.node}
    if not any(function.signature.name in called for function in graph_def.library.function):
        del graph_def.library.function[:]
    return graph_def


def _inline_captures(tf, concrete, graph_def) -> bool:
    """Replace captured variables and tensors by constants; False if that is not enough."""
    captured = {internal.op.name: external for external, internal in concrete.graph.captures}
    readers: dict[str, list] = {}
    for node in graph_def.node:
        for name in node.input:
            source = name.lstrip("^").split(":")[0]
            if source in captured:
                readers.setdefault(source, []).append(node)
    for node in graph_def.node:
        if node.name not in captured:
            continue
        external = captured[node.name]
        if external.dtype != tf.resource:  # a captured eager tensor: it becomes a constant
            value = external.numpy()
            node.op = "Const"
            node.attr.clear()
            node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            continue
        users = readers.get(node.name, [])
        if any(user.op != "ReadVariableOp" or list(user.input) != [node.name] for user in users):
            return False
        first = None
        for user in users:
            dtype = user.attr["dtype"].type
            del user.input[:]
            user.attr.clear()
            if first is None:
                value = tf.raw_ops.ReadVariableOp(resource=external, dtype=tf.as_dtype(dtype))
                user.op = "Const"
                user.attr["dtype"].type = dtype
                user.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.numpy()))
                first = user.name
            else:
                user.op = "Identity"
                user.input.append(first)
                user.attr["T"].type = dtype
    return True


def _prune(graph_def, targets: list[str]) -> None:
    """Delete, in place, every node the ``targets`` do not depend on."""
    nodes = {node.name: node for node in graph_def.node}
    keep: set[str] = set()
    stack = list(targets)
    while stack:
        name = stack.pop()
        if name not in keep:
            keep.add(name)
            stack.extend(source.lstrip("^").split(":")[0] for source in nodes[name].input)
    for index in reversed(range(len(graph_def.node))):
        if graph_def.node[index].name not in keep:
            del graph_def.node[index]


def _preprocess_tensor(keras, images, mode: str):
    """The preprocessing of ``mode`` on a float32 NHWC RGB tensor."""
    if mode in ("caffe", "tf", "torch"):
        return keras.applications.imagenet_utils.preprocess_input(
            images, data_format="channels_last", mode=mode)
    if mode == "bgr":
        return keras.ops.flip(images, axis=-1)
    return images


def _check_convention(graph_def, names: list[str], model_name: str) -> None:
    placeholders = [node for node in graph_def.node if node.op == "Placeholder"]
    if [node.name for node in placeholders] != [INPUT_NAME]:
        raise KerasExportError(f"the graph of {model_name!r} has the placeholders "
                               f"{[node.name for node in placeholders]}, expected only "
                               f"{INPUT_NAME!r}")
    found = layer_names(node.name for node in graph_def.node)
    if found != sorted(names):
        extra = sorted(set(found) - set(names))
        raise KerasExportError(f"the graph of {model_name!r} exposes {found}, expected "
                               f"{sorted(names)}" + (f" (stray: {extra})" if extra else ""))


def _check_preprocessing(mode: str) -> str:
    if mode not in PREPROCESSING:
        raise KerasExportError(f"unknown preprocessing {mode!r}; choose one of "
                               f"{', '.join(PREPROCESSING)}")
    return mode


def _check_layer_names(names) -> list[str]:
    names = list(names)
    if not names:
        raise KerasExportError("no layers to expose")
    for name in names:
        if not isinstance(name, str) or not _LAYER_NAME.fullmatch(name):
            raise KerasExportError(f"layer name {name!r} cannot be exposed: it must consist "
                                   f"of letters, digits and _")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise KerasExportError(f"layer names repeat: {', '.join(repeated)}")
    return names


def _check_input_size(size) -> tuple[int, int]:
    try:
        height, width = (int(value) for value in size)
    except (TypeError, ValueError):
        raise KerasExportError(f"input size {size!r} must be two integers "
                               f"(height, width)") from None
    if height < 1 or width < 1 or (height, width) != tuple(size):
        raise KerasExportError(f"input size {tuple(size)} must be two positive integers")
    return height, width


def _readable_file(path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "does not exist"
        raise KerasExportError(f"{what} {path} {reason}")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise KerasExportError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    return path


def _model_input_size(model, source) -> tuple[int, int] | None:
    """The model's fixed ``(height, width)``, None if it takes any size."""
    inputs = model.inputs if getattr(model, "inputs", None) else None
    if not inputs or len(inputs) != 1:
        count = len(inputs) if inputs else 0
        raise KerasExportError(f"{source} must take one input (an image batch), it takes "
                               f"{count}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise KerasExportError(f"{source} takes inputs of shape {shape}; it must take RGB "
                               f"image batches (batch, height, width, 3)")
    if shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def _default_layers(model):
    layers = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer" or not _LAYER_NAME.fullmatch(layer.name):
            continue
        output = layer.output
        if isinstance(output, (list, tuple, dict)):
            continue
        layers.append(layer)
    return layers


def _flat_inputs(layer):
    try:
        inputs = layer.input
    except (AttributeError, ValueError):  # never called, or called several times
        return []
    return _keras().tree.flatten(inputs)


def _flat_size(name: str, shape: tuple, input_size: tuple[int, int]) -> int:
    dims = shape[1:]
    if any(dim is None for dim in dims):
        raise KerasExportError(f"layer {name!r} has the shape {shape} even with "
                               f"{input_size[0]}x{input_size[1]} inputs; its feature length "
                               f"is not fixed")
    return math.prod(int(dim) for dim in dims)


def _keras():
    """Import Keras (TensorFlow backend) quietly."""
    from deep_spectrum_extractor.backend.tf import tensorflow

    tensorflow()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise KerasExportError(f"Keras runs on {keras.backend.backend()!r}; exporting needs "
                               f"the TensorFlow backend (set KERAS_BACKEND=tensorflow)")
    return keras
