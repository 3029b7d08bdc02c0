"""The frozen-graph convention shared by every network deep-spectrum runs.

A model file is a TensorFlow 1.x ``GraphDef`` (``.pb``) with

* one float32 placeholder ``input`` of shape ``[None, None, None, 3]`` holding raw
  RGB pixel values in 0..255 (the plot exactly as drawn),
* all preprocessing inside the graph (for AlexNet: RGB -> BGR and a bilinear resize
  to 227x227, no mean subtraction),
* every extractable layer exposed as an op named ``<layer>/<layer>``.

The graph is imported under the name prefix ``extractor``; a layer ``fc7`` is then the
tensor ``extractor/fc7/fc7:0``.  Layers are discovered with :data:`LAYER_PATTERN`.
"""
from __future__ import annotations

import re

INPUT_NAME = "input"
IMPORT_PREFIX = "extractor"
LAYER_PATTERN = re.compile(r"\b(\w+)/\1\b")


def layer_names(op_names) -> list[str]:
    """Sorted layer names found among graph op names (with or without the prefix).

    An op matches when its name, without the import prefix, is exactly
    ``<layer>/<layer>``; ``fc7/fc7`` makes ``fc7`` a layer, ``pool5`` and
    ``conv1/weights`` do not.
    """
    found = set()
    prefix = IMPORT_PREFIX + "/"
    for name in op_names:
        if name.startswith(prefix):
            name = name[len(prefix):]
        match = LAYER_PATTERN.fullmatch(name)
        if match:
            found.add(match.group(1))
    return sorted(found)
