"""Deep Spectrum features: audio plotted as spectrogram images and fed to an ImageNet CNN.

``extract`` and ``iter_extract`` (see :mod:`deep_spectrum_extractor.api`) are the Python
API; ``extract_ds_features`` is the command line.  Importing the package imports neither
TensorFlow nor librosa.
"""

__version__ = "0.3.0"


def __getattr__(name):
    if name in ("extract", "iter_extract"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'deep_spectrum_extractor' has no attribute {name!r}")


__all__ = ["extract", "iter_extract", "__version__"]
