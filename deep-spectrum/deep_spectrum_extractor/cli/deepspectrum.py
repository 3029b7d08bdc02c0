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
import concurrent.futures
import inspect
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator

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


def _progress(total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr)


# --- plot ---------------------------------------------------------------------------------

class _NoNetwork:
    """An extractor that returns no features: the pipeline then only draws (and saves)."""

    def features(self, images):
        import numpy as np

        return np.zeros((len(images), 0), dtype=np.float32)


def run_plot(args: argparse.Namespace) -> int:
    """``deepspectrum plot``: validate, draw, save, report."""
    from ..audio import find_audio_files

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
    root = Path(args.i) if Path(args.i).is_dir() else None
    processes = args.np or os.cpu_count() or 1
    if args.labelled:
        results = labelled_figure_files(files, folder, settings, root=root,
                                        fmt=args.format, processes=processes)
    else:
        options = RunOptions(processes=processes, renderer=args.renderer)
        results = network_image_files(files, folder, settings, options, root=root)

    images, skipped = 0, []
    with _progress(len(files), "file") as bar:
        for path, count, error in results:
            bar.update()
            if error is None:
                images += count
            else:
                skipped.append(path)
                bar.write(f"{name}: skipped {path}: {error}", file=sys.stderr)
    done = len(files) - len(skipped)
    kind = "labelled figure" if args.labelled else "image"
    summary = (f"{name}: {images} {kind}(s) of {done} file(s) written to {folder} "
               f"({time.monotonic() - started:.1f} s)")
    if skipped:
        summary += f"; {len(skipped)} file(s) skipped"
    print(summary, file=sys.stderr)
    return 1 if skipped or not images else 0


def network_image_files(files: list[Path], folder: Path, settings, options: RunOptions, *,
                        root: Path | None = None) -> Iterator[tuple[Path, int, str | None]]:
    """Save the image the network would see of every chunk, as ``-specout`` does.

    Runs the extraction pipeline with a network that computes nothing, so the images
    (and their file names) are those of ``extract_ds_features -specout``.

    Yields
    ------
    path : Path
    images : int
        Images written for the file.
    error : str or None
        Why the file was skipped.
    """
    from ..run import ExtraOutput, extract_features

    if options.renderer == "numpy":
        from ..images.render import verify_renderer

        verify_renderer()
    for result in extract_features(files, settings, _NoNetwork(), options, root=root,
                                   extra=ExtraOutput(spectrogram_dir=folder)):
        yield result.path, len(result.timestamps), result.error


def labelled_figure_files(files: list[Path], folder: Path, settings, *,
                          root: Path | None = None, fmt: str = "png",
                          processes: int = 1) -> Iterator[tuple[Path, int, str | None]]:
    """Save a labelled figure of every chunk (see :mod:`..images.figures`).

    Files are drawn in parallel worker processes and reported in input order.

    Yields
    ------
    path : Path
    figures : int
    error : str or None
        Why the file was skipped.
    """
    tasks = [(path, path.relative_to(root) if root is not None else Path(path.name),
              settings, folder, fmt) for path in files]
    for (path, *_), outcome in _ordered_map(draw_labelled_figures, tasks, processes):
        yield (path, 0, outcome) if isinstance(outcome, str) else (path, *outcome)


def draw_labelled_figures(path: Path, relative: Path, settings, folder: Path,
                          fmt: str) -> tuple[int, str | None]:
    """Read one audio file and save a labelled figure of each of its chunks.

    Runs in a worker process.  Whatever goes wrong with the file is returned as the
    reason instead of raised, so the run goes on with the other files.

    Returns
    -------
    figures : int
    error : str or None
    """
    try:
        return _draw_labelled_figures(path, relative, settings, folder, fmt), None
    except DeepSpectrumError as exc:
        return 0, str(exc)
    except Exception as exc:  # one odd file must not stop the run
        return 0, f"{type(exc).__name__}: {exc}"


def _draw_labelled_figures(path, relative, settings, folder, fmt) -> int:
    from ..images import spectral_matrix
    from ..images.figures import labelled_figure, save_figure
    from ..run.reader import open_input
    from ..run.work import side_output_name, timestamp_text

    opened = open_input(path, settings)
    if opened.error is not None:
        raise DeepSpectrumError(opened.error)
    sample_rate, nfft = opened.stream.sample_rate, opened.nfft
    count = 0
    for chunk in opened.stream.chunks(settings.window, settings.hop,
                                      min_length=opened.min_length):
        count += 1
        matrix = spectral_matrix(chunk.samples, sample_rate, mode=settings.mode, nfft=nfft,
                                 ylim=settings.ylim, delta=settings.delta, nmel=settings.nmel)
        begin = settings.start if chunk.timestamp is None else chunk.timestamp
        end = begin + Decimal(len(chunk.samples)) / Decimal(sample_rate)
        title = (f"{relative.as_posix()}, {timestamp_text(begin)} to "
                 f"{timestamp_text(end)} s ({settings.mode})")
        figure = labelled_figure(matrix, sample_rate=sample_rate, nfft=nfft,
                                 mode=settings.mode, scale=settings.plot_scale,
                                 cmap=settings.cmap, ylim=settings.ylim, delta=settings.delta,
                                 offset=float(begin), title=title)
        save_figure(figure, folder / side_output_name(relative, chunk.timestamp, f".{fmt}"),
                    format=fmt)
    return count


