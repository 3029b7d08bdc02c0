"""deepspectrum: the features, plot, image-features and networks subcommands."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import tone, write_wav
from deep_spectrum_extractor.backend.alexnet import LAYERS
from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor, available_layers
from deep_spectrum_extractor.cli import deepspectrum, extract_ds_features
from deep_spectrum_extractor.config import load_config
from deep_spectrum_extractor.images import spectral_matrix
from deep_spectrum_extractor.images.figures import (FIGURE_DPI, FIGURE_SIZE, labelled_figure,
                                                    row_frequencies)
from deep_spectrum_extractor.images.loading import image_features, load_image
from test_cli import reference_images

NP = ["-np", "1"]
HEAVY = ("tensorflow", "librosa", "matplotlib")
# The 12 chunks of the corpus with -t 1 0.5: 1.3 s files give chunks at 0 and 0.5 s,
# 2.0 s files at 0, 0.5, 1 and 1.5 s (chunk n starts at n * hop for n < len // hop).
CHUNK_IMAGES = sorted(f"{label}/{label}_{number}_{stamp}.png"
                      for label in ("music", "speech")
                      for number, stamps in ((0, ("0", "0.5")), (1, ("0", "0.5", "1", "1.5")))
                      for stamp in stamps)


def ds(*args):
    return deepspectrum.main([str(arg) for arg in args])


def eds(*args):
    return extract_ds_features.main([str(arg) for arg in args] + NP)


def pngs(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*.png"))}


def feature_table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    table = pd.read_csv(path, dtype={"name": str})
    neurons = [column for column in table.columns if column.startswith("neuron_")]
    # the CSV holds the shortest text of each float32, so float32 reads back exactly
    return table, table[neurons].to_numpy(dtype=np.float32)


# --- the command itself ---------------------------------------------------------------------

def test_help_is_instant_and_imports_no_heavy_module():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "deep_spectrum_extractor.cli.deepspectrum",
                             "-h"], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    for command in ("features", "plot", "image-features", "networks"):
        assert f"  {command}  " in result.stdout, command
    assert elapsed < 10  # a bare interpreter start; importing TensorFlow alone takes longer
    probe = subprocess.run(
        [sys.executable, "-c",
         "import contextlib, io, sys\n"
         "from deep_spectrum_extractor.cli.deepspectrum import main\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    codes = [main([c, '-h']) for c in ('features', 'plot', 'image-features',"
         " 'networks')] + [main(['-h'])]\n"
         f"print(codes, sorted(m for m in {HEAVY!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[0, 0, 0, 0, 0] []"


def test_both_spellings_of_every_option_parse_to_the_same_values():
    """extract_ds_features (2018) and deepspectrum features (0.6.x) accept the same values
    under their own names; only the default network differs (0.6.x's vgg16)."""
    classic = extract_ds_features.build_parser()
    modern = deepspectrum.command_parser("features")
    pairs = [(["-t", "1", "0.25"], ["--window-size-and-hop", "1", "0.25"]),
             (["-start", "0.5"], ["-s", "0.5"]), (["-end", "3"], ["--end", "3"]),
             (["-sr", "8000"], ["--sample-rate", "8000"]), (["-mode", "chroma"], ["-m", "chroma"]),
             (["-scale", "log"], ["-fs", "log"]), (["-ylim", "4000"], ["-fql", "4000"]),
             (["-delta", "2"], ["-d", "2"]), (["-nmel", "64"], ["-nm", "64"]),
             (["-nfft", "256"], ["-nfft", "256"]), (["-cmap", "magma"], ["-cm", "magma"]),
             (["-renderer", "matplotlib"], ["--renderer", "matplotlib"]),
             (["-net", "Small"], ["-en", "Small"]), (["-layer", "conv2"], ["-fl", "conv2"]),
             (["-net", "a", "b"], ["-en", "a", "-en", "b"]),
             (["-layer", "fc6", "a:fc7"], ["-fl", "fc6", "--feature-layer", "a:fc7"]),
             (["-batch_size", "7"], ["-bs", "7"]), (["-l", "l.csv"], ["-lf", "l.csv"]),
             (["--tc"], ["--time-continuous"]), (["-el", "x"], ["--explicit-label", "x"]),
             (["--no_timestamps"], ["-nts"]), (["--no_labels"], ["--no-labels"]),
             (["-specout", "s"], ["-so", "s"]), (["-wavout", "w"], ["--wav-out", "w"]),
             (["-np", "3"], ["--number-of-processes", "3"]),
             (["-scheduler", "tcp://h:1"], ["--scheduler", "tcp://h:1"]),
             (["-shard", "2/3"], ["--shard", "2/3"]), (["--resume"], ["--resume"]),
             (["--stop_on_error"], ["--stop-on-error"]), (["-config", "x.conf"], ["-c", "x.conf"])]
    ignore = ("run", "resumable", "family", "skip_unlabelled")
    base_classic, base_modern = ["-i", "a", "-o", "b"], ["a", "-o", "b"]
    defaults = vars(classic.parse_args(base_classic))
    assert {key: value for key, value in vars(modern.parse_args(base_modern)).items()
            if key not in ignore} == {key: value for key, value in defaults.items()
                                      if key not in ignore}
    config = load_config(None)
    assert extract_ds_features.pairs_from_args(classic.parse_args(base_classic), config) == \
        (("alexnet", "fc7"),)
    assert extract_ds_features.pairs_from_args(modern.parse_args(base_modern), config) == \
        (("vgg16", "fc2"),)
    for old, new in pairs:
        theirs = vars(classic.parse_args(base_classic + old))
        ours = vars(modern.parse_args(base_modern + new))
        changed = {key for key in theirs if theirs[key] != defaults[key]}
        assert len(changed) == 1, old
        assert {key: ours[key] for key in changed} == {key: theirs[key] for key in changed}, new


@pytest.mark.parametrize("command", ["features", "plot", "image-features"])
def test_options_are_never_abbreviated_and_the_other_spelling_is_named(command, capsys):
    base = ["a", "-o", "b"] if command != "plot" else ["a", "-so", "b"]
    for argv, names in ((["-star", "1"], ["-star is not an option"]),
                        (["-cmap", "magma"], ["-cmap is extract_ds_features's spelling of -cm"]),
                        (["-net", "small"], ["-net is extract_ds_features's spelling of -en"]),
                        (["-i", "x"], ["the input is the first argument"])):
        if command == "image-features" and argv[0] == "-cmap":
            names = ["-cmap is not an option", "belongs to extract_ds_features"]
        if command == "plot" and argv[0] == "-net":
            names = ["-net is not an option", "belongs to extract_ds_features"]
        assert ds(command, *base, *argv) == 2
        err = capsys.readouterr().err
        for name in names:
            assert name in err, (command, argv, err)
    for argv, names in ((["-en", "5"], ["-end?", "spelling of -net"]),
                        (["-star", "1"], ["did you mean -start?"]),
                        (["-fl", "fc2"], ["deepspectrum's spelling of -layer"]),
                        (["-cm", "magma"], ["deepspectrum's spelling of -cmap"]),
                        (["-n", "2"], ["did you mean -net, -nfft, -nmel or -np?"])):
        assert eds_raw("-i", "a", "-o", "b.csv", *argv) == 2
        err = capsys.readouterr().err
        for name in names:
            assert name in err, (argv, err)


def eds_raw(*args):
    try:
        return extract_ds_features.main([str(arg) for arg in args])
    except SystemExit as exc:
        return exc.code


def test_features_equals_extract_ds_features_with_0_6_names(tmp_path, corpus, small_config,
                                                            capsys):
    assert eds("-i", corpus, "-t", "1", "0.5", "-mode", "mel", "-net", "small", "-config",
               small_config, "-o", tmp_path / "a.csv") == 0
    assert ds("features", corpus, "-t", "1", "0.5", "-m", "mel", "-en", "small", "-c",
              small_config, "-o", tmp_path / "b.csv", *NP) == 0
    classic, classic_values = feature_table(tmp_path / "a.csv")
    modern, modern_values = feature_table(tmp_path / "b.csv")
    assert list(modern.columns) == list(classic.columns)
    np.testing.assert_array_equal(modern_values, classic_values)
    # 0.6.x names each file by its path relative to the input folder
    assert list(modern["name"]) == [f"{label}/{name}" for label, name
                                    in zip(classic["class"], classic["name"])]
    assert len(modern) == len(CHUNK_IMAGES)
    capsys.readouterr()
    assert ds("features", corpus, "-o", tmp_path / "c.csv", "-en", "small", "-fl", "fc9",
              "-c", small_config) == 2
    err = capsys.readouterr().err
    first, last = err.splitlines()[0], err.splitlines()[-1]
    assert first.startswith("deepspectrum features: 4 audio file(s); loading small")
    assert "layer 'fc9' is not in small.pb" in last
    assert last.startswith("deepspectrum features: error")
    assert ds("features", "-h") == 0
    assert "usage: deepspectrum features" in capsys.readouterr().out
    assert ds("features") == 2  # INPUT and -o are required
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    ([], "a command is required"),
    (["plot", "{tmp}/nowhere", "-so", "{tmp}/out"], "does not exist"),
    (["plot", "{corpus}", "-so", "{tmp}/file.txt"], "is a file"),
    (["plot", "{corpus}", "-so", "{tmp}/out", "-cm", "nocmap"], "-cm='nocmap' is not a matplotlib"),
    (["plot", "{corpus}", "-so", "{tmp}/out", "-m", "cqt"], "invalid choice"),
    (["plot", "{corpus}"], "plot writes its images into -so FOLDER"),
    (["image-features", "{tmp}/nowhere", "-o", "{tmp}/f.csv"], "does not exist"),
    (["image-features", "{corpus}", "-o", "{tmp}/f.csv"], "no .png, .jpg or .jpeg"),
    (["networks", "-c", "{tmp}"], "is a directory"),
    (["features-with-parser", "{corpus}"], "select a partition with a label file"),
])
def test_usage_errors_exit_2_with_a_message(tmp_path, corpus, capsys, argv, message):
    (tmp_path / "file.txt").write_text("x")
    code = ds(*[a.format(tmp=tmp_path, corpus=corpus) for a in argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- plot -----------------------------------------------------------------------------------

@pytest.mark.parametrize("options,spelled", [
    ([], []),
    (["-t", "1", "0.5", "-mode", "mel", "-scale", "mel", "-ylim", "5000", "-cmap", "magma"],
     ["-t", "1", "0.5", "-m", "mel", "-fs", "mel", "-fql", "5000", "-cm", "magma"])])
def test_plot_writes_exactly_the_specout_images(tmp_path, corpus, small_config, options,
                                                spelled):
    assert eds("-i", corpus, "-o", tmp_path / "f.csv", "-net", "small", "-config",
               small_config, "-specout", tmp_path / "specout", *options) == 0
    assert ds("plot", corpus, "-so", tmp_path / "plot", "-c", small_config,
              *spelled, *NP) == 0
    written, expected = pngs(tmp_path / "plot"), pngs(tmp_path / "specout")
    names = CHUNK_IMAGES if options else [f"{label}/{label}_{n}.png"
                                          for label in ("music", "speech") for n in (0, 1)]
    assert sorted(written) == sorted(expected) == names
    assert written == expected  # byte for byte


def test_plot_images_equal_an_independent_pyplot_rendering(tmp_path, corpus, small_config):
    assert ds("plot", corpus / "speech", "-o", tmp_path, "-t", "1", "0.5", "-m", "mel",
              "-nm", "64", "-fs", "log", "-c", small_config, *NP) == 0
    for path in sorted((corpus / "speech").glob("*.wav")):
        stamps, images = reference_images(path, window=1, hop=0.5, mode="mel", nmel=64,
                                          scale="log")
        for stamp, image in zip(stamps, images):
            name = f"{path.stem}_{extract_ds_features_stamp(stamp)}.png"
            written = np.asarray(Image.open(tmp_path / name))
            np.testing.assert_array_equal(written, image)
    assert len(list(tmp_path.glob("*.png"))) == 6


@pytest.mark.parametrize("labelled", [False, True])
def test_plot_skips_bad_audio_with_exit_1(tmp_path, small_config, capsys, labelled):
    folder = tmp_path / "in"
    write_wav(folder / "good.wav", tone(1.0))
    (folder / "text.wav").write_text("not audio\n" * 50)
    write_wav(folder / "short.wav", np.full(100, 0.5))
    extra = ["--labelled"] if labelled else []
    assert ds("plot", folder, "-so", tmp_path / "out", "-c", small_config,
              *extra, *NP) == 1
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "skipped" in line and ": " in line]
    assert len([line for line in skipped if "text.wav: cannot decode audio" in line]) == 1
    assert len([line for line in skipped if "short.wav: no chunk has the 512 samples" in line]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_labelled_png_and_pdf(tmp_path, small_config):
    write_wav(tmp_path / "in" / "x.wav", tone(2.0, frequency=1000.0))
    for fmt in ("png", "pdf"):
        assert ds("plot", tmp_path / "in", "-so", tmp_path / fmt, "-t", "1", "1", "-m",
                  "mel", "--labelled", "--format", fmt, "-c", small_config, *NP) == 0
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == [f"x_0.{fmt}",
                                                                      f"x_1.{fmt}"]
    assert ds("plot", tmp_path / "in", "-so", tmp_path / "bare", "-t", "1", "1", "-m",
              "mel", "-c", small_config, *NP) == 0
    with Image.open(tmp_path / "png" / "x_0.png") as png:
        png.verify()
    with Image.open(tmp_path / "png" / "x_0.png") as png:
        labelled = np.asarray(png.convert("RGB"))
    bare = np.asarray(Image.open(tmp_path / "bare" / "x_0.png"))
    assert labelled.shape == (450, 800, 3) == (FIGURE_SIZE[1] * FIGURE_DPI,
                                               FIGURE_SIZE[0] * FIGURE_DPI, 3)
    assert bare.shape == (227, 227, 3)
    # axes, labels and colour bar on a white page: most pixels are white, unlike the plot
    assert (labelled == 255).all(axis=-1).mean() > 0.3 > (bare == 255).all(axis=-1).mean()
    pdf = (tmp_path / "pdf" / "x_1.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + \
        pdf.count(b"/Type /Page>") == 1 and len(pdf) > 5000
    assert b"CreationDate" not in pdf  # reproducible bytes


def test_labelled_figure_titles_and_time_spans(tmp_path, monkeypatch, small_config):
    write_wav(tmp_path / "in" / "x.wav", tone(2.5))
    saved = []
    monkeypatch.setattr("deep_spectrum_extractor.images.figures.save_figure",
                        lambda figure, path, format: saved.append((Path(path).name, figure)))
    assert ds("plot", tmp_path / "in", "-so", tmp_path / "out", "-t", "1", "1", "-m",
              "chroma", "--labelled", "-c", small_config, *NP) == 0
    assert [name for name, _ in saved] == ["x_0.png", "x_1.png"]  # 2.5 s // 1 s hop = 2
    for number, (_, figure) in enumerate(saved):
        axes, colorbar = figure.axes
        assert axes.get_title() == f"x.wav, {number} to {number + 1} s (chroma)"
        assert colorbar.get_ylabel() == "chroma energy"
        # frames of 512 samples every 256 at 16 kHz: first centre 16 ms, 61 frames
        low, high = axes.get_xlim()
        assert low == pytest.approx(number + 0.008) and high == pytest.approx(number + 0.984)
        assert axes.get_ylim() == (-0.5, 11.5)


def test_labelled_figure_places_rows_at_their_frequencies():
    signal = tone(1.0, frequency=3000.0)
    ylim = 4000  # keeps int(0.5 * 257) = 128 STFT rows: 0 .. 127 * 31.25 Hz
    matrix = spectral_matrix(signal, 16000, mode="spectrogram", nfft=512, ylim=ylim)
    figure = labelled_figure(matrix, sample_rate=16000, nfft=512, mode="spectrogram",
                             scale="linear", ylim=ylim, title="t")
    axes, colorbar = figure.axes
    assert axes.get_ylim() == pytest.approx((-15.625, 127 * 31.25 + 15.625))
    assert colorbar.get_ylabel() == "dB"
    # the colour range is the matrix's: dB relative to the maximum
    assert axes.collections[0].get_clim() == pytest.approx((matrix.min(), 0.0))
    # the row holding the tone's energy is drawn at 3000 Hz
    peak = row_frequencies("spectrogram", len(matrix), sample_rate=16000, nfft=512)[
        matrix.mean(axis=1).argmax()]
    assert abs(peak - 3000) <= 31.25 / 2
    # mel bands with -ylim: at the peaks of the filters that made them, in true Hz
    import librosa

    bank = librosa.filters.mel(sr=16000, n_fft=2 * (128 - 1), n_mels=64)
    used = bank.max(axis=1) > 0
    peaks = bank.argmax(axis=1) * 16000 / 512  # bin k of the cut STFT is k * sr / nfft Hz
    rows = row_frequencies("mel", 64, sample_rate=16000, nfft=512, ylim=ylim)
    assert np.abs(peaks - rows)[used].max() <= 31.25 / 2
    assert rows.max() < ylim


# --- image-features -------------------------------------------------------------------------

def test_image_features_of_plots_equal_the_audio_features(tmp_path, corpus, small_config):
    common = ["-t", "1", "0.5", "-mode", "mel", "-config", small_config]
    assert ds("plot", corpus, "-so", tmp_path / "images", "-t", "1", "0.5", "-m", "mel", "-c",
              small_config, *NP) == 0
    for batch_size in ("1", "128"):
        audio_csv, image_csv = tmp_path / f"audio{batch_size}.csv", tmp_path / f"i{batch_size}.csv"
        assert eds("-i", corpus, "-o", audio_csv, "-net", "small", "-batch_size", batch_size,
                   *common) == 0
        assert ds("image-features", tmp_path / "images", "-o", image_csv, "-en", "small",
                  "-bs", batch_size, "-c", small_config) == 0
        audio, audio_values = feature_table(audio_csv)
        images, image_values = feature_table(image_csv)
        assert list(images.columns) == [c for c in audio.columns if c != "timeStamp"]
        assert list(images["name"]) == CHUNK_IMAGES  # relative to INPUT, as 0.6.x
        assert list(images["class"]) == [Path(name).parent.name for name in CHUNK_IMAGES]
        keys = [f"{Path(n).stem}_{extract_ds_features_stamp(t)}.png"
                for n, t in zip(audio["name"], audio["timeStamp"])]
        order = [keys.index(Path(name).name) for name in images["name"]]
        if batch_size == "1":  # every image alone through the network: identical numbers
            np.testing.assert_array_equal(image_values, audio_values[order])
        else:
            # one batch each, but in another order (file names sort 0.5 before 0): oneDNN
            # may round the last bits differently; a few float32 ulps of the largest value
            scale = np.abs(audio_values).max()
            np.testing.assert_allclose(image_values, audio_values[order], rtol=0,
                                       atol=1e-5 * scale)


def extract_ds_features_stamp(value) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def test_image_features_accept_greyscale_rgba_and_jpeg(tmp_path, small_model, small_config):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(30, 40), dtype=np.uint8)
    wide = rng.integers(0, 256, size=(20, 50, 3), dtype=np.uint8)
    folder = tmp_path / "images" / "cls"
    folder.mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "a_rgb.png")
    alpha = rng.integers(0, 256, size=(30, 40, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(folder / "b_rgba.png")
    Image.fromarray(grey, "L").save(folder / "c_grey.png")
    Image.fromarray(wide).save(folder / "d_wide.PNG")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "e_grey16.png")  # 16 bit
    Image.fromarray(rgb).save(folder / "f_photo.JPG", quality=90)
    decoded_jpeg = np.asarray(Image.open(folder / "f_photo.JPG"))
    assert ds("image-features", tmp_path / "images", "-o", tmp_path / "f.csv", "-en",
              "small", "-fl", "fc7", "-c", small_config) == 0
    table, values = feature_table(tmp_path / "f.csv")
    assert list(table["name"]) == ["cls/a_rgb.png", "cls/b_rgba.png", "cls/c_grey.png",
                                   "cls/d_wide.PNG", "cls/e_grey16.png", "cls/f_photo.JPG"]
    assert set(table["class"]) == {"cls"}
    grey_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    # the 30x40 images go through the network as one batch, the 20x50 one alone
    with FrozenGraphExtractor(small_model, "fc7", gpu=False) as extractor:
        same_size = extractor.features(np.stack([rgb, rgb, grey_rgb, grey_rgb, decoded_jpeg]))
        alone = extractor.features(wide[None])
    np.testing.assert_array_equal(values[[0, 1, 2, 4, 5]], same_size)
    np.testing.assert_array_equal(values[3], alone[0])
    assert np.abs(values[0] - values[2]).max() > 0  # the images do differ


def test_image_features_skip_broken_images_with_exit_1(tmp_path, small_config, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(folder / "good.png")
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    for name in ("truncated.png", "truncated.jpg"):
        Image.fromarray(noise).save(folder / name)
        whole = (folder / name).read_bytes()
        (folder / name).write_bytes(whole[:len(whole) // 2])  # header intact, pixels cut
    (folder / "text.jpg").write_text("not an image")
    (folder / "folder.jpeg").mkdir()
    assert ds("image-features", folder, "-o", tmp_path / "f.arff", "-en", "small",
              "--no-labels", "-c", small_config) == 1
    err = capsys.readouterr().err
    for name, reason in (("truncated.png", "cannot decode image (image file is truncated"),
                         ("truncated.jpg", "cannot decode image (image file is truncated"),
                         ("text.jpg", "not an image Pillow can decode"),
                         ("folder.jpeg", "is a directory")):
        assert len([line for line in err.splitlines()
                    if f"skipped {folder / name}: " in line and reason in line]) == 1, name
    text = (tmp_path / "f.arff").read_text()
    data = text.split("@data\n")[1].splitlines()
    assert [row.split(",")[0] for row in data] == ["good.png"]
    assert "@attribute timeStamp" not in text and "@attribute class" not in text
    assert "% settings: input=images, net=small, layer=fc7, batch_size=128" in text


def test_image_features_label_file_and_explicit_label(tmp_path, small_config, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / name)
    (tmp_path / "labels.csv").write_text("file,score,kind\nx.png,0.5,a\ny.png,2,b\n")
    assert ds("image-features", folder, "-o", tmp_path / "l.csv", "-en", "small",
              "-lf", tmp_path / "labels.csv", "-c", small_config) == 0
    table = pd.read_csv(tmp_path / "l.csv")
    assert table[["name", "score", "kind"]].values.tolist() == [["x.png", 0.5, "a"],
                                                                ["y.png", 2.0, "b"]]
    assert ds("image-features", folder, "-o", tmp_path / "e.csv", "-en", "small",
              "-el", "pos", "-c", small_config) == 0
    assert list(pd.read_csv(tmp_path / "e.csv")["class"]) == ["pos", "pos"]
    # a label file that names only some images selects them (DeepSpectrum 0.6.x)
    (tmp_path / "short.csv").write_text("file,kind\nx.png,a\n")
    assert ds("image-features", folder, "-o", tmp_path / "s.csv", "-en", "small",
              "-lf", tmp_path / "short.csv", "-c", small_config) == 0
    assert pd.read_csv(tmp_path / "s.csv")[["name", "kind"]].values.tolist() == [["x.png", "a"]]
    assert "1 of 2 input file(s) are not named in" in capsys.readouterr().err


class RecordingExtractor:
    """Feature = the image's mean pixel; remembers the shape of every batch."""

    def __init__(self):
        self.batches = []

    def features(self, images):
        self.batches.append(images.shape)
        return images.reshape(len(images), -1).mean(axis=1, keepdims=True).astype(np.float32)


def test_images_are_batched_by_size_and_returned_in_order(tmp_path):
    sizes = [(4, 4), (4, 4), (6, 3), (4, 4), (6, 3), (6, 3), (5, 5)]
    files = []
    for number, (height, width) in enumerate(sizes):
        files.append(tmp_path / f"{number}.png")
        Image.fromarray(np.full((height, width, 3), number * 10, np.uint8)).save(files[-1])
    extractor = RecordingExtractor()
    results = list(image_features(files, extractor, batch_size=2))
    assert [r.index for r in results] == list(range(7))
    assert [float(r.features[0]) for r in results] == [n * 10.0 for n in range(7)]
    assert extractor.batches == [(2, 4, 4, 3), (2, 6, 3, 3), (1, 4, 4, 3), (1, 6, 3, 3),
                                 (1, 5, 5, 3)]
    # with at most 2 images waiting, the oldest waiting image's batch runs early
    extractor = RecordingExtractor()
    results = list(image_features(files, extractor, batch_size=3, max_pending=3))
    assert [float(r.features[0]) for r in results] == [n * 10.0 for n in range(7)]
    assert sum(shape[0] for shape in extractor.batches) == 7
    assert all(shape[0] <= 3 for shape in extractor.batches)
    assert extractor.batches[0] == (3, 4, 4, 3)


def test_load_image_modes(tmp_path):
    paletted = Image.new("P", (3, 2), 5)
    paletted.putpalette([value % 256 for value in range(0, 3 * 256 * 7, 7)])
    paletted.info["transparency"] = 5  # colour 5 is transparent: its alpha is dropped
    paletted.save(tmp_path / "p.png")
    Image.new("LA", (3, 2), (70, 0)).save(tmp_path / "la.png")
    Image.fromarray(np.array([[0, 128, 65535]], dtype=np.uint16)).save(tmp_path / "i16.png")
    colour = [105, 112, 119]  # entries 15, 16, 17 of the palette 0, 7, 14, ...
    assert load_image(tmp_path / "p.png").tolist() == [[colour] * 3] * 2
    assert load_image(tmp_path / "la.png").tolist() == [[[70, 70, 70]] * 3] * 2
    assert load_image(tmp_path / "i16.png").tolist() == [[[0] * 3, [0] * 3, [255] * 3]]
    assert all(load_image(tmp_path / n).dtype == np.uint8 for n in ("p.png", "la.png"))


# --- networks -------------------------------------------------------------------------------

def parse_layers(output: str, net: str) -> dict[str, tuple[str, int, bool]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{net}: layers"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("  "):
            break
        fields = line.split()
        rows[fields[0]] = (fields[1], int(fields[2]), line.endswith("(default)"))
    return rows


def test_networks_lists_layers_with_their_feature_sizes(small_model, small_config, capsys):
    assert ds("networks", "-c", small_config) == 0
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split() for line in out.splitlines()[2:5]}
    assert table["small"][1:3] == ["exists", "fc7"] and table["small"][3] == str(small_model)
    assert table["missing"][1] == "missing"
    assert f"missing: model file {small_model.parent / 'nowhere.pb'}" in out
    layers = parse_layers(out, "small")
    assert list(layers) == list(LAYERS)  # in the network's order, input to output
    blank = np.zeros((1, 227, 227, 3), np.uint8)
    for layer, (shape, size, default) in layers.items():
        with FrozenGraphExtractor(small_model, layer, gpu=False) as extractor:
            assert extractor.features(blank).shape == (1, size), layer
        assert np.prod([int(n) for n in shape.split("x")]) == size
        assert default == (layer == "fc7")
    assert layers["fc7"][1] != layers["conv1"][1]


def test_networks_measures_buildable_models_without_writing_the_cache(tmp_path, monkeypatch,
                                                                      small_model, capsys):
    def build(path):
        path.write_bytes(small_model.read_bytes())
        return path

    monkeypatch.setattr("deep_spectrum_extractor.backend.networks.BUILDERS", {"tiny": build})
    config = tmp_path / "deep.conf"
    config.write_text("[main]\nsize = 227\n\n[tensorflow-nets]\ntiny = cache/tiny.pb\n"
                      "broken = broken.pb\n\n[tensorflow-layers]\ntiny = conv2\n")
    (tmp_path / "broken.pb").write_bytes(b"not a graph")
    assert ds("networks", "--config", config) == 1  # a model file exists but is unusable
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert table["tiny"][1:] == ["buildable", "conv2", str(tmp_path / "cache" / "tiny.pb")]
    assert table["broken"][1:] == ["unusable", "fc7", str(tmp_path / "broken.pb")]
    layers = parse_layers(out, "tiny")
    assert sorted(layers) == available_layers(small_model)
    assert [name for name, (_, _, default) in layers.items() if default] == ["conv2"]
    assert not (tmp_path / "cache").exists()  # measured in a temporary folder
    assert "broken: model file" in out and "not a TensorFlow GraphDef" in out
    assert "broken: layers" not in out
