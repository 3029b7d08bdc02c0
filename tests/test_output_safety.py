"""Outputs are never mixed, stale, half-written or written over an input; I/O failures
and bad names get one clear line.  Real processes, real signals, real mounts."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import tone, write_wav
from test_robustness import cli, long_corpus, start_cli, wait_for_journal

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "deep-spectrum")}


def run_cli(args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "deep_spectrum_extractor", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=ENV, **kwargs)


def small_args(corpus, small_config, *extra):
    return ["-i", corpus, "-net", "small", "-config", small_config, "-np", "1",
            "-renderer", "matplotlib", "-batch_size", "5", *extra]


def kill_after(journal, lines, process):
    wait_for_journal(journal, lines, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- one run per output --------------------------------------------------------------------

def test_a_second_run_on_the_same_output_is_refused_at_once(tmp_path, small_config):
    corpus = long_corpus(tmp_path / "in", files=6)
    reference = tmp_path / "reference.arff"
    assert cli(*small_args(corpus, small_config, "-t", "1", "0.5", "-o", reference)) == 0

    out = tmp_path / "f.arff"
    first = start_cli(small_args(corpus, small_config, "-t", "1", "0.5", "-o", out), tmp_path)
    wait_for_journal(out.with_name(".f.arff.journal"), 1, first)
    os.killpg(first.pid, signal.SIGSTOP)  # certainly still running while the second starts
    try:
        started = time.monotonic()
        second = run_cli(small_args(corpus, small_config, "-t", "2", "1", "-o", out), tmp_path,
                         timeout=120)
        took = time.monotonic() - started
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 3, second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert f"process {first.pid}" in last and "being written by another run" in last
    assert "Traceback" not in second.stderr
    assert took < 20  # refused before loading the network or drawing anything
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()
    assert out.read_bytes() == reference.read_bytes()  # nothing of the second run in it
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["provenance"]["settings"]["hop"] == "0.5"
    assert not out.with_name(".f.arff.lock").exists()


def test_a_killed_run_does_not_block_the_next(tmp_path, small_config):
    corpus = long_corpus(tmp_path / "in", files=4)
    out = tmp_path / "f.csv"
    process = start_cli(small_args(corpus, small_config, "-t", "0.5", "0.25", "-o", out),
                        tmp_path)
    kill_after(out.with_name(".f.csv.journal"), 1, process)
    assert out.with_name(".f.csv.lock").exists()  # left by the killed run, but not held
    result = run_cli(small_args(corpus, small_config, "-t", "0.5", "0.25", "-o", out),
                     tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr


# --- resume keeps only what is still true --------------------------------------------------

def test_resume_redoes_an_input_that_changed_after_it_was_done(tmp_path, small_config):
    corpus = long_corpus(tmp_path / "in", files=8)
    args = small_args(corpus, small_config, "-t", "0.5", "0.25")
    out = tmp_path / "f.arff"
    process = start_cli([*args, "-o", out], tmp_path)
    kill_after(out.with_name(".f.arff.journal"), 3, process)
    # replace a finished input by other audio of the same size and modification time
    changed = corpus / "f00.wav"
    stat = changed.stat()
    write_wav(changed, tone(2.0, frequency=3000, seed=99))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed.stat().st_size == stat.st_size

    resumed = run_cli([*args, "-o", out, "--resume"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "f00.wav changed after it was processed" in resumed.stderr
    fresh = tmp_path / "fresh.arff"
    assert cli(*args, "-o", fresh) == 0
    assert out.read_bytes() == fresh.read_bytes()


def test_resume_with_a_part_file_cut_short(tmp_path, small_config):
    corpus = long_corpus(tmp_path / "in", files=8)
    args = small_args(corpus, small_config, "-t", "0.5", "0.25")
    reference = tmp_path / "reference.csv"
    assert cli(*args, "-o", reference) == 0
    out = tmp_path / "f.csv"
    process = start_cli([*args, "-o", out], tmp_path)
    kill_after(out.with_name(".f.csv.journal"), 4, process)
    part = out.with_name(".f.csv.part")
    os.truncate(part, part.stat().st_size // 2)

    resumed = run_cli([*args, "-o", out, "--resume"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "the part file holds" in resumed.stderr
    assert b"\0" not in out.read_bytes()
    assert out.read_bytes() == reference.read_bytes()


# --- inputs are never overwritten or read back ---------------------------------------------

def test_an_output_naming_an_input_is_refused(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=2)
    target = corpus / "f00.wav"
    before = target.read_bytes()
    assert cli(*small_args(corpus, small_config, "-o", target)) == 2
    assert "names an input file type" in capsys.readouterr().err
    single = tmp_path / "recording.dat"
    shutil.copy(target, single)
    assert cli(*small_args(single, small_config, "-o", single)) == 2
    assert "is one of the input files" in capsys.readouterr().err
    assert cli(*small_args(corpus, small_config, "-t", "1", "1", "-o", tmp_path / "f.csv",
                           "-wavout", corpus / "chunks")) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert cli(*small_args(corpus, small_config, "-o", tmp_path / "g.csv",
                           "-wavout", corpus)) == 2
    assert target.read_bytes() == before and single.read_bytes() == before
    assert not (corpus / "chunks").exists()
    # a folder of plots inside the input folder is fine: PNGs are never read as audio
    assert cli(*small_args(corpus, small_config, "-o", tmp_path / "h.csv",
                           "-specout", corpus / "plots")) == 0


# --- I/O failures of the output: one line, its own exit status -----------------------------

@pytest.fixture
def mount_tmpfs():
    mounted = []

    def mount(folder: Path, options: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"this machine cannot mount a tmpfs: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def one_error_line(stderr: str, status_line_start: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if ": error:" in line]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(status_line_start)
    return errors[0]


def test_read_only_output_folder(tmp_path, small_config, mount_tmpfs):
    corpus = long_corpus(tmp_path / "in", files=2)
    folder = mount_tmpfs(tmp_path / "ro", "size=1m,ro")
    result = run_cli(small_args(corpus, small_config, "-o", folder / "f.csv"), tmp_path,
                     timeout=120)
    assert result.returncode == 3
    line = one_error_line(result.stderr, "extract_ds_features: error: cannot")
    assert str(folder) in line and "read-only" in line


def test_full_disk_keeps_the_previous_output(tmp_path, small_config, mount_tmpfs):
    corpus = long_corpus(tmp_path / "in", files=6)
    folder = mount_tmpfs(tmp_path / "small", "size=16k")  # the rows need about 50 kB
    out = folder / "f.csv"
    out.write_text("previous results\n")
    result = run_cli(small_args(corpus, small_config, "-t", "0.5", "0.1", "-o", out),
                     tmp_path, timeout=300)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result.stderr, "extract_ds_features: error: cannot write")
    assert "no space left on the device" in line and str(folder) in line
    assert out.read_text() == "previous results\n"


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def require_nobody_can_run_the_tool() -> None:
    """Skip unless ``nobody`` can run this interpreter with the package: setpriv exists and
    the checkout and its virtual environment are readable by others (not so in a clone
    under a private folder such as ``mktemp -d``'s)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import deep_spectrum_extractor"],
                           capture_output=True, text=True, env=ENV, cwd="/")
    if probe.returncode != 0:
        pytest.skip("user nobody cannot import the package from this checkout (a folder above "
                    f"it is private): {probe.stderr.strip().splitlines()[-1]}")


