"""Time plot_matrix (matplotlib figure + PNG) against render_matrix (numpy) per image.

Usage: python benchmarks/render_benchmark.py [--size 227] [--repeats 200]

Matrices are those of 1 s chunks of a 16 kHz test signal, as the pipeline draws them.
Both paths are checked to give identical bytes before they are timed. The renderer's
first call (geometry and colour table built and cached) is reported separately.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deep-spectrum"))

from deep_spectrum_extractor.images.plotting import plot_matrix
from deep_spectrum_extractor.images.render import render_matrix
from deep_spectrum_extractor.images.spectral import spectral_matrix

CASES = (("spectrogram", "linear"), ("spectrogram", "log"), ("mel", "mel"),
         ("chroma", "chroma"))


def per_call_seconds(function, repeats: int) -> float:
    """Best of three mean times of ``repeats`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--repeats", type=int, default=200,
                        help="render_matrix calls per timing (plot_matrix gets a tenth)")
    args = parser.parse_args(argv)

    sample_rate, nfft = 16000, 512
    rng = np.random.default_rng(0)
    t = np.arange(sample_rate) / sample_rate
    samples = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (300 + 2000 * t) * t)
               + 0.05 * rng.standard_normal(sample_rate)).astype(np.float32)

    print(f"size {args.size}x{args.size}, 1 s chunks at {sample_rate} Hz, nfft {nfft}")
    print(f"{'mode/scale':22s} {'matrix':>9s} {'plot_matrix':>12s} {'render (cold)':>14s} "
          f"{'render (warm)':>14s} {'ratio':>7s}")
    for mode, scale in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matrix = spectral_matrix(samples, sample_rate, mode=mode, nfft=nfft)
        kwargs = dict(sample_rate=sample_rate, nfft=nfft, scale=scale, size=args.size)
        start = time.perf_counter()
        fast = render_matrix(matrix, **kwargs)
        cold = time.perf_counter() - start
        if not np.array_equal(fast, plot_matrix(matrix, **kwargs)):
            print(f"{mode}/{scale}: render_matrix differs from plot_matrix", file=sys.stderr)
            return 1
        slow = per_call_seconds(lambda m=matrix, k=kwargs: plot_matrix(m, **k),
                                max(args.repeats // 10, 1))
        warm = per_call_seconds(lambda m=matrix, k=kwargs: render_matrix(m, **k), args.repeats)
        shape = "x".join(map(str, matrix.shape))
        print(f"{mode + '/' + scale:22s} {shape:>9s} {slow * 1e3:9.2f} ms {cold * 1e3:11.2f} ms "
              f"{warm * 1e3:11.3f} ms {slow / warm:6.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
