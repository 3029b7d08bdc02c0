"""Label sources: folders, -el, label files (CSV/TSV, numeric, time-continuous) and errors."""
from decimal import Decimal
from pathlib import Path

import pytest

from deep_spectrum_extractor.errors import LabelError
from deep_spectrum_extractor.labels import (LabelAttribute, explicit_labels, folder_labels,
                                            read_label_file)

FILES = [Path("/data/b/x.wav"), Path("/data/a/y.wav"), Path("/data/b/z.wav")]


def test_folder_labels_sorted_classes():
    labels = folder_labels(FILES)
    assert labels.attributes == [LabelAttribute("class", ("a", "b"))]
    assert [labels.row(p, None) for p in FILES] == [["b"], ["a"], ["b"]]


def test_same_name_in_two_class_folders_keeps_each_folder_label():
    files = [Path("/d/b/x.wav"), Path("/d/a/x.wav")]
    labels = folder_labels(files)
    assert [labels.row(p, None) for p in files] == [["b"], ["a"]]


def test_explicit_label():
    labels = explicit_labels(FILES, "snore")
    assert labels.attributes == [LabelAttribute("class", ("snore",))]
    assert labels.row(FILES[1], Decimal("0.5")) == ["snore"]


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_label_file_nominal_and_numeric_columns(tmp_path, suffix, sep):
    path = tmp_path / f"labels{suffix}"
    path.write_text(sep.join(["file", "emotion", "arousal"]) + "\n"
                    + "\n".join(sep.join(r) for r in [("x.wav", "happy", "0.5"),
                                                      ("y.wav", "angry", "-1"),
                                                      ("z.wav", "happy", "2e-1")]) + "\n")
    labels = read_label_file(path)
    assert labels.attributes == [LabelAttribute("emotion", ("angry", "happy")),
                                 LabelAttribute("arousal", None)]
    assert labels.row(FILES[1], None) == ["angry", "-1"]
    labels.check(FILES)


def test_time_continuous_labels(tmp_path):
    path = tmp_path / "tc.csv"
    path.write_text("name,time,valence\nx.wav,0.0,0.1\nx.wav,0.50,0.2\ny.wav,0,0.3\n")
    labels = read_label_file(path, time_continuous=True)
    assert labels.attributes == [LabelAttribute("valence", None)]
    assert labels.row(FILES[0], Decimal("0.5")) == ["0.2"]
    assert labels.row(FILES[1], Decimal("0.0")) == ["0.3"]
    with pytest.raises(LabelError, match="no label for x.wav at timestamp 1.0"):
        labels.row(FILES[0], Decimal("1.0"))


def test_missing_labels_are_listed(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("file,class\nx.wav,a\n")
    with pytest.raises(LabelError, match=r"no labels in .*l.csv for 2 file\(s\): y.wav, z.wav"):
        read_label_file(path).check(FILES)


def test_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("\ufefffile,class\r\nx.wav,a\r\ny.wav,b\r\nz.wav,a\r\n".encode("utf-8"))
    labels = read_label_file(path)
    assert labels.attributes == [LabelAttribute("class", ("a", "b"))]
    assert labels.row(FILES[2], None) == ["a"]


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"file\nx.wav\n", "needs columns for file name and at least one label"),
    (b"file,class\nx.wav,a,extra\n", "line 2: 3 columns, the header has 2"),
    (b"file,class\nx.wav,a\nx.wav,b\n", "line 3: a second label row for x.wav"),
    (b"file,class\nx.wav,\xff\xfe\n", "line 2: not UTF-8"),
])
def test_bad_label_files_say_where(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(LabelError, match=match):
        read_label_file(path)


def test_bad_time_continuous_file(tmp_path):
    path = tmp_path / "tc.csv"
    path.write_text("file,time,v\nx.wav,zero,1\n")
    with pytest.raises(LabelError, match="line 2: timestamp 'zero' is not a number"):
        read_label_file(path, time_continuous=True)


def test_rows_naming_no_input_file_are_reported_with_their_line(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("file,class\nx.wav,a\nghost.wav,b\ny.wav,a\nz.wav,b\nphantom.wav,a\n")
    labels = read_label_file(path)
    labels.check(FILES)
    assert labels.unknown(FILES) == ["line 3: ghost.wav", "line 6: phantom.wav"]