def test_permission_denied_output_folder(tmp_path, small_config):
    require_nobody_can_run_the_tool()
    # a world-readable copy of the job, run as nobody, writing into a folder of root's
    shared = Path(tempfile.mkdtemp(prefix="ds-perm-"))
    try:
        shared.chmod(0o755)
        corpus = long_corpus(shared / "in", files=1)
        for item in ("small.pb", "deep.conf"):
            shutil.copy(small_config.parent / item, shared / item)
        locked = shared / "root-only"
        locked.mkdir(mode=0o755)
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        writable = shared / "matplotlib"
        writable.mkdir(mode=0o777)
        writable.chmod(0o777)
        result = subprocess.run(
            [*AS_NOBODY, sys.executable, "-m", "deep_spectrum_extractor",
             *map(str, small_args(corpus, shared / "deep.conf", "-o", locked / "f.csv"))],
            capture_output=True, text=True, cwd=shared, timeout=120,
            env={**ENV, "HOME": str(shared), "MPLCONFIGDIR": str(writable)})
        assert result.returncode == 3, result.stderr
        line = one_error_line(result.stderr, "extract_ds_features: error: cannot")
        assert "permission denied" in line and str(locked) in line
    finally:
        shutil.rmtree(shared)


def test_failed_rename_is_one_line(tmp_path, small_config, capsys, monkeypatch):
    from deep_spectrum_extractor.output.writers import FeatureWriter

    corpus = long_corpus(tmp_path / "in", files=1)
    out = tmp_path / "f.csv"
    finish = FeatureWriter._finish

    def finish_then_block(self):
        finish(self)
        (self.path / "in the way").mkdir(parents=True)  # the target became a folder

    monkeypatch.setattr(FeatureWriter, "_finish", finish_then_block)
    assert cli(*small_args(corpus, small_config, "-o", out)) == 3
    line = one_error_line(capsys.readouterr().err, "extract_ds_features: error: cannot write")
    assert str(out) in line and "it is a folder" in line


