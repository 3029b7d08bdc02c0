"""The command-line options of both generations of the tool, defined once.

``extract_ds_features`` speaks the 2018 tool's spelling (``-net``, ``-cmap``,
``--no_labels`` ...); ``deepspectrum`` speaks DeepSpectrum 0.6.x's (``-en``, ``-cm``,
``--no-labels`` ...), so that the scripts of both generations run unchanged.  Every
option is one :class:`Option` row: what it sets, its spelling in each family, its type,
default and help.  Both parsers are built from :data:`OPTIONS`, so the two spellings of
an option can never accept different values.

:class:`StrictParser` refuses what argparse would guess: an option is spelled out (no
prefixes: ``-en 5`` is never ``-end 5``), and an option of the other family is refused
with the spelling this command takes.  :func:`translate` rewrites the 2018 option names
in the library's messages into the 0.6.x names for ``deepspectrum``.
"""
from __future__ import annotations

import argparse
import difflib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from ..config import DEFAULT_CONFIG_PATH
from ..settings import (DEFAULT_BATCH_SIZE, DEFAULT_CMAP, DEFAULT_LAYER, DEFAULT_MODE,
                        DEFAULT_NET, DEFAULT_NMEL, DEFAULT_RENDERER, DEFAULT_SCALE, MODES,
                        RENDERERS, SCALES)

#: The two families: the 2018 tool's command and the later DeepSpectrum's.
CLASSIC, MODERN = "extract_ds_features", "deepspectrum"
#: DeepSpectrum 0.6.x's default network and layer (``-en vgg16 -fl fc2``).
MODERN_NET = "vgg16"


def decimal(text: str) -> Decimal:
    """A finite decimal number (seconds)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """A positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


@dataclass(frozen=True)
class Option:
    """One option: the value it sets (``dest``), its spellings and its argparse keywords.

    ``classic`` and ``modern`` are the spellings of ``extract_ds_features`` and of
    ``deepspectrum`` (empty: that family has no such option); ``modern_changes`` are
    keywords that differ there (0.6.x's defaults).
    """

    dest: str
    classic: tuple[str, ...]
    modern: tuple[str, ...]
    keywords: dict = field(default_factory=dict)
    modern_changes: dict = field(default_factory=dict)

    def spellings(self, family: str) -> tuple[str, ...]:
        return self.classic if family == CLASSIC else self.modern


