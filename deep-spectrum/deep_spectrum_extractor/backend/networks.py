"""Which model file a ``-net`` uses, and building the ones that can be built offline."""
from __future__ import annotations

from pathlib import Path

from ..config import DeepConfig, NetEntry
from ..errors import ModelError


def _build_efficientnet_lite0(path: Path) -> Path:
    from .efficientnet import ensure_efficientnet_lite0

    return ensure_efficientnet_lite0(path)


#: Networks whose model file is built on first use from weights installed with a package.
BUILDERS = {"efficientnet_lite0": _build_efficientnet_lite0}
OFFLINE_NET = "efficientnet_lite0"
#: Keras applications that convert-models/export_keras.py turns into model files.
KERAS_NETS = ("vgg16", "vgg19", "resnet50", "inception_resnet_v2", "xception", "densenet121",
              "densenet169", "densenet201", "mobilenet", "mobilenet_v2")


def resolve_model(config: DeepConfig, net: str) -> tuple[NetEntry, Path]:
    """The deep.conf entry for ``net`` and its model file, built first if it can be.

    A missing file of a net that cannot be built raises ModelError saying how to get
    it: ``download_alexnet.sh`` for AlexNet, or the offline network.
    """
    entry = config.net(net)
    if entry.path.is_file():
        return entry, entry.path
    if entry.name in BUILDERS:
        return entry, BUILDERS[entry.name](entry.path)
    if entry.path.exists():
        raise ModelError(f"model file {entry.path} for net {entry.name!r} is not a file")
    if entry.name == "alexnet":
        hint = ("run ./download_alexnet.sh in the repository to download BVLC AlexNet and "
                f"convert it to {entry.path}")
    elif entry.name in KERAS_NETS:
        hint = (f"export it with: python convert-models/export_keras.py {entry.name} -o "
                f"{entry.path} (ImageNet weights are downloaded by Keras, or give a local "
                "weights file with --weights FILE)")
    else:
        hint = (f"create it or point [{config.backend}-nets] {entry.name} in {config.path} "
                "at an existing .pb")
    raise ModelError(f"model file {entry.path} for net {entry.name!r} (from {config.path}) "
                     f"does not exist: {hint}; or use the offline network with "
                     f"-net {OFFLINE_NET}")
