"""Every way of running writes what the recorded run wrote (``tests/golden/``).

``tests/golden/make_golden.py`` recorded, with the code of the day, the outputs of every
way of running on a generated corpus: one machine with ``-np 2`` (ARFF, CSV, Parquet,
NPZ) and ``-np 1``, whole files, mel, resampled, a label file, a killed run resumed,
sharded runs merged, a Dask cluster and ``deepspectrum features``.  Each test here
rebuilds the corpus and the model with the same code, runs one case of the same list
(:data:`make_golden.CASES`) and compares the result with the recording:

* file names, exit statuses, headers / attributes / schemas, names, timestamps and label
  columns: always exactly;
* feature values: exactly (float32 ``np.array_equal``, and the text rows byte for byte)
  when ``machine.json`` describes this machine; else within ``rtol=1e-5`` (see
  :func:`close_enough`).

Provenance (ARFF ``%`` lines, Parquet schema metadata, the NPZ ``provenance`` array,
sidecar JSON files) is not compared.  Re-record, on purpose only, with
``python tests/golden/make_golden.py``.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
if str(GOLDEN) not in sys.path:
    sys.path.insert(0, str(GOLDEN))

import make_golden  # noqa: E402
from make_golden import CASES, NPZ_PROVENANCE, normalise, run_case, strip_arff  # noqa: E402

RTOL = 1e-5
RERECORD = "(recorded by python tests/golden/make_golden.py)"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The corpus, its label file and the model's deep.conf, as make_golden builds them."""
    root = tmp_path_factory.mktemp("golden_inputs")
    audio, labels = make_golden.make_corpus(root / "corpus")
    config = make_golden.make_model(root)
    return audio, labels, config


@pytest.fixture(scope="module")
def recorded_cases():
    path = GOLDEN / "cases.json"
    assert path.exists(), f"{path} is missing {RERECORD}"
    return json.loads(path.read_text())


def machine_differences() -> list[str]:
    """What differs between this machine and the one the goldens were recorded on."""
    path = GOLDEN / "machine.json"
    assert path.exists(), f"{path} is missing {RERECORD}"
    recorded, here = json.loads(path.read_text()), make_golden.machine()
    return [key for key in sorted(set(recorded) | set(here)) if recorded.get(key) != here.get(key)]


@pytest.fixture(scope="module")
def exact():
    """Whether the feature values must be identical (see :func:`close_enough`)."""
    differences = machine_differences()
    if differences:
        warnings.warn(f"tests/golden was recorded on another kind of machine "
                      f"({', '.join(differences)} differ): feature values are compared "
                      f"with rtol={RTOL}, not exactly", stacklevel=2)
    return not differences


def close_enough(fresh: np.ndarray, stored: np.ndarray, exact: bool, what: str) -> None:
    """Feature values: identical on the recording's kind of machine, else within RTOL.

    Why not always exact: float32 sums in the network's convolutions and matrix products
    depend on the kernels TensorFlow picks for the CPU (oneDNN or Eigen, AVX2 or AVX-512,
    FMA or not, the thread count) and on the library versions, which change the order of
    additions and so the last bits, never more than a few ulps per layer.  The same CPU
    model, flags, thread count and versions give the same kernels, so there nothing may
    change.  Elsewhere: ``rtol=1e-5``, with an absolute floor of ``1e-5`` times the
    largest stored value, since ReLU outputs near zero have no relative precision.
    """
    assert fresh.shape == stored.shape, f"{what}: shape {fresh.shape} != {stored.shape}"
    assert fresh.dtype == stored.dtype == np.float32, f"{what}: {fresh.dtype} / {stored.dtype}"
    if exact:
        if not np.array_equal(fresh, stored):
            rows, cols = np.nonzero(fresh != stored)
            raise AssertionError(f"{what}: {len(rows)} feature value(s) differ, first at "
                                 f"row {rows[0]}, neuron {cols[0]}: {fresh[rows[0], cols[0]]!r}"
                                 f" != {stored[rows[0], cols[0]]!r}")
    else:
        scale = float(np.abs(stored).max()) if stored.size else 0.0
        np.testing.assert_allclose(fresh, stored, rtol=RTOL, atol=RTOL * scale, err_msg=what)


# --- the formats --------------------------------------------------------------------------

def split_text(data: bytes, arff: bool) -> tuple[list[bytes], list[str], list[list[str]]]:
    """Header lines, column names and the parsed data rows of an ARFF or CSV file."""
    lines = data.splitlines(keepends=True)
    if arff:
        end = next(i for i, line in enumerate(lines) if line.strip().lower() == b"@data") + 1
        columns = [line.split()[1].decode() for line in lines[:end]
                   if line.lower().startswith(b"@attribute")]
        quote = "'"
    else:
        end, quote = 1, '"'
        columns = next(csv.reader([lines[0].decode()]))
    body = [line for line in lines[end:] if line.strip()]
    rows = list(csv.reader(io.StringIO(b"".join(body).decode()), quotechar=quote))
    return lines[:end], columns, rows


