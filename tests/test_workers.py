"""Worker processes: their warm-up plot, and that they never hang nor outlive a run.

The signal tests run the command in a session of its own, as a terminal runs it in a
process group of its own: Ctrl-C there sends SIGINT to the whole group, workers included.
"""
import concurrent.futures
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from conftest import tone, write_wav
from deep_spectrum_extractor import run
from deep_spectrum_extractor.job import Job
from deep_spectrum_extractor.run import work
from deep_spectrum_extractor.run.executors import WORKER_DIED, LocalProcesses
from deep_spectrum_extractor.run.work import Failure, PieceAudio, RangeJob, render_range
from deep_spectrum_extractor.images.spectral import mel_filter_bank
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions
from deep_spectrum_extractor.workers import WorkerPool


@pytest.mark.parametrize("renderer", ["numpy", "matplotlib"])
@pytest.mark.parametrize("options", [dict(mode="mel"), dict(mode="spectrogram", ylim=4000),
                                     dict(mode="chroma", delta=2), dict(mode="mel", nmel=64,
                                                                        sample_rate=22050)])
def test_warm_up_draws_one_plot_with_the_run_settings(options, renderer):
    mel_filter_bank.cache_clear()
    work.init_worker(FeatureSettings(**options), renderer)
    if options["mode"] == "mel":  # the run's filter bank is ready for the first file
        rate = options.get("sample_rate", 16000)
        assert mel_filter_bank.cache_info().currsize == 1
        mel_filter_bank(rate, 512 if rate == 16000 else 1024, options.get("nmel", 128))
        assert mel_filter_bank.cache_info().hits == 1


