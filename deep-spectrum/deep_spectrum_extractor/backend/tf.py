"""The one place TensorFlow is imported, quietly and with the kernels chosen for the machine."""
from __future__ import annotations

import os
import platform
import re
import sys
import tempfile


def onednn_by_default() -> bool:
    """Whether deep-spectrum turns TensorFlow's oneDNN CPU kernels on for this machine.

    TensorFlow enables them by itself only on x86 CPUs with AVX-512 VNNI/BF16 or AMX; on
    other x86-64 CPUs (AVX2, e.g. AMD EPYC) they still run AlexNet's convolutions about
    a fifth faster than the default Eigen kernels (``benchmarks/pipeline_benchmark.py``).
    Linux x86-64 only: the only platform where this was measured.
    """
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def prepare_environment() -> None:
    """Set the variables TensorFlow reads when it is imported; the user's values win.

    ``TF_CPP_MIN_LOG_LEVEL=2`` hides C++ info logs; ``TF_ENABLE_ONEDNN_OPTS=1`` where
    :func:`onednn_by_default` says so.  Call it before anything imports TensorFlow.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if onednn_by_default():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def tensorflow():
    """Import TensorFlow (see :func:`prepare_environment`) with Python info logs silenced.

    The first import also lists the GPUs, so that the CUDA driver is looked for while
    the import's noise is filtered: on a machine without one, TensorFlow's GPU build
    says so in an error line at that moment (see ``_IMPORT_NOISE``).  Listing the
    physical devices does not initialise them: memory growth and the visible devices can
    still be set afterwards.
    """
    prepare_environment()
    if "tensorflow" not in sys.modules:
        with _quiet_import_logs():
            import tensorflow as tf

            try:
                tf.config.list_physical_devices("GPU")
            except RuntimeError:
                pass  # the caller's own listing meets it again and decides
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


# Lines TensorFlow's C++ code writes while it is imported, before its logging honours
# TF_CPP_MIN_LOG_LEVEL: absl's notice and info ("I...") lines such as "oneDNN custom
# operations are on" or, from the GPU build, "Could not find cuda drivers on your machine,
# GPU will not be used".  And the GPU build's error lines that only mean "no GPU here":
# cuInit failing because there is no driver library (303, CUDA_ERROR_SHARED_OBJECT_INIT_FAILED
# from TensorFlow's stub) or no device (CUDA_ERROR_NO_DEVICE), and the CUDA plugins'
# duplicate registrations that TensorFlow 2.17-2.18 reported at every import ("Unable to
# register cuDNN factory", "... computation placer already registered").  Everything else
# written then, other cuInit failures included, is passed on.
_IMPORT_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|I\d{4} \d\d:\d\d:\d\d"
    r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ("
    r"failed call to cuInit: .*(UNKNOWN ERROR \(303\)|CUDA_ERROR_NO_DEVICE\b)"
    r"|Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for "
    r"plugin cu(DNN|FFT|BLAS) when one has already been registered"
    r"|computation placer already registered))")


class _quiet_import_logs:
    """Capture file descriptor 2 around TensorFlow's import; replay all but its info lines."""

    def __enter__(self):
        sys.stderr.flush()
        self._capture = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._capture.fileno(), 2)

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._capture.seek(0)
        text = self._capture.read().decode("utf-8", "replace")
        self._capture.close()
        kept = [line for line in text.splitlines(keepends=True) if not _IMPORT_NOISE.match(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def onednn_enabled() -> bool:
    """Whether TensorFlow in this process runs (or, not yet imported, will run) oneDNN kernels.

    Like the thread count, this changes the last bits of float32 results, so it is part of
    provenance.
    """
    if "tensorflow" in sys.modules:
        try:
            from tensorflow.python.util import _pywrap_util_port
            return bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    prepare_environment()
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("1", "true")


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
