"""AudioStream: block-by-block reading with exactly read_audio's samples and
chunk_signal's chunks, the soxr facts it rests on, and bounded, linear reading."""
from __future__ import annotations

import tracemalloc
from unittest import mock
from decimal import Decimal as D

import numpy as np
import pytest
import soundfile
import soxr
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import deep_spectrum_extractor.audio as audio_package
from conftest import count_frames_read
from deep_spectrum_extractor.audio import InMemoryAudio, chunk_signal, read_audio
from deep_spectrum_extractor.audio.stream import (AudioStream, number_of_chunks,
                                                  resampled_length)
from deep_spectrum_extractor.errors import AudioError, ParameterError

WINDOW, HOP = D("0.5"), D("0.25")


# -- helpers -------------------------------------------------------------------------------

def bits(samples: np.ndarray) -> np.ndarray:
    """The float64 samples as integers, so that equality is bit for bit."""
    assert samples.dtype == np.float64
    return np.ascontiguousarray(samples).view(np.int64)


def assert_same_chunks(got, expected):
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert mine.index == theirs.index
        assert mine.timestamp == theirs.timestamp
        assert type(mine.timestamp) is type(theirs.timestamp)
        assert mine.samples.dtype == np.float64 and mine.samples.ndim == 1
        assert np.array_equal(bits(mine.samples), bits(theirs.samples))


def reference(source, *, start=D(0), end=None, target_rate=None, window=WINDOW, hop=HOP,
              min_length=1):
    signal, rate = read_audio(source, start=start, end=end, target_rate=target_rate)
    return signal, rate, chunk_signal(signal, rate, window=window, hop=hop, start=start,
                                      min_length=min_length)


