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


def test_quiet_import_passes_on_everything_but_info_lines(capfd):
    with tf_setup._quiet_import_logs():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1795569443.023989   10465 port.cc:153] oneDNN custom "
                    b"operations are on.\n")
        os.write(2, b"E0000 00:00:1795569443.1 12 cuda.cc:1] a real error\n")
        os.write(2, b"Traceback (most recent call last):\n")
    err = capfd.readouterr().err
    assert err == ("E0000 00:00:1795569443.1 12 cuda.cc:1] a real error\n"
                   "Traceback (most recent call last):\n")


def test_provenance_names_the_kernels(small_model):
    from deep_spectrum_extractor.extraction import provenance
    from deep_spectrum_extractor.settings import FeatureSettings, RunOptions

    record = provenance(FeatureSettings(), RunOptions(), small_model)
    assert record["settings"]["tensorflow_onednn"] == tf_setup.onednn_enabled()
    assert record["settings"]["tensorflow_threads"] == tf_setup.default_threads()
