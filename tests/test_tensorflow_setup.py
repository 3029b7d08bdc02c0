"""How TensorFlow is set up: kernels chosen for the machine, a quiet import, provenance."""
import json
import os
import subprocess
import sys

from conftest import REPO
from deep_spectrum_extractor.backend import tf as tf_setup

PROBE = ("import json; from deep_spectrum_extractor.backend.tf import tensorflow, onednn_enabled;"
         "before = onednn_enabled(); tensorflow(); print(json.dumps([before, onednn_enabled()]))")


def probe(**environment):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(environment, PYTHONPATH=str(REPO / "deep-spectrum"))
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_onednn_follows_the_machine_and_the_user_wins():
    (before, after), stderr = probe()
    # the prediction before the import is what TensorFlow then reports
    assert before == after == tf_setup.onednn_by_default()
    assert stderr == ""  # TensorFlow's import-time info lines are not shown
    assert probe(TF_ENABLE_ONEDNN_OPTS="0")[0] == [False, False]
    assert probe(TF_ENABLE_ONEDNN_OPTS="1")[0] == [True, True]


#: What TensorFlow's GPU build writes on a machine without CUDA (the first two seen with
#: 2.21.0 here, the registrations reported by 2.17-2.18), all of it hidden
NO_GPU_NOISE = (
    b"I0000 00:00:1795809208.997512    2825 cudart_stub.cc:31] Could not find cuda drivers "
    b"on your machine, GPU will not be used.\n",
    b"E0000 00:00:1795809216.571011    2888 cuda_platform.cc:52] failed call to cuInit: "
    b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"E0000 00:00:1795809216.571011    2888 cuda_platform.cc:52] failed call to cuInit: "
    b"INTERNAL: CUDA error: Failed call to cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable "
    b"device is detected\n",
    b"E0000 00:00:1729000000.123456    4242 cuda_dnn.cc:8310] Unable to register cuDNN "
    b"factory: Attempting to register factory for plugin cuDNN when one has already been "
    b"registered\n",
    b"E0000 00:00:1729000000.123456    4242 computation_placer.cc:177] computation placer "
    b"already registered. Please check linkage and avoid linking the same target more than "
    b"once.\n",
)
#: A GPU that is there but cannot be used: shown
DRIVER_MISMATCH = (
    "E0000 00:00:1795809216.571011    2888 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: system "
    "has unsupported display driver / cuda driver combination\n")


def test_quiet_import_passes_on_everything_but_info_lines(capfd):
    with tf_setup._quiet_import_logs():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1795569443.023989   10465 port.cc:153] oneDNN custom "
                    b"operations are on.\n")
        os.write(2, b"E0000 00:00:1795569443.1 12 cuda.cc:1] a real error\n")
        for line in NO_GPU_NOISE:
            os.write(2, line)
        os.write(2, DRIVER_MISMATCH.encode())
        os.write(2, b"Traceback (most recent call last):\n")
    err = capfd.readouterr().err
    assert err == ("E0000 00:00:1795569443.1 12 cuda.cc:1] a real error\n"
                   + DRIVER_MISMATCH + "Traceback (most recent call last):\n")


SESSION_PROBE = """
import json
from deep_spectrum_extractor.backend.tf import tensorflow
tf = tensorflow()
devices = [device.device_type for device in tf.config.list_physical_devices()]
graph = tf.Graph()
with graph.as_default():
    x = tf.constant([[1.0, 2.0]])
    y = tf.matmul(x, x, transpose_b=True)
config = tf.compat.v1.ConfigProto()
config.gpu_options.allow_growth = True
with tf.compat.v1.Session(graph=graph, config=config) as session:
    value = session.run(y)
print(json.dumps([devices, value.tolist(), tf.test.is_built_with_cuda()]))
"""


def test_no_gpu_noise_when_devices_are_listed_and_a_session_runs():
    """Without CUDA, TensorFlow's GPU build says so on stderr (at the import and when the
    devices are first listed); none of it is shown, and the graph runs on the CPU."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO / "deep-spectrum")
    result = subprocess.run([sys.executable, "-c", SESSION_PROBE], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    devices, value, _ = json.loads(result.stdout)
    assert "CPU" in devices and value == [[5.0]]
    for noise in ("cuda drivers", "cuInit", "factory", "computation placer", "absl::"):
        assert noise not in result.stderr, result.stderr
    assert result.stderr == ""


def test_provenance_names_the_kernels(small_model):
    from deep_spectrum_extractor.extraction import provenance
    from deep_spectrum_extractor.settings import FeatureSettings, RunOptions

    record = provenance(FeatureSettings(), RunOptions(), small_model)
    assert record["settings"]["tensorflow_onednn"] == tf_setup.onednn_enabled()
    assert record["settings"]["tensorflow_threads"] == tf_setup.default_threads()
