"""extract_ds_features end to end: options, outputs, labels and errors."""
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import arff
import numpy as np
import pandas as pd
import pytest
import soundfile
from PIL import Image

from conftest import tone, write_wav
from deep_spectrum_extractor.cli.extract_ds_features import build_parser, main
from test_extractor import direct_run
from test_plotting import pyplot_rendering

BASE = ["-np", "1"]


def run(args, capsys=None):
    code = main([str(a) for a in args] + BASE)
    err = capsys.readouterr().err if capsys else ""
    return code, err


def read_arff(path):
    parsed = arff.load(Path(path).read_text(encoding="utf-8"))
    names = [a[0] for a in parsed["attributes"]]
    return names, parsed["data"], parsed["attributes"]


def neuron_values(data, names):
    columns = [i for i, n in enumerate(names) if n.startswith("neuron_")]
    return np.array([[row[i] for i in columns] for row in data], dtype=np.float32)


def reference_images(path, *, window, hop, mode="spectrogram", scale="linear",
                       nfft=None, nmel=128, ylim=None, cmap="viridis", size=227):
    """Features computed step by step with soundfile, librosa, pyplot and a Session."""
    import librosa

    signal, sr = soundfile.read(path)
    signal = np.trim_zeros(signal)
    nfft = nfft or 1 << (int(0.025 * sr) - 1).bit_length()
    w, h = int(window * sr), int(hop * sr)
    images, stamps = [], []
    for n in range(max(len(signal) // h, 1)):
        chunk = signal[n * h:min(n * h + w, len(signal))]
        if len(chunk) < nfft:
            continue
        stft = librosa.stft(chunk, n_fft=nfft, hop_length=nfft // 2, center=False)
        if ylim:
            stft = stft[:int(min(ylim * 2 / sr, 1) * (1 + nfft / 2))]
        if mode == "mel":
            matrix = librosa.power_to_db(
                librosa.feature.melspectrogram(S=np.abs(stft) ** 2, sr=sr, n_mels=nmel),
                ref=np.max, top_db=None)
        else:
            matrix = librosa.amplitude_to_db(np.abs(stft), ref=np.max, top_db=None)
        images.append(pyplot_rendering(matrix, sr=sr, nfft=nfft, scale=scale, cmap=cmap,
                                       size=size, ylim=ylim))
        stamps.append(Decimal(0) + n * Decimal(str(hop)))
    return stamps, images


def test_help_lists_every_original_option_and_is_instant():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "deep_spectrum_extractor", "-h"],
                            capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - started
    for option in ["-i", "-o", "-t", "-start", "-end", "-mode", "-scale", "-ylim", "-delta",
                   "-nmel", "-nfft", "-cmap", "-net", "-layer", "-l", "--tc", "-el",
                   "--no_timestamps", "--no_labels", "-specout", "-wavout", "-np", "-config",
                   "-h", "-batch_size"]:
        assert f" {option} " in result.stdout or f" {option}\n" in result.stdout or \
            f"[{option} " in result.stdout or f"[{option}]" in result.stdout, option
    assert elapsed < 10  # a plain interpreter start-up; TensorFlow alone takes longer
    probe = subprocess.run([sys.executable, "-c",
                            "import sys, deep_spectrum_extractor.cli.extract_ds_features;"
                            "print(sorted(m for m in ('tensorflow', 'librosa', 'matplotlib')"
                            " if m in sys.modules))"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"


def test_defaults_match_the_original_readme():
    args = build_parser().parse_args(["-i", "x", "-o", "y"])
    assert (args.mode, args.scale, args.nmel, args.cmap, args.batch_size) == \
        ("spectrogram", "linear", 128, "viridis", 128)
    from deep_spectrum_extractor.cli.extract_ds_features import pairs_from_args
    from deep_spectrum_extractor.config import load_config

    assert pairs_from_args(args, load_config(args.config)) == (("alexnet", "fc7"),)
    assert (args.t, args.start, args.end, args.ylim, args.delta, args.nfft, args.l, args.el,
            args.np, args.specout, args.wavout) == (None, 0, None, None, None, None, None, None,
                                                    None, None, None)
    assert Path(args.config).name == "deep.conf"


@pytest.mark.parametrize("mode,extra", [("spectrogram", {}), ("mel", {"nmel": 64}),
                                        ("mel", {"scale": "mel", "ylim": 5000})])
def test_features_equal_an_independent_computation(tmp_path, corpus, small_model, small_config,
                                                   mode, extra):
    out = tmp_path / "f.arff"
    options = []
    for key, value in extra.items():
        options += [f"-{key}", value]
    code, _ = run(["-i", corpus, "-o", out, "-t", "1", "0.5", "-mode", mode, "-net", "small",
                   "-config", small_config, *options])
    assert code == 0
    names, data, _ = read_arff(out)
    files = sorted(corpus.rglob("*.wav"))
    # all 12 chunks go through the network as one batch (batch_size 128), so the
    # reference runs them as one batch too: oneDNN's float results depend on the
    # batch shape in the last bits.
    stamps, images = [], []
    for path in files:
        file_stamps, file_images = reference_images(path, window=1, hop=0.5, mode=mode, **extra)
        stamps += [(path.name, ts) for ts in file_stamps]
        images += file_images
    expected = direct_run(small_model, "fc7", np.array(images, dtype=np.float32))
    assert [(row[0], Decimal(str(row[1]))) for row in data] == stamps
    np.testing.assert_array_equal(neuron_values(data, names), expected)
    assert [row[-1] for row in data] == [Path(corpus / "music" / n).parent.name
                                         if n.startswith("music") else "speech"
                                         for n, _ in stamps]
    # 1.3 s -> chunks at 0 and 0.5; 2.0 s -> 0, 0.5, 1.0 and 1.5 (0.5 s >= nfft)
    assert len(data) == 12
    assert [str(ts) for _, ts in stamps[:6]] == ["0.0", "0.5", "0.0", "0.5", "1.0", "1.5"]


def test_csv_and_no_timestamps_no_labels(tmp_path, corpus, small_config, capsys):
    out = tmp_path / "deep" / "nested" / "f.csv"  # output folders are created
    assert run(["-i", corpus, "-o", out, "-t", "1", "1", "-net", "small", "-config",
                small_config, "--no_timestamps", "--no_labels"], capsys)[0] == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["name"] + [f"neuron_{i}" for i in range(48)]
    assert len(frame) == 6
    out2 = tmp_path / "g.csv"
    run(["-i", corpus, "-o", out2, "-net", "small", "-config", small_config], capsys)
    frame2 = pd.read_csv(out2)  # no -t: one row per file, no timestamp column
    assert list(frame2.columns[:2]) == ["name", "neuron_0"] and frame2.columns[-1] == "class"
    assert len(frame2) == 4


@pytest.mark.parametrize("layer,size", [("fc8", 10), ("conv5", 13 * 13 * 16), ("fc6", 64)])
def test_layer_changes_the_feature_size(tmp_path, corpus, small_config, layer, size):
    out = tmp_path / "f.csv"
    assert run(["-i", corpus / "music", "-o", out, "-net", "SMALL", "-layer", layer,
                "-config", small_config])[0] == 0
    assert pd.read_csv(out).shape == (2, 1 + size + 1)


def test_batch_size_and_processes_do_not_change_the_output(tmp_path, corpus, small_config):
    reference = tmp_path / "ref.arff"
    assert run(["-i", corpus, "-o", reference, "-t", "0.5", "0.25", "-net", "small",
                "-config", small_config])[0] == 0
    names, data, _ = read_arff(reference)
    for size in ("3", "1"):
        out = tmp_path / f"b{size}.arff"
        assert run(["-i", corpus, "-o", out, "-t", "0.5", "0.25", "-net", "small", "-config",
                    small_config, "-batch_size", size])[0] == 0
        other_names, other, _ = read_arff(out)
        assert other_names == names
        assert [row[:2] + row[-1:] for row in other] == [row[:2] + row[-1:] for row in data]
        # the same images in batches of another shape: oneDNN may round the last
        # float32 bits differently (measured: relative differences around 1e-6)
        np.testing.assert_allclose(neuron_values(other, names), neuron_values(data, names),
                                   rtol=1e-4, atol=1e-4)
    # worker processes instead of the calling process: the same bytes
    out = tmp_path / "np2.arff"
    code = main([str(a) for a in ["-i", corpus, "-o", out, "-t", "0.5", "0.25", "-net",
                                  "small", "-config", small_config, "-np", "2"]])
    assert code == 0 and out.read_bytes() == reference.read_bytes()


def test_start_and_end(tmp_path, corpus, small_config):
    out = tmp_path / "f.arff"
    assert run(["-i", corpus / "music" / "music_1.wav", "-o", out, "-t", "0.5", "0.25",
                "-start", "0.5", "-end", "1.5", "-net", "small", "-config", small_config])[0] == 0
    _, data, _ = read_arff(out)
    # 1 s of signal, hop 0.25: 4 chunks, the last one 0.25 s (4000 samples >= nfft 512)
    assert [row[1] for row in data] == [0.5, 0.75, 1.0, 1.25]


@pytest.mark.parametrize("option,value,kwargs", [
    ("-mode", "chroma", {"mode": "chroma"}),
    ("-scale", "log", {"scale": "log"}),
    ("-ylim", "3000", {"ylim": 3000}),
    ("-delta", "1", {"delta": 1}),
    ("-nfft", "1024", {"nfft": 1024}),
    ("-cmap", "magma", {"cmap": "magma"}),
])
def test_plot_options_reach_the_plot(tmp_path, corpus, small_config, option, value, kwargs):
    from deep_spectrum_extractor.images import spectral_matrix

    path = corpus / "speech" / "speech_0.wav"
    specout = tmp_path / "plots"
    assert run(["-i", path, "-o", tmp_path / "f.csv", "-t", "1", "1", "-net", "small",
                "-config", small_config, "-specout", specout, option, value])[0] == 0
    image = np.asarray(Image.open(specout / "speech_0_0.png"))
    signal = np.trim_zeros(soundfile.read(path)[0])[:16000]
    settings = {"mode": "spectrogram", "scale": "linear", "nfft": 512, "ylim": None,
                "delta": None, "cmap": "viridis", **kwargs}
    matrix = spectral_matrix(signal, 16000, mode=settings["mode"], nfft=settings["nfft"],
                             ylim=settings["ylim"], delta=settings["delta"])
    scale = "chroma" if settings["mode"] == "chroma" else settings["scale"]
    expected = pyplot_rendering(matrix, sr=16000, nfft=settings["nfft"], scale=scale,
                                cmap=settings["cmap"], size=227, ylim=settings["ylim"])
    np.testing.assert_array_equal(image, expected)
    default = pyplot_rendering(spectral_matrix(signal, 16000, mode="spectrogram", nfft=512),
                               sr=16000, nfft=512, scale="linear", cmap="viridis", size=227,
                               ylim=None)
    assert not np.array_equal(image, default)  # the option changed the picture


def test_nmel_changes_the_mel_plot(tmp_path, corpus, small_config):
    images = []
    for nmel in ("128", "32"):
        specout = tmp_path / nmel
        run(["-i", corpus / "music" / "music_0.wav", "-o", tmp_path / "f.csv", "-mode", "mel",
             "-nmel", nmel, "-net", "small", "-config", small_config, "-specout", specout])
        images.append(np.asarray(Image.open(specout / "music_0.png")))
    assert not np.array_equal(*images)


def test_specout_and_wavout_names_never_collide(tmp_path, small_config):
    root = tmp_path / "in"
    for folder in ("a", "b"):  # the same file name in two folders
        write_wav(root / folder / "same.wav", tone(1.0, frequency=300 if folder == "a" else 900),
                  subtype="PCM_16")
    specout, wavout = tmp_path / "png", tmp_path / "wav"
    assert run(["-i", root, "-o", tmp_path / "f.arff", "-t", "0.5", "0.5", "-net", "small",
                "-config", small_config, "-specout", specout, "-wavout", wavout])[0] == 0
    pngs = sorted(p.relative_to(specout).as_posix() for p in specout.rglob("*.png"))
    assert pngs == ["a/same_0.5.png", "a/same_0.png", "b/same_0.5.png", "b/same_0.png"]
    wavs = sorted(p.relative_to(wavout).as_posix() for p in wavout.rglob("*.wav"))
    assert wavs == [p.replace(".png", ".wav") for p in pngs]
    for folder in ("a", "b"):
        signal = np.trim_zeros(soundfile.read(root / folder / "same.wav")[0])
        chunk, sr = soundfile.read(wavout / folder / "same_0.5.wav")
        assert sr == 16000
        np.testing.assert_allclose(chunk, signal[8000:16000], atol=1 / 32768)


def test_label_sources(tmp_path, corpus, small_config):
    files = sorted(p.name for p in corpus.rglob("*.wav"))
    out = tmp_path / "el.arff"
    assert run(["-i", corpus, "-o", out, "-el", "snore", "-net", "small", "-config",
                small_config])[0] == 0
    _, data, attributes = read_arff(out)
    assert attributes[-1] == ("class", ["snore"]) and {row[-1] for row in data} == {"snore"}

    label_file = tmp_path / "labels.csv"
    label_file.write_text("file,emotion,arousal\n" + "\n".join(
        f"{name},{'calm' if i % 2 else 'loud'},{i * 0.5}" for i, name in enumerate(files)) + "\n")
    out = tmp_path / "l.arff"
    assert run(["-i", corpus, "-o", out, "-l", label_file, "-net", "small", "-config",
                small_config])[0] == 0
    names, data, attributes = read_arff(out)
    assert names[-2:] == ["emotion", "arousal"]
    assert attributes[-2][1] == ["calm", "loud"] and attributes[-1][1] == "NUMERIC"
    for row in data:
        i = files.index(row[0])
        assert row[-2:] == ["calm" if i % 2 else "loud", i * 0.5]


def test_time_continuous_labels_land_in_the_right_rows(tmp_path, corpus, small_config):
    lines = ["file,time,valence"]
    for path in sorted(corpus.rglob("*.wav")):
        for k in range(4):
            lines.append(f"{path.name},{k * 0.5},{len(path.name) + k / 10}")
    label_file = tmp_path / "tc.csv"
    label_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "tc.arff"
    assert run(["-i", corpus, "-o", out, "-t", "1", "0.5", "-l", label_file, "--tc", "-net",
                "small", "-config", small_config])[0] == 0
    names, data, _ = read_arff(out)
    assert names[-1] == "valence"
    for row in data:
        assert row[-1] == pytest.approx(len(row[0]) + row[1] / 5)


@pytest.mark.parametrize("args,message", [
    (["-layer", "fc9"], "layer 'fc9' is not in small.pb; available: conv1, conv2, conv3, "
                        "conv4, conv5, fc6, fc7, fc8"),
    (["-net", "resnet"], "net 'resnet' is not defined in"),
    (["-net", "missing"], "nowhere.pb for net 'missing'"),
    (["-cmap", "nocolour"], "-cmap='nocolour' is not a matplotlib colour map"),
    (["--tc"], "--tc needs both -t and a label file"),
])
def test_usage_errors_exit_2_and_name_the_problem(tmp_path, corpus, small_config, capsys,
                                                  args, message):
    out = tmp_path / "f.arff"
    code, err = run(["-i", corpus, "-o", out, "-net", "small", "-config", small_config, *args],
                    capsys)
    assert code == 2
    assert message in err
    assert not out.exists()


def test_label_file_errors(tmp_path, corpus, small_config, capsys):
    label_file = tmp_path / "labels.csv"
    label_file.write_text("file,class\nspeech_0.wav,a\n")
    code, err = run(["-i", corpus, "-o", tmp_path / "f.arff", "-l", label_file, "-net",
                     "small", "-config", small_config], capsys)
    assert code == 2
    assert "no labels in" in err and "music_0.wav, music_1.wav, speech_1.wav" in err


def test_config_errors_and_creation(tmp_path, corpus, capsys):
    bad = tmp_path / "bad.conf"
    bad.write_text("[main]\nbackend = caffe\n")
    code, err = run(["-i", corpus, "-o", tmp_path / "f.arff", "-config", bad], capsys)
    assert code == 2 and "backend 'caffe' is not supported" in err
    new = tmp_path / "new" / "deep.conf"
    code, err = run(["-i", corpus, "-o", tmp_path / "f.arff", "-config", new, "-net",
                     "nonet"], capsys)
    assert new.is_file() and code == 2
    assert "available: alexnet, densenet121, densenet169, densenet201, efficientnet_lite0, " \
        "inception_resnet_v2, mobilenet, mobilenet_v2, resnet50, vgg16, vgg19, xception" in err


def test_no_input_files(tmp_path, small_config, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(["-i", tmp_path / "empty", "-o", tmp_path / "f.arff", "-net", "small",
                     "-config", small_config], capsys)
    assert code == 2 and "no audio files found" in err


def test_file_too_short_is_reported_and_skipped(tmp_path, small_config, capsys):
    write_wav(tmp_path / "in" / "ok.wav", tone(1.0))
    write_wav(tmp_path / "in" / "tiny.wav", tone(0.01))
    out = tmp_path / "f.arff"
    code, err = run(["-i", tmp_path / "in", "-o", out, "-net", "small", "-config",
                     small_config, "-el", "x"], capsys)
    assert code == 1
    assert "tiny.wav" in err and "samples needed for one plot" in err
    _, data, _ = read_arff(out)
    assert [row[0] for row in data] == ["ok.wav"]


@pytest.mark.parametrize("sr,channels,window,hop,start,end", [
    (44100, 2, "1", "0.25", "0", None),
    (22050, 1, "0.5", "0.5", "0.3", "2.1"),
    (8000, 2, "2", "0.5", "1", None),
    (48000, 1, "5", "1", "0", None),      # file shorter than one window: one chunk
])
def test_timestamps_for_rates_channels_start_and_end(tmp_path, small_config, sr, channels,
                                                    window, hop, start, end):
    seconds = 2.6
    mono = tone(seconds, sr, 500.0)
    signal = np.stack([mono, tone(seconds, sr, 900.0, seed=4)], axis=1) if channels == 2 else mono
    path = write_wav(tmp_path / "in" / "x.wav", signal, sr)
    out = tmp_path / "f.arff"
    args = ["-i", path, "-o", out, "-t", window, hop, "-start", start, "-net", "small",
            "-config", small_config]
    if end:
        args += ["-end", end]
    assert run(args)[0] == 0
    _, data, _ = read_arff(out)
    # the original rule, written out: trimmed mono signal, cut, chunked, short chunks dropped
    samples = np.trim_zeros(soundfile.read(path)[0].mean(axis=1) if channels == 2
                            else soundfile.read(path)[0])
    samples = samples[int(float(start) * sr):int(float(end) * sr) if end else None]
    w, h = int(Decimal(window) * sr), int(Decimal(hop) * sr)
    nfft = 1 << (int(0.025 * sr) - 1).bit_length()
    expected = [Decimal(start) + n * Decimal(hop) for n in range(max(len(samples) // h, 1))
                if min(n * h + w, len(samples)) - n * h >= nfft]
    assert [Decimal(str(row[1])) for row in data] == expected
    assert len(expected) >= 1


def test_main_job_with_the_offline_network(tmp_path, monkeypatch):
    """The quick start: example audio, EfficientNet-Lite0 built on first use, an ARFF."""
    monkeypatch.setenv("DEEP_SPECTRUM_CACHE", str(tmp_path / "cache"))
    examples = Path(__file__).resolve().parents[1] / "examples" / "audio"
    out = tmp_path / "features.arff"
    assert run(["-i", examples, "-o", out, "-t", "1", "0.5", "-mode", "mel", "-net",
                "efficientnet_lite0"])[0] == 0
    assert (tmp_path / "cache" / "efficientnet_lite0.pb").is_file()
    names, data, attributes = read_arff(out)
    assert names[2:] [:1] == ["neuron_0"] and names[-2] == "neuron_1279"
    assert attributes[-1] == ("class", ["birdsong", "engine", "rain"])
    features = neuron_values(data, names)
    assert len(data) == 6 * 5 + 3 and np.isfinite(features).all()
    # pooled ReLU6 activations: non-negative, at most 6, and not all alike
    assert features.min() >= 0 and features.max() <= 6 and features.std() > 0.01


@pytest.mark.parametrize("mode", ["spectrogram", "mel", "chroma"])
def test_both_renderers_write_identical_files(tmp_path, corpus, small_config, mode):
    outputs = []
    for renderer in ("numpy", "matplotlib"):
        out = tmp_path / f"{renderer}.arff"
        assert run(["-i", corpus, "-o", out, "-t", "0.5", "0.25", "-mode", mode, "-net",
                    "small", "-config", small_config, "-renderer", renderer])[0] == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_ylim_leaving_too_few_rows_skips_with_a_reason(tmp_path, corpus, small_config, capsys):
    out = tmp_path / "f.arff"
    code, err = run(["-i", corpus / "music", "-o", out, "-nfft", "64", "-ylim", "200",
                     "-net", "small", "-config", small_config], capsys)
    assert code == 1 and not out.exists()
    assert "-ylim=200 keeps 0 frequency row(s) at 16000 Hz with nfft 64" in err
    assert "no features extracted from 2 file(s)" in err


def test_label_rows_for_unknown_files_are_warned_about(tmp_path, corpus, small_config, capsys):
    names = sorted(p.name for p in corpus.rglob("*.wav"))
    label_file = tmp_path / "labels.csv"
    label_file.write_text("file,class\n" + "".join(f"{n},a\n" for n in names) + "extra.wav,b\n")
    code, err = run(["-i", corpus, "-o", tmp_path / "f.arff", "-l", label_file, "-net",
                     "small", "-config", small_config], capsys)
    assert code == 0
    assert f"warning: 1 row(s) of {label_file} name no input file (line 6: extra.wav)" in err