def compare_text(fresh: Path, stored: Path, exact: bool) -> None:
    arff = stored.suffix == ".arff"
    new = strip_arff(fresh.read_bytes()) if arff else fresh.read_bytes()
    old = stored.read_bytes()
    new_header, columns, new_rows = split_text(new, arff)
    old_header, old_columns, old_rows = split_text(old, arff)
    assert new_header == old_header, f"{stored}: header differs"
    assert columns == old_columns
    assert len(new_rows) == len(old_rows), f"{stored}: {len(new_rows)} rows, {len(old_rows)} stored"
    features = [i for i, name in enumerate(columns) if name.startswith("neuron_")]
    assert features, f"{stored}: no neuron_ columns"
    others = [i for i in range(len(columns)) if i not in features]
    for number, (a, b) in enumerate(zip(new_rows, old_rows)):
        assert len(a) == len(b) == len(columns), f"{stored}: row {number} has {len(a)} fields"
        assert [a[i] for i in others] == [b[i] for i in others], \
            f"{stored}: row {number}: name, timestamp or labels differ"
    values = [np.array([[np.float32(row[i]) for i in features] for row in rows], np.float32)
              for rows in (new_rows, old_rows)]
    close_enough(*values, exact, str(stored))
    if exact:
        assert new == old, f"{fresh} and {stored} differ in bytes"


def compare_parquet(fresh: Path, stored: Path, exact: bool) -> None:
    """The table's columns and values (row groups and metadata may differ)."""
    import pyarrow.parquet as pq

    new, old = pq.read_table(fresh), pq.read_table(stored)
    assert new.schema.metadata and b"deep_spectrum" in new.schema.metadata  # provenance kept
    assert new.schema.remove_metadata() == old.schema.remove_metadata(), \
        f"{stored}: schema differs:\n{new.schema}\n!=\n{old.schema}"
    assert new.num_rows == old.num_rows
    features = [name for name in old.column_names if name.startswith("neuron_")]
    assert features
    for name in old.column_names:
        if name not in features:
            assert new.column(name).to_pylist() == old.column(name).to_pylist(), \
                f"{stored}: column {name} differs"
    values = [np.stack([table.column(name).to_numpy() for name in features], axis=1)
              for table in (new, old)]
    close_enough(*values, exact, str(stored))


def compare_npz(fresh: Path, stored: Path, exact: bool) -> None:
    with np.load(fresh, allow_pickle=False) as a, np.load(stored, allow_pickle=False) as b:
        assert set(NPZ_PROVENANCE) <= set(a.files)
        assert sorted(set(a.files) - set(NPZ_PROVENANCE)) == sorted(b.files), \
            f"{stored}: arrays {a.files} != {b.files}"
        for key in b.files:
            new, old = a[key], b[key]
            assert new.dtype == old.dtype and new.shape == old.shape, f"{stored}: {key}"
            if key == "features":
                close_enough(new, old, exact, f"{stored}: features")
            else:
                assert np.array_equal(new, old), f"{stored}: {key} differs"


COMPARE = {".arff": compare_text, ".csv": compare_text, ".parquet": compare_parquet,
           ".npz": compare_npz}


# --- the tests ----------------------------------------------------------------------------

def test_every_case_is_recorded_and_nothing_else(recorded_cases):
    assert list(recorded_cases) == [case.name for case in CASES], RERECORD
    expected = {Path(case.name) / name for case in CASES for name in case.outputs}
    stored = {path.relative_to(GOLDEN) for path in GOLDEN.rglob("*")
              if path.is_file() and path.parent != GOLDEN and "__pycache__" not in path.parts}
    assert not expected - stored, f"stored files missing {RERECORD}: {sorted(expected - stored)}"
    assert not stored - expected, f"stored files no case writes: {sorted(stored - expected)}"
    total = sum(path.stat().st_size for path in GOLDEN.rglob("*") if path.is_file())
    assert total < 2_000_000


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_writes_the_recorded_output(case, inputs, recorded_cases, exact, tmp_path):
    audio, labels, config = inputs
    work = tmp_path / case.name
    produced = run_case(case, audio, config, labels, work)
    recorded = recorded_cases[case.name]
    assert (recorded["way"], recorded["argv"]) == (case.way, make_golden.case_argv(case)), \
        f"the case changed since it was recorded {RERECORD}"
    for name, (path, status) in produced.items():
        stored = GOLDEN / case.name / name
        assert stored.exists(), f"{stored} is missing {RERECORD}"
        assert status == recorded["status"][name], f"{case.name} {name}: exit status"
        COMPARE[stored.suffix](path, stored, exact)
    # nothing left behind: no part files, journals or locks
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]


def test_normalised_files_are_what_is_stored(tmp_path):
    """normalise() (what make_golden stores) keeps exactly what the comparison reads."""
    stored = GOLDEN / "np2" / "features.arff"
    with_comments = tmp_path / "f.arff"
    with_comments.write_bytes(b"% provenance line\n" + stored.read_bytes())
    normalise(with_comments, tmp_path / "g.arff")
    assert (tmp_path / "g.arff").read_bytes() == stored.read_bytes()
