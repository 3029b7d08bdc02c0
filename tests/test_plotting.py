"""Spectral matrices and plots against librosa and matplotlib used directly."""
import io

import librosa
import numpy as np
import pytest

from conftest import tone
from deep_spectrum_extractor.images import min_chunk_length, plot_matrix, spectral_matrix


def pyplot_rendering(matrix, *, sr, nfft, scale, cmap, size, ylim):
    """The 2018 drawing recipe with pyplot, independent of the package."""
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig = plt.figure(frameon=False)
    fig.set_size_inches(1, 1)
    ax = plt.Axes(fig, [0.0, 0.0, 1.0, 1.0])
    ax.set_axis_off()
    fig.add_axes(ax)
    librosa.display.specshow(matrix, hop_length=nfft // 2, fmax=ylim, sr=sr, cmap=cmap,
                             y_axis=scale)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=size)
    plt.close(fig)
    buffer.seek(0)
    return np.asarray(Image.open(buffer))[:, :, :3]


SIGNAL = tone(1.0, 16000, 440.0) + 0.3 * tone(1.0, 16000, 3100.0, seed=3)


def test_spectrogram_matrix_is_db_of_ylim_cut_stft():
    stft = librosa.stft(SIGNAL, n_fft=512, hop_length=256, center=False)
    expected = librosa.amplitude_to_db(np.abs(stft[:int(4000 * 2 / 16000 * 257)]), ref=np.max,
                                       top_db=None)
    got = spectral_matrix(SIGNAL, 16000, mode="spectrogram", nfft=512, ylim=4000)
    assert got.shape == (128, 61)
    np.testing.assert_array_equal(got, expected)


def test_mel_matrix_with_delta():
    power = np.abs(librosa.stft(SIGNAL, n_fft=1024, hop_length=512, center=False)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=16000, n_mels=40)
    expected = librosa.power_to_db(librosa.feature.delta(mel, order=2), ref=np.max, top_db=None)
    got = spectral_matrix(SIGNAL, 16000, mode="mel", nfft=1024, nmel=40, delta=2)
    np.testing.assert_array_equal(got, expected)


def test_chroma_matrix():
    power = np.abs(librosa.stft(SIGNAL, n_fft=512, hop_length=256, center=False)) ** 2
    np.testing.assert_array_equal(spectral_matrix(SIGNAL, 16000, mode="chroma", nfft=512),
                                  librosa.feature.chroma_stft(S=power, sr=16000))


def test_delta_on_few_frames_uses_a_narrower_window():
    nfft = 512
    short = SIGNAL[:min_chunk_length(nfft, 1)]  # exactly three frames
    matrix = spectral_matrix(short, 16000, mode="mel", nfft=nfft, delta=1)
    assert matrix.shape[1] == 3 and np.isfinite(matrix).all()


@pytest.mark.parametrize("mode,scale,ylim,cmap,size,nfft", [
    ("spectrogram", "linear", None, "viridis", 227, 512),
    ("spectrogram", "log", 6000, "magma", 150, 256),
    ("mel", "mel", None, "viridis", 227, 512),
    ("mel", "linear", 5000, "gray", 100, 1024),
    ("chroma", "chroma", None, "plasma", 227, 512),
])
def test_plot_equals_matplotlib_rendering(mode, scale, ylim, cmap, size, nfft):
    matrix = spectral_matrix(SIGNAL, 16000, mode=mode, nfft=nfft, ylim=ylim)
    got = plot_matrix(matrix, sample_rate=16000, nfft=nfft, scale=scale, cmap=cmap, size=size,
                      ylim=ylim)
    expected = pyplot_rendering(matrix, sr=16000, nfft=nfft, scale=scale, cmap=cmap, size=size,
                                ylim=ylim)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got.reshape(-1, 3), axis=0)) > 10  # a real picture, not a flat fill


@pytest.mark.parametrize("sr,nfft,ylim,nmel", [(16000, 512, None, 128), (22050, 1024, 3000, 64),
                                               (44100, 2048, None, 256), (8000, 256, 2500, 40)])
def test_cached_filter_banks_give_librosas_results(sr, nfft, ylim, nmel):
    """The matrices with cached filter banks equal librosa's feature functions exactly."""
    rng = np.random.default_rng(sr)
    signals = [tone(0.7, sr, 300.0 + 200 * k, seed=k) + 0.2 * rng.standard_normal(round(0.7 * sr))
               for k in range(3)]
    for signal in signals:  # several chunks: the second and third reuse the cached banks
        stft = librosa.stft(signal, n_fft=nfft, hop_length=nfft // 2, center=False)
        if ylim:
            stft = stft[:int(min(ylim * 2 / sr, 1) * (1 + nfft / 2))]
        power = np.abs(stft) ** 2
        mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=nmel),
                                  ref=np.max, top_db=None)
        np.testing.assert_array_equal(
            spectral_matrix(signal, sr, mode="mel", nfft=nfft, ylim=ylim, nmel=nmel), mel)
        np.testing.assert_array_equal(
            spectral_matrix(signal, sr, mode="chroma", nfft=nfft, ylim=ylim),
            librosa.feature.chroma_stft(S=power, sr=sr))


@pytest.mark.parametrize("length,nfft,dtype", [(512, 512, np.float32), (16000, 512, np.float32),
                                               (22050, 1024, np.float64),
                                               (300000, 256, np.float32)])
def test_stft_is_librosas_bit_for_bit(length, nfft, dtype):
    """The STFT with a cached window: librosa's numbers, dtype and memory layout.

    300000 samples at nfft 256 make librosa split the frames into blocks.
    """
    from deep_spectrum_extractor.images.spectral import limited_stft

    signal = np.random.default_rng(length).standard_normal(length).astype(dtype)
    expected = librosa.stft(signal, n_fft=nfft, hop_length=nfft // 2, center=False)
    got = limited_stft(signal, 16000, nfft, None)
    assert got.dtype == expected.dtype and got.flags.f_contiguous == expected.flags.f_contiguous
    np.testing.assert_array_equal(got, expected)


def test_stft_rejects_non_finite_audio_like_librosa():
    from deep_spectrum_extractor.images.spectral import limited_stft

    signal = np.ones(1024, np.float32)
    signal[5] = np.nan
    with pytest.raises(librosa.util.exceptions.ParameterError, match="not finite"):
        limited_stft(signal, 16000, 512, None)
