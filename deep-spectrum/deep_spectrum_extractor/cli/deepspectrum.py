"""``deepspectrum``: the Deep Spectrum tools as subcommands of one command.

* ``deepspectrum features ...`` is ``extract_ds_features ...``, unchanged;
* ``deepspectrum plot`` writes the images only: by default exactly the images the
  network sees (the files ``extract_ds_features -specout`` writes), with ``--labelled``
  figures with axes, title and colour bar for people (PNG or PDF);
* ``deepspectrum image-features`` extracts features from existing PNG/JPEG images;
* ``deepspectrum networks`` lists the networks of deep.conf with their layers and
  feature sizes.

Options shared with ``extract_ds_features`` are taken from its parser, so names, types,
defaults and help texts cannot drift apart.  Exit status as for
``extract_ds_features``: 0 when every input was used, 1 when some were skipped (or
nothing came out), 2 for usage errors, 130 when interrupted.  Importing this module
imports neither TensorFlow nor librosa nor matplotlib, so ``-h`` is instant.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .. import __version__
from ..config import load_config
from ..errors import DeepSpectrumError, ModelError, ParameterError, exit_status
from ..images.figures import FIGURE_FORMATS
from ..settings import DEFAULT_LAYER, DEFAULT_NET, RunOptions
from . import extract_ds_features

PROG = "deepspectrum"


# --- the parser -------------------------------------------------------------------------

#: Option groups of ``extract_ds_features`` that ``plot`` takes over whole, so that an
#: option added there (such as ``-sr``) reaches ``plot`` too.
AUDIO_GROUPS = ("extracting features from audio chunks", "parameters of the audio plots")


def _shared_actions() -> tuple[dict[str, argparse.Action], dict[str, list[str]]]:
    """``extract_ds_features``'s options by destination, and its groups' destinations."""
    parser = extract_ds_features.build_parser()
    groups = {group.title: [action.dest for action in group._group_actions]
              for group in parser._action_groups}
    return {action.dest: action for action in parser._actions}, groups


def _reuse(group, source: dict[str, argparse.Action], dest: str, **changes) -> None:
    """Add ``extract_ds_features``'s option ``dest`` to ``group``, with ``changes``.

    The option is rebuilt from the original action's attributes (names, type, nargs,
    choices, default, metavar, help), so both commands accept exactly the same values.
    """
    action = source[dest]
    accepted = inspect.signature(type(action).__init__).parameters
    keywords = {name: getattr(action, name) for name in accepted
                if name not in ("self", "option_strings") and hasattr(action, name)}
    keywords.update(changes)
    group.add_argument(*action.option_strings, action=type(action), **keywords)


def build_parser() -> argparse.ArgumentParser:
    """The ``deepspectrum`` parser with its subcommands.

    ``features`` is listed here but never parsed here: :func:`main` hands its arguments
    to ``extract_ds_features`` unchanged.
    """
    shared, groups = _shared_actions()
    parser = argparse.ArgumentParser(
        prog=PROG, description="Deep Spectrum: audio plotted as spectrogram images and fed "
        "to an ImageNet-pretrained CNN. Run 'deepspectrum COMMAND -h' for a command's "
        "options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    commands.add_parser("features", add_help=False,
                        help="extract features from audio files; the same command and "
                        "options as extract_ds_features")
    _add_plot_parser(commands, shared, groups)
    _add_image_features_parser(commands, shared)
    _add_networks_parser(commands, shared)
    return parser


def _add_plot_parser(commands, shared, groups) -> None:
    plot = commands.add_parser(
        "plot", help="write the plots of audio chunks as images, without a network",
        description="Write the plot of every audio chunk as an image: by default exactly "
        "the image the network sees (the files extract_ds_features -specout writes); "
        "with --labelled a figure with time and frequency axes, title and colour bar.")
    required = plot.add_argument_group("required options")
    _reuse(required, shared, "i")
    required.add_argument("-o", required=True, metavar="FOLDER",
                          help="folder for the images, created if missing; files are named "
                          "<folder of the audio file>/<stem>_<timestamp>.png (without -t: "
                          "<stem>.png)")
    for title in AUDIO_GROUPS:
        if title not in groups:
            raise RuntimeError(f"extract_ds_features has no option group {title!r}")
        group = plot.add_argument_group(title.replace("extracting features from ", ""))
        for dest in groups[title]:
            _reuse(group, shared, dest)
    figures = plot.add_argument_group("labelled figures")
    figures.add_argument("--labelled", action="store_true",
                         help="draw figures for people: axes in seconds and Hz, a title and "
                         "a colour bar, each row at its true frequency (-renderer does not "
                         "apply)")
    figures.add_argument("--format", choices=FIGURE_FORMATS, default=FIGURE_FORMATS[0],
                         help="file format of labelled figures (default: "
                         f"{FIGURE_FORMATS[0]}); network images are always png")
    conf = plot.add_argument_group("configuration")
    _reuse(conf, shared, "np")
    _reuse(conf, shared, "config")
    # FeatureSettings needs a network; plotting never loads one.
    plot.set_defaults(run=run_plot, net=DEFAULT_NET, layer=DEFAULT_LAYER)


def _add_image_features_parser(commands, shared) -> None:
    images = commands.add_parser(
        "image-features", help="extract features from existing PNG/JPEG images",
        description="Feed existing PNG/JPEG images to the network, each at its own size "
        "(the networks resize internally), and write one feature vector per image.")
    required = images.add_argument_group("required options")
    required.add_argument("-i", required=True, metavar="INPUT",
                          help="folder with .png/.jpg/.jpeg images (searched recursively, "
                          "extension case-insensitive) or one image file")
    _reuse(required, shared, "o")
    cnn = images.add_argument_group("parameters of the feature extractor CNN")
    for dest in ("net", "layer", "batch_size"):
        _reuse(cnn, shared, dest)
    labels = images.add_argument_group(
        "label information", "by default each image gets the name of its folder as label")
    _reuse(labels, shared, "l", help="CSV (or .tsv) file with a header; first column the "
           "image file name with extension, further columns labels")
    _reuse(labels, shared, "el", help="one explicit label for every image")
    _reuse(labels, shared, "no_labels")
    conf = images.add_argument_group("configuration")
    _reuse(conf, shared, "config")
    images.set_defaults(run=run_image_features)


def _add_networks_parser(commands, shared) -> None:
    networks = commands.add_parser(
        "networks", help="list the networks of the config file, their layers and feature "
        "sizes", description="List the networks of the config file: model file, whether it "
        "exists or can be built offline, the default layer, and for usable models every "
        "layer with its feature size (computed by running the network once).")
    _reuse(networks, shared, "config")
    networks.set_defaults(run=run_networks)


# --- entry point --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run ``deepspectrum``; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the command name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every input was used, 1 when some were skipped or nothing was produced,
        2 for usage errors, 3 when an output cannot be written, 130/143 when interrupted.
    """
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    if argv and argv[0] == "features":
        return _exit_status(lambda: extract_ds_features.main(argv[1:],
                                                             prog=f"{PROG} features"))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # -h, --version and usage errors
        return _system_exit_status(exc)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required: features, plot, image-features or "
              "networks", file=sys.stderr)
        return 2
    name = f"{PROG} {args.command}"
    try:
        with extract_ds_features.sigterm_raises():
            return args.run(args)
    except DeepSpectrumError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except (KeyboardInterrupt, extract_ds_features.Terminated) as exc:
        print(f"{name}: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, extract_ds_features.Terminated) else 130


def _exit_status(function: Callable[[], int]) -> int:
    try:
        return function()
    except SystemExit as exc:
        return _system_exit_status(exc)


def _system_exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


# --- plot ---------------------------------------------------------------------------------

class _NoNetwork:
    """An extractor that returns no features: the run then only draws (and saves)."""

    def features(self, images):
        import numpy as np

        return np.zeros((len(images), 0), dtype=np.float32)


def run_plot(args: argparse.Namespace) -> int:
    """``deepspectrum plot``: build the job (images only, no network), run it, report."""
    from ..audio import find_audio_files
    from ..job import Job
    from ..run import ExtraOutput, run_job

    started = time.monotonic()
    name = f"{PROG} plot"
    config = load_config(args.config)
    settings = extract_ds_features.settings_from_args(args, config)
    files = find_audio_files(args.i)
    if not files:
        raise ParameterError(f"no audio files found in {args.i}")
    folder = Path(args.o)
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"-o {folder} is a file; give a folder for the images")
    extra = (ExtraOutput(figure_dir=folder, figure_format=args.format) if args.labelled
             else ExtraOutput(spectrogram_dir=folder))
    job = Job(files, settings, RunOptions(processes=args.np or os.cpu_count() or 1,
                                          renderer=args.renderer),
              root=Path(args.i) if Path(args.i).is_dir() else None, extra=extra,
              config=config)
    images = 0
    with extract_ds_features.warning_lines(name), \
            extract_ds_features.Progress(name, len(files), "file") as progress:
        run = run_job(job, _NoNetwork())
        for result in run:
            progress.update(result)
            images += len(result.timestamps)
    report = run.report
    kind = "labelled figure" if args.labelled else "image"
    summary = (f"{name}: {images} {kind}(s) of {len(report.done)} file(s) written to "
               f"{folder} ({time.monotonic() - started:.1f} s)")
    if report.skipped:
        summary += f"; {len(report.skipped)} file(s) skipped"
    print(summary, file=sys.stderr)
    return 1 if report.skipped or not images else 0


