"""Command lines written for DeepSpectrum 0.6.x run unchanged on ``deepspectrum``.

The command lines follow 0.6.x's documentation: the input first, 0.6.x's option names,
label files naming files by their path relative to the input folder, one label file per
partition.  Every run is compared with the ``extract_ds_features`` run of the same
settings: the same rows, labels and feature values.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from conftest import tone
from deep_spectrum_extractor.cli import deepspectrum, extract_ds_features

FORMATS = {"flac": dict(format="FLAC", subtype="PCM_16"), "wav": dict(format="WAV"),
           "mp3": dict(format="MP3", subtype="MPEG_LAYER_III"),
           "ogg": dict(format="OGG", subtype="VORBIS")}


def ds(*args):
    return deepspectrum.main([str(arg) for arg in args])


def eds(*args):
    return extract_ds_features.main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def animals(tmp_path_factory) -> Path:
    """Class folders (dog, cat) of flac, wav, mp3 and ogg files; the same name in both."""
    root = tmp_path_factory.mktemp("animals")
    for label, frequency in (("dog", 300.0), ("cat", 900.0)):
        (root / label).mkdir()
        for number, (extension, spec) in enumerate(FORMATS.items()):
            signal = tone(1.6 + 0.3 * number, frequency=frequency + 50 * number, seed=number)
            soundfile.write(root / label / f"{number + 1}.{extension}", signal, 16000, **spec)
    return root


def table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(path, dtype={"name": str})
    neurons = [column for column in frame.columns if column.startswith("neuron_")]
    return frame, frame[neurons].to_numpy(dtype=np.float32)


def relative_names(classic: pd.DataFrame, root: Path) -> list[str]:
    """The 2018 run's bare names as 0.6.x writes them: relative to the input folder."""
    folders = {path.name: path.parent.name for path in root.rglob("*.*")
               if path.parent != root}
    return [f"{label}/{name}" for label, name in zip(classic["class"], classic["name"])] \
        if "class" in classic else [f"{folders[name]}/{name}" for name in classic["name"]]


def test_a_0_6_command_line_with_folder_labels(animals, tmp_path, small_config):
    code = ds("features", animals, "-t", "1", "0.5", "-m", "mel", "-nm", "64", "-fs", "mel",
              "-cm", "magma", "-en", "small", "-fl", "fc7", "-bs", "5", "-np", "1", "-c",
              small_config, "-o", tmp_path / "06.csv")
    assert code == 0
    assert eds("-i", animals, "-t", "1", "0.5", "-mode", "mel", "-nmel", "64", "-scale", "mel",
               "-cmap", "magma", "-net", "small", "-layer", "fc7", "-batch_size", "5", "-np",
               "1", "-config", small_config, "-o", tmp_path / "2018.csv") == 0
    modern, modern_values = table(tmp_path / "06.csv")
    classic, classic_values = table(tmp_path / "2018.csv")
    assert len(modern) == len(classic) > 8
    assert set(Path(name).suffix for name in modern["name"]) == {".flac", ".wav", ".mp3",
                                                                 ".ogg"}
    assert list(modern["name"]) == relative_names(classic, animals)
    assert list(modern["class"]) == list(classic["class"])
    assert list(modern["timeStamp"]) == list(classic["timeStamp"])
    np.testing.assert_array_equal(modern_values, classic_values)


