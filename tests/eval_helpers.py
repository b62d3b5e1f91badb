"""What the evaluation tests share: loading a region task's `utils.py` as lmms-eval does."""

import importlib.util
from types import ModuleType

from pixelrefer_hf.eval_tasks.lmms_eval_plugin import TASKS_DIR


def task_utils(task: str) -> ModuleType:
    """The `utils.py` module of the region task `task`, freshly executed."""
    spec = importlib.util.spec_from_file_location(f"{task}_utils", TASKS_DIR / task / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