def test_os_errors_have_plain_reasons():
    from deep_spectrum_extractor.errors import describe_os_error

    assert describe_os_error(OSError(errno.ENOSPC, "x")) == "no space left on the device"
    assert describe_os_error(OSError(errno.EROFS, "x")) == "the file system is read-only"
    assert describe_os_error(OSError(errno.ENOTCONN, "Transport endpoint is not connected")) \
        == "Transport endpoint is not connected"


# --- precise reasons for inputs, names that are not UTF-8 ----------------------------------

def test_unreadable_inputs_have_precise_reasons(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=1)
    (corpus / "loop.wav").symlink_to("loop.wav")
    assert cli(*small_args(corpus, small_config, "-o", tmp_path / "f.csv")) == 1
    err = capsys.readouterr().err
    assert "loop.wav: cannot open the file: too many levels of symbolic links" in err
    require_nobody_can_run_the_tool()
    secret = Path(tempfile.mkdtemp(prefix="ds-secret-"))
    try:
        secret.chmod(0o755)
        write_wav(secret / "secret.wav", tone(1.0)).chmod(0)
        result = subprocess.run(
            [*AS_NOBODY, sys.executable,
             "-c", "from deep_spectrum_extractor.audio import read_audio\n"
             f"read_audio({str(secret / 'secret.wav')!r})"],
            capture_output=True, text=True, env=ENV, cwd=secret)
        assert "AudioError: cannot open the file: permission denied" in result.stderr
    finally:
        shutil.rmtree(secret)


@pytest.mark.parametrize("suffix", [".csv", ".arff"])
def test_a_name_that_is_not_utf8_is_written_escaped(tmp_path, small_config, suffix):
    import arff
    import pandas

    corpus = tmp_path / "in"
    write_wav(corpus / "a" / "cafe.wav", tone(1.0))
    os.rename(bytes(corpus / "a" / "cafe.wav"), bytes(corpus / "a") + b"/caf\xe9.wav")
    write_wav(corpus / "b" / "plain.wav", tone(1.0, seed=3))
    out = tmp_path / f"f{suffix}"
    assert cli(*small_args(corpus, small_config, "-o", out)) == 0
    text = out.read_bytes().decode("utf-8")  # valid UTF-8
    if suffix == ".csv":
        names = list(pandas.read_csv(out)["name"])
    else:
        names = [row[0] for row in arff.loads(text)["data"]]
    assert names == ["caf\\xe9.wav", "plain.wav"]


# --- checks before work --------------------------------------------------------------------

def test_time_continuous_labels_are_checked_before_any_work(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=3)  # 2 s each: 8 hops 0 .. 1.75 at -t 0.5 0.25
    lines = ["name,time,arousal"]
    for number in range(3):
        last = 8 if number != 2 else 5  # the last file lacks labels from 1.25 s on
        lines += [f"f{number:02d}.wav,{n * 0.25},{n / 10}" for n in range(last)]
    label_file = tmp_path / "labels.csv"
    label_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "f.arff"
    assert cli(*small_args(corpus, small_config, "-t", "0.5", "0.25", "-l", label_file,
                           "--tc", "-o", out)) == 2
    err = capsys.readouterr().err
    assert "f02.wav: 3 of its 8 chunks have no label, the first at 1.25" in err
    assert "f00.wav" not in err.splitlines()[-1]
    assert not any(tmp_path.glob(".f.arff.*")) and not out.exists()
    assert "loading small" not in err  # refused before the network was loaded


def test_hop_longer_than_window_warns(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=1)
    assert cli(*small_args(corpus, small_config, "-t", "0.5", "1", "-o",
                           tmp_path / "f.csv")) == 0
    assert "warning: -t 0.5 1: the hop is longer than the window" in capsys.readouterr().err


def test_a_shard_without_work_says_so(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=1)
    # one chunk, one batch: the second shard of two holds it, the first gets nothing
    assert cli(*small_args(corpus, small_config, "-o", tmp_path / "f.csv",
                           "-shard", "1/2")) == 0
    err = capsys.readouterr().err
    assert "warning: shard 1 of 2 gets no work" in err


def test_first_line_says_what_is_loaded(tmp_path, small_config, capsys):
    corpus = long_corpus(tmp_path / "in", files=1)
    assert cli(*small_args(corpus, small_config, "-o", tmp_path / "f.csv")) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("extract_ds_features: 1 audio file(s); loading small (")
    assert cli(*small_args(corpus, small_config, "-o", tmp_path / "g.csv")[:-2],
               "-net", "missing", "-o", tmp_path / "g.csv") == 2
    err = capsys.readouterr().err
    assert "building" not in err and "does not exist" in err