def check(source, *, start=D(0), end=None, target_rate=None, window=WINDOW, hop=HOP,
          min_length=1, block_frames=1000, slices=True) -> AudioStream:
    """Everything the stream says equals read_audio + chunk_signal."""
    signal, rate, expected = reference(source, start=start, end=end, target_rate=target_rate,
                                       window=window, hop=hop, min_length=min_length)
    stream = AudioStream(source, start=start, end=end, target_rate=target_rate,
                         block_frames=block_frames)
    assert stream.sample_rate == rate
    assert stream.length == len(signal)
    assert stream.chunk_count(window, hop, min_length=min_length) == len(expected)
    assert_same_chunks(list(stream.chunks(window, hop, min_length=min_length)), expected)
    if slices and len(expected) > 1:
        n = len(expected)
        for first in sorted({1, n // 2, n - 1}):
            assert_same_chunks(list(stream.chunks(window, hop, min_length=min_length,
                                                  first=first)), expected[first:])
        for first, stop in [(0, 1), (1, max(n // 2, 2)), (n // 3, n // 3 + 2), (n - 1, n + 5)]:
            assert_same_chunks(list(stream.chunks(window, hop, min_length=min_length,
                                                  first=first, stop=stop)),
                               expected[first:stop])
        if window is not None:
            h = int(hop * rate)
            assert stream.chunk_span(window, hop, min_length=min_length, first=1) == \
                (h, (n - 1) * h + len(expected[-1].samples))
            assert stream.chunk_span(window, hop, min_length=min_length, first=n // 2,
                                     stop=n // 2 + 1) == \
                (n // 2 * h, n // 2 * h + len(expected[n // 2].samples))
    return stream


def recording(seconds, rate, channels=1, *, lead=0, tail=0, cancel=0, seed=0):
    """Tone plus noise with ``lead``/``tail`` exact zeros and ``cancel`` samples at both
    ends whose channels cancel in the mean (+x, -x, 0 ...)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    body = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    parts = [np.zeros((lead, channels))]
    if cancel and channels > 1:
        edge = np.zeros((cancel, channels))
        edge[:, 0] = 0.25
        edge[:, 1] = -0.25
        parts.append(edge)
    parts += [body]
    if cancel and channels > 1:
        parts.append(edge[::-1].copy())
    parts.append(np.zeros((tail, channels)))
    return np.concatenate(parts)


# -- the facts the stream rests on ---------------------------------------------------------

RATE_PAIRS = [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 44100), (22050, 16000),
              (16000, 8000), (11025, 48000), (96000, 16000), (44100, 48000), (48000, 44100),
              (16000, 22050), (32000, 16000), (44100, 22050), (7, 3), (1000, 999)]


def test_resampled_length_is_soxr_output_length():
    rng = np.random.default_rng(1)
    checked = ties = integer_misses = 0
    for a, b in RATE_PAIRS:
        sizes = set(range(1, 40)) | {int(n) for n in rng.integers(40, 100_000, 12)}
        # sizes where n*b/a is exactly halfway between two integers
        halves = [n for n in range(1, 150_000) if (2 * n * b) % (2 * a) == a][:6]
        ties += len(halves)
        for n in sorted(sizes | set(halves)):
            out = len(soxr.resample(rng.standard_normal(n), a, b, quality="HQ"))
            assert out == resampled_length(n, a, b), (a, b, n)
            integer_misses += out != (2 * n * b + a) // (2 * a)
            checked += 1
    assert checked > 700 and ties > 30
    # the exact rational rounding is NOT libsoxr's: 131920 samples 48k -> 44.1k
    assert len(soxr.resample(np.ones(131920), 48000, 44100)) == 121201 \
        == resampled_length(131920, 48000, 44100) != (2 * 131920 * 44100 + 48000) // 96000
    assert integer_misses > 0


@pytest.mark.parametrize("a,b", [(44100, 16000), (48000, 16000), (8000, 16000), (48000, 44100)])
def test_resample_stream_gives_one_calls_samples(a, b):
    rng = np.random.default_rng(2)
    for n in [1, 3, 100, 4097, 65536, 123_457]:
        x = rng.standard_normal(n)
        whole = soxr.resample(x, a, b, quality="HQ")
        for block in [1, 7, 1000, 65536]:
            if block < 100 and n > 5000:
                continue
            for flush_empty in (False, True):
                stream = soxr.ResampleStream(a, b, 1, dtype="float64", quality="HQ")
                parts = []
                for i in range(0, n, block):
                    last = not flush_empty and i + block >= n
                    parts.append(stream.resample_chunk(x[i:i + block], last=last))
                if flush_empty:
                    parts.append(stream.resample_chunk(np.empty(0), last=True))
                joined = np.concatenate(parts)
                assert np.array_equal(bits(joined), bits(whole)), (n, block, flush_empty)


def test_block_channel_mean_equals_whole_mean():
    rng = np.random.default_rng(3)
    for channels in range(2, 13):
        x = rng.standard_normal((3000, channels)) * rng.choice([1e-4, 1.0, 1e4], (3000, channels))
        whole = x.mean(axis=1)
        for block in [1, 3, 8, 1000]:
            parts = [x[i:i + block].mean(axis=1) for i in range(0, len(x), block)]
            assert np.array_equal(bits(np.concatenate(parts)), bits(whole))


FILE_FORMATS = [  # extension, format, subtype, seeking is sample exact
    ("wav", "WAV", "PCM_16", True), ("wav", "WAV", "PCM_24", True),
    ("wav", "WAV", "FLOAT", True), ("wav", "WAV", "DOUBLE", True),
    ("flac", "FLAC", "PCM_16", True), ("flac", "FLAC", "PCM_24", True),
    ("ogg", "OGG", "VORBIS", False), ("mp3", "MP3", "MPEG_LAYER_III", False),
    ("opus", "OGG", "OPUS", False),
]


@pytest.mark.parametrize("ext,fmt,subtype,exact", FILE_FORMATS, ids=[f[2] for f in FILE_FORMATS])
def test_seek_exactness_per_format(tmp_path, ext, fmt, subtype, exact):
    """Exact-seek formats seek to the very samples of a whole read; the others are
    never sought into by the stream (and seeking them is indeed not always exact)."""
    x = recording(2.0, 48000, 2)
    path = tmp_path / f"x.{ext}"
    soundfile.write(path, x, 48000, format=fmt, subtype=subtype)
    assert AudioStream(path).exact_seek is exact
    if exact:
        whole, _ = soundfile.read(path, always_2d=True)
        rng = np.random.default_rng(4)
        with soundfile.SoundFile(path) as f:
            for _ in range(20):
                k, m = int(rng.integers(0, len(whole))), int(rng.integers(1, 5000))
                f.seek(k)
                assert np.array_equal(f.read(m, always_2d=True), whole[k:k + m])


# -- formats, channels, zeros ------------------------------------------------------------

FORMAT_CASES = [  # extension, format, subtype, rate, channels
    ("wav", "WAV", "PCM_16", 8000, 1), ("wav", "WAV", "PCM_16", 44100, 2),
    ("wav", "WAV", "PCM_24", 48000, 2), ("wav", "WAV", "FLOAT", 16000, 1),
    ("wav", "WAV", "FLOAT", 48000, 6), ("wav", "WAV", "DOUBLE", 22050, 2),
    ("flac", "FLAC", "PCM_16", 44100, 1), ("flac", "FLAC", "PCM_24", 48000, 6),
    ("ogg", "OGG", "VORBIS", 44100, 2), ("ogg", "OGG", "VORBIS", 16000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 8000, 1), ("mp3", "MP3", "MPEG_LAYER_III", 16000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 1), ("mp3", "MP3", "MPEG_LAYER_III", 48000, 2),
    ("opus", "OGG", "OPUS", 48000, 2),
    ("wav", "WAV", "IMA_ADPCM", 16000, 2),  # compressed: read from the start, no seeking
    ("wav", "WAV", "GSM610", 8000, 1),      # libsndfile cannot seek in it at all
]


@pytest.mark.parametrize("ext,fmt,subtype,rate,channels", FORMAT_CASES,
                         ids=[f"{c[2]}-{c[3]}-{c[4]}ch" for c in FORMAT_CASES])
def test_formats_match_read_audio(tmp_path, ext, fmt, subtype, rate, channels):
    x = recording(2.3, rate, channels, lead=rate // 10, tail=rate // 7, cancel=37, seed=rate)
    path = tmp_path / f"x.{ext}"
    soundfile.write(path, x, rate, format=fmt, subtype=subtype)
    check(path)
    check(path, target_rate=16000, start=D("0.3"), end=D("1.7"))
    check(path, start=D("0.25"), end=D("9"), window=D("0.3"), hop=D("0.4"), slices=False)
    if rate != 16000:
        check(path, target_rate=16000, min_length=512, slices=False)


@pytest.mark.parametrize("rate,target", [(44100, 16000), (48000, 16000), (8000, 16000)])
def test_resampled_files_match_read_audio(tmp_path, rate, target):
    channels = 2 if rate == 48000 else 1
    x = recording(3.1, rate, channels, lead=123, tail=77, cancel=5, seed=5)
    path = tmp_path / "x.wav"
    soundfile.write(path, x, rate, subtype="FLOAT")
    for block in (1000, 4096):
        check(path, target_rate=target, block_frames=block)
    check(path, target_rate=target, start=D("1.1"), window=D("1"), hop=D("0.3"),
          min_length=512)
    check(path, target_rate=target, start=D("0.5"), end=D("0.9"))


def test_zeros_only_after_the_channel_mean_are_trimmed(tmp_path):
    x = recording(1.0, 16000, 2, lead=50, tail=60, cancel=40)
    x[3000] = [0.5, -0.5]  # a zero inside is kept
    path = tmp_path / "cancel.wav"
    soundfile.write(path, x, 16000, subtype="FLOAT")
    stream = check(path, window=D("0.1"), hop=D("0.05"))
    assert (stream.trim_start, stream.trim_stop) == (90, len(x) - 100)
    assert stream.frames == len(x)


def test_in_memory_layouts_and_many_channels():
    x = recording(1.2, 16000, 9, lead=10, tail=3, cancel=20, seed=6)
    layouts = (x, np.asfortranarray(x), x[:, :6], x[:, 0], (x[:, :2] * 20000).astype(np.int16))
    for samples in layouts:
        check(InMemoryAudio("mem", samples, 16000))
        check(InMemoryAudio("mem", samples, 16000), target_rate=8000, start=D("0.2"),
              slices=False)


@pytest.mark.parametrize("start,end", [
    (D(0), None), (D("0.2"), None), (D("0.2"), D("1.3")), (D(0), D("0.05")),
    (D("1.9"), None), (D("2.5"), None), (D("0.5"), D("9")), (D("1"), D("0.5")),
    (D("-0.3"), None), (D(0), D("-0.4")),
])
@pytest.mark.parametrize("target_rate", [None, 22050])
def test_start_and_end_inside_and_beyond(tmp_path, start, end, target_rate):
    path = tmp_path / "x.wav"
    soundfile.write(path, recording(2.0, 16000, 2, lead=7, tail=9), 16000, subtype="PCM_24")
    for min_length in (1, 0, 512):
        check(path, start=start, end=end, target_rate=target_rate, min_length=min_length,
              slices=min_length == 1)


@pytest.mark.parametrize("n", [1, 2, 5, 100, 1999, 2000, 2001])
def test_very_short_files(tmp_path, n):
    rng = np.random.default_rng(n)
    x = np.concatenate([np.zeros(3), rng.uniform(0.1, 0.9, n), np.zeros(4)])
    path = tmp_path / "short.wav"
    soundfile.write(path, x, 16000, subtype="DOUBLE")
    for window, hop in [(D("0.125"), D("0.0625")), (D(1), D("0.5")), (None, None)]:
        for min_length in (1, 0, 64, 512):
            for target_rate in (None, 8000, 44100):
                check(path, window=window, hop=hop, min_length=min_length,
                      target_rate=target_rate, block_frames=64)


def test_without_window_the_whole_signal_is_one_chunk(tmp_path):
    path = tmp_path / "x.flac"
    soundfile.write(path, recording(1.5, 16000, lead=100), 16000, subtype="PCM_16")
    stream = check(path, window=None, hop=None)
    chunk, = stream.chunks(None, None)
    assert chunk.timestamp is None and chunk.index == 0 and len(chunk.samples) == stream.length
    assert list(stream.chunks(None, None, first=1)) == []
    assert stream.chunk_count(None, None, min_length=stream.length + 1) == 0
    assert list(stream.chunks(None, None, min_length=stream.length + 1)) == []


def test_audio_stream_is_exported():
    assert audio_package.AudioStream is AudioStream and "AudioStream" in audio_package.__all__


def test_a_stream_can_be_pickled_and_read_again(tmp_path):
    import pickle

    path = tmp_path / "x.wav"
    soundfile.write(path, recording(1.0, 16000, 2, lead=5), 16000, subtype="PCM_16")
    for source in (path, InMemoryAudio("m", recording(1.0, 8000, 2), 8000)):
        stream = AudioStream(source, target_rate=22050, start=D("0.1"))
        copy = pickle.loads(pickle.dumps(stream))
        first = list(stream.chunks(WINDOW, HOP))
        assert_same_chunks(list(stream.chunks(WINDOW, HOP)), first)
        assert_same_chunks(list(copy.chunks(WINDOW, HOP)), first)
        assert np.array_equal(bits(copy.read()), bits(read_audio(source, target_rate=22050,
                                                                  start=D("0.1"))[0]))


def test_windows_below_one_sample_are_refused_as_chunk_signal_refuses_them():
    stream = AudioStream(InMemoryAudio("m", np.ones(1000), 1000))
    with pytest.raises(ParameterError) as mine:
        stream.chunk_count(D("0.0001"), D("0.5"))
    with pytest.raises(ParameterError) as theirs:
        chunk_signal(np.ones(1000), 1000, window=D("0.0001"), hop=D("0.5"))
    assert str(mine.value) == str(theirs.value)
    with pytest.raises(ParameterError):
        next(stream.chunks(D("0.5"), D("0.0001")))


# -- random cases ----------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(length=st.integers(0, 50_000), rate=st.sampled_from([8000, 16000, 22050, 44100]),
       window=st.integers(1, 400).map(lambda n: D(n) / 100),
       hop=st.integers(1, 400).map(lambda n: D(n) / 100),
       min_length=st.integers(-2, 3000))
def test_number_of_chunks_equals_chunk_signal(length, rate, window, hop, min_length):
    expected = len(chunk_signal(np.ones(length), rate, window=window, hop=hop,
                                min_length=min_length))
    assert number_of_chunks(length, rate, window=window, hop=hop,
                            min_length=min_length) == expected
    expected = len(chunk_signal(np.ones(length), rate, window=None, hop=None,
                                min_length=min_length))
    assert number_of_chunks(length, rate, window=None, hop=None,
                            min_length=min_length) == expected


@st.composite
def stream_cases(draw):
    rate = draw(st.sampled_from([8000, 16000, 44100]))
    channels = draw(st.sampled_from([1, 2, 3]))
    body = draw(st.integers(1, 6000))
    lead, tail = draw(st.integers(0, 3000)), draw(st.integers(0, 3000))
    seed = draw(st.integers(0, 2**16))
    start = D(draw(st.integers(0, 150))) / 200
    end = draw(st.one_of(st.none(), st.integers(0, 300).map(lambda n: D(n) / 200)))
    window = D(draw(st.integers(1, 60))) / 400
    hop = D(draw(st.integers(1, 60))) / 400
    target = draw(st.sampled_from([None, None, 16000, 11025]))
    block = draw(st.sampled_from([1, 17, 256, 4096]))
    min_length = draw(st.sampled_from([1, 32, 256]))
    as_file = draw(st.booleans())
    return (rate, channels, body, lead, tail, seed, start, end, window, hop, target, block,
            min_length, as_file)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(case=stream_cases())
def test_random_streams_match_chunk_signal(tmp_path_factory, case):
    (rate, channels, body, lead, tail, seed, start, end, window, hop, target, block,
     min_length, as_file) = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (body, channels))
    x[rng.random(body) < 0.2] = 0  # zeros inside and maybe at the ends
    x = np.concatenate([np.zeros((lead, channels)), x, np.zeros((tail, channels))])
    if not np.any(x.mean(axis=1)):
        x[lead] = 0.5
    if as_file:
        source = tmp_path_factory.mktemp("random") / "x.wav"
        soundfile.write(source, x, rate, subtype="DOUBLE")
    else:
        source = InMemoryAudio("random", x, rate)
    check(source, start=start, end=end, window=window, hop=hop, target_rate=target,
          block_frames=block, min_length=min_length)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(case=stream_cases(), sizes=st.lists(st.integers(1, 9), min_size=1, max_size=40),
       back=st.integers(0, 3))
def test_the_run_reads_ranges_of_chunks_as_chunk_signal_cuts_them(tmp_path_factory, case,
                                                                   sizes, back):
    """A run's reader hands out consecutive ranges of chunks (and, after a re-plan, a
    range it has passed): every chunk's samples are chunk_signal's, bit for bit."""
    from deep_spectrum_extractor.run import reader as reader_module
    from deep_spectrum_extractor.run.reader import ChunkReader, open_input
    from deep_spectrum_extractor.settings import FeatureSettings

    (rate, channels, body, lead, tail, seed, start, end, window, hop, target, block,
     _min_length, as_file) = case
    assume(end is None or end > start)  # -end at or before -start is refused
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (body, channels))
    x = np.concatenate([np.zeros((lead, channels)), x, np.zeros((tail, channels))])
    if as_file:
        source = tmp_path_factory.mktemp("ranges") / "x.wav"
        soundfile.write(source, x, rate, subtype="DOUBLE")
    else:
        source = InMemoryAudio("ranges", x, rate)
    options = FeatureSettings(window=window, hop=hop, start=start, end=end, sample_rate=target)
    opened = open_input(source, options)
    if not opened.count:
        return
    opened.stream.block_frames = block
    _signal, _rate, expected = reference(source, start=start, end=end, target_rate=target,
                                         window=window, hop=hop, min_length=opened.min_length)
    assert opened.count == len(expected)
    reader = ChunkReader(0, opened, options, None)
    first, position = 0, 0
    # the reader's arrays start as NaN, not as whatever memory held: a sample it never
    # wrote cannot pass for the right one
    with mock.patch.object(reader_module, "np", _NaNFilledNumpy()):
        for size in sizes + [opened.count]:
            stop = min(first + size, opened.count)
            piece = reader.piece(first, stop, position)
            assert_same_chunks(piece.chunks(first, stop), expected[first:stop])
            position += stop - first
            if stop == opened.count:
                break
            first = stop if size % 4 else max(stop - back, 0)  # now and then a range passed
    reader.close()


class _NaNFilledNumpy:
    """numpy, with ``empty`` arrays full of NaN."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float, **kwargs):
        return np.full(shape, np.nan, dtype=dtype, **kwargs)


# -- errors ------------------------------------------------------------------------------

def error_of(call):
    with pytest.raises(AudioError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("target_rate", [None, 8000])
def test_nan_in_the_middle_is_found_when_its_block_is_read(tmp_path, target_rate):
    rate, block = 16000, 4096
    clean = recording(6.0, rate, lead=300)
    at = 4 * rate + 123                          # a file frame
    dirty = clean.copy()
    dirty[at] = np.nan
    clean_path, dirty_path = tmp_path / "clean.wav", tmp_path / "dirty.wav"
    soundfile.write(clean_path, clean, rate, subtype="FLOAT")
    soundfile.write(dirty_path, dirty, rate, subtype="FLOAT")
    message = error_of(lambda: read_audio(dirty_path, target_rate=target_rate))
    assert "NaN" in message

    _, out_rate, expected = reference(clean_path, target_rate=target_rate)
    stream = AudioStream(dirty_path, target_rate=target_rate, block_frames=block)
    assert stream.chunk_count(WINDOW, HOP) == len(expected)  # the ends are clean
    got = []
    with pytest.raises(AudioError) as info:
        for chunk in stream.chunks(WINDOW, HOP):
            got.append(chunk)
    assert str(info.value) == message
    assert_same_chunks(got, expected[:len(got)])
    # it was found in its block: every chunk ending well before that block came out,
    # none reaching the NaN did
    nan_at = (at - 300) * out_rate / rate        # its place in the final signal
    block_start = (((at - 300) // block) * block) * out_rate / rate
    ends = [int(c.timestamp * out_rate) + len(c.samples) for c in expected]
    assert sum(end <= block_start - out_rate for end in ends) <= len(got)
    assert all(int(c.timestamp * out_rate) + len(c.samples) <= nan_at + 1 for c in got)


def test_nan_in_the_scanned_ends_is_refused_on_opening(tmp_path):
    x = recording(2.0, 16000, 2, lead=100, tail=100)
    for position in (5, 150, len(x) - 50, len(x) - 300):
        bad = x.copy()
        bad[position, 1] = np.inf if position % 2 else np.nan
        path = tmp_path / "bad.wav"
        soundfile.write(path, bad, 16000, subtype="DOUBLE")
        assert error_of(lambda path=path: AudioStream(path)) == \
            error_of(lambda path=path: read_audio(path))
    memory = InMemoryAudio("m", bad, 16000)
    assert error_of(lambda: AudioStream(memory)) == error_of(lambda: read_audio(memory))


def test_all_zero_audio_is_refused(tmp_path):
    cancel = np.zeros((4000, 2))
    cancel[100:200, 0], cancel[100:200, 1] = 0.3, -0.3
    cases = {"zeros.wav": (np.zeros(20000), {"subtype": "PCM_16"}),
             "cancel.wav": (cancel, {"subtype": "FLOAT"}),
             "zeros.flac": (np.zeros((5000, 2)), {}),
             "zeros.ogg": (np.zeros(20000), {})}
    for name, (data, options) in cases.items():
        path = tmp_path / name
        soundfile.write(path, data, 16000, **options)
        message = error_of(lambda path=path: read_audio(path))
        assert "silence" in message
        assert error_of(lambda path=path: AudioStream(path, block_frames=1000)) == message
    memory = InMemoryAudio("m", cancel, 16000)
    assert error_of(lambda: AudioStream(memory)) == error_of(lambda: read_audio(memory))


def test_unreadable_inputs_are_refused_as_read_audio_refuses_them(tmp_path):
    good = tmp_path / "good.wav"
    soundfile.write(good, recording(0.5, 16000), 16000, subtype="PCM_16")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "truncated.wav").write_bytes(good.read_bytes()[:30])
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    (tmp_path / "folder.wav").mkdir()
    soundfile.write(tmp_path / "no_samples.wav", np.zeros(0), 16000)
    names = ["empty.wav", "truncated.wav", "text.wav", "folder.wav", "no_samples.wav",
             "missing.wav"]
    for name in names:
        path = tmp_path / name
        message = error_of(lambda path=path: read_audio(path))
        assert error_of(lambda path=path: AudioStream(path)) == message, name
    memory = InMemoryAudio("m", np.zeros((0, 2)), 16000)
    assert error_of(lambda: AudioStream(memory)) == error_of(lambda: read_audio(memory))
    memory = InMemoryAudio("m", np.ones((3, 2, 2)), 16000)
    assert error_of(lambda: AudioStream(memory)) == error_of(lambda: read_audio(memory))


@pytest.mark.parametrize("ext,options", [("wav", {"subtype": "PCM_16"}),
                                         ("wav", {"subtype": "FLOAT"}), ("flac", {}),
                                         ("ogg", {}), ("mp3", {})])
def test_truncated_files_give_what_read_audio_gives(tmp_path, ext, options):
    whole = tmp_path / f"whole.{ext}"
    soundfile.write(whole, recording(3.0, 16000, 2, seed=8), 16000, **options)
    data = whole.read_bytes()
    for fraction in (0.3, 0.7, 0.95):
        path = tmp_path / f"cut.{ext}"
        path.write_bytes(data[:int(len(data) * fraction)])
        try:
            signal, _ = read_audio(path)
        except AudioError as exc:
            assert error_of(lambda path=path: AudioStream(path, block_frames=4096)) == str(exc)
            continue
        stream = AudioStream(path, block_frames=4096)
        assert stream.length == len(signal)
        assert np.array_equal(bits(stream.read()), bits(signal))


# -- reading is linear and bounded -----------------------------------------------------------

@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """Ten minutes of 8 kHz mono (38 MB as float64), with silence at both ends."""
    rate = 8000
    x = recording(600.0, rate, lead=3 * rate, tail=2 * rate, seed=9)[:, 0]
    path = tmp_path_factory.mktemp("long") / "long.wav"
    soundfile.write(path, x, rate, subtype="PCM_16")
    return path, len(x), rate


@pytest.mark.parametrize("target_rate", [None, 16000])
def test_reading_is_linear_and_bounded(long_recording, monkeypatch, target_rate):
    path, frames, rate = long_recording
    block = 1 << 14
    reads = count_frames_read(monkeypatch)
    window, hop = D(1), D("0.5")
    tracemalloc.start()
    try:
        stream = AudioStream(path, target_rate=target_rate, block_frames=block)
        scanned = sum(reads)
        count = stream.chunk_count(window, hop)
        seen = 0
        for chunk in stream.chunks(window, hop):
            assert chunk.index == seen
            seen += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count
    assert scanned <= 3 * block + 3 * rate            # the two ends, not the whole file
    assert frames <= sum(reads) <= frames + 4 * block  # each frame decoded about once
    assert max(reads) <= block
    assert peak < frames * 8 / 20, peak               # far below the float64 signal

    # and it is the right thing: the reference, held whole
    monkeypatch.undo()
    _, _, expected = reference(path, target_rate=target_rate, window=window, hop=hop)
    assert count == len(expected)
    picks = [0, 1, count // 2, count - 2, count - 1]
    for k in picks:
        assert_same_chunks(list(stream.chunks(window, hop, first=k, stop=k + 1)),
                           expected[k:k + 1])

    # random access reads only what the last chunks need (or streams, when resampling)
    reads = count_frames_read(monkeypatch)
    tail = list(stream.chunks(window, hop, first=count - 10))
    assert_same_chunks(tail, expected[count - 10:])
    if target_rate is None:
        assert sum(reads) <= 10 * int(hop * rate) + int(window * rate) + 2 * block
    else:
        assert sum(reads) <= frames + 2 * block
