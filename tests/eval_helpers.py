"""What the evaluation tests share: loading a region task's `utils.py`, or the functions its YAML names, as lmms-eval
does."""

import importlib.util
from types import ModuleType, SimpleNamespace

from lmms_eval.utils import load_yaml_config

from pixelrefer_hf.eval_tasks.lmms_eval_plugin import TASKS_DIR


def task_utils(task: str) -> ModuleType:
    """The `utils.py` module of the region task `task`, freshly executed."""
    spec = importlib.util.spec_from_file_location(f"{task}_utils", TASKS_DIR / task / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_functions(task: str) -> SimpleNamespace:
    """The functions the YAML of the region task `task` names (`process_docs`, `doc_to_visual`, `doc_to_text`,
    `process_results`), resolved by lmms-eval's own loader, and `aggregations`: metric name -> function."""
    config = load_yaml_config(str(TASKS_DIR / task / f"{task}.yaml"), mode="full")
    functions = {name: value for name, value in config.items() if callable(value)}
    aggregations = {metric["metric"]: metric["aggregation"] for metric in config["metric_list"]}
    return SimpleNamespace(**functions, aggregations=aggregations)