# --- image-features -------------------------------------------------------------------------

def run_image_features(args: argparse.Namespace) -> int:
    """``deepspectrum image-features``: build the job (pictures in), run it, report."""
    from ..images.loading import find_image_files
    from ..job import Job, Output
    from ..run import run_job
    from ..settings import FeatureSettings

    started = time.monotonic()
    name = f"{PROG} image-features"
    config = load_config(args.config)
    entry = config.net(args.net.lower())
    layer = args.layer or entry.default_layer or DEFAULT_LAYER
    files = find_image_files(args.i)
    if not files:
        raise ParameterError(f"no .png, .jpg or .jpeg files found in {args.i}")
    job = Job(files, FeatureSettings(net=entry.name, layer=layer, size=config.size),
              RunOptions(processes=1, batch_size=args.batch_size),
              output=Output(args.o, timestamps=False), labels=image_labels(args, files),
              root=Path(args.i) if Path(args.i).is_dir() else None, config=config,
              kind="images")
    with extract_ds_features.warning_lines(name), \
            extract_ds_features.Progress(name, len(files), "image") as progress:
        def loading():
            extract_ds_features.announce_loading(name, f"{len(files)} image(s)", entry, layer)
            progress.start()

        run = run_job(job, on_load=loading)
        for result in run:
            progress.update(result)
    report = run.report
    if not report.committed:
        print(f"{name}: no features extracted from {len(files)} image(s); {args.o} not "
              "written", file=sys.stderr)
        return 1
    summary = (f"{name}: {report.rows} feature vectors from {len(report.done)} image(s) "
               f"written to {args.o} ({time.monotonic() - started:.1f} s)")
    if report.skipped:
        summary += f"; {len(report.skipped)} image(s) skipped"
    print(summary, file=sys.stderr)
    return 1 if report.skipped else 0


