"""lmms-eval's entry point for the `pixelrefer` model (group `lmms_eval.models`): only a manifest, loaded at every
lmms-eval start; the model module is imported when the model is asked for."""

from pathlib import Path


# The folder to give lmms-eval's `--include_path` for the region tasks.
TASKS_DIR = Path(__file__).parent / "tasks"


def manifest():
    """The `pixelrefer` model's manifest (a function, so that importing this module never imports lmms-eval, which
    itself loads the entry points)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="pixelrefer", simple_class_path="pixelrefer_hf.eval_tasks.model.PixelRefer")
