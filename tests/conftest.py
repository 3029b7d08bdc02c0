"""Shared fixtures: audio written by code, a small AlexNet-topology model, a config."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO / "deep-spectrum", REPO / "convert-models"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# TensorFlow imported by a test module gets the same kernels (oneDNN or not) as the
# command-line runs the tests compare it with
from deep_spectrum_extractor.backend.tf import prepare_environment  # noqa: E402

prepare_environment()


def tone(seconds: float, sample_rate: int = 16000, frequency: float = 440.0, *,
         noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """A sine tone with a little seeded noise (no exact zeros at the ends)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    signal = 0.5 * np.sin(2 * np.pi * frequency * t) + noise * rng.standard_normal(len(t))
    signal[0] = signal[-1] = 0.25  # never trimmed
    return signal


def write_wav(path: Path, signal: np.ndarray, sample_rate: int = 16000, subtype="FLOAT") -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, signal, sample_rate, subtype=subtype)
    return path


def count_frames_read(monkeypatch) -> list[int]:
    """From now on, the frames every ``SoundFile.read`` returns, appended to the list returned."""
    import soundfile

    reads: list[int] = []
    original = soundfile.SoundFile.read

    def counting_read(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        reads.append(len(data))
        return data

    monkeypatch.setattr(soundfile.SoundFile, "read", counting_read)
    return reads


def count_chunks_drawn(monkeypatch) -> list:
    """From now on, every chunk drawn in this process, appended to the list returned."""
    from deep_spectrum_extractor.run import work

    drawn: list = []
    original = work.render_chunks

    def counting(chunks, *args, **kwargs):
        drawn.extend(chunks)
        return original(chunks, *args, **kwargs)

    monkeypatch.setattr(work, "render_chunks", counting)
    return drawn


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """AlexNet's topology with few channels and random weights, as a frozen .pb."""
    from deep_spectrum_extractor.backend.alexnet import build_alexnet_graph, random_alexnet_weights
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    path = tmp_path_factory.mktemp("model") / "small.pb"
    return write_graph_def(build_alexnet_graph(random_alexnet_weights(seed=1)), path)


@pytest.fixture(scope="session")
def small_config(tmp_path_factory, small_model) -> Path:
    """A deep.conf naming the small model as ``small`` (and as ``alexnet``) by relative path."""
    folder = small_model.parent
    path = folder / "deep.conf"
    path.write_text("[main]\nsize = 227\ngpu = 1\nbackend = tensorflow\n\n"
                    "[tensorflow-nets]\nsmall = small.pb\nalexnet = small.pb\n"
                    "missing = nowhere.pb\n")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Two class folders with short tones of different lengths and pitches."""
    root = tmp_path_factory.mktemp("corpus")
    for label, frequency in (("speech", 300.0), ("music", 1200.0)):
        for number, seconds in enumerate((1.3, 2.0)):
            write_wav(root / label / f"{label}_{number}.wav",
                      tone(seconds, frequency=frequency, seed=number))
    return root


@pytest.fixture(scope="session")
def session_extractor(small_model):
    from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor

    extractor = FrozenGraphExtractor(small_model, "fc7", gpu=False)
    yield extractor
    extractor.close()
