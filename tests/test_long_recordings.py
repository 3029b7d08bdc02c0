"""Recordings of ten minutes and more through the whole engine: read once, resumed inside."""
import json
import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import count_chunks_drawn, count_frames_read, tone, write_wav
from deep_spectrum_extractor.job import Job
from deep_spectrum_extractor.run import run_job
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions
from test_robustness import cli, start_cli

MINUTES = 10


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    """Ten minutes of 8 kHz mono: a tone with noise (no exact zeros at the ends)."""
    path = tmp_path_factory.mktemp("long") / "session.wav"
    return write_wav(path, tone(MINUTES * 60, 8000, frequency=440.0, seed=7), 8000)


class ZeroNetwork:
    def features(self, images):
        return np.zeros((len(images), 3), np.float32)


@pytest.mark.parametrize("resample", [None, 16000])
def test_each_sample_is_decoded_about_once(long_recording, monkeypatch, resample):
    reads = count_frames_read(monkeypatch)
    settings = FeatureSettings(window=Decimal(1), hop=Decimal("0.5"), sample_rate=resample)
    options = RunOptions(processes=1, batch_size=32)
    [result] = run_job(Job([long_recording], settings, options), ZeroNetwork())
    frames = soundfile.info(long_recording).frames
    assert result.ok and len(result.timestamps) == MINUTES * 60 * 2
    # each batch-sized task used to read the whole recording again (38 times here)
    block = 1 << 16
    assert frames <= sum(reads) <= frames + 4 * block, (sum(reads), frames)


def test_a_long_recording_killed_part_way_resumes_to_the_same_bytes(long_recording, tmp_path,
                                                                    small_config, monkeypatch,
                                                                    capsys):
    args = ["-i", long_recording, "-t", "1", "0.5", "-net", "small", "-config", small_config,
            "-np", "1", "-batch_size", "16"]
    reference = tmp_path / "reference.csv"
    assert cli(*args, "-o", reference) == 0
    total = len(reference.read_text().splitlines()) - 1
    assert total == MINUTES * 60 * 2

    out = tmp_path / "session.csv"
    process = start_cli([*args, "-o", out], tmp_path)
    journal = out.with_name(".session.csv.journal")
    deadline = time.monotonic() + 300
    while True:  # until a fifth of the recording is written, then kill it mid-run
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run made no progress"
        os.killpg(process.pid, signal.SIGSTOP)
        lines = journal.read_text().splitlines() if journal.exists() else []
        checkpoints = [json.loads(line) for line in lines[1:] if '"checkpoint"' in line]
        if checkpoints and checkpoints[-1]["checkpoint"] >= total // 5:
            break
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert checkpoints[-1]["next_input"] == 0  # the only input was not finished

    drawn = count_chunks_drawn(monkeypatch)
    capsys.readouterr()
    assert cli(*args, "-o", out, "--resume") == 0
    err = capsys.readouterr().err
    assert out.read_bytes() == reference.read_bytes()
    done = int(err.split(" chunk(s) were not drawn again")[0].rsplit(" ", 1)[1])
    assert done >= total // 5 and done % 16 == 0
    # only the batches after the checkpoint were drawn again, each chunk once
    assert sorted(chunk.index for chunk in drawn) == list(range(done, total))