_OPTIONS = [
    Option("i", ("-i",), (), dict(
        required=True, metavar="INPUT", help="folder with audio files (any format libsndfile "
        "reads: .wav, .flac, .ogg, .mp3 ...; searched recursively) or one audio file")),
    Option("o", ("-o",), ("-o", "--output"), dict(
        metavar="OUTPUT", help="feature file: .arff gives ARFF, .parquet Parquet, .npz NumPy, "
        "any other extension CSV")),
    # chunks
    Option("t", ("-t",), ("-t", "--window-size-and-hop"), dict(
        nargs=2, type=decimal, metavar=("WINDOW", "HOP"),
        help="window and hop size in seconds, e.g. -t 1 0.5 (default: the whole file is one "
        "chunk)")),
    Option("start", ("-start",), ("-s", "--start"), dict(
        type=decimal, default=Decimal(0), help="start time in seconds (default: 0)")),
    Option("end", ("-end",), ("-e", "--end"), dict(
        type=decimal, default=None, help="end time in seconds, not a duration (default: end "
        "of file)")),
    Option("sr", ("-sr",), ("-sr", "--sample-rate"), dict(
        type=positive_int, default=None, metavar="RATE",
        help="resample every file to this sample rate in Hz (default: keep each file's "
        "rate)")),
    # plots
    Option("mode", ("-mode",), ("-m", "--mode"), dict(
        choices=MODES, default=DEFAULT_MODE, help=f"type of plot (default: {DEFAULT_MODE})")),
    Option("scale", ("-scale",), ("-fs", "--frequency-scale"), dict(
        choices=SCALES, default=DEFAULT_SCALE,
        help=f"y axis scale of the plots; chroma plots always use the chroma axis (default: "
        f"{DEFAULT_SCALE})")),
    Option("ylim", ("-ylim",), ("-fql", "--frequency-limit"), dict(
        type=positive_int, default=None, metavar="HZ",
        help="highest frequency in Hz shown in the plot (default: none)")),
    Option("delta", ("-delta",), ("-d", "--delta"), dict(
        type=positive_int, default=None, metavar="ORDER",
        help="plot the derivative of this order of the features (default: none)")),
    Option("nmel", ("-nmel",), ("-nm", "--number-of-melbands"), dict(
        type=positive_int, default=DEFAULT_NMEL, metavar="BANDS",
        help=f"number of mel bands, mode mel only (default: {DEFAULT_NMEL})")),
    Option("nfft", ("-nfft",), ("-nfft",), dict(
        type=positive_int, default=None, metavar="SAMPLES",
        help="FFT length in samples (default: the next power of two of 0.025 x the sample "
        "rate)")),
    Option("cmap", ("-cmap",), ("-cm", "--colour-map"), dict(
        default=DEFAULT_CMAP, metavar="CMAP",
        help=f"matplotlib colour map (default: {DEFAULT_CMAP})")),
    Option("renderer", ("-renderer",), ("--renderer",), dict(
        choices=RENDERERS, default=DEFAULT_RENDERER,
        help="how plots are drawn: numpy draws the same pixels as matplotlib about a hundred "
        "times faster; matplotlib draws a figure per chunk as the original did (default: "
        f"{DEFAULT_RENDERER})")),
    # the network
    Option("net", ("-net",), ("-en", "--extraction-network"), dict(
        nargs="+", default=None, metavar="NET",
        help="network(s), as named in the config file; with several (-net alexnet "
        "efficientnet_lite0) every picture is drawn once and each (network, layer) pair is "
        f"written to <output stem>.<net>.<layer><ext> (default: {DEFAULT_NET})"), dict(
        nargs=None, action="append",
        help="network, as named in the config file; repeat it for several (-en vgg16 -en "
        "resnet50): every picture is drawn once and each (network, layer) pair is written to "
        f"<output stem>.<net>.<layer><ext> (default: {MODERN_NET}, as in DeepSpectrum "
        "0.6.x)")),
    Option("layer", ("-layer",), ("-fl", "--feature-layer"), dict(
        nargs="+", default=None, metavar="LAYER",
        help="layer(s) whose activations are the features: LAYER for every network, "
        "NET:LAYER for one (default: the net's layer in the config file, else "
        f"{DEFAULT_LAYER})"), dict(
        nargs=None, action="append",
        help="layer whose activations are the features, LAYER for every network or "
        "NET:LAYER for one; repeat it for several (default: the net's layer in the config "
        f"file, else {DEFAULT_LAYER})")),
    Option("batch_size", ("-batch_size",), ("-bs", "--batch-size"), dict(
        type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="SIZE",
        help=f"images per network run (default: {DEFAULT_BATCH_SIZE})")),
    # labels
    Option("l", ("-l",), ("-lf", "--label-file"), dict(
        metavar="LABEL_FILE", default=None,
        help="CSV (or .tsv) file with a header; first column the audio file's name, bare "
        "(x.wav) or relative to the input folder (dog/x.wav), further columns labels")),
    Option("tc", ("--tc",), ("-tc", "--time-continuous"), dict(
        action="store_true", help="time-continuous labels: with -t and a label file, its "
        "second column is the timestamp of each hop")),
    Option("el", ("-el",), ("-el", "--explicit-label"), dict(
        nargs=1, metavar="LABEL", default=None,
        help="one explicit label for every input file")),
    Option("no_timestamps", ("--no_timestamps",), ("-nts", "--no-timestamps"), dict(
        action="store_true", help="do not write timestamps")),
    Option("no_labels", ("--no_labels",), ("-nl", "--no-labels"), dict(
        action="store_true", help="do not write labels")),
    Option("skip_unlabelled", ("--skip_unlabelled",), (), dict(
        action="store_true", help="with a label file, leave out the input files it does not "
        "name (and say how many) instead of stopping")),
    Option("statistics", ("--file_statistics",), ("--file-statistics",), dict(
        action="store_true", help="one row per input file instead of one per chunk: the "
        "mean, standard deviation, minimum and maximum of every feature over the file's "
        "chunks (columns mean_neuron_0 ... std_... min_... max_...)")),
    # side outputs
    Option("specout", ("-specout",), ("-so", "--spectrogram-out"), dict(
        default=None, metavar="FOLDER",
        help="save the plot of every chunk as .png in this folder")),
    Option("wavout", ("-wavout",), ("-wo", "--wav-out"), dict(
        default=None, metavar="FOLDER",
        help="save the audio of every chunk as .wav in this folder")),
    # running
    Option("np", ("-np",), ("-np", "--number-of-processes"), dict(
        type=positive_int, default=None, metavar="N",
        help="number of processes (default: number of CPU cores)")),
    Option("scheduler", ("-scheduler",), ("--scheduler",), dict(
        default=None, metavar="ADDRESS",
        help="run on a Dask cluster: a scheduler address (tcp://host:8786) or a scheduler "
        "file (.json); the output is the same as on one machine")),
    Option("shard", ("-shard",), ("--shard",), dict(
        nargs="?", const="slurm", default=None, metavar="i/N",
        help="process the i-th of N equal parts of the job into <output stem>.shard-i-of-N"
        "<ext> (for job arrays; without a value: the SLURM array task's part); "
        "ds_merge_shards joins the parts")),
    Option("resume", ("--resume",), ("--resume",), dict(
        action="store_true", help="continue an interrupted run with the same settings: files "
        "already done are not processed again")),
    Option("stop_on_error", ("--stop_on_error",), ("--stop-on-error",), dict(
        action="store_true", help="stop at the first file that cannot be used instead of "
        "skipping it")),
    Option("config", ("-config",), ("-c", "--config"), dict(
        default=str(DEFAULT_CONFIG_PATH), metavar="FILE",
        help="configuration file; created with the defaults if it does not exist (default: "
        "deep.conf of the package)")),
]

