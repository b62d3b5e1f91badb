"""The benchmark scripts run at their smallest sizes and print their tables with every column filled (no timing is
asserted: speed is measured by running the scripts, see benchmarks/RESULTS.md)."""

import re
import subprocess
import sys
from pathlib import Path


BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def tables(output: str) -> dict[str, list[dict[str, str]]]:
    """The Markdown tables of a script's output by the title line above each."""
    found, title, lines = {}, None, output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("| ") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            header = [cell.strip() for cell in line.strip("|").split("|")]
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("| "):
                    break
                rows.append(dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")))))
            found[title] = rows
        elif line.strip() and not line.startswith("|"):
            title = line.strip()
    return found


def run(script: str, *args: str) -> dict[str, list[dict[str, str]]]:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("device=CPU") and "commit=" in result.stdout.splitlines()[0]
    return tables(result.stdout)


def assert_numeric(rows: list[dict[str, str]], columns: list[str]) -> None:
    assert rows
    for row in rows:
        for column in columns:
            assert NUMBER.match(row[column]), (column, row)


def test_saot_tables():
    found = run("saot.py", "--regions", "1,3", "--widths", "16", "--repeats", "1")
    clustering = next(rows for title, rows in found.items() if title.startswith("clustering"))
    assert [(row["regions"], row["width"]) for row in clustering] == [("1", "16"), ("3", "16")]
    assert_numeric(clustering, ["clustered", "loop_ms", "batched_ms", "speedup", "loop_peak_mib", "batched_peak_mib"])
    tokens = next(rows for title, rows in found.items() if title.startswith("object_tokens"))
    assert [row["regions"] for row in tokens] == ["1", "3"]
    assert_numeric(tokens, ["crop_patches", "object_tokens", "loop_ms", "batched_ms", "speedup"])
    assert 0 < int(tokens[0]["object_tokens"]) <= 32 < int(tokens[1]["object_tokens"]) <= 96


def test_generate_tables():
    found = run(
        "generate.py",
        *("--samples", "2", "--batch-sizes", "1,2", "--new-tokens", "2", "--media", "images", "--max-scale", "0.4"),
        *("--decode-regions", "1,2", "--attn", "sdpa", "--repeats", "1"),
    )
    throughput = next(rows for title, rows in found.items() if title.startswith("throughput"))
    assert [(row["variant"], row["batch"]) for row in throughput] == [
        ("full", "loop"),
        ("full", "2"),
        ("Lite", "loop"),
        ("Lite", "2"),
    ]
    assert_numeric(throughput, ["samples_s", "new_tokens_s", "speedup"])
    assert all(row["speedup"] == "1.00" for row in throughput if row["batch"] == "loop")
    assert_numeric(next(rows for title, rows in found.items() if title.startswith("prefill")), ["samples_s"])
    decode = next(rows for title, rows in found.items() if title.startswith("decode"))
    assert [row["regions"] for row in decode] == ["1", "2", "1", "2"]
    assert_numeric(decode, ["prompt_tokens", "decode_ms_per_step"])
    settings = next(rows for title, rows in found.items() if title.startswith("settings"))
    assert [row["setting"] for row in settings] == ["sdpa", "sdpa + static cache"] * 2
    assert_numeric(settings, ["prefill_ms", "decode_ms_per_step"])
