"""lmms-eval integration: the `pixelrefer` model (`model.py`, registered by `lmms_eval_plugin.py`) and the paper's
region benchmarks as tasks under `tasks/` (pass that folder to `--include_path`), reading the benchmarks' published
files (`documents.py`). Needs the `eval` extra; the rest of the package does not import this one."""
