"""Reading and chunking: counts, exact timestamps, trimming, stereo, start/end."""
from decimal import Decimal

import numpy as np
import pytest
import soundfile

from conftest import tone, write_wav
from deep_spectrum_extractor.audio import chunk_signal, default_nfft, find_audio_files, read_audio
from deep_spectrum_extractor.errors import AudioError, ParameterError


def expected_chunks(n, sr, window, hop, start=Decimal(0), min_length=1):
    """The original rule written out independently, as (timestamp, first, last) triples."""
    w, h = int(float(window) * sr), int(float(hop) * sr)
    out = []
    for k in range(max(n // h, 1)):
        first, last = k * h, min(k * h + w, n)
        if last - first >= min_length:
            out.append((start + k * hop, first, last))
    return out


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
@pytest.mark.parametrize("seconds,window,hop", [
    (3.0, "1", "0.5"), (2.7, "1", "0.1"), (1.0, "0.5", "0.5"), (5.3, "2", "1.5"),
    (0.3, "1", "0.5"),   # shorter than one window: one short chunk
])
def test_chunk_boundaries_and_timestamps(sr, seconds, window, hop):
    signal = np.arange(int(seconds * sr), dtype=np.float64) + 1
    window, hop = Decimal(window), Decimal(hop)
    nfft = default_nfft(sr)
    chunks = chunk_signal(signal, sr, window=window, hop=hop, min_length=nfft)
    expected = expected_chunks(len(signal), sr, window, hop, min_length=nfft)
    assert [c.timestamp for c in chunks] == [ts for ts, _, _ in expected]
    for chunk, (_, first, last) in zip(chunks, expected):
        np.testing.assert_array_equal(chunk.samples, signal[first:last])


def test_timestamps_are_exact_decimals():
    chunks = chunk_signal(np.ones(16000 * 2), 16000, window=Decimal("0.3"), hop=Decimal("0.1"),
                          start=Decimal("1.2"))
    texts = [str(c.timestamp) for c in chunks]
    assert texts[:4] == ["1.2", "1.3", "1.4", "1.5"]
    assert texts[-1] == "3.1"
    assert len(chunks) == 20


def test_whole_file_is_one_chunk_without_timestamp():
    chunks = chunk_signal(np.ones(1000), 16000, window=None, hop=None)
    assert len(chunks) == 1 and chunks[0].timestamp is None and len(chunks[0].samples) == 1000


def test_too_short_chunks_are_dropped():
    # 1.1 s at 16 kHz, hop 0.5: chunks start at 0, 0.5 (and 1.0 has 1600 samples)
    chunks = chunk_signal(np.ones(17600), 16000, window=Decimal(1), hop=Decimal("0.5"),
                          min_length=2000)
    assert [str(c.timestamp) for c in chunks] == ["0.0", "0.5"]
    assert chunk_signal(np.ones(100), 16000, window=None, hop=None, min_length=512) == []


def test_hop_shorter_than_a_sample_is_an_error():
    with pytest.raises(ParameterError, match="at least one sample"):
        chunk_signal(np.ones(100), 8000, window=Decimal("0.00001"), hop=Decimal("0.00001"))


@pytest.mark.parametrize("sr,nfft", [(8000, 256), (16000, 512), (22050, 1024), (44100, 2048),
                                     (48000, 2048)])
def test_default_nfft(sr, nfft):
    assert default_nfft(sr) == nfft


def test_read_trims_zeros_and_averages_stereo(tmp_path):
    left = np.concatenate([np.zeros(100), tone(0.5), np.zeros(50)])
    right = np.concatenate([np.zeros(100), tone(0.5, frequency=200), np.zeros(50)])
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    signal, sr = read_audio(path)
    stored = soundfile.read(path)[0]
    expected = np.trim_zeros(stored.sum(axis=1) / 2)
    assert sr == 16000
    np.testing.assert_array_equal(signal, expected)
    assert len(signal) == 8000


def test_read_start_end_cut_the_trimmed_signal(tmp_path):
    signal = np.concatenate([np.zeros(800), tone(2.0)])
    path = write_wav(tmp_path / "a.wav", signal)
    full, sr = read_audio(path)
    part, _ = read_audio(path, start=Decimal("0.5"), end=Decimal("1.25"))
    np.testing.assert_array_equal(part, full[8000:20000])
    tail, _ = read_audio(path, start=Decimal("1.5"))
    np.testing.assert_array_equal(tail, full[24000:])


def test_find_audio_files_recursive_case_insensitive_sorted(tmp_path):
    for name in ("b/x.WAV", "a/y.wav", "a/z.txt", "c.Wav"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert found == ["a/y.wav", "b/x.WAV", "c.Wav"]
    assert find_audio_files(tmp_path / "c.Wav") == [tmp_path / "c.Wav"]
    with pytest.raises(AudioError, match="does not exist"):
        find_audio_files(tmp_path / "nothing")


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00not a wave file")
    with pytest.raises(AudioError, match="broken.wav"):
        read_audio(path)