def image_labels(args: argparse.Namespace, files: list[Path]):
    """The labels ``-l``/``-el``/``--no_labels`` ask for, checked against ``files``.

    Returns
    -------
    Labels or None
        Folder names by default; None with ``--no_labels``.
    """
    from ..labels import choose_labels

    return choose_labels(files, label_file=args.l, explicit=args.el[0] if args.el else None,
                         no_labels=args.no_labels)


# --- networks -------------------------------------------------------------------------------

def run_networks(args: argparse.Namespace) -> int:
    """``deepspectrum networks``: a table of the networks of deep.conf and their layers."""
    config = load_config(args.config)
    if not config.nets:
        raise ParameterError(f"config file {config.path} defines no networks")
    reports = [describe_network(config, name) for name in config.nets]
    width = max(len("net"), *(len(report["net"]) for report in reports))
    print(f"networks in {config.path}")
    print(f"{'net':<{width}}  {'status':<9}  {'default layer':<13}  model file")
    for report in reports:
        print(f"{report['net']:<{width}}  {report['status']:<9}  "
              f"{report['default_layer']:<13}  {report['path']}")
    for report in reports:
        if report["layers"] is None:
            continue
        print(f"\n{report['net']}: layers, feature size for one {config.size}x{config.size} "
              "image")
        layer_width = max(len("layer"), *(len(layer) for layer, _, _ in report["layers"]))
        print(f"  {'layer':<{layer_width}}  {'output shape':<14}  features")
        for layer, shape, size in report["layers"]:
            mark = "  (default)" if layer == report["default_layer"] else ""
            print(f"  {layer:<{layer_width}}  {'x'.join(map(str, shape)):<14}  {size:>8}{mark}")
    notes = [report for report in reports if report["note"]]
    if notes:
        print("\nnotes:")
        for report in notes:
            print(f"  {report['net']}: {report['note']}")
    return 1 if any(report["status"] in ("unusable", "unbuildable") for report in reports) else 0


