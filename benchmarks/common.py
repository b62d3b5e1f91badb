"""What the benchmark scripts share: model configs, timing, peak memory, the run's environment and table printing."""

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers

from pixelrefer_hf import PixelReferConfig
from pixelrefer_hf.tiny_random import tiny_config


CONFIGS = ("tiny", "2b")
DTYPES = ("float32", "bfloat16", "float16")


def config_2b(object_only: bool) -> PixelReferConfig:
    """PixelRefer-2B shapes: Qwen2.5-1.5B LLM + SigLIP-NaViT (so400m-style) vision encoder."""
    return PixelReferConfig(
        vision_config={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "patch_size": 14,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 151669,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "tie_word_embeddings": True,
        },
        tie_word_embeddings=True,
        object_only=object_only,
    )


def model_config(name: str, object_only: bool) -> PixelReferConfig:
    """The `--config` of a benchmark: `tiny` (the tests' model) or `2b` (PixelRefer-2B shapes)."""
    return config_2b(object_only) if name == "2b" else tiny_config(object_only)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall time of `fn` over `repeats` runs, after `warmup` untimed runs (device work included)."""
    for _ in range(warmup):
        fn()
    timings = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def in_fresh_process_for_memory(argv: Sequence[str]) -> str:
    """Runs this script again with `argv` in a fresh process whose large allocations are mmap-ed and returned to the OS
    when freed (glibc's `MALLOC_MMAP_THRESHOLD_`, read at start-up), so that resident memory follows the live tensors
    there; returns its standard output. The timings run in the parent: page faults on every large allocation would
    slow them down."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, sys.argv[0], *argv]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def interleaved_median_seconds(
    fns: Sequence[Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1
) -> list[float]:
    """Median wall time of each of `fns`, run in turn `repeats` times (so that a change in the machine's load hits
    all of them alike), after `warmup` untimed runs of each."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    timings = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, timings):
            times.append(median_seconds(fn, 1, device, warmup=0))
    return [statistics.median(times) for times in timings]


def memory_kib(field: str) -> int:
    """A memory figure of this process from `/proc/self/status` (e.g. `VmRSS`, `VmHWM`), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakResidentMemory:
    """Peak growth of the process's resident memory while the block runs (Linux: `VmHWM`, reset through
    `/proc/self/clear_refs` on entry, above `VmRSS` on entry; see `in_fresh_process_for_memory`)."""

    def __enter__(self):
        self.base = memory_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident memory, to the current one
        return self

    def __exit__(self, *exc):
        self.peak = memory_kib("VmHWM") * 1024

    @property
    def growth(self) -> int:
        return self.peak - self.base


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose `"mib"` is, after the block, its peak memory growth: allocated memory on CUDA, resident
    memory on CPU."""
    result = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result["mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        with PeakResidentMemory() as memory:
            yield result
        result["mib"] = memory.growth / 2**20


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def environment_line(device: torch.device, dtype: str, **settings: object) -> str:
    """One line naming what a table was measured on: device, dtype, versions, commit and the run's settings."""
    parts = [
        f"device={device_name(device)}",
        f"dtype={dtype}",
        f"torch={torch.__version__}",
        f"transformers={transformers.__version__}",
        f"commit={_commit()}",
    ]
    parts += [f"{name}={value}" for name, value in settings.items()]
    return " ".join(parts)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """`rows` as a Markdown table of `columns`: `(key, format)` pairs, e.g. `("latency_ms", "{:.1f}")`."""
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[name]) for name, fmt in columns) + " |")
    return "\n".join(lines)
