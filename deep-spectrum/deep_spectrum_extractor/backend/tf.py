"""The one place TensorFlow is imported, quietly."""
from __future__ import annotations

import os


def tensorflow():
    """Import TensorFlow with its C++ and Python info logs silenced; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf
