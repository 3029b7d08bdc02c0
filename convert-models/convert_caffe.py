"""Command line: convert BVLC AlexNet from Caffe to deep-spectrum's ``AlexNet.pb``.

Usage::

    python convert-models/convert_caffe.py --prototxt deploy.prototxt \\
        --caffemodel bvlc_alexnet.caffemodel -o deep-spectrum/AlexNet.pb

Exit status: 0 when the graph was written, 1 when a file cannot be read or
converted (the message on stderr says which file and why), 2 for usage errors.
The work is done by :mod:`caffe_alexnet`; this module only parses arguments and
reports.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _make_importable() -> None:
    """Find ``caffe_alexnet`` next to this file and the package in a source checkout."""
    if str(_HERE) not in sys.path:
        sys.path.insert(0, str(_HERE))
    try:
        import deep_spectrum_extractor  # noqa: F401
    except ImportError:
        package_root = _HERE.parent / "deep-spectrum"
        if (package_root / "deep_spectrum_extractor").is_dir():
            sys.path.insert(0, str(package_root))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the converter."""
    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog="convert_caffe.py",
        description="Convert BVLC AlexNet (or a narrower network with its topology) from "
                    "Caffe's .caffemodel/.prototxt to the frozen TensorFlow graph that "
                    "deep-spectrum loads. No mean is subtracted: the graph takes raw RGB "
                    "pixel values, flips them to BGR and resizes them to 227x227.")
    parser.add_argument("--caffemodel", required=True, type=Path, metavar="FILE",
                        help="trained weights, e.g. bvlc_alexnet.caffemodel (the old V1 "
                             "and the current format are both read)")
    parser.add_argument("--prototxt", type=Path, metavar="FILE",
                        help="network definition, e.g. deploy.prototxt; without it the "
                             "definition stored in the caffemodel is used")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                        help="the frozen graph to write, e.g. deep-spectrum/AlexNet.pb "
                             "(replaced if it exists)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the converter.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` if omitted.

    Returns
    -------
    int
        The exit status: 0 on success, 1 if the conversion failed.
    """
    args = build_parser().parse_args(argv)
    _make_importable()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from caffe_alexnet import CaffeConversionError, convert_caffe_alexnet

    try:
        result = convert_caffe_alexnet(args.caffemodel, args.output, prototxt=args.prototxt)
    except CaffeConversionError as exc:
        print(f"convert_caffe.py: error: {exc}", file=sys.stderr)
        return 1
    network = result.network
    widths = ", ".join(f"{name} {width}" for name, width in network.widths.items())
    print(f"convert_caffe.py: wrote {result.output} ({network.weights_format} caffemodel; "
          f"{widths}; {network.parameters:,} parameters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
