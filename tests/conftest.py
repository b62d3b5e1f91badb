import os
import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).parent))

from golden import GOLDEN_DIR, golden_set_problem  # noqa: E402


# One share of the cores per pytest-xdist worker (`-n 2`), also for the processes the tests start: OpenMP threads
# beyond the cores stall each other.
_THREADS = max(1, min(2, torch.get_num_threads()) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)
# The longest modules (about 1-3 min each on 2 cores), collected first so that pytest-xdist's workers, which take whole
# modules in collection order (`--dist loadfile`), do not end on one of them while the other worker idles.
LONGEST_MODULES = ("test_training_cli.py", "test_parity.py", "test_eval_tasks.py", "test_training.py")


def pytest_configure(config):
    """Stops the run with one message, before collection, when the golden set is missing or holds no case."""
    problem = golden_set_problem()
    if problem:
        raise pytest.UsageError(problem)


def pytest_collection_modifyitems(config, items):
    """The modules in `LONGEST_MODULES` first (in that order), the others after them as collected."""
    order = {name: rank for rank, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Converts a golden checkpoint once per session: `converted(path) -> converted folder`."""
    from pixelrefer_hf.conversion import convert_checkpoint

    cache: dict[Path, Path] = {}

    def convert(checkpoint: Path) -> Path:
        if checkpoint not in cache:
            out = tmp_path_factory.mktemp(checkpoint.name)
            convert_checkpoint(checkpoint, out, progress=False)
            cache[checkpoint] = out
        return cache[checkpoint]

    return convert


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN_DIR
