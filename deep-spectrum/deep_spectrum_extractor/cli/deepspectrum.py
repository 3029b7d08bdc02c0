"""``deepspectrum``: the command line of the later DeepSpectrum (0.6.x), on this engine.

Scripts written for DeepSpectrum 0.6.x (``deepspectrum`` on PyPI, used by the ComParE
baseline recipes) run unchanged::

    deepspectrum [-v|-vv] [--version] COMMAND INPUT [options]

* ``features INPUT -o OUT``: features of audio files, with 0.6.x's option names
  (``-en``, ``-fl``, ``-m``, ``-cm``, ``-fql`` ...; :mod:`.options` lists both spellings of
  every option) and its defaults (``-en vgg16``); the name column holds each file's path
  relative to INPUT, and with a label file only the files it lists are extracted;
* ``plot INPUT -so FOLDER``: the images only, by default exactly the images the network
  sees; ``--labelled`` (or 0.6.x's ``-ppdfs``) draws figures for people;
* ``image-features INPUT -o OUT``: features of existing PNG/JPEG images;
* ``networks``: the networks of deep.conf with their layers and feature sizes.

Options are spelled out, never abbreviated, and an option of ``extract_ds_features``
(``-net``, ``-cmap`` ...) is refused with this command's spelling.  Exit status as for
``extract_ds_features``: 0 when every input was used, 1 when some were skipped (or
nothing came out), 2 for usage errors, 3 when an output cannot be written, 130/143 when
interrupted.  Importing this module imports neither TensorFlow nor librosa nor
matplotlib, so ``-h`` is instant.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..config import load_config
from ..errors import ModelError, ParameterError
from ..images.figures import FIGURE_FORMATS
from ..settings import DEFAULT_LAYER, RunOptions
from . import extract_ds_features, options
from .options import MODERN
from .report import Progress, Voice

PROG = "deepspectrum"
#: The commands, with one line each for ``deepspectrum -h``.
COMMANDS = {
    "features": "extract features from audio files",
    "image-features": "extract features from existing PNG/JPEG images",
    "plot": "write the plots of audio chunks as images, without a network",
    "networks": "list the networks of the config file, their layers and feature sizes",
}
NOT_PROVIDED = {
    "features-with-parser": "features-with-parser took its inputs and labels from a Python "
    "parser class of audeep, which is not part of this tool; select a partition with a "
    "label file instead: deepspectrum features INPUT -lf partition.csv -o OUT (only the "
    "files the label file lists are extracted)",
}


# --- the parsers ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The parser of what comes before the command: ``-v``, ``-vv``, ``--version``."""
    lines = "\n".join(f"  {name:<16}{text}" for name, text in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{PROG} [-h] [-v | -vv] [--version] COMMAND INPUT [options]",
        description="Deep Spectrum: audio plotted as spectrogram images and fed to an "
        "ImageNet-pretrained CNN, with the command line of DeepSpectrum 0.6.x. Run "
        f"'{PROG} COMMAND -h' for a command's options.\n\ncommands:\n{lines}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="say more: -v each input as it is done, -vv also the settings")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def command_parser(command: str) -> options.StrictParser:
    """The parser of one command's arguments (after the command's name)."""
    build = {"features": _features_parser, "image-features": _image_features_parser,
             "plot": _plot_parser, "networks": _networks_parser}[command]
    return build(options.StrictParser(prog=f"{PROG} {command}", family=MODERN,
                                      description=COMMANDS[command].capitalize() + "."))


def _input(parser, what: str) -> None:
    parser.add_argument("i", metavar="INPUT", help=what)


def _features_parser(parser):
    _input(parser, "folder with audio files (any format libsndfile reads, searched "
           "recursively) or one audio file")
    required = parser.add_argument_group("required options")
    options.add(required, MODERN, "o", required=True)
    options.add_groups(parser, MODERN, options.GROUPS)
    parser.set_defaults(run=extract_ds_features.run, resumable=True, family=MODERN,
                        skip_unlabelled=True)
    return parser


def _plot_parser(parser):
    _input(parser, "folder with audio files or one audio file")
    output = parser.add_argument_group("where the images go")
    options.add(output, MODERN, "specout", metavar="FOLDER",
                help="folder for the images, created if missing: <folder of the audio "
                "file>/<stem>_<timestamp>.png (without -t: <stem>.png); also -o FOLDER")
    output.add_argument("-o", dest="specout", metavar="FOLDER", help=argparse.SUPPRESS)
    options.add(output, MODERN, "wavout")
    for title in ("extracting features from audio chunks", "parameters of the audio plots"):
        options.add_groups(parser, MODERN, {title.replace("extracting features from ", ""):
                                            options.GROUPS[title]})
    figures = parser.add_argument_group("labelled figures")
    figures.add_argument("--labelled", action="store_true",
                         help="draw figures for people: axes in seconds and Hz, a title and "
                         "a colour bar, each row at its true frequency (--renderer does not "
                         "apply)")
    figures.add_argument("--format", choices=FIGURE_FORMATS, default=FIGURE_FORMATS[0],
                         help=f"file format of labelled figures (default: {FIGURE_FORMATS[0]});"
                         " network images are always png")
    figures.add_argument("-ppdfs", "--pretty_pdfs", action="store_true",
                         help="labelled figures as PDF (the same as --labelled --format pdf)")
    conf = parser.add_argument_group("configuration")
    options.add(conf, MODERN, "np")
    options.add(conf, MODERN, "config")
    # FeatureSettings names a network; plotting never loads one
    parser.set_defaults(run=run_plot, net=None, layer=None, family=MODERN)
    return parser


def _image_features_parser(parser):
    _input(parser, "folder with .png/.jpg/.jpeg images (searched recursively, extension "
           "case-insensitive) or one image file")
    required = parser.add_argument_group("required options")
    options.add(required, MODERN, "o", required=True)
    cnn = parser.add_argument_group("parameters of the feature extractor CNN")
    for dest in ("net", "layer", "batch_size"):
        options.add(cnn, MODERN, dest)
    labels = parser.add_argument_group(
        "label information", "by default each image gets the name of its folder as label")
    options.add(labels, MODERN, "l", help="CSV (or .tsv) file with a header; first column "
                "the image's name, bare or relative to INPUT, further columns labels; only "
                "the images it names are used")
    options.add(labels, MODERN, "el", help="one explicit label for every image")
    options.add(labels, MODERN, "no_labels")
    options.add(labels, MODERN, "no_timestamps", help="accepted for DeepSpectrum 0.6.x's "
                "scripts: image features never have timestamps")
    conf = parser.add_argument_group("configuration")
    options.add(conf, MODERN, "np", help="accepted for DeepSpectrum 0.6.x's scripts: images "
                "are read in the process that runs the network")
    options.add(conf, MODERN, "config")
    parser.set_defaults(run=run_image_features)
    return parser


def _networks_parser(parser):
    options.add(parser, MODERN, "config")
    parser.set_defaults(run=run_networks)
    return parser


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
    program = argv is None  # the command is the program (see interrupted_once)
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    split = next((number for number, arg in enumerate(argv) if not arg.startswith("-")),
                 len(argv))
    parser = build_parser()
    try:
        general = parser.parse_args(argv[:split])
    except SystemExit as exc:  # -h, --version and usage errors
        return _system_exit_status(exc)
    if split == len(argv):
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command, rest = argv[split], argv[split + 1:]
    if command not in COMMANDS:
        reason = NOT_PROVIDED.get(command)
        if reason is None:
            close = difflib.get_close_matches(command, list(COMMANDS), n=1)
            reason = (f"no command {command!r}; the commands are {', '.join(COMMANDS)}"
                      + (f" (did you mean {close[0]}?)" if close else ""))
        print(f"{PROG}: error: {reason}", file=sys.stderr)
        return 2
    try:
        args = command_parser(command).parse_args(rest)
    except SystemExit as exc:
        return _system_exit_status(exc)
    voice = Voice(f"{PROG} {command}", MODERN, general.verbose)
    return extract_ds_features.execute(args, voice, program=program)


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


def run_plot(args: argparse.Namespace, voice: Voice) -> int:
    """``deepspectrum plot``: build the job (images only, no network), run it, report."""
    from ..audio import find_audio_files
    from ..job import Job
    from ..run import ExtraOutput, run_job

    started = time.monotonic()
    if args.specout is None:
        raise ParameterError("plot writes its images into -so FOLDER; give it (DeepSpectrum "
                             "0.6.x wrote nothing without it)")
    config = load_config(args.config)
    settings = extract_ds_features.settings_from_args(args, config)
    files = find_audio_files(args.i)
    if not files:
        raise ParameterError(f"no audio files found in {args.i}")
    folder = Path(args.specout)
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"-so {folder} is a file; give a folder for the images")
    labelled = args.labelled or args.pretty_pdfs
    extra = (ExtraOutput(figure_dir=folder, wav_dir=_path(args.wavout),
                         figure_format="pdf" if args.pretty_pdfs else args.format)
             if labelled else ExtraOutput(spectrogram_dir=folder, wav_dir=_path(args.wavout)))
    job = Job(files, settings, RunOptions(processes=args.np or os.cpu_count() or 1,
                                          renderer=args.renderer),
              root=Path(args.i) if Path(args.i).is_dir() else None, extra=extra,
              config=config)
    images = 0
    with Progress(voice, len(files), "file") as progress:
        run = run_job(job, _NoNetwork())
        for result in run:
            progress.update(result)
            images += len(result.timestamps)
    report = run.report
    kind = "labelled figure" if labelled else "image"
    summary = (f"{images} {kind}(s) of {len(report.done)} file(s) written to {folder} "
               f"({time.monotonic() - started:.1f} s)")
    if report.skipped:
        summary += f"; {len(report.skipped)} file(s) skipped"
    voice.say(summary)
    return 1 if report.skipped or not images else 0


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