def test_label_files_with_relative_paths_and_partitions(animals, tmp_path, small_config,
                                                        capsys):
    # 0.6.x's label file: paths relative to the input folder; "1.flac" is in both folders
    (tmp_path / "train.csv").write_text("name,label,score\ndog/1.flac,bark,1.5\n"
                                        "cat/1.flac,meow,2\ndog/3.mp3,bark,0.25\n")
    code = ds("features", animals, "-lf", tmp_path / "train.csv", "-en", "small", "-np", "1",
              "-c", small_config, "-o", tmp_path / "train.arff")
    assert code == 0
    assert "5 of 8 input file(s) are not named in" in capsys.readouterr().err
    text = (tmp_path / "train.arff").read_text()
    rows = [line.split(",") for line in text.split("@data\n")[1].splitlines()]
    assert [(row[0], row[-2], row[-1]) for row in rows] == [
        ("cat/1.flac", "meow", "2"), ("dog/1.flac", "bark", "1.5"), ("dog/3.mp3", "bark", "0.25")]
    assert "@attribute label {bark,meow}" in text and "@attribute score numeric" in text
    # extract_ds_features reads the same file; without --skip_unlabelled it stops as in 2018
    assert eds("-i", animals, "-l", tmp_path / "train.csv", "-net", "small", "-np", "1",
               "-config", small_config, "-o", tmp_path / "stop.arff") == 2
    assert "no labels in" in capsys.readouterr().err and not (tmp_path / "stop.arff").exists()
    assert eds("-i", animals, "-l", tmp_path / "train.csv", "--skip_unlabelled", "-net",
               "small", "-np", "1", "-config", small_config, "-o", tmp_path / "2018.arff") == 0
    classic = (tmp_path / "2018.arff").read_text().split("@data\n")[1].splitlines()
    assert [line.split(",", 1)[1] for line in classic] == \
        [",".join(row[1:]) for row in rows]  # the same numbers and labels, bare names


def test_a_bare_name_two_files_share_is_refused(animals, tmp_path, small_config, capsys):
    (tmp_path / "bare.csv").write_text("name,label\n1.flac,x\n2.wav,y\n")
    assert ds("features", animals, "-lf", tmp_path / "bare.csv", "-en", "small", "-c",
              small_config, "-o", tmp_path / "f.csv") == 2
    err = capsys.readouterr().err
    assert "1.flac names no folder, but 2 input files have that name" in err
    assert str(animals / "cat" / "1.flac") in err and str(animals / "dog" / "1.flac") in err
    assert "e.g. cat/1.flac" in err and not (tmp_path / "f.csv").exists()


def test_time_continuous_label_file_with_relative_paths(animals, tmp_path, small_config):
    lines = ["name,timestamp,arousal"]
    for name, seconds in (("dog/2.wav", 1.9), ("cat/2.wav", 1.9)):
        lines += [f"{name},{stamp:.1f},{0.1 * number:.1f}"
                  for number, stamp in enumerate(np.arange(0, int(seconds / 0.5)) * 0.5)]
    (tmp_path / "tc.csv").write_text("\n".join(lines) + "\n")
    assert ds("features", animals, "-t", "1", "0.5", "-tc", "-lf", tmp_path / "tc.csv",
              "-en", "small", "-np", "1", "-c", small_config, "-o", tmp_path / "tc.csv.out.csv"
              ) == 0
    frame, _values = table(tmp_path / "tc.csv.out.csv")
    assert list(frame["name"]) == ["cat/2.wav"] * 3 + ["dog/2.wav"] * 3
    assert list(frame["timeStamp"]) == [0.0, 0.5, 1.0] * 2
    assert list(frame["arousal"]) == [0.0, 0.1, 0.2] * 2


def test_verbosity_and_the_version_come_before_the_command(animals, tmp_path, small_config,
                                                           capsys):
    assert ds("-v", "features", animals / "dog" / "2.wav", "-en", "small", "-c", small_config,
              "-o", tmp_path / "v.csv") == 0
    err = capsys.readouterr().err
    assert f"deepspectrum features: done {animals / 'dog' / '2.wav'}" in err
    assert ds("-vv", "features", animals / "dog" / "2.wav", "-en", "small", "-c",
              small_config, "-o", tmp_path / "vv.csv") == 0
    assert "deepspectrum features: settings: {'mode': 'spectrogram'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        deepspectrum.build_parser().parse_args(["--version"])
    assert ds("--version") == 0
    assert capsys.readouterr().out.startswith("deepspectrum ")


def test_the_default_network_is_vgg16_and_the_error_names_the_offline_one(animals, tmp_path,
                                                                         capsys, monkeypatch):
    monkeypatch.setenv("DEEP_SPECTRUM_CACHE", str(tmp_path / "empty-cache"))
    assert ds("features", animals, "-o", tmp_path / "f.csv", "-np", "1") == 2
    err = capsys.readouterr().err
    assert "loading vgg16" in err and "layer fc2" in err
    assert "export_keras.py vgg16" in err and "-en efficientnet_lite0" in err
    assert "-net " not in err  # messages use deepspectrum's option names
