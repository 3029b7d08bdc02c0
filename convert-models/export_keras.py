"""Command line: export a Keras network as a frozen graph deep-spectrum can load.

Usage::

    python convert-models/export_keras.py vgg16 -o deep-spectrum/vgg16.pb
    python convert-models/export_keras.py resnet50 -o resnet50.pb --weights resnet50.h5
    python convert-models/export_keras.py -o mine.pb --keras-model mine.keras --preprocess tf
    python convert-models/export_keras.py --list

Prints the exposed layers with their feature sizes and the default layer.  Exit status:
0 when the graph was written, 1 when it could not be built or written (unknown network,
unreadable file, ImageNet weights that cannot be downloaded; the message on stderr
says why), 2 for usage errors.  The work is done by :mod:`keras_export`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
PROG = "export_keras.py"


def _make_importable() -> None:
    """Find ``keras_export`` next to this file and the package in a source checkout."""
    if str(_HERE) not in sys.path:
        sys.path.insert(0, str(_HERE))
    try:
        import deep_spectrum_extractor  # noqa: F401
    except ImportError:
        package_root = _HERE.parent / "deep-spectrum"
        if (package_root / "deep_spectrum_extractor").is_dir():
            sys.path.insert(0, str(package_root))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the exporter (importing it does not import TensorFlow)."""
    _make_importable()
    from keras_export import IMAGENET, PREPROCESSING, available_networks

    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog=PROG,
        description="Export a keras.applications network, or a Keras model file, as a "
                    "frozen TensorFlow graph in deep-spectrum's convention: placeholder "
                    "'input' taking raw RGB 0..255 of any size, a bilinear resize "
                    "(half-pixel centres) to the network's input size and the network's "
                    "own preprocess_input inside the graph, layers as '<name>/<name>' ops.")
    parser.add_argument("network", nargs="?", metavar="NET",
                        help=f"one of {', '.join(available_networks())}; with --keras-model "
                             f"optional (it then says the file holds that network)")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="the .pb to write (replaced atomically if it exists)")
    parser.add_argument("--weights", metavar="imagenet|none|FILE",
                        help=f"'{IMAGENET}' (Keras' ImageNet weights, downloaded once into "
                             f"~/.keras/models; the default), 'none' (untrained) or a local "
                             f"weights file such as the .h5 Keras downloads")
    parser.add_argument("--keras-model", type=Path, metavar="FILE",
                        help="export this Keras model file (.keras, .h5) instead of a "
                             "keras.applications network")
    parser.add_argument("--layers", metavar="NAME,NAME,...",
                        help="Keras layers to expose (default: the network's table layers; "
                             "for a model file without NET every layer with a plain name)")
    parser.add_argument("--preprocess", choices=tuple(PREPROCESSING), metavar="MODE",
                        help=f"preprocessing instead of the network's own: "
                             f"{', '.join(PREPROCESSING)}; required for a model file without "
                             f"NET")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="size to resize to, for a model file that accepts any size")
    parser.add_argument("--seed", type=int,
                        help="seed for untrained weights (--weights none), for reproducible "
                             "graphs")
    parser.add_argument("--list", action="store_true",
                        help="list the supported networks and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the exporter.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` if omitted.

    Returns
    -------
    int
        The exit status: 0 on success, 1 if the export failed, 2 for usage errors.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    import keras_export

    if args.list:
        print(_network_table(keras_export))
        return 0
    if args.output is None:
        parser.error("the following arguments are required: -o/--output")
    if args.network is None and args.keras_model is None:
        parser.error("give a network name (NET) or a model file (--keras-model)")
    if args.keras_model is not None and args.weights is not None:
        parser.error("--weights applies to keras.applications networks; a --keras-model "
                     "file brings its own weights")
    if args.keras_model is None and (args.layers or args.input_size):
        parser.error("--layers and --input-size apply to --keras-model files")
    if args.seed is not None and (args.weights or "").lower() != "none":
        parser.error("--seed applies to untrained weights (--weights none)")

    try:
        if args.keras_model is not None:
            layers = ([name.strip() for name in args.layers.split(",") if name.strip()]
                      if args.layers else None)
            graph = keras_export.build_model_file_graph(
                args.keras_model, network=args.network, layers=layers,
                preprocessing=args.preprocess,
                input_size=tuple(args.input_size) if args.input_size else None)
        else:
            weights = args.weights or keras_export.IMAGENET
            if weights.lower() == "none":
                weights = None
            elif weights.lower() == keras_export.IMAGENET:
                weights = keras_export.IMAGENET
            graph = keras_export.build_application_graph(
                args.network, weights=weights, preprocessing=args.preprocess, seed=args.seed)
        result = keras_export.export_graph(graph, args.output)
    except keras_export.KerasExportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(_report(result))
    return 0


def _report(result) -> str:
    graph = result.graph
    width = max(len(name) for name in graph.layers)
    size = (f"{result.size_bytes / 1e6:.1f} MB" if result.size_bytes >= 1e6
            else f"{result.size_bytes / 1e3:.1f} kB")
    lines = [f"wrote {result.output} ({size}; {graph.source}; weights {graph.weights}; "
             f"{graph.parameters:,} parameters)",
             f"input: RGB 0..255, resized to {graph.input_size[0]}x{graph.input_size[1]}, "
             f"preprocessing {graph.preprocessing}",
             "layers (flattened feature size):"]
    for name, size in graph.feature_sizes.items():
        marker = "  (default)" if name == graph.default_layer else ""
        lines.append(f"  {name:<{width}}  {size}{marker}")
    lines.append(f"default layer: {graph.default_layer} "
                 f"({graph.feature_sizes[graph.default_layer]} features)")
    return "\n".join(lines)


def _network_table(keras_export) -> str:
    lines = []
    for name in keras_export.available_networks():
        spec = keras_export.NETWORKS[name]
        lines.append(f"{name}: keras.applications.{spec.application}, "
                     f"{spec.input_size[0]}x{spec.input_size[1]}, preprocessing "
                     f"{spec.preprocessing}, default layer {spec.default_layer} "
                     f"({spec.feature_size}); layers {', '.join(spec.layer_names)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
