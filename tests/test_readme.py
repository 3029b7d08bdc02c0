"""The README's Python examples run, and print what their comments say."""
import contextlib
import io
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_python_api_examples(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEP_SPECTRUM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks, "the README has no python example"
    for block in blocks:
        expected = [comment.strip() for comment in
                    re.findall(r"^print\(.*\)\s+# (.*)$", block, flags=re.M)]
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
        printed = output.getvalue().splitlines()
        assert printed[:len(expected)] == expected
