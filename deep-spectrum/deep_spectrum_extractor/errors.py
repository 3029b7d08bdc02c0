"""Exceptions raised by deep-spectrum.

Every error the tool raises on purpose derives from :class:`DeepSpectrumError`, so a
caller (or the CLI) can tell a user mistake from a bug with one ``except`` clause.
Messages name the offending value and, where there is one, the fix.
"""
import errno



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


class DeepSpectrumWarning(UserWarning):
    """Something the user should know that does not stop the run (a hop longer than the
    window, label rows naming no input ...); the commands print it as a warning line."""


class OutputError(DeepSpectrumError):
    """An output cannot be written: a read-only folder, a full disk, a failed rename, or
    another run writing the same output.  Nothing half-written is left in its place."""


#: Exit status of a command stopped by a usage error (bad option, config, label file ...).
EXIT_USAGE = 2
#: Exit status of a command stopped because an output cannot be written.
EXIT_OUTPUT = 3


def exit_status(exc: DeepSpectrumError) -> int:
    """The exit status of a command stopped by ``exc``: 3 for an output, 2 otherwise."""
    return EXIT_OUTPUT if isinstance(exc, OutputError) else EXIT_USAGE


#: What an errno means for someone reading or writing a file there.
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EXDEV: "it cannot be moved across file systems",
    errno.EIO: "input/output error of the device",
    errno.EFBIG: "the file is too large for the file system",
}


def describe_os_error(exc: OSError) -> str:
    """A short, plain reason for an OSError (``"no space left on the device"``)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return exc.strerror or str(exc)
