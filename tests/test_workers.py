"""Worker processes: the warm-up plot they draw while the network loads."""
import pytest

from deep_spectrum_extractor import pipeline
from deep_spectrum_extractor.images.spectral import mel_filter_bank
from deep_spectrum_extractor.settings import FeatureSettings


@pytest.mark.parametrize("renderer", ["numpy", "matplotlib"])
@pytest.mark.parametrize("options", [dict(mode="mel"), dict(mode="spectrogram", ylim=4000),
                                     dict(mode="chroma", delta=2), dict(mode="mel", nmel=64,
                                                                        sample_rate=22050)])
def test_warm_up_draws_one_plot_with_the_run_settings(options, renderer):
    mel_filter_bank.cache_clear()
    pipeline._init_worker(FeatureSettings(**options), renderer)
    if options["mode"] == "mel":  # the run's filter bank is ready for the first file
        rate = options.get("sample_rate", 16000)
        assert mel_filter_bank.cache_info().currsize == 1
        mel_filter_bank(rate, 512 if rate == 16000 else 1024, options.get("nmel", 128))
        assert mel_filter_bank.cache_info().hits == 1


def test_warm_up_never_fails_a_run():
    # -ylim 10 keeps no frequency row at 16 kHz: the warm-up fails quietly, real files say why
    pipeline._init_worker(FeatureSettings(mode="spectrogram", ylim=10), "numpy")