def _ordered_map(function, tasks: list[tuple], processes: int) -> Iterator[tuple[tuple, object]]:
    """``(task, function(*task))`` in task order, at most ``2 * processes`` in flight.

    With one process everything runs here.  A worker process that dies (killed, out of
    memory) breaks the pool: a new one is started and the task it was running is tried
    once more alone; if it kills that worker too, its result is the reason as a string.
    Stopped early (Ctrl-C, SIGTERM, the caller stops iterating), the workers stop at once.
    """
    from ..workers import WorkerPool

    if processes == 1:
        for task in tasks:
            yield task, function(*task)
        return

    executor = WorkerPool(processes)
    pending: list = []  # [task, future]
    upcoming = iter(tasks)
    finished = False
    try:
        while True:
            while len(pending) < 2 * processes:
                task = next(upcoming, None)
                if task is None:
                    break
                pending.append([task, executor.submit(function, *task)])
            if not pending:
                finished = True
                return
            task, future = pending.pop(0)
            try:
                yield task, future.result()
                continue
            except concurrent.futures.process.BrokenProcessPool:
                pass
            executor.abandon()
            executor = WorkerPool(processes)
            try:
                outcome = executor.submit(function, *task).result()
            except concurrent.futures.process.BrokenProcessPool:
                executor.abandon()
                executor = WorkerPool(processes)
                outcome = "the worker process drawing it died"
            for slot in pending:
                slot[1] = executor.submit(function, *slot[0])
            yield task, outcome
    finally:
        if finished:
            executor.shutdown(wait=True)
        else:  # nothing waits for tasks nobody wants any more
            executor.abandon()


# --- image-features -------------------------------------------------------------------------

def run_image_features(args: argparse.Namespace) -> int:
    """``deepspectrum image-features``: validate, extract, write, report."""
    from ..images.loading import IMAGE_EXTENSIONS, find_image_files
    from ..output.guard import check_outputs, lock_output

    started = time.monotonic()
    name = f"{PROG} image-features"
    config = load_config(args.config)
    net = args.net.lower()
    entry = config.net(net)
    layer = args.layer or entry.default_layer or DEFAULT_LAYER
    files = find_image_files(args.i)
    if not files:
        raise ParameterError(f"no .png, .jpg or .jpeg files found in {args.i}")
    labels = image_labels(args, files)
    output = Path(args.o)
    if output.is_dir():
        raise ParameterError(f"-o {output} is a directory; give a file name")
    root = Path(args.i) if Path(args.i).is_dir() else None
    check_outputs(output, files, root=root, input_extensions=IMAGE_EXTENSIONS)
    with lock_output(output):  # until the run ends: a second run on it is refused at once
        return _image_features(args, name, started, config, entry, layer, files, labels,
                               output)


def _image_features(args, name, started, config, entry, layer, files, labels, output) -> int:
    import numpy as np

    from ..backend.extractor import FrozenGraphExtractor
    from ..backend.networks import resolve_model
    from ..extraction import (ExtractionReport, file_sha256, library_versions,
                              provenance_comments, write_sidecar)
    from ..images.loading import image_features
    from ..output.writers import open_writer

    net = entry.name
    extract_ds_features.announce_loading(name, f"{len(files)} image(s)", entry, layer)
    _entry, model_path = resolve_model(config, net)
    extractor = FrozenGraphExtractor(model_path, layer, gpu=config.gpu)
    record = {"tool": f"deep-spectrum {__version__}",
              "settings": {"input": "images", "net": net, "layer": layer,
                           "batch_size": args.batch_size},
              "network": {"file": model_path.name, "sha256": file_sha256(model_path)},
              "libraries": library_versions()}
    writer = open_writer(output, timestamps=False, labels=labels.attributes if labels else None,
                         record=record, comments=provenance_comments(record))
    report = ExtractionReport(output)
    try:
        with _progress(len(files), "image") as bar:
            for result in image_features(files, extractor, batch_size=args.batch_size):
                bar.update()
                if result.ok:
                    rows = [labels.row(result.path, None)] if labels else None
                    writer.write(result.path.name, [None], result.features[np.newaxis], rows)
                    report.done.append(result.path)
                else:
                    report.skipped.append((result.path, result.error))
                    bar.write(f"{name}: skipped {result.path}: {result.error}", file=sys.stderr)
    except BaseException:
        writer.discard()
        raise
    finally:
        extractor.close()
    report.rows = writer.rows
    if not writer.rows:
        writer.discard()
        print(f"{name}: no features extracted from {len(files)} image(s); {output} not "
              "written", file=sys.stderr)
        return 1
    writer.commit()
    report.committed = True
    write_sidecar(output, record, report)
    summary = (f"{name}: {report.rows} feature vectors from {len(report.done)} image(s) "
               f"written to {output} ({time.monotonic() - started:.1f} s)")
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
