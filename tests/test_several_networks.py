"""Several (network, layer) pairs in one pass: every picture drawn once, a file per pair,
each the file a run with that pair alone writes."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deep_spectrum_extractor.backend.extractor import NetworkSet, load_networks
from deep_spectrum_extractor.run import run_job
from conftest import count_chunks_drawn
from test_robustness import cli

PAIRS = (("small", "fc6"), ("small", "fc7"), ("second", "conv5"))
CHUNKS = ["-t", "1", "0.5", "-mode", "mel", "-np", "1", "-batch_size", "4"]


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory) -> Path:
    """A deep.conf with two different small AlexNet-topology graphs: small and second."""
    from deep_spectrum_extractor.backend.alexnet import build_alexnet_graph, random_alexnet_weights
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    folder = tmp_path_factory.mktemp("two_networks")
    for name, seed in (("small", 1), ("second", 2)):
        write_graph_def(build_alexnet_graph(random_alexnet_weights(seed=seed)),
                        folder / f"{name}.pb")
    path = folder / "deep.conf"
    path.write_text("[main]\nsize = 227\ngpu = 0\nbackend = tensorflow\n\n"
                    "[tensorflow-nets]\nsmall = small.pb\nsecond = second.pb\n\n"
                    "[tensorflow-layers]\nsmall = fc7\nsecond = fc7\n")
    return path


def _single_runs(corpus, config, tmp_path, suffix, extra=()):
    """Each pair alone: {pair: output file}."""
    files = {}
    for net, layer in PAIRS:
        files[net, layer] = tmp_path / f"alone_{net}_{layer}{suffix}"
        assert cli("-i", corpus, "-o", files[net, layer], *CHUNKS, "-config", config,
                   "-net", net, "-layer", layer, *extra) == 0
    return files


def _sidecar(path: Path) -> dict:
    record = json.loads(path.with_name(path.name + ".json").read_text())
    record["summary"].pop("output")
    return record


@pytest.mark.parametrize("suffix, extra", [(".arff", ()), (".csv", ("--file_statistics",)),
                                           (".parquet", ())])
def test_two_networks_and_three_pairs_write_three_files_each_as_the_pair_alone(
        corpus, two_networks, tmp_path, monkeypatch, suffix, extra):
    drawn = count_chunks_drawn(monkeypatch)

    def chunks_drawn():  # of the audio: the probe of each sample rate has no timestamp
        return sum(chunk.timestamp is not None for chunk in drawn)

    out = tmp_path / f"features{suffix}"
    assert cli("-i", corpus, "-o", out, *CHUNKS, "-config", two_networks,
               "-net", "small", "second", "-layer", "small:fc6", "small:fc7", "second:conv5",
               *extra) == 0
    pictures = chunks_drawn()
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(f"features.{net}.{layer}{suffix}{end}"
                             for net, layer in PAIRS for end in ("", ".json"))
    alone = _single_runs(corpus, two_networks, tmp_path, suffix, extra)
    assert chunks_drawn() - pictures == 3 * pictures  # the pass drew as much as one run alone
    for (net, layer), reference in alone.items():
        ours = out.with_name(f"features.{net}.{layer}{suffix}")
        assert ours.read_bytes() == reference.read_bytes(), (net, layer)
        assert _sidecar(ours) == _sidecar(reference)
        assert _sidecar(ours)["provenance"]["settings"]["layer"] == layer
    if suffix == ".arff":
        import arff

        widths = {layer: len(arff.load(open(out.with_name(f"features.{net}.{layer}.arff")))
                             ["data"][0]) for net, layer in PAIRS}
        assert len(set(widths.values())) == 3, widths


def test_a_bare_layer_is_taken_from_every_network_and_deepspectrum_repeats_options(
        corpus, two_networks, tmp_path):
    out = tmp_path / "f.csv"
    assert cli("-i", corpus, "-o", out, *CHUNKS, "-config", two_networks,
               "-net", "small", "second", "-layer", "fc7") == 0
    assert sorted(path.name for path in tmp_path.glob("*.csv")) == [
        "f.second.fc7.csv", "f.small.fc7.csv"]
    one = pd.read_csv(tmp_path / "f.small.fc7.csv")
    other = pd.read_csv(tmp_path / "f.second.fc7.csv")
    assert one.shape == other.shape and not np.allclose(one.iloc[:, 2:-1], other.iloc[:, 2:-1])

    from deep_spectrum_extractor.cli import deepspectrum

    modern = tmp_path / "modern"
    modern.mkdir()
    assert deepspectrum.main(["features", str(corpus), "-o", str(modern / "f.csv"), "-t", "1",
                              "0.5", "-m", "mel", "-np", "1", "-bs", "4", "-c",
                              str(two_networks), "-en", "small", "-en", "second",
                              "-fl", "fc7"]) == 0
    for name in ("f.small.fc7.csv", "f.second.fc7.csv"):
        ours, theirs = pd.read_csv(modern / name), pd.read_csv(tmp_path / name)
        # deepspectrum names inputs relative to INPUT; the features are the same
        assert np.array_equal(ours.iloc[:, 1:].to_numpy(), theirs.iloc[:, 1:].to_numpy())


@pytest.mark.parametrize("options, message", [
    (["-net", "small", "-layer", "second:fc7"],
     "-layer second:fc7 is for network second, which -net does not give (-net small)"),
    (["-net", "small", "small"], "-net names small twice"),
    (["-net", "small", "-layer", "fc7", "small:fc7"], "asks for layer fc7 of small twice"),
    (["-net", "small", "second", "-layer", "fc9"], "layer 'fc9' is not in small.pb"),
    (["-net", "small", "second", "-scheduler", "tcp://127.0.0.1:1"],
     "-scheduler runs one network and layer"),
])
def test_pairs_that_could_mean_two_things_or_cannot_work_are_refused(
        corpus, two_networks, tmp_path, capsys, options, message):
    out = tmp_path / "f.csv"
    assert cli("-i", corpus, "-o", out, *CHUNKS, "-config", two_networks, *options) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_deepspectrum_spells_the_refusal_in_its_own_options(corpus, two_networks, tmp_path,
                                                            capsys):
    from deep_spectrum_extractor.cli import deepspectrum

    assert deepspectrum.main(["features", str(corpus), "-o", str(tmp_path / "f.csv"), "-c",
                              str(two_networks), "-en", "small", "-fl", "second:fc7"]) == 2
    assert "-fl second:fc7 is for network second, which -en does not give" in \
        capsys.readouterr().err


class _StopAfter:
    """A loaded network that is interrupted (as by Ctrl-C) at batch ``limit``."""

    def __init__(self, network, limit: int):
        self.network, self.limit, self.batches = network, limit, 0
        self.pairs, self.device, self.gpu_missing = network.pairs, "CPU", False

    @property
    def widths(self):
        return self.network.widths

    def columns(self):
        return self.network.columns()

    def features(self, images):
        self.batches += 1
        if self.batches > self.limit:
            raise KeyboardInterrupt
        return self.network.features(images)


@pytest.fixture(scope="module")
def longer(tmp_path_factory) -> Path:
    """Three recordings of 4 s: 21 chunks, six batches of 4."""
    from conftest import tone, write_wav

    root = tmp_path_factory.mktemp("longer")
    for number in range(3):
        write_wav(root / f"take_{number}.wav", tone(4.0, frequency=300.0 + 200 * number,
                                                    seed=number))
    return root


@pytest.mark.parametrize("behind", [False, True])
def test_an_interrupted_pass_resumes_every_file_to_the_bytes_of_an_uninterrupted_one(
        longer, two_networks, tmp_path, capsys, behind):
    corpus = longer
    reference = tmp_path / "reference" / "f.csv"
    reference.parent.mkdir()
    options = [*CHUNKS, "-config", two_networks, "-net", "small", "second",
               "-layer", "small:fc6", "small:fc7", "second:conv5"]
    assert cli("-i", corpus, "-o", reference, *options) == 0

    out = tmp_path / "f.csv"
    from deep_spectrum_extractor.cli import extract_ds_features as command

    job = command.job_from_args(command.build_parser().parse_args(
        [str(part) for part in ["-i", corpus, "-o", out, *options]]))
    assert job.pairs == PAIRS
    network = load_networks({"small": (two_networks.parent / "small.pb", ["fc6", "fc7"]),
                             "second": (two_networks.parent / "second.pb", ["conv5"])},
                            gpu=False)
    assert isinstance(network, NetworkSet)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, _StopAfter(network, 3)).wait()
    network.close()
    journals = {pair: out.with_name(f".f.{pair[0]}.{pair[1]}.csv.journal") for pair in PAIRS}
    assert all(journal.exists() for journal in journals.values())
    if behind:  # killed after one file's checkpoint line, before the next file's
        journal = journals["second", "conv5"]
        lines = journal.read_text().splitlines()
        last = max(number for number, line in enumerate(lines) if '"checkpoint"' in line)
        journal.write_text("\n".join(lines[:last]) + "\n")
    capsys.readouterr()
    assert cli("-i", corpus, "-o", out, *options, "--resume") == 0
    err = capsys.readouterr().err
    assert " chunk(s) were not drawn again" in err
    done = int(err.split(" chunk(s) were not drawn again")[0].rsplit(" ", 1)[1])
    assert done == (4 if behind else 8)  # batches of 4: the checkpoint every file holds
    for net, layer in PAIRS:
        name = f"f.{net}.{layer}.csv"
        assert (tmp_path / name).read_bytes() == (reference.parent / name).read_bytes()
        assert not journals[net, layer].exists()


@pytest.mark.parametrize("statistics", [False, True])
def test_the_api_returns_a_frame_per_pair_equal_to_the_pair_alone(corpus, two_networks,
                                                                   statistics):
    from deep_spectrum_extractor import DeepSpectrum

    common = dict(window=1, hop=0.5, mode="mel", config=two_networks, statistics=statistics)
    with DeepSpectrum(net=["small", "second"], layer=["small:fc6", "small:fc7",
                                                      "second:conv5"], **common) as both:
        assert both.pairs == PAIRS
        frames = both.process_folder(corpus)
    assert list(frames) == list(PAIRS)
    for net, layer in PAIRS:
        with DeepSpectrum(net=net, layer=layer, **common) as alone:
            pd.testing.assert_frame_equal(frames[net, layer], alone.process_folder(corpus))


def test_provenance_names_the_device_and_gpu_1_without_a_gpu_runs_on_the_cpu_and_says_so(
        corpus, tmp_path, capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.fail("this test checks the CPU fallback; it needs a machine without a GPU")
    folder = tmp_path / "model"
    folder.mkdir()
    from deep_spectrum_extractor.backend.alexnet import build_alexnet_graph, random_alexnet_weights
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    write_graph_def(build_alexnet_graph(random_alexnet_weights(seed=1)), folder / "small.pb")
    for gpu in (1, 0):
        config = folder / f"gpu{gpu}.conf"
        config.write_text(f"[main]\nsize = 227\ngpu = {gpu}\nbackend = tensorflow\n\n"
                          "[tensorflow-nets]\nsmall = small.pb\n")
        out = tmp_path / f"gpu{gpu}.arff"
        assert cli("-i", corpus, "-o", out, *CHUNKS, "-config", config, "-net", "small") == 0
        err = capsys.readouterr().err
        record = json.loads(out.with_name(out.name + ".json").read_text())["provenance"]
        assert record["network"]["device"] == "CPU"
        assert any(line.startswith("% network: small.pb sha256=") and
                   line.endswith(" device=CPU") for line in out.read_text().splitlines())
        said = f"the network ran on the CPU: gpu = 1 in {config}, but TensorFlow sees no GPU"
        assert (said in err) == (gpu == 1), err
    # the device is the only difference: same features on the CPU either way
    assert [line for line in (tmp_path / "gpu1.arff").read_text().splitlines()
            if not line.startswith("%")] == \
        [line for line in (tmp_path / "gpu0.arff").read_text().splitlines()
         if not line.startswith("%")]


def test_shards_of_a_pass_merge_per_pair_into_the_files_of_the_pair_alone(
        longer, two_networks, tmp_path):
    from deep_spectrum_extractor.sharding import main as merge

    options = [*CHUNKS, "-config", two_networks, "-net", "small", "second",
               "-layer", "small:fc7", "second:conv5"]
    reference = tmp_path / "reference" / "f.arff"
    reference.parent.mkdir()
    assert cli("-i", longer, "-o", reference, *options) == 0
    out = tmp_path / "sharded" / "f.arff"
    for number in (1, 2, 3):
        assert cli("-i", longer, "-o", out, *options, "-shard", f"{number}/3") == 0
    for net, layer in (("small", "fc7"), ("second", "conv5")):
        shards = sorted(out.parent.glob(f"f.{net}.{layer}.shard-*-of-3.arff"))
        assert len(shards) == 3
        merged = tmp_path / f"merged.{net}.{layer}.arff"
        assert merge(["-o", str(merged), *map(str, shards)]) == 0
        assert merged.read_bytes() == (reference.parent / f"f.{net}.{layer}.arff").read_bytes()


def test_image_features_of_several_pairs_equal_each_pair_alone(two_networks, tmp_path):
    from PIL import Image

    from deep_spectrum_extractor.cli import deepspectrum

    pictures = tmp_path / "pictures"
    rng = np.random.default_rng(5)
    for label in ("a", "b"):
        for number in range(3):
            path = pictures / label / f"{label}{number}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (227, 227, 3), dtype=np.uint8)).save(path)
    common = ["image-features", str(pictures), "-c", str(two_networks), "-bs", "4"]
    out = tmp_path / "both" / "f.csv"
    out.parent.mkdir()
    assert deepspectrum.main([*common, "-o", str(out), "-en", "small", "-en", "second",
                              "-fl", "small:fc6", "-fl", "fc7"]) == 0
    written = sorted(path.name for path in out.parent.glob("*.csv"))
    assert written == ["f.second.fc7.csv", "f.small.fc6.csv", "f.small.fc7.csv"]
    for name in written:
        _stem, net, layer, _ext = name.split(".")
        alone = tmp_path / f"{net}.{layer}.csv"
        assert deepspectrum.main([*common, "-o", str(alone), "-en", net, "-fl", layer]) == 0
        assert (out.parent / name).read_bytes() == alone.read_bytes(), name
