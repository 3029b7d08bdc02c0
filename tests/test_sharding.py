"""Sharded runs (-shard i/N, SLURM arrays) merge into the bytes of a single run."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import tone, write_wav
from deep_spectrum_extractor.run import run_job, work
from deep_spectrum_extractor.errors import AudioError, ParameterError
from deep_spectrum_extractor.run.plan import Plan
from deep_spectrum_extractor.sharding import (ShardError, main, merge_shards,
                                              parse_shard, record_path, resolve_shard,
                                              shard_from_environment, shard_path)

BATCH = 5   # small, so that batches straddle files and shards cut files in two
CHUNKS = ["-t", "0.5", "0.25"]


def make_corpus(root: Path) -> Path:
    """Files of many lengths, two sample rates, an undecodable and a too-short file.

    With ``-t 0.5 0.25`` and batches of 5 the 36 chunks fill 8 batches, most of which
    hold chunks of two files.
    """
    lengths = {"a/one.wav": (1.3, 16000), "a/short.wav": (0.01, 16000),
               "a/three.wav": (2.2, 16000), "a/two.wav": (0.6, 16000),
               "b/five.wav": (0.9, 16000), "b/four.wav": (3.0, 44100),
               "b/six.wav": (1.6, 44100)}
    for number, (name, (seconds, rate)) in enumerate(sorted(lengths.items())):
        write_wav(root / name, tone(seconds, rate, frequency=300.0 + 150 * number, seed=number),
                  rate)
    (root / "b" / "bad.wav").write_bytes(b"RIFF\x00\x00not a wav file at all")
    return root


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("shard_corpus"))


def cli_args(corpus: Path, output: Path, config: Path, *extra) -> list[str]:
    return ["-i", str(corpus), "-o", str(output), *CHUNKS, "-net", "small", "-config",
            str(config), "-batch_size", str(BATCH), "-np", "1", *extra]


def single_run(corpus: Path, output: Path, config: Path, *extra) -> bytes:
    """The reference: extract_ds_features in this process, all in one process."""
    from deep_spectrum_extractor.cli.extract_ds_features import main as cli_main

    code = cli_main(cli_args(corpus, output, config, *extra))
    assert code == 1  # bad.wav and short.wav are skipped
    return output.read_bytes()


def job_from_args(argv: list[str]):
    """The job extract_ds_features builds from a command line."""
    from deep_spectrum_extractor.cli.extract_ds_features import build_parser, job_from_args

    return job_from_args(build_parser().parse_args(argv))


def shard(job, extractor, number: int, count: int, *, processes: int | None = None):
    """Run shard ``number`` of ``count`` of ``job``; what it reports, and its file."""
    options = job.options
    if processes:
        options = dataclasses.replace(options, processes=processes)
    job = dataclasses.replace(job, options=options,
                              output=dataclasses.replace(job.output, shard=(number, count)))
    report = run_job(job, extractor).wait()
    begin, end = report.positions
    return SimpleNamespace(path=report.output, begin=begin, end=end, rows=report.rows,
                           done=report.done, skipped=report.skipped)


def test_three_shards_merge_into_the_single_run_arff(shard_corpus, small_config,
                                                     session_extractor, tmp_path, capsys):
    reference = single_run(shard_corpus, tmp_path / "single" / "features.arff", small_config)
    job = job_from_args(cli_args(shard_corpus, tmp_path / "sharded" / "features.arff",
                                 small_config))
    reports = [shard(job, session_extractor, number, 3) for number in (1, 2, 3)]

    # contiguous, whole batches; rows of one file are split between two shards
    assert [report.begin for report in reports] == [0, 10, 25]
    assert [report.end for report in reports] == [10, 25, 36]
    assert sum(report.rows for report in reports) == 36
    assert all(report.path.read_bytes().startswith(b"% Deep Spectrum features")
               for report in reports)
    # every file's outcome is reported by exactly one shard, in input order
    assert [path for report in reports for path in report.done] == \
        [path for path in job.inputs if path.name not in ("bad.wav", "short.wav")]
    assert [path.name for report in reports for path, _reason in report.skipped] == \
        ["short.wav", "bad.wav"]

    merged = tmp_path / "sharded" / "features.arff"
    assert main(["-o", str(merged)] + [str(report.path) for report in reversed(reports)]) == 0
    assert "36 feature vectors from 3 shard(s)" in capsys.readouterr().err
    assert merged.read_bytes() == reference
    # the same provenance and summary of files done and skipped
    assert (merged.parent / "features.arff.json").read_bytes() == \
        (tmp_path / "single" / "features.arff.json").read_bytes()


def test_slurm_array_shards_merge_into_the_single_run_csv(shard_corpus, small_config,
                                                           session_extractor, tmp_path):
    """-ylim 50 cannot be plotted at 16 kHz: those files are skipped as in a single run."""
    reference = single_run(shard_corpus, tmp_path / "single.csv", small_config, "-ylim", "50")
    job = job_from_args(cli_args(shard_corpus, tmp_path / "out" / "features.csv",
                                 small_config, "-ylim", "50"))
    paths = []
    for task in (1, 2, 3):   # sbatch --array=1-3
        environ = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3",
                   "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "3"}
        number, count = resolve_shard("slurm", environ)
        assert (number, count) == (task, 3)
        report = shard(job, session_extractor, number, count,
                       processes=2 if task == 2 else None)
        assert report.path == tmp_path / "out" / f"features.shard-{task}-of-3.csv"
        paths.append(report.path)
    merged = merge_shards([paths[2], paths[0], paths[1]], tmp_path / "out" / "features.csv")
    assert merged.rows == 18  # only the two 44.1 kHz files: 12 + 6 chunks
    assert merged.output.read_bytes() == reference
    single_sidecar = json.loads((tmp_path / "single.csv.json").read_text())
    merged_sidecar = json.loads((tmp_path / "out" / "features.csv.json").read_text())
    assert merged_sidecar["summary"]["files_skipped"] == \
        single_sidecar["summary"]["files_skipped"]
    assert len(merged_sidecar["summary"]["files_skipped"]) == 6
    assert merged_sidecar["provenance"] == single_sidecar["provenance"]


@pytest.fixture(scope="module")
def three_shards(shard_corpus, small_config, session_extractor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refusals")
    job = job_from_args(cli_args(shard_corpus, folder / "features.arff", small_config))
    return [shard(job, session_extractor, number, 3).path for number in (1, 2, 3)], job


def test_merge_refuses_a_missing_or_duplicated_shard(three_shards, tmp_path, capsys):
    paths, _job = three_shards
    with pytest.raises(ShardError, match=r"shard\(s\) 2/3 missing; a merge needs all 3"):
        merge_shards([paths[0], paths[2]], tmp_path / "merged.arff")
    copy = tmp_path / "copy.arff"
    shutil.copy(paths[0], copy)
    shutil.copy(record_path(paths[0]), record_path(copy))
    with pytest.raises(ShardError, match=r"shard 1/3 is given twice: .*copy\.arff"):
        merge_shards([paths[0], copy, paths[1], paths[2]], tmp_path / "merged.arff")
    assert main(["-o", str(tmp_path / "merged.arff"), str(paths[1])]) == 2
    assert "shard(s) 1/3, 3/3 missing" in capsys.readouterr().err
    assert not (tmp_path / "merged.arff").exists()


def test_merge_refuses_shards_of_other_runs_or_changed_files(three_shards, small_config,
                                                             session_extractor, tmp_path):
    paths, job = three_shards
    other = job_from_args(cli_args(Path(job.root), tmp_path / "other" / "features.arff",
                                   small_config, "-nfft", "256"))
    odd = shard(other, session_extractor, 2, 3).path
    with pytest.raises(ShardError, match=r"different runs \(settings nfft: None vs 256\)"):
        merge_shards([paths[0], odd, paths[2]], tmp_path / "merged.arff")

    four = shard(job, session_extractor, 4, 4).path
    with pytest.raises(ShardError, match=r"shard 4/4 but .* shard 1/3"):
        merge_shards([paths[0], paths[1], four], tmp_path / "merged.arff")

    changed = tmp_path / paths[1].name
    shutil.copy(paths[1], changed)
    shutil.copy(record_path(paths[1]), record_path(changed))
    data = bytearray(changed.read_bytes())
    data[-3] = ord("7") if data[-3] != ord("7") else ord("8")
    changed.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"changed since its shard was written"):
        merge_shards([paths[0], changed, paths[2]], tmp_path / "merged.arff")

    with pytest.raises(ShardError, match=r"no shard record"):
        merge_shards([tmp_path / "other" / "features.shard-2-of-3.arff.json"],
                     tmp_path / "merged.arff")
    with pytest.raises(ShardError, match=r"the shards are ARFF files; name the merged output"):
        merge_shards(paths, tmp_path / "merged.csv")
    assert not (tmp_path / "merged.arff").exists()


def test_a_chunk_that_cannot_be_plotted_stops_the_shard(shard_corpus, small_config,
                                                        session_extractor, tmp_path,
                                                        monkeypatch):
    render = work.render_chunks

    def failing(chunks, *args, relative=None, **kwargs):
        if relative is not None and relative.name == "three.wav" and \
                any(chunk.index == 6 for chunk in chunks):
            raise AudioError("a chunk of silence")
        return render(chunks, *args, relative=relative, **kwargs)

    monkeypatch.setattr(work, "render_chunks", failing)
    job = job_from_args(cli_args(shard_corpus, tmp_path / "features.arff", small_config))
    with pytest.raises(ShardError, match=r"three\.wav: chunks from 5 on could not be read or "
                                         r"drawn \(a chunk of silence\)"):
        shard(job, session_extractor, 1, 2)
    assert not shard_path(job.output.path, (1, 2)).exists()


def test_shard_numbers_and_slurm_variables():
    assert parse_shard("2/3") == (2, 3)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for text in ("0/3", "4/3", "1/0", "a/b", "3"):
        with pytest.raises(ParameterError, match="-shard"):
            parse_shard(text)
    assert shard_from_environment({}) is None
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "0",
                                   "SLURM_ARRAY_TASK_COUNT": "4"}) == (1, 4)
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "8",
                                   "SLURM_ARRAY_TASK_MIN": "0",
                                   "SLURM_ARRAY_TASK_STEP": "2"}) == (8, 8)
    with pytest.raises(ParameterError, match="--array=0-2 or give -shard"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3"})
    with pytest.raises(ParameterError, match="SLURM_ARRAY_TASK_COUNT is not"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "3"})
    array = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}
    assert resolve_shard("2/5", array) == (2, 5)
    assert resolve_shard(None, array) is None   # never split a run without being asked
    with pytest.raises(ParameterError, match="not a SLURM array job"):
        resolve_shard("slurm", {})


def test_plan_positions_follow_the_single_run():
    layout = Plan(batch_size=5)
    for count, error in ((7, None), (0, "bad"), (12, None), (3, None)):
        layout.add(count, error)
    assert layout.starts == [0, 7, 7, 19, 22]
    pieces = layout.pieces(3, 13)
    assert [(p.index, p.start, p.stop, p.position) for p in pieces] == [(0, 3, 7, 3),
                                                                         (2, 0, 6, 7)]
    # dropping segment 1 (chunks 5..9) of input 2 moves everything after chunk 4
    assert layout.drop(2, range(1, 2), "cannot plot") == 12
    assert layout.starts == [0, 7, 7, 14, 17]
    assert layout.kept_ranges(2) == [(0, 5), (10, 12)]
    assert [(p.index, p.start, p.stop, p.position) for p in layout.pieces(8, 18)] == \
        [(2, 1, 5, 8), (2, 10, 12, 12), (3, 0, 3, 14)]
    assert layout.drop(3, range(1 << 62), "odd") == 14
    assert layout.end == 14 and layout.errors == [None, "bad", "cannot plot", "odd"]


def test_command_line_shards_and_merge_equal_the_single_run(tmp_path, small_config):
    """extract_ds_features -shard i/N three times, then ds_merge_shards."""
    from conftest import tone, write_wav
    from deep_spectrum_extractor.cli.extract_ds_features import main
    from deep_spectrum_extractor.sharding import main as merge_main

    corpus = tmp_path / "in"
    for number, seconds in enumerate((1.2, 0.7, 2.1, 1.6)):
        write_wav(corpus / f"f{number}.wav", tone(seconds, frequency=300 + 150 * number,
                                                   seed=number))
    args = ["-i", corpus, "-t", "0.5", "0.25", "-net", "small", "-config", small_config,
            "-batch_size", "5", "-np", "1"]
    single = tmp_path / "single.csv"
    assert main([str(a) for a in [*args, "-o", single]]) == 0
    out = tmp_path / "sharded" / "f.csv"
    for number in (1, 2, 3):
        assert main([str(a) for a in [*args, "-o", out, "-shard", f"{number}/3"]]) == 0
    shards = sorted(out.parent.glob("f.shard-*-of-3.csv"))
    assert len(shards) == 3
    assert merge_main(["-o", str(out), *map(str, shards)]) == 0
    assert out.read_bytes() == single.read_bytes()


def test_merge_refuses_what_is_not_spelled_out(capsys):
    for argv in (["--o", "merged.csv", "a.csv"], ["-ox", "a.csv"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert "is not an option of ds_merge_shards; did you mean -o?" in capsys.readouterr().err