# --- image-features -------------------------------------------------------------------------

def run_image_features(args: argparse.Namespace, voice: Voice) -> int:
    """``deepspectrum image-features``: build the job (pictures in), run it, report."""
    from ..images.loading import find_image_files
    from ..job import Job, Output
    from ..run import run_job
    from ..settings import FeatureSettings

    started = time.monotonic()
    config = load_config(args.config)
    args.family = MODERN
    pairs = extract_ds_features.pairs_from_args(args, config)
    files = find_image_files(args.i)
    if not files:
        raise ParameterError(f"no .png, .jpg or .jpeg files found in {args.i}")
    root = Path(args.i) if Path(args.i).is_dir() else None
    labels, files = image_labels(args, files, root)
    (net, layer), *_others = pairs
    job = Job(files, FeatureSettings(net=net, layer=layer, size=config.size),
              RunOptions(processes=1, batch_size=args.batch_size),
              output=Output(args.o, timestamps=False, names="relative"), labels=labels,
              root=root, config=config, kind="images", networks=pairs)
    with Progress(voice, len(files), "image") as progress:
        def loading():
            voice.announce_loading(f"{len(files)} image(s)", config, pairs)
            progress.start()

        run = run_job(job, on_load=loading)
        for result in run:
            progress.update(result)
    report = run.report
    voice.device_note(report, config)
    if not report.committed:
        voice.say(f"no features extracted from {len(files)} image(s); {args.o} not written")
        return 1
    written = ", ".join(str(path) for path in report.outputs)
    summary = (f"{report.rows} feature vectors from {len(report.done)} image(s) written to "
               f"{written} ({time.monotonic() - started:.1f} s)")
    if report.skipped:
        summary += f"; {len(report.skipped)} image(s) skipped"
    voice.say(summary)
    return 1 if report.skipped else 0


def image_labels(args: argparse.Namespace, files: list[Path], root: Path | None):
    """The labels ``-lf``/``-el``/``-nl`` ask for, and the images to use.

    With a label file, only the images it names are used (DeepSpectrum 0.6.x); folder
    names are the labels by default; None with ``-nl``.
    """
    from ..labels import choose_labels

    return choose_labels(files, root=root, label_file=args.l,
                         explicit=args.el[0] if args.el else None, no_labels=args.no_labels,
                         unlisted="skip")


# --- networks -------------------------------------------------------------------------------

def run_networks(args: argparse.Namespace, voice: Voice) -> int:
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
