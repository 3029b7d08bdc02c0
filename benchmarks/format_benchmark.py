"""Feature values to text: numpy's formatting against this project's array formatter.

    python benchmarks/format_benchmark.py [--rows 2000] [--features 4096]

Writes ``--rows`` rows of ``--features`` ReLU-like float32 values (half zeros, the rest
spread over six decades, as an fc7 layer gives) as comma-separated text three ways, in
one process, alternating so that the machine's drift hits all alike:

* ``str`` per value, as the 2018 tool wrote them;
* numpy's cast of the array to strings (``astype(str)``), this project's writer until
  the array formatter;
* :func:`deep_spectrum_extractor.output.float_text.float32_text`.

It checks that all three give the same text and prints milliseconds per row and ratios.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))

from deep_spectrum_extractor.output.float_text import float32_text  # noqa: E402


def relu_features(rows: int, features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, features)) * 10.0 ** rng.uniform(-3, 3, (rows, features))
    return np.maximum(values, 0).astype(np.float32)


def per_value_str(values: np.ndarray) -> list[str]:
    return [",".join([str(value) for value in row]) for row in values]


def numpy_cast(values: np.ndarray) -> list[str]:
    return [",".join(row) for row in values.astype(str).tolist()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    values = relu_features(args.rows, args.features)
    ways = {"str per value": per_value_str, "numpy astype(str)": numpy_cast,
            "float32_text": float32_text}
    batches = np.array_split(values, max(args.rows // 10, 1))  # a file's rows at a time
    texts = {name: [line for batch in batches for line in way(batch)]
             for name, way in ways.items()}
    same = texts["str per value"] == texts["numpy astype(str)"] == texts["float32_text"]
    seconds = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            started = time.perf_counter()
            for batch in batches:
                way(batch)
            seconds[name].append(time.perf_counter() - started)
    print(f"{args.rows} rows x {args.features} ReLU-like float32 values, "
          f"{np.mean(values == 0):.0%} zeros, in batches of {len(batches[0])} rows")
    best = {name: min(runs) / args.rows * 1e3 for name, runs in seconds.items()}
    for name in ways:
        print(f"{name:>18}: {best[name]:.3f} ms per row")
    print(f"float32_text is {best['str per value'] / best['float32_text']:.1f}x faster than "
          f"str per value, {best['numpy astype(str)'] / best['float32_text']:.1f}x faster than "
          "numpy's cast")
    print(f"identical text: {same}")


if __name__ == "__main__":
    main()
