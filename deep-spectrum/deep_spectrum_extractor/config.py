"""deep.conf: image size, GPU use, backend and the networks the tool knows.

The file is INI::

    [main]
    size = 227          ; plot width and height in pixels
    gpu = 1             ; 1: use a GPU when TensorFlow sees one
    backend = tensorflow

    [tensorflow-nets]
    alexnet = ../../AlexNet.pb
    efficientnet_lite0 = {cache}/efficientnet_lite0.pb

    [tensorflow-layers]
    alexnet = fc7
    efficientnet_lite0 = global_pool

Model paths are resolved relative to the folder of the config file (not the working
directory); ``~``, environment variables and ``{cache}`` -- the model cache folder,
see :func:`model_cache_dir` -- are expanded.  Net names are case-insensitive.
A ``-config`` path that does not exist is created with the defaults.
"""
from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, ModelError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "cli" / "deep.conf"
BACKENDS = ("tensorflow",)
CACHE_ENV = "DEEP_SPECTRUM_CACHE"


def model_cache_dir() -> Path:
    """Folder for models built on first use.

    ``$DEEP_SPECTRUM_CACHE`` if set, else ``$XDG_CACHE_HOME/deep-spectrum``, else
    ``~/.cache/deep-spectrum``.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "deep-spectrum"


@dataclass(frozen=True)
class NetEntry:
    """One network of deep.conf: its name, model file and default layer."""

    name: str
    path: Path
    default_layer: str | None


@dataclass(frozen=True)
class DeepConfig:
    """The parsed contents of a deep.conf file."""

    path: Path
    size: int = 227
    gpu: bool = True
    backend: str = "tensorflow"
    nets: dict[str, NetEntry] = field(default_factory=dict)

    def net(self, name: str) -> NetEntry:
        """The entry for ``-net name`` (case-insensitive); ModelError lists the others."""
        try:
            return self.nets[name.lower()]
        except KeyError:
            available = ", ".join(sorted(self.nets)) or "none"
            raise ModelError(f"net {name!r} is not defined in {self.path}; "
                             f"available: {available}") from None


def load_config(path: str | os.PathLike | None = None) -> DeepConfig:
    """Read deep.conf, creating it with the defaults when ``path`` does not exist."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.exists():
        write_default_config(path)
    if path.is_dir():
        raise ConfigError(f"-config {path} is a directory, not a config file")
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if "main" not in parser:
        raise ConfigError(f"config file {path} has no [main] section")
    main = parser["main"]
    size = _integer(main, "size", 227, path)
    gpu = _integer(main, "gpu", 1, path) == 1
    if size <= 0:
        raise ConfigError(f"config file {path}: [main] size = {size} must be positive")
    backend = main.get("backend", fallback="tensorflow").strip().lower()
    if backend not in BACKENDS:
        raise ConfigError(f"config file {path}: backend {backend!r} is not supported; "
                          f"available: {', '.join(BACKENDS)}")
    section = f"{backend}-nets"
    if section not in parser:
        raise ConfigError(f"config file {path} has no [{section}] section")
    layers = parser[f"{backend}-layers"] if f"{backend}-layers" in parser else {}
    folder = path.resolve().parent
    nets = {name: NetEntry(name, _resolve(value, folder), layers.get(name) or None)
            for name, value in parser[section].items()}
    return DeepConfig(path=path, size=size, gpu=gpu, backend=backend, nets=nets)


def _integer(section, key: str, default: int, path: Path) -> int:
    value = section.get(key, fallback=str(default)).strip()
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"config file {path}: [main] {key} = {value!r} is not an "
                          "integer") from None


def write_default_config(path: Path) -> None:
    """Write the default deep.conf to ``path`` with its model paths made absolute."""
    parser = configparser.ConfigParser()
    with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as handle:
        parser.read_file(handle)
    for name, value in parser["tensorflow-nets"].items():
        if "{cache}" not in value:
            parser["tensorflow-nets"][name] = str(_resolve(value, DEFAULT_CONFIG_PATH.parent))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            parser.write(handle)
    except OSError as exc:
        raise ConfigError(f"cannot create config file {path}: {exc}") from exc


def _resolve(value: str, folder: Path) -> Path:
    value = value.strip().replace("{cache}", str(model_cache_dir()))
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    return path if path.is_absolute() else (folder / path).resolve()