#: Every option by the value it sets.
OPTIONS: dict[str, Option] = {option.dest: option for option in _OPTIONS}

#: The option groups of the feature commands, in help order.
GROUPS = {
    "extracting features from audio chunks": ("t", "start", "end", "sr"),
    "parameters of the audio plots": ("mode", "scale", "ylim", "delta", "nmel", "nfft",
                                      "cmap", "renderer"),
    "parameters of the feature extractor CNN": ("net", "layer", "batch_size"),
    "label information": ("l", "tc", "el", "no_timestamps", "no_labels", "skip_unlabelled"),
    "one row per file": ("statistics",),
    "additional output": ("specout", "wavout"),
    "configuration": ("np", "scheduler", "shard", "resume", "stop_on_error", "config"),
}


def add(group, family: str, dest: str, **changes) -> argparse.Action | None:
    """Add option ``dest`` in ``family``'s spelling to ``group`` (None: not offered)."""
    option = OPTIONS[dest]
    names = option.spellings(family)
    if not names:
        return None
    keywords = {**option.keywords, **(option.modern_changes if family == MODERN else {}),
                **changes}
    return group.add_argument(*names, dest=dest, **keywords)


def add_groups(parser: argparse.ArgumentParser, family: str, groups: dict) -> None:
    """Add whole option groups (title -> destinations) in ``family``'s spelling."""
    for title, dests in groups.items():
        group = parser.add_argument_group(title)
        for dest in dests:
            add(group, family, dest)


class StrictParser(argparse.ArgumentParser):
    """An argument parser that never guesses an option.

    Python's argparse takes a prefix of a single-dash option for the option
    (``-en 5`` as ``-end 5``) and a single-dash option glued to a value (``-cmap`` as
    ``-c map``), whatever ``allow_abbrev`` says.  Here every token that looks like an
    option must be one of this command's options, spelled out (``--name=value`` too);
    anything else is an error that names what was probably meant, and the option of the
    other family if the token is one.
    """

    def __init__(self, *args, family: str, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.family = family

    def _parse_optional(self, arg_string):
        if (len(arg_string) > 1 and arg_string[0] in self.prefix_chars
                and arg_string.split("=", 1)[0] not in self._option_string_actions
                and " " not in arg_string
                and not self._negative_number_matcher.match(arg_string)):
            self.error(unknown_option(arg_string, self.family,
                                      list(self._option_string_actions), self.prog))
        return super()._parse_optional(arg_string)


#: DeepSpectrum 0.6.x options that are refused with a reason.
NOT_PROVIDED = {
    "--reduced": "0.6.x's -r/--reduced wrote a second file without the feature columns that "
    "are zero in this run, so the files of two partitions had different columns; it is not "
    "provided: drop constant columns in the classifier's preprocessing instead",
}
NOT_PROVIDED["-r"] = NOT_PROVIDED["--reduced"]


def unknown_option(token: str, family: str, known: list[str], prog: str | None = None) -> str:
    """Why ``token`` is refused by ``prog`` (``family``'s command by default), naming what
    was probably meant."""
    name = token.split("=", 1)[0]
    if family == MODERN and name in NOT_PROVIDED:
        return NOT_PROVIDED[name]
    other = MODERN if family == CLASSIC else CLASSIC
    parts = [f"{name} is not an option of {(prog or family).split()[0]}"]
    prefixed = sorted(option for option in known if option.startswith(name))
    if prefixed:
        parts.append(f"options are never abbreviated: did you mean {_either(prefixed)}?")
    for option in OPTIONS.values():
        if name in option.spellings(other) and name not in option.spellings(family):
            ours = [spelling for spelling in option.spellings(family) if spelling in known]
            if ours:
                parts.append(f"{name} is {other}'s spelling of {_either(ours)}")
            else:
                parts.append(f"{name} belongs to {other}; {family} has no such option")
    if name == "-i" and family == MODERN:
        parts.append("the input is the first argument after the command: deepspectrum "
                     "features INPUT -o OUTPUT ...")
    if len(parts) == 1:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            parts.append(f"did you mean {_either(close)}?")
    return "; ".join(parts)


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


_CLASSIC_TO_MODERN = {spelling: option.modern[0]
                      for option in OPTIONS.values() if option.modern
                      for spelling in option.classic if spelling not in option.modern}
_CLASSIC_PATTERN = re.compile(r"(?<![\w-])(" + "|".join(
    re.escape(spelling) for spelling in sorted(_CLASSIC_TO_MODERN, key=len, reverse=True))
    + r")(?![\w-])")


def translate(message: str, family: str) -> str:
    """``message`` with the 2018 option names the library uses in ``family``'s spelling."""
    if family == CLASSIC:
        return message
    return _CLASSIC_PATTERN.sub(lambda match: _CLASSIC_TO_MODERN[match[1]], message)
