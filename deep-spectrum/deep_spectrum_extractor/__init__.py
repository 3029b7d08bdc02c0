"""Deep Spectrum features: audio plotted as spectrogram images and fed to an ImageNet CNN.

``DeepSpectrum`` (settings and network loaded once, then ``process_signal``,
``process_file``, ``process_files``, ``process_folder``), ``extract`` and ``iter_extract``
(see :mod:`deep_spectrum_extractor.api`) are the Python API; ``extract_ds_features`` is
the command line.  Importing the package imports neither TensorFlow nor librosa.
"""

__version__ = "0.5.0"


def __getattr__(name):
    if name in ("DeepSpectrum", "extract", "iter_extract"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'deep_spectrum_extractor' has no attribute {name!r}")


__all__ = ["DeepSpectrum", "extract", "iter_extract", "__version__"]
