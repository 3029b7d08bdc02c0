"""Audio formats, bit depths and resampling."""

import numpy as np
import pytest
import soundfile

from deep_spectrum_extractor.audio import find_audio_files, read_audio
from deep_spectrum_extractor.cli.extract_ds_features import main

SR = 16000
SIGNAL = 0.6 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR) + 0.001
SIGNAL[0] = SIGNAL[-1] = 0.3  # no zeros at the ends, even at 8 bits (nothing is trimmed)


def dominant_frequency(signal, rate):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize("subtype,step", [("PCM_U8", 2 / 256), ("PCM_16", 2 / 65536),
                                          ("PCM_24", 2 / 2 ** 24), ("PCM_32", 2 / 2 ** 32),
                                          ("FLOAT", 0.0), ("DOUBLE", 0.0)])
def test_wav_bit_depths(tmp_path, subtype, step):
    path = tmp_path / "x.wav"
    soundfile.write(path, SIGNAL, SR, subtype=subtype)
    signal, rate = read_audio(path)
    assert rate == SR and len(signal) == len(SIGNAL)
    # integer PCM holds the signal to within one quantisation step; floats are exact
    tolerance = step if step else (1e-7 if subtype == "FLOAT" else 0)
    np.testing.assert_allclose(signal, SIGNAL, atol=tolerance, rtol=0)


@pytest.mark.parametrize("fmt,subtype,exact", [("FLAC", "PCM_16", True), ("OGG", "VORBIS", False),
                                               ("MP3", "MPEG_LAYER_III", False),
                                               ("AIFF", "PCM_16", True)])
def test_compressed_and_other_formats(tmp_path, fmt, subtype, exact):
    path = tmp_path / f"x.{fmt.lower()}"
    soundfile.write(path, SIGNAL, SR, format=fmt, subtype=subtype)
    signal, rate = read_audio(path)
    assert rate == SR
    if exact:
        np.testing.assert_allclose(signal, SIGNAL, atol=2 / 65536, rtol=0)
    else:  # lossy codecs: the tone survives, with about the right length and level
        assert abs(len(signal) - len(SIGNAL)) < 0.1 * SR
        assert abs(dominant_frequency(signal, rate) - 440) < 2
        assert 0.3 < np.sqrt(np.mean(signal ** 2)) / np.sqrt(np.mean(SIGNAL ** 2)) < 1.5


def test_formats_are_found_recursively_and_case_insensitively(tmp_path):
    for name, fmt in (("a/x.WAV", "WAV"), ("b/y.Flac", "FLAC"), ("c/d/z.ogg", "OGG"),
                      ("m.MP3", "MP3")):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, SIGNAL, SR, format=fmt)
    (tmp_path / "notes.txt").write_text("not audio")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert found == ["a/x.WAV", "b/y.Flac", "c/d/z.ogg", "m.MP3"]


@pytest.mark.parametrize("source,target", [(48000, 16000), (8000, 22050), (44100, 16000)])
def test_resampling_keeps_the_tone_and_the_duration(tmp_path, source, target):
    seconds = 1.0
    t = np.arange(int(seconds * source)) / source
    path = tmp_path / "x.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.001, source, subtype="FLOAT")
    signal, rate = read_audio(path, target_rate=target)
    assert rate == target
    assert abs(len(signal) - seconds * target) <= 1
    assert abs(dominant_frequency(signal, rate) - 1000) < 2
    middle = signal[len(signal) // 4: 3 * len(signal) // 4]
    assert abs(np.sqrt(2 * np.mean((middle - 0.001) ** 2)) - 0.5) < 0.01  # amplitude kept


def test_downsampling_removes_what_the_new_rate_cannot_hold(tmp_path):
    t = np.arange(48000) / 48000
    path = tmp_path / "x.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 10000 * t) + 0.1 * np.sin(2 * np.pi * 500 * t),
                    48000, subtype="FLOAT")
    signal, _ = read_audio(path, target_rate=16000)
    spectrum = np.abs(np.fft.rfft(signal))
    freqs = np.fft.rfftfreq(len(signal), 1 / 16000)
    # a 10 kHz tone would alias to 6 kHz without an anti-aliasing filter
    alias, tone = (spectrum[np.abs(freqs - f) < 50].max() for f in (6000, 500))
    assert alias < 1e-3 * tone


def test_sr_option_resamples_before_chunking(tmp_path, small_config):
    t = np.arange(44100 * 2) / 44100
    path = tmp_path / "in" / "x.wav"
    path.parent.mkdir()
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 700 * t) + 0.01, 44100, subtype="FLOAT")
    specout = tmp_path / "plots"
    out = tmp_path / "f.csv"
    assert main([str(a) for a in ["-i", path, "-o", out, "-t", "1", "1", "-sr", "16000",
                                  "-net", "small", "-config", small_config, "-np", "1",
                                  "-specout", specout]]) == 0
    # the same through a file resampled beforehand: identical plots
    signal, _ = read_audio(path, target_rate=16000)
    soundfile.write(tmp_path / "pre.wav", signal, 16000, subtype="DOUBLE")
    specout2 = tmp_path / "plots2"
    assert main([str(a) for a in ["-i", tmp_path / "pre.wav", "-o", tmp_path / "g.csv", "-t",
                                  "1", "1", "-net", "small", "-config", small_config, "-np", "1",
                                  "-specout", specout2]]) == 0
    assert (specout / "x_0.png").read_bytes() == (specout2 / "pre_0.png").read_bytes()
    assert sorted(p.name for p in specout.iterdir()) == ["x_0.png", "x_1.png"]