def describe_network(config, name: str) -> dict:
    """Status, default layer and layer sizes of one network of a config.

    A model that does not exist but can be built offline (``BUILDERS``) is built in a
    temporary folder to measure it; the model cache is left as it is.

    Returns
    -------
    dict
        ``net``, ``path``, ``default_layer``, ``status`` (``exists``, ``buildable``,
        ``missing``, ``unusable`` or ``unbuildable``), ``layers`` (list of
        ``(layer, output shape, flattened size)``, or None when the model cannot be
        run) and ``note`` (a reason or a hint, or None).
    """
    import tempfile

    from ..backend.networks import BUILDERS, resolve_model

    entry = config.net(name)
    report = {"net": entry.name, "path": str(entry.path), "layers": None, "note": None,
              "default_layer": entry.default_layer or DEFAULT_LAYER}
    if entry.path.is_file():
        report["status"] = "exists"
        model, folder = entry.path, None
    elif entry.path.exists():
        return {**report, "status": "unusable", "note": f"{entry.path} is not a file"}
    elif entry.name in BUILDERS:
        report["status"] = "buildable"
        folder = tempfile.TemporaryDirectory(prefix="deepspectrum-")
        try:
            model = BUILDERS[entry.name](Path(folder.name) / entry.path.name)
        except ModelError as exc:
            folder.cleanup()
            return {**report, "status": "unbuildable", "note": str(exc)}
        report["note"] = "built on first use"
    else:
        try:
            resolve_model(config, entry.name)
        except ModelError as exc:
            report["note"] = str(exc)
        return {**report, "status": "missing"}
    try:
        report["layers"] = layer_sizes(model, size=config.size, gpu=config.gpu)
    except ModelError as exc:
        return {**report, "status": "unusable", "note": str(exc)}
    finally:
        if folder is not None:
            folder.cleanup()
    if report["default_layer"] not in [layer for layer, _, _ in report["layers"]]:
        report["note"] = (f"the default layer {report['default_layer']!r} is not in the "
                          "model; give -layer")
    return report


def layer_sizes(model_path: Path, *, size: int = 227,
                gpu: bool = True) -> list[tuple[str, tuple[int, ...], int]]:
    """Output shape and feature count of every layer of a model.

    Runs the network once on a blank (black) ``size x size`` image and reads every
    layer's output; the feature count is the size of the flattened output, the length
    of the vectors ``FrozenGraphExtractor`` returns for that layer.

    Returns
    -------
    list of (str, tuple of int, int)
        ``(layer, output shape without the batch axis, features)``, in the order the
        layers appear in the graph (input to output for the bundled networks).
    """
    import numpy as np

    from ..backend.extractor import FrozenGraphExtractor, available_layers

    layers = available_layers(model_path)
    if not layers:
        return []
    with FrozenGraphExtractor(model_path, layers[0], gpu=gpu) as extractor:
        outputs = extractor.layer_outputs(np.zeros((1, size, size, 3), dtype=np.float32))
    return [(layer, tuple(int(n) for n in output.shape[1:]), int(np.prod(output.shape[1:])))
            for layer, output in outputs]


if __name__ == "__main__":
    sys.exit(main())
