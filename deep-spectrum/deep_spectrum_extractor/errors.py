"""Exceptions raised by deep-spectrum.

Every error the tool raises on purpose derives from :class:`DeepSpectrumError`, so a
caller (or the CLI) can tell a user mistake from a bug with one ``except`` clause.
Messages name the offending value and, where there is one, the fix.
"""


class DeepSpectrumError(Exception):
    """Root of all deep-spectrum errors."""


class ParameterError(DeepSpectrumError, ValueError):
    """A setting has an invalid value (``-nfft``, ``-t``, ``-mode`` ...)."""


class ConfigError(DeepSpectrumError):
    """The configuration file (deep.conf) is unreadable or incomplete."""


class ModelError(DeepSpectrumError):
    """A network or layer cannot be used: missing file, unknown net or layer."""


class LabelError(DeepSpectrumError):
    """A label source is malformed or does not cover every input file."""


class AudioError(DeepSpectrumError):
    """An audio file cannot be read or yields nothing to extract from."""


class ImageError(DeepSpectrumError):
    """An image file cannot be read or converted to RGB (image features)."""
