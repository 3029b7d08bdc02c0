"""Write the example corpus: three classes of short synthetic sounds at 16 kHz.

    python examples/make_examples.py [folder]

* ``birdsong``: fast rising and falling frequency sweeps (chirps),
* ``engine``: a low harmonic hum with a slowly varying pitch,
* ``rain``: band-passed noise with random droplet clicks.

Two 3-second recordings per class, 16-bit PCM, generated from a fixed seed so the
files are the same on every machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile
from scipy import signal as sps

SAMPLE_RATE = 16000
SECONDS = 3.0


def birdsong(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    start = 0.1
    while start < SECONDS - 0.3:
        length = rng.uniform(0.08, 0.2)
        f0, f1 = rng.uniform(2000, 3500), rng.uniform(3500, 6000)
        mask = (t >= start) & (t < start + length)
        local = t[mask] - start
        sweep = sps.chirp(local, f0=f0, t1=length, f1=f1, method="quadratic")
        out[mask] += sweep * np.hanning(mask.sum())
        start += length + rng.uniform(0.05, 0.25)
    return out


def engine(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    base = rng.uniform(60, 110) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    phase = 2 * np.pi * np.cumsum(base) / SAMPLE_RATE
    hum = sum(np.sin(k * phase) / k for k in range(1, 12))
    return hum + 0.05 * rng.standard_normal(len(t))


def rain(rng: np.random.Generator) -> np.ndarray:
    n = int(SECONDS * SAMPLE_RATE)
    sos = sps.butter(4, [500, 5000], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    noise = sps.sosfilt(sos, rng.standard_normal(n))
    drops = np.zeros(n)
    drops[rng.integers(0, n, size=60)] = rng.uniform(2, 6, size=60)
    return noise + sps.lfilter([1.0], [1.0, -0.97], drops)


def main(folder: Path) -> None:
    rng = np.random.default_rng(2017)
    for name, make in (("birdsong", birdsong), ("engine", engine), ("rain", rain)):
        for number in range(2):
            sound = make(rng)
            sound = 0.8 * sound / np.max(np.abs(sound))
            path = folder / name / f"{name}_{number}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, sound, SAMPLE_RATE, subtype="PCM_16")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "audio")
