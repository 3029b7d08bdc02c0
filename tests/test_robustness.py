"""Bad input, interrupted runs, resume and provenance."""
import json
import re
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import tone, write_wav
from deep_spectrum_extractor.audio import read_audio
from deep_spectrum_extractor.cli.extract_ds_features import main
from deep_spectrum_extractor.errors import AudioError, LabelError
from deep_spectrum_extractor.labels import read_label_file


def cli(*args):
    return main([str(a) for a in args])


def make_bad_files(folder: Path) -> dict[str, str]:
    """One file of each kind that cannot be used, with a word its reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "zz_source.wav", tone(1.0), subtype="PCM_16").read_bytes()
    (folder / "zz_source.wav").unlink()
    (folder / "empty.wav").write_bytes(b"")
    (folder / "truncated.wav").write_bytes(good[:30])
    (folder / "text.wav").write_text("this is not audio\n" * 20)
    (folder / "folder.wav").mkdir()
    soundfile.write(folder / "no_samples.wav", np.zeros(0), 16000)
    soundfile.write(folder / "silence.wav", np.zeros(16000), 16000)
    soundfile.write(folder / "short.wav", np.full(100, 0.5), 16000)
    nan = tone(1.0)
    nan[400] = np.nan
    soundfile.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = tone(1.0)
    inf[10] = np.inf
    soundfile.write(folder / "inf.wav", inf, 16000, subtype="DOUBLE")
    # a RIFF/WAVE file whose format tag (0x1234) no decoder knows
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", 2000) + bytes(range(256)) * 8
    (folder / "unsupported.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body[:2012])
    return {"empty.wav": "decode", "truncated.wav": "decode", "text.wav": "decode",
            "folder.wav": "directory", "no_samples.wav": "no samples", "silence.wav": "silence",
            "short.wav": "samples needed for one plot", "nan.wav": "NaN", "inf.wav": "infinite",
            "unsupported.wav": "decode"}


def test_bad_files_are_skipped_and_the_rest_is_unchanged(tmp_path, small_config, capsys):
    good = tmp_path / "good"
    for number in range(3):
        write_wav(good / f"good_{number}.wav", tone(1.5, frequency=300 + 300 * number, seed=number))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in good.iterdir():
        (mixed / path.name).write_bytes(path.read_bytes())
    reasons = make_bad_files(mixed)

    reference = tmp_path / "good.arff"
    assert cli("-i", good, "-o", reference, "-t", "1", "0.5", "-el", "x", "-net", "small",
               "-config", small_config, "-np", "1") == 0
    out = tmp_path / "mixed.arff"
    capsys.readouterr()
    code = cli("-i", mixed, "-o", out, "-t", "1", "0.5", "-el", "x", "-net", "small",
               "-config", small_config, "-np", "2")
    err = capsys.readouterr().err
    assert code == 1
    assert out.read_bytes() == reference.read_bytes()
    for name, reason in reasons.items():
        line = next(line for line in err.splitlines() if f"skipped {mixed / name}" in line)
        assert reason.lower() in line.lower(), line
    assert f"3 file(s) written to {out}" in err or "from 3 file(s)" in err
    assert f"{len(reasons)} file(s) skipped" in err
    sidecar = json.loads((tmp_path / "mixed.arff.json").read_text())
    skipped = {Path(entry["file"]).name: entry["reason"]
               for entry in sidecar["summary"]["files_skipped"]}
    assert set(skipped) == set(reasons)
    assert sidecar["summary"]["files_done"] == 3


def test_stop_on_error_stops_at_the_first_bad_file(tmp_path, small_config, capsys):
    folder = tmp_path / "in"
    write_wav(folder / "a.wav", tone(1.0))
    (folder / "b.wav").write_text("not audio")
    write_wav(folder / "c.wav", tone(1.0))
    out = tmp_path / "f.csv"
    code = cli("-i", folder, "-o", out, "-net", "small", "-config", small_config, "-np", "1",
               "--stop_on_error")
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "stopped at the first bad file" in err and "b.wav" in err


def test_two_runs_write_identical_files_with_provenance(tmp_path, corpus, small_config,
                                                       small_model):
    import hashlib

    outputs = []
    for name in ("a.arff", "b.arff"):
        assert cli("-i", corpus, "-o", tmp_path / name, "-t", "1", "0.5", "-mode", "mel",
                   "-net", "small", "-config", small_config, "-np", "1") == 0
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    comments = [line for line in outputs[0].decode().splitlines() if line.startswith("%")]
    digest = hashlib.sha256(small_model.read_bytes()).hexdigest()
    assert any(f"small.pb sha256={digest}" in line for line in comments)
    assert any("mode=mel" in line and "window=1" in line and "hop=0.5" in line
               for line in comments)
    assert any("librosa 0.11.0" in line and "tensorflow" in line for line in comments)
    assert cli("-i", corpus, "-o", tmp_path / "c.csv", "-net", "small", "-config",
               small_config, "-np", "1") == 0
    sidecar = json.loads((tmp_path / "c.csv.json").read_text())
    assert sidecar["provenance"]["network"]["sha256"] == digest
    assert sidecar["provenance"]["settings"]["mode"] == "spectrogram"


def long_corpus(root: Path, files: int = 10) -> Path:
    for number in range(files):
        write_wav(root / f"f{number:02d}.wav", tone(2.0, frequency=200 + 150 * number,
                                                     seed=number))
    return root


def start_cli(args, tmp_path):
    """The command in its own process group (so a kill reaches its workers too)."""
    return subprocess.Popen([sys.executable, "-m", "deep_spectrum_extractor", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=tmp_path)


def wait_for_journal(journal: Path, lines: int, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) > lines:
            return
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_killed_run_resumes_to_identical_output(tmp_path, small_config, processes):
    corpus = long_corpus(tmp_path / "in")
    args = ["-i", corpus, "-t", "0.5", "0.25", "-net", "small", "-config", small_config,
            "-batch_size", "5", "-renderer", "matplotlib", "-np", processes]
    reference = tmp_path / "reference.arff"
    assert cli(*args, "-o", reference) == 0

    out = tmp_path / "out" / "f.arff"
    out.parent.mkdir()
    out.write_text("previous results\n")
    process = start_cli([*args, "-o", out], tmp_path)
    journal = out.with_name(".f.arff.journal")
    wait_for_journal(journal, 3, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert out.read_text() == "previous results\n"  # untouched by the killed run
    done_before = len(journal.read_text().splitlines()) - 1
    assert 3 <= done_before < 10

    assert cli(*args, "-o", out, "--resume") == 0
    assert out.read_bytes() == reference.read_bytes()
    assert not journal.exists() and not out.with_name(".f.arff.part").exists()


def test_terminated_run_leaves_no_output(tmp_path, small_config):
    corpus = long_corpus(tmp_path / "in")
    out = tmp_path / "f.csv"
    process = start_cli(["-i", corpus, "-o", out, "-t", "0.5", "0.25", "-net", "small",
                         "-config", small_config, "-renderer", "matplotlib", "-np", "1",
                         "-batch_size", "5"], tmp_path)
    wait_for_journal(out.with_name(".f.csv.journal"), 2, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err.decode()
    assert "--resume" in err.decode()
    assert not out.exists()


def test_resume_with_other_settings_is_refused(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=3)
    out = tmp_path / "f.arff"
    base = ["-i", corpus, "-o", out, "-net", "small", "-config", small_config, "-np", "1"]
    journal = out.with_name(".f.arff.journal")
    # interrupt a run with -mode mel -nmel 64, then try to resume it with other settings
    process = start_cli([*base, "-mode", "mel", "-nmel", "64", "-t", "0.5", "0.25",
                         "-renderer", "matplotlib", "-batch_size", "5"], tmp_path)
    wait_for_journal(journal, 1, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    capsys.readouterr()
    code = cli(*base, "-mode", "chroma", "-t", "0.5", "0.25", "-batch_size", "5",
               "--resume")
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot resume" in err and "settings mode: mel -> chroma" in err
    assert "settings nmel: 64 -> 128" in err


def test_worker_killed_mid_run_is_replaced(tmp_path, small_config):
    corpus = long_corpus(tmp_path / "in", files=8)
    args = ["-i", corpus, "-t", "0.5", "0.25", "-net", "small", "-config", small_config,
            "-renderer", "matplotlib", "-np", "2", "-batch_size", "5"]
    reference = tmp_path / "reference.arff"
    assert cli(*args, "-o", reference) == 0
    out = tmp_path / "f.arff"
    process = start_cli([*args, "-o", out], tmp_path)
    wait_for_journal(out.with_name(".f.arff.journal"), 1, process)
    children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                and _parent(int(pid)) == process.pid]
    workers = [pid for pid in children if b"multiprocessing" in _cmdline(pid)]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err.decode()
    assert out.read_bytes() == reference.read_bytes()


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


# --- fuzzing: any bytes give a clean skip or a clear error, never a crash ----------------

VALID_WAV = None


def _valid_wav(tmp_path_factory):
    global VALID_WAV
    if VALID_WAV is None:
        path = tmp_path_factory.mktemp("fuzz") / "seed.wav"
        VALID_WAV = write_wav(path, tone(0.2), subtype="PCM_16").read_bytes()
    return VALID_WAV


mutations = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]),
                               st.integers(0, 10_000), st.integers(0, 255)),
                     min_size=1, max_size=6)


def mutate(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, position, value in edits:
        position %= max(len(data), 1)
        if kind == "flip" and data:
            data[position] ^= value or 1
        elif kind == "cut":
            del data[position:]
        elif kind == "insert":
            data[position:position] = bytes([value]) * (value % 17 + 1)
        elif kind == "zero":
            data[position:position + value] = bytes(len(data[position:position + value]))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=mutations)
def test_fuzzed_wav_bytes_are_read_or_skipped_cleanly(tmp_path_factory, edits):
    from decimal import Decimal

    from deep_spectrum_extractor.job import Job
    from deep_spectrum_extractor.run import run_job
    from deep_spectrum_extractor.settings import FeatureSettings, RunOptions

    data = mutate(_valid_wav(tmp_path_factory), edits)
    path = tmp_path_factory.mktemp("case") / "x.wav"
    path.write_bytes(data)
    try:
        signal_, rate = read_audio(path)
        assert signal_.ndim == 1 and np.isfinite(signal_).all() and rate > 0
    except AudioError as exc:
        assert str(exc)
    settings_ = FeatureSettings(window=Decimal("0.05"), hop=Decimal("0.05"))
    [result] = run_job(Job([path], settings_, RunOptions(processes=1, batch_size=8)),
                       _ZeroNetwork())
    assert (result.error is None) != (result.features is None)
    if result.error is not None:
        # a reason the tool worded, not an unexpected exception caught as a last resort
        assert not re.match(r"[A-Z]\w*(Error|Exception): ", result.error), result.error


class _ZeroNetwork:
    def features(self, images):
        return np.zeros((len(images), 2), np.float32)


label_text = st.text(alphabet=st.sampled_from(list("ab,.\t\"'\n\r0123456789x.wav é\ufeff")),
                     max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=label_text, raw=st.binary(max_size=40), tc=st.booleans())
def test_fuzzed_label_files_parse_or_fail_clearly(tmp_path_factory, text, raw, tc):
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    path.write_bytes(text.encode("utf-8") + raw)
    try:
        labels = read_label_file(path, time_continuous=tc)
    except LabelError as exc:
        assert "label file" in str(exc) and str(path) in str(exc)
        return
    for attribute in labels.attributes:
        assert attribute.numeric or list(attribute.values) == sorted(set(attribute.values))