def test_warm_up_never_fails_a_run(tmp_path):
    # -ylim 10 keeps no frequency row at 16 kHz: the warm-up cannot plot, quietly, and the
    # workers go on to tell for each file why it is skipped
    settings = FeatureSettings(mode="spectrogram", ylim=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        work.init_worker(settings, "numpy")
    path = write_wav(tmp_path / "a.wav", tone(1.0))
    job = Job([path] * 4, settings, RunOptions(processes=2, batch_size=8))
    results = list(run.run_job(job, _NoNetwork()))
    assert len(results) == 4
    for result in results:
        assert "-ylim=10" in result.error


def test_warm_up_reports_what_is_not_a_bad_setting(monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("a programming error")

    monkeypatch.setattr(work, "render_chunks", broken)
    with pytest.warns(RuntimeWarning, match="warm-up.*TypeError: a programming error"):
        work.init_worker(FeatureSettings(mode="mel"), "numpy")
    monkeypatch.setattr(work, "render_chunks", _interrupted)
    with pytest.raises(KeyboardInterrupt):  # never swallowed either
        work.init_worker(FeatureSettings(mode="mel"), "numpy")


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def test_with_workers_the_command_never_loads_librosa(tmp_path, corpus, small_config):
    """The workers warm up, check the renderer and probe the sample rates; the process
    that loads the network meanwhile has none of that to do."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for number, path in enumerate(sorted(corpus.rglob("*.wav"))[:2]):
        (inputs / f"{number}.wav").write_bytes(path.read_bytes())
    code = ("import sys; from deep_spectrum_extractor.cli.extract_ds_features import main; "
            "status = main(sys.argv[1:]); "
            "print([name for name in ('librosa', 'numba') if name in sys.modules]); "
            "sys.exit(status)")
    for extra, status in (([], 0), (["-ylim", "10"], 1)):
        out = tmp_path / f"f{status}.csv"
        result = subprocess.run([sys.executable, "-c", code, "-i", str(inputs), "-o", str(out),
                                 "-t", "0.5", "0.25", "-net", "small", "-config",
                                 str(small_config), "-np", "2", "-mode", "spectrogram", *extra],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == status, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]"
        assert out.exists() == (status == 0)
    # the probe, drawn by a worker, still says why every input is skipped
    assert result.stderr.count("-ylim=10") >= 2


def test_warm_ups_of_several_processes_draw_one_at_a_time(tmp_path, monkeypatch):
    """The lock around the warm-up plot (numba's cache is written by one process at a time)
    is held across processes until its holder is done."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the lock file's folder, here and there
    monkeypatch.setattr(tempfile, "tempdir", None)
    marker = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, pathlib; from deep_spectrum_extractor.run.work import "
         "one_at_a_time\nwith one_at_a_time('test-lock'):\n"
         "    pathlib.Path(sys.argv[1]).write_text(str(time.time())); time.sleep(1.5)\n"
         "    released = time.time()\nprint(released)", str(marker)],
        stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
        with work.one_at_a_time("test-lock"):
            acquired = time.time()
        released = float(holder.communicate(timeout=60)[0])
    finally:
        holder.kill()
    assert acquired >= released - 0.05
    assert (tmp_path / "deep-spectrum-test-lock.lock").exists()


class _NoNetwork:
    def features(self, images):
        return np.zeros((len(images), 2), np.float32)


# --- the pool -----------------------------------------------------------------------------

def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


def _gone_within(pids, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pids)


def _sigint_disposition():
    return signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_pool_workers_ignore_sigint_and_stop_at_once_when_abandoned():
    pool = WorkerPool(2)
    pool.start_all()
    assert pool.submit(_sigint_disposition).result(timeout=60) == (signal.SIG_IGN, set())
    workers = pool.worker_pids
    assert len(workers) == 2
    running = [pool.submit(time.sleep, 60) for _ in range(4)]
    started = time.monotonic()
    pool.abandon()
    assert time.monotonic() - started < 0.5  # waits for nothing
    assert _gone_within(workers, 5)
    for future in running:  # dropped: cancelled, or failed with the pool
        try:
            error = future.exception(timeout=10)
        except concurrent.futures.CancelledError:
            continue
        assert isinstance(error, concurrent.futures.process.BrokenProcessPool)


def test_pool_workers_end_when_the_pool_is_dropped():
    pool = WorkerPool(2)
    pool.start_all()
    pool.submit(time.sleep, 60)
    pool.submit(os.getpid).result(timeout=60)
    workers = pool.worker_pids
    del pool
    gc.collect()
    assert _gone_within(workers, 5)


@dataclass(frozen=True)
class _DeadlyPiece:
    """Stands in for the audio of a range: drawing it kills the worker (as the
    out-of-memory killer does) or takes a minute."""

    index: int
    action: str
    start: int = 0
    stop: int = 1
    position: int = 0
    shared: None = None

    def chunks(self, start, stop):
        if self.action == "exit":
            os._exit(1)
        time.sleep(60)


def _range(begin: int, piece) -> RangeJob:
    return RangeJob(begin, begin + 1, (piece,), FeatureSettings(), 8)


def test_a_range_that_kills_its_worker_fails_its_input_and_the_run_goes_on():
    samples = tone(0.5)
    good = PieceAudio(0, 0, 1, 0, Path("a.wav"), samples, 0, len(samples), None, None,
                      16000, 512, (None,))
    executor = LocalProcesses(2)
    try:
        handles = [executor.submit(job) for job in
                   (_range(0, good), _range(1, _DeadlyPiece(1, "exit")), _range(2, good))]
        first, killed, last = [executor.result(handle) for handle in handles]
    finally:
        executor.abandon()
    assert first.images.shape == last.images.shape == (1, 227, 227, 3)
    assert np.array_equal(first.images, last.images) and not first.failures
    # tried once more alone on a fresh worker, which it kills too: its input fails
    assert killed.images is None
    assert killed.failures == [Failure(1, range(1 << 62), WORKER_DIED)]


def test_workers_draw_into_shared_memory_what_they_would_return_and_slots_are_reused():
    samples = tone(3.0, frequency=500.0, seed=3)
    settings = FeatureSettings(window=Decimal(1), hop=Decimal("0.5"), mode="mel")
    piece = PieceAudio(0, 0, 5, 0, Path("a.wav"), samples, 0, len(samples), 16000, 8000,
                       16000, 512, tuple(Decimal(n) / 2 for n in range(5)))
    job = RangeJob(0, 5, (piece,), settings, 8)
    expected = render_range(job).images
    executor = LocalProcesses(2, settings, batch_size=8)
    try:
        assert executor._shared is not None and executor._shared.slots == 2 * executor.window
        seen = set()
        for _round in range(3 * executor.window):  # more jobs than slots, one at a time
            handle = executor.submit(job)
            rendered = executor.result(handle)
            assert rendered.slot is not None and rendered.images.shape == (5, 227, 227, 3)
            assert np.array_equal(rendered.images, expected)
            seen.add(rendered.slot)
            executor.release(handle)
        # dropped jobs give their slots back once their workers are done with them
        handles = [executor.submit(job) for _ in range(executor.window)]
        executor.cancel(handles)
        for handle in handles:
            handle[2].result()
        deadline = time.monotonic() + 5  # the callbacks run just after the results are set
        while len(executor._free) < executor._shared.slots and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(executor._free) == list(range(executor._shared.slots))
    finally:
        executor.abandon()
    assert len(seen) == 1  # the released slot is taken again


def test_samples_reach_workers_through_their_slot_when_they_fit_and_with_the_job_otherwise():
    samples = tone(3.0, frequency=700.0, seed=5)
    times = tuple(Decimal(n) / 2 for n in range(5))
    pieces = (PieceAudio(0, 0, 5, 0, Path("a.wav"), samples, 0, len(samples), 16000, 8000,
                         16000, 512, times),
              PieceAudio(1, 0, 3, 5, Path("b.wav"), samples[:32000].copy(), 0, 32000, 16000,
                         8000, 16000, 512, times[:3]))
    # room for 8 chunks of 1 s at 48 kHz, or (with -sr 8000) at 8 kHz: 64001 < 80000
    for rate, fits in ((None, True), (8000, False)):
        settings = FeatureSettings(window=Decimal(1), hop=Decimal("0.5"), mode="mel",
                                   sample_rate=rate)
        job = RangeJob(0, 8, pieces, settings, 8)
        expected = render_range(job).images
        executor = LocalProcesses(2, settings, batch_size=8)
        try:
            sent = executor._shared.hand_over(job, 0)
            assert sent.slot == 0
            if fits:
                assert [piece.samples.size for piece in sent.pieces] == [0, 0]
                assert [piece.shared for piece in sent.pieces] == [
                    (0, 48000), (48000, 80000)]
                np.testing.assert_array_equal(executor._shared.samples(0)[:80000],
                                              np.concatenate([samples, samples[:32000]]))
            else:
                assert sent.pieces == pieces
            handle = executor.submit(job)
            rendered = executor.result(handle)
            assert rendered.slot is not None
            np.testing.assert_array_equal(rendered.images, expected)
            executor.release(handle)
        finally:
            executor.abandon()


def test_abandoning_local_processes_stops_busy_workers_at_once():
    executor = LocalProcesses(2)
    for number in range(4):
        executor.submit(_range(number, _DeadlyPiece(number, "sleep")))
    time.sleep(0.5)
    workers = [process.pid for process in multiprocessing.active_children()]
    started = time.monotonic()
    executor.abandon()
    assert time.monotonic() - started < 0.5
    assert _gone_within(workers, 5)


# --- real processes, real signals ---------------------------------------------------------

@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """About 15 s of work for two workers and EfficientNet-Lite0 on a small machine."""
    root = tmp_path_factory.mktemp("big")
    for number in range(40):
        write_wav(root / f"f{number:02d}.wav", tone(4.0, frequency=150 + 40 * number,
                                                    seed=number))
    return root


@pytest.fixture(scope="module")
def lite0_cache(tmp_path_factory) -> Path:
    """A model cache with EfficientNet-Lite0 built (once; it builds itself offline)."""
    cache = tmp_path_factory.mktemp("cache")
    audio = write_wav(tmp_path_factory.mktemp("one") / "one.wav", tone(1.0))
    result = subprocess.run(_command(audio, audio.with_suffix(".csv"), "-np", "1"),
                            env=_environment(cache), capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    return cache


def _command(source, output, *options) -> list[str]:
    return [sys.executable, "-m", "deep_spectrum_extractor", "-i", str(source), "-o",
            str(output), "-t", "1", "0.5", "-net", "efficientnet_lite0", "-batch_size", "16",
            *options]


def _environment(cache: Path) -> dict:
    return dict(os.environ, DEEP_SPECTRUM_CACHE=str(cache))


def _interruptible() -> None:
    """In the child: Ctrl-C's default action, as in a terminal.

    A shell that is not interactive starts background commands with SIGINT ignored,
    which every process then inherits (Python keeps it ignored, so Ctrl-C does nothing,
    by design); the tests may run under such a shell.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Session:
    """A command started in a session of its own, with its stderr in a file to watch."""

    def __init__(self, args: list[str], folder: Path, **options):
        self.err_path = folder / "stderr.txt"
        with open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(args, stderr=err, start_new_session=True,
                                            cwd=folder, preexec_fn=_interruptible, **options)

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def members(self) -> list[int]:
        """Processes of the session still running (the command, workers, tracker)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:  # ended meanwhile
                    continue
                if int(fields[3]) == self.process.pid and fields[0] != "Z":
                    found.append(int(entry))
        return found

    def workers(self) -> list[int]:
        return [pid for pid in self.members() if b"spawn_main" in _cmdline(pid)]

    def wait_until(self, condition, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, self.err
            assert time.monotonic() < deadline, f"timed out; stderr:\n{self.err}"
            time.sleep(0.01)

    def interrupt(self, timeout: float = 60.0) -> float:
        """Ctrl-C as a terminal sends it, to the whole group; seconds until the end."""
        os.killpg(self.process.pid, signal.SIGINT)
        sent = time.monotonic()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:.0f} s after Ctrl-C; stderr:\n{self.err}")
        return time.monotonic() - sent

    def members_after(self, seconds: float) -> list[int]:
        """The session's processes still running ``seconds`` from now, at the latest."""
        deadline = time.monotonic() + seconds
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.members()

    def kill(self) -> None:
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _files_done(output: Path) -> int:
    journal = output.with_name(f".{output.name}.journal")
    return max(len(journal.read_text().splitlines()) - 1, 0) if journal.exists() else 0


@pytest.fixture
def command(tmp_path, big_corpus, lite0_cache):
    """extract_ds_features with two workers on the big corpus, started."""
    session = _Session(_command(big_corpus, tmp_path / "features.csv", "-np", "2"), tmp_path,
                       stdout=subprocess.DEVNULL, env=_environment(lite0_cache))
    yield session
    session.kill()  # whatever a failed test left behind


# Seconds a run may take to end after Ctrl-C: the network batch in progress (16 images),
# closing the output and the interpreter's exit with TensorFlow loaded took 1.2 to 2 s
# on two cores busy with other work.
INTERRUPT_LIMIT = 6.0


def _check_interrupted(session: _Session, took: float, limit: float = INTERRUPT_LIMIT):
    assert session.process.returncode == 130, session.err
    assert "Traceback" not in session.err and "KeyboardInterrupt" not in session.err, \
        session.err
    assert took < limit, f"{took:.1f} s to end after Ctrl-C"
    assert session.members_after(3) == []  # no worker, no resource tracker left


def test_ctrl_c_mid_run_ends_it_at_once(command, tmp_path):
    command.wait_until(lambda: _files_done(tmp_path / "features.csv") >= 2)  # all busy
    _check_interrupted(command, command.interrupt())
    assert "interrupted" in command.err


def test_a_second_ctrl_c_while_it_exits_keeps_status_130(command, tmp_path):
    """Ctrl-C pressed again once the interrupt is reported: the exit goes on quietly."""
    command.wait_until(lambda: _files_done(tmp_path / "features.csv") >= 1)
    os.killpg(command.process.pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while "interrupted" not in command.err and command.process.poll() is None:
        assert time.monotonic() < deadline, command.err
        time.sleep(0.005)
    try:
        os.killpg(command.process.pid, signal.SIGINT)
    except ProcessLookupError:  # it had already ended
        pass
    command.process.wait(timeout=60)
    _check_interrupted(command, 0.0)


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3, 1.0])
def test_ctrl_c_while_workers_start_prints_no_traceback(command, delay):
    # from the first worker's first instruction (0) to its imports and warm-up plot
    command.wait_until(command.workers)
    time.sleep(delay)
    _check_interrupted(command, command.interrupt())


def test_sigterm_mid_run_ends_it_at_once(command, tmp_path):
    command.wait_until(lambda: _files_done(tmp_path / "features.csv") >= 2)
    command.process.send_signal(signal.SIGTERM)  # kill PID: the command alone
    sent = time.monotonic()
    command.process.wait(timeout=60)
    took = time.monotonic() - sent
    assert command.process.returncode == 143, command.err
    assert "Traceback" not in command.err, command.err
    assert took < INTERRUPT_LIMIT, f"{took:.1f} s to end after SIGTERM"
    assert command.members_after(3) == []


def test_killed_run_leaves_no_process(command, tmp_path):
    command.wait_until(lambda: _files_done(tmp_path / "features.csv") >= 2)
    assert len(command.workers()) == 2
    command.process.send_signal(signal.SIGKILL)  # what a cluster's memory limit does
    command.process.wait()
    # the workers and multiprocessing's resource tracker end by themselves
    assert command.members_after(5) == []


# The pipeline with a network written in Python: while it computes it holds the GIL, so
# the pool's thread reading results is slow and workers spend much of their time writing
# results.  A worker interrupted there leaves half a message in the result pipe, or,
# interrupted just after taking the result pipe's lock, keeps it forever: the pool's
# thread then waits for the rest of a message that never comes, and the run with it (in
# about half of these runs before workers ignored SIGINT, hence several delays).
_STREAMING_RUN = """
import sys, time
from decimal import Decimal
from pathlib import Path

import numpy as np

from deep_spectrum_extractor.job import Job
from deep_spectrum_extractor.run import run_job
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions


class PythonNetwork:
    def features(self, images):
        deadline = time.perf_counter() + 0.1
        while time.perf_counter() < deadline:
            pass
        return np.zeros((len(images), 4), np.float32)


files = sorted(Path(sys.argv[1]).glob("*.wav"))
settings = FeatureSettings(window=Decimal(1), hop=Decimal("0.5"))
try:
    job = Job(files, settings, RunOptions(processes=2, batch_size=16))
    for result in run_job(job, PythonNetwork()):
        print(result.index, flush=True)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.45, 0.6, 0.8])
def test_ctrl_c_while_results_stream_never_hangs(tmp_path, big_corpus, delay):
    session = _Session([sys.executable, "-c", _STREAMING_RUN, str(big_corpus)], tmp_path,
                       stdout=subprocess.PIPE)
    try:
        assert session.process.stdout.readline(), session.err  # results are streaming
        time.sleep(delay)
        _check_interrupted(session, session.interrupt(timeout=20), limit=5)
    finally:
        session.kill()
