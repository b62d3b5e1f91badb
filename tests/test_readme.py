"""The README's Python examples run as written (offline, with the tiny random stand-in)."""

import re
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("[") and printed.count("'") >= 2, printed
