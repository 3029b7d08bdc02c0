"""The one place TensorFlow is imported, quietly."""
from __future__ import annotations

import os


def tensorflow():
    """Import TensorFlow with its C++ and Python info logs silenced; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def default_threads() -> int:
    """TensorFlow's intra-op threads in a process that does not set them.

    ``TF_NUM_INTRAOP_THREADS`` when set, else the CPUs this process may run on.  The
    count can change the last bits of float32 results, so it is part of provenance.
    """
    configured = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
