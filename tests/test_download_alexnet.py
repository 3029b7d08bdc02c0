"""download_alexnet.sh against a local HTTP server: download, verify, resume, convert.

The server (127.0.0.1, a thread of this process) serves a small AlexNet-topology
caffemodel and its deploy.prototxt, honours ``Range`` requests like a real web
server, and can be told to cut transfers short or to ignore ranges.  The script is
pointed at it through its environment variables; nothing leaves the machine.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))
sys.path.insert(0, str(REPO / "convert-models"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import caffe_reference as ref  # noqa: E402
import fetch_url  # noqa: E402
from deep_spectrum_extractor.backend.alexnet import LAYERS, SMALL_WIDTHS  # noqa: E402
from deep_spectrum_extractor.backend.convention import layer_names  # noqa: E402

SCRIPT = REPO / "download_alexnet.sh"
#: What the script picks when ALEXNET_DOWNLOADER is unset: curl, else wget, else Python.
DEFAULT_DOWNLOADER = next((tool for tool in ("curl", "wget") if shutil.which(tool)), "python")
#: Every downloader; curl and wget only where they are installed.
DOWNLOADERS = [
    pytest.param(tool, marks=pytest.mark.skipif(shutil.which(tool) is None,
                                                reason=f"{tool} is not installed"))
    for tool in ("curl", "wget")
] + ["python"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # the http.server API
        server = self.server
        byte_range = self.headers.get("Range")
        server.requests.append((self.path, byte_range))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", byte_range or "")
        if match and server.ranges:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if server.cut_at is not None:
            # Send only up to the absolute offset cut_at, then drop the connection.
            body = body[:max(server.cut_at - start, 0)]
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass


class LocalServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 with a few failure modes.

    ``files`` maps paths to contents, ``requests`` records (path, Range header),
    ``ranges = False`` makes it ignore Range headers, ``cut_at = N`` makes every
    transfer stop at byte N of the file and drop the connection.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = {}
        self.requests = []
        self.ranges = True
        self.cut_at = None
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def model_files():
    weights = ref.random_caffe_weights(SMALL_WIDTHS, seed=3)
    return {
        "caffemodel": ref.caffemodel_bytes(weights, v1=True, training_net=True),
        "prototxt": ref.prototxt_text(SMALL_WIDTHS).encode(),
        "corrupt": np.random.default_rng(1).bytes(20000),
    }


@pytest.fixture
def server(model_files):
    server = LocalServer()
    server.files.update({
        "/models/bvlc_alexnet.caffemodel": model_files["caffemodel"],
        "/models/deploy.prototxt": model_files["prototxt"],
        "/models/corrupt.caffemodel": model_files["corrupt"],
    })
    yield server
    server.close()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
def env(tmp_path, server, model_files):
    """The script's environment: local URLs, temporary paths, this interpreter."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.lower().endswith("_proxy") and not key.startswith("ALEXNET_")}
    environment.update({
        "PYTHON": sys.executable,
        "ALEXNET_CAFFEMODEL_URL": server.url("/models/bvlc_alexnet.caffemodel"),
        "ALEXNET_PROTOTXT_URL": server.url("/models/deploy.prototxt"),
        "ALEXNET_SHA1": sha1(model_files["caffemodel"]),
        "ALEXNET_OUTPUT": str(tmp_path / "out" / "AlexNet.pb"),
        "ALEXNET_DOWNLOAD_DIR": str(tmp_path / "downloads"),
        "NO_PROXY": "127.0.0.1,localhost",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    return environment


def run_script(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_converted(output: Path) -> None:
    """A frozen graph with AlexNet's layers and the small network's widths."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(output.read_bytes())
    assert layer_names(node.name for node in graph_def.node) == sorted(LAYERS)
    fc8_weights = next(node for node in graph_def.node if node.name == "fc8/weights")
    dims = [d.size for d in fc8_weights.attr["value"].tensor.tensor_shape.dim]
    assert dims == [SMALL_WIDTHS["fc7"], SMALL_WIDTHS["fc8"]]


def test_help():
    completed = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert completed.returncode == 0
    assert completed.stdout.startswith("Usage: download_alexnet.sh")
    for text in ("--force", "--caffemodel", "--no-verify", "ALEXNET_SHA1", "PYTHON"):
        assert text in completed.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown argument '--frobnicate'" in bad.stderr


def test_download_converts_and_a_rerun_does_nothing(env, server, model_files):
    completed = run_script(env)
    assert completed.returncode == 0, completed.stderr
    output = Path(env["ALEXNET_OUTPUT"])
    assert_converted(output)
    downloads = Path(env["ALEXNET_DOWNLOAD_DIR"])
    assert (downloads / "bvlc_alexnet.caffemodel").read_bytes() == model_files["caffemodel"]
    assert (downloads / "deploy.prototxt").read_bytes() == model_files["prototxt"]
    assert not list(downloads.glob("*.part"))
    assert f"with {DEFAULT_DOWNLOADER}" in completed.stderr
    assert "SHA-1 ok" in completed.stderr
    assert f"done: {output}" in completed.stderr

    requests = len(server.requests)
    stamp = output.stat().st_mtime_ns
    again = run_script(env)
    assert again.returncode == 0, again.stderr
    assert "already exists; nothing to do (use --force" in again.stderr
    assert len(server.requests) == requests
    assert output.stat().st_mtime_ns == stamp


def test_wrong_checksum_is_an_error_and_the_file_is_set_aside(env, server, model_files):
    env["ALEXNET_SHA1"] = "0123456789abcdef0123456789abcdef01234567"
    completed = run_script(env)
    assert completed.returncode == 1
    actual = sha1(model_files["caffemodel"])
    assert (f"checksum mismatch for {env['ALEXNET_CAFFEMODEL_URL']}: expected SHA-1 "
            f"0123456789abcdef0123456789abcdef01234567, got {actual}") in completed.stderr
    downloads = Path(env["ALEXNET_DOWNLOAD_DIR"])
    assert not (downloads / "bvlc_alexnet.caffemodel").exists()
    assert (downloads / "bvlc_alexnet.caffemodel.bad").read_bytes() == model_files["caffemodel"]
    assert not Path(env["ALEXNET_OUTPUT"]).exists()

    # The next run downloads it again (and fails again with this checksum).
    requests = len(server.requests)
    assert run_script(env).returncode == 1
    assert ("/models/bvlc_alexnet.caffemodel", None) in server.requests[requests:]


def test_corrupt_file_with_matching_checksum_fails_in_conversion(env, model_files):
    env["ALEXNET_CAFFEMODEL_URL"] = env["ALEXNET_CAFFEMODEL_URL"].replace(
        "bvlc_alexnet", "corrupt")
    env["ALEXNET_SHA1"] = sha1(model_files["corrupt"]).upper()  # case does not matter
    env["ALEXNET_DOWNLOADER"] = "python"
    completed = run_script(env)
    assert completed.returncode == 1
    assert "SHA-1 ok" in completed.stderr
    assert "with python" in completed.stderr
    assert "not a valid caffemodel" in completed.stderr
    assert f"conversion failed; {env['ALEXNET_OUTPUT']} was not written" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not Path(env["ALEXNET_OUTPUT"]).exists()
    assert not list(Path(env["ALEXNET_OUTPUT"]).parent.glob("*.part"))


def test_interrupted_download_is_resumed(env, server, model_files):
    size = len(model_files["caffemodel"])
    server.cut_at = size // 3
    completed = run_script(env)
    assert completed.returncode == 1
    assert "was interrupted" in completed.stderr
    assert "run download_alexnet.sh again to resume it" in completed.stderr
    part = Path(env["ALEXNET_DOWNLOAD_DIR"]) / "bvlc_alexnet.caffemodel.part"
    assert part.read_bytes() == model_files["caffemodel"][:size // 3]
    assert not (part.parent / "bvlc_alexnet.caffemodel").exists()
    assert not Path(env["ALEXNET_OUTPUT"]).exists()

    server.cut_at = None
    requests = len(server.requests)
    completed = run_script(env)
    assert completed.returncode == 0, completed.stderr
    assert f"resuming {env['ALEXNET_CAFFEMODEL_URL']} ({size // 3} bytes" in completed.stderr
    assert server.requests[requests:] == [("/models/bvlc_alexnet.caffemodel",
                                           f"bytes={size // 3}-")]
    assert (part.parent / "bvlc_alexnet.caffemodel").read_bytes() == model_files["caffemodel"]
    assert not part.exists()
    assert_converted(Path(env["ALEXNET_OUTPUT"]))


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_every_downloader_keeps_an_interrupted_download(env, server, model_files,
                                                        downloader):
    env["ALEXNET_DOWNLOADER"] = downloader
    server.cut_at = 5000
    completed = run_script(env, "--download-only")
    assert completed.returncode == 1
    assert "was interrupted" in completed.stderr
    part = Path(env["ALEXNET_DOWNLOAD_DIR"]) / "bvlc_alexnet.caffemodel.part"
    assert part.read_bytes() == model_files["caffemodel"][:5000]
    assert not (part.parent / "bvlc_alexnet.caffemodel").exists()


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_every_downloader_resumes(env, server, model_files, downloader):
    env["ALEXNET_DOWNLOADER"] = downloader
    size = len(model_files["caffemodel"])
    downloads = Path(env["ALEXNET_DOWNLOAD_DIR"])
    downloads.mkdir()
    (downloads / "deploy.prototxt").write_bytes(model_files["prototxt"])
    part = downloads / "bvlc_alexnet.caffemodel.part"
    part.write_bytes(model_files["caffemodel"][:size // 2])
    completed = run_script(env, "--download-only")
    assert completed.returncode == 0, completed.stderr
    assert server.requests == [("/models/bvlc_alexnet.caffemodel", f"bytes={size // 2}-")]
    assert (downloads / "bvlc_alexnet.caffemodel").read_bytes() == model_files["caffemodel"]
    assert "not converted: --download-only" in completed.stderr
    assert not Path(env["ALEXNET_OUTPUT"]).exists()


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_stale_partial_file_is_replaced(env, server, model_files, downloader):
    # A .part as long as the real file but with other bytes: the server refuses to
    # resume (416) or the checksum fails; either way the script starts over once.
    env["ALEXNET_DOWNLOADER"] = downloader
    downloads = Path(env["ALEXNET_DOWNLOAD_DIR"])
    downloads.mkdir()
    (downloads / "deploy.prototxt").write_bytes(model_files["prototxt"])
    (downloads / "bvlc_alexnet.caffemodel.part").write_bytes(model_files["caffemodel"][::-1])
    completed = run_script(env, "--download-only")
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"starting over|downloading it again from the start", completed.stderr)
    assert (downloads / "bvlc_alexnet.caffemodel").read_bytes() == model_files["caffemodel"]
    assert server.requests[-1] == ("/models/bvlc_alexnet.caffemodel", None)


def test_complete_partial_file_is_not_downloaded_again(env, server, model_files):
    downloads = Path(env["ALEXNET_DOWNLOAD_DIR"])
    downloads.mkdir()
    (downloads / "deploy.prototxt").write_bytes(model_files["prototxt"])
    (downloads / "bvlc_alexnet.caffemodel.part").write_bytes(model_files["caffemodel"])
    completed = run_script(env, "--download-only")
    assert completed.returncode == 0, completed.stderr
    assert "bvlc_alexnet.caffemodel.part is complete (SHA-1 ok)" in completed.stderr
    assert server.requests == []
    assert (downloads / "bvlc_alexnet.caffemodel").read_bytes() == model_files["caffemodel"]


def test_server_without_ranges_restarts_the_download(env, server, model_files):
    server.ranges = False
    downloads = Path(env["ALEXNET_DOWNLOAD_DIR"])
    downloads.mkdir()
    (downloads / "bvlc_alexnet.caffemodel.part").write_bytes(b"stale partial data")
    completed = run_script(env, "--download-only")
    assert completed.returncode == 0, completed.stderr
    assert (downloads / "bvlc_alexnet.caffemodel").read_bytes() == model_files["caffemodel"]


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_missing_file_on_the_server(env, server, downloader):
    env["ALEXNET_DOWNLOADER"] = downloader
    env["ALEXNET_PROTOTXT_URL"] = server.url("/models/nothing.prototxt")
    completed = run_script(env)
    assert completed.returncode == 1
    status = {"curl": 22, "wget": 8, "python": 3}[downloader]  # "the server said no"
    url = env["ALEXNET_PROTOTXT_URL"]
    assert f"cannot download {url} ({downloader} exit status {status})" in completed.stderr
    assert not list(Path(env["ALEXNET_DOWNLOAD_DIR"]).iterdir())
    assert not Path(env["ALEXNET_OUTPUT"]).exists()


def test_local_caffemodel_without_network(env, tmp_path, model_files):
    # Nothing listens on these addresses: the run must not need them.
    env["ALEXNET_CAFFEMODEL_URL"] = "http://127.0.0.1:9/unreachable.caffemodel"
    env["ALEXNET_PROTOTXT_URL"] = "http://127.0.0.1:9/unreachable.prototxt"
    caffemodel = tmp_path / "mine.caffemodel"
    caffemodel.write_bytes(model_files["caffemodel"])
    prototxt = tmp_path / "mine.prototxt"
    prototxt.write_bytes(model_files["prototxt"])
    output = Path(env["ALEXNET_OUTPUT"])
    output.parent.mkdir()
    output.write_bytes(b"an older graph")

    kept = run_script(env, "--caffemodel", str(caffemodel), "--prototxt", str(prototxt))
    assert kept.returncode == 0
    assert "already exists; nothing to do" in kept.stderr
    assert output.read_bytes() == b"an older graph"

    wrong = dict(env, ALEXNET_SHA1="f" * 40)
    refused = run_script(wrong, "--force", "--caffemodel", str(caffemodel))
    assert refused.returncode == 1
    assert (f"checksum mismatch for {caffemodel}: expected SHA-1 {'f' * 40}, "
            f"got {sha1(model_files['caffemodel'])}") in refused.stderr
    assert caffemodel.exists()  # the user's own file is left alone
    assert output.read_bytes() == b"an older graph"

    completed = run_script(env, "--force", "--caffemodel", str(caffemodel),
                           "--prototxt", str(prototxt))
    assert completed.returncode == 0, completed.stderr
    assert_converted(output)
    assert not Path(env["ALEXNET_DOWNLOAD_DIR"]).exists()


def test_fetch_url_resumes_in_process(tmp_path, server, model_files):
    data = model_files["caffemodel"]
    target = tmp_path / "file.part"
    server.cut_at = 1000
    with pytest.raises(fetch_url.DownloadError, match="interrupted after 1000 of"):
        fetch_url.fetch(server.url("/models/bvlc_alexnet.caffemodel"), target)
    assert target.read_bytes() == data[:1000]
    server.cut_at = None
    assert fetch_url.fetch(server.url("/models/bvlc_alexnet.caffemodel"), target) == len(data)
    assert target.read_bytes() == data
    # Complete already: the server answers 416 and the file stays as it is.
    assert fetch_url.fetch(server.url("/models/bvlc_alexnet.caffemodel"), target) == len(data)
    assert server.requests[-1][1] == f"bytes={len(data)}-"
    assert target.read_bytes() == data
    with pytest.raises(fetch_url.DownloadError, match="HTTP error 404"):
        fetch_url.fetch(server.url("/missing"), tmp_path / "missing")
