"""Access to a golden set (inputs and outputs of the original PixelRefer code), discovered from its manifests.

The set lives in `$PIXELREFER_GOLDEN_DIR` (default: `tests/fixtures/golden`). Nothing here names a case or a
checkpoint folder: every case is found by its `cases/*/manifest.json`, every checkpoint by the manifests'
`"checkpoint"` fields and by the `model_type` in `checkpoints/*/config.json`. A set may lack a variant (only full or
only Lite) or a modality; tests that need what the set lacks are skipped with a reason (`requires_checkpoint`,
`requires_case`, `variant_params`, `checkpoints()[variant]`, `need_case`).
"""

import json
import os
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelrefer_hf.processing.video import VideoClip


FIXTURES = Path(__file__).parent / "fixtures" / "golden"
GOLDEN_DIR = Path(os.environ.get("PIXELREFER_GOLDEN_DIR", FIXTURES))
VARIANTS = ("full", "lite")
# The original checkpoints' config.json model_type, per variant.
MODEL_TYPES = {"full": "pixelrefer_qwen2", "lite": "pixelreferlite_qwen2"}


@dataclass
class GoldenCase:
    path: Path

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def variant(self) -> str:
        return "lite" if self.manifest["variant"] == "pixelreferlite" else "full"

    @property
    def modal(self) -> str:
        return self.manifest["modal"]

    @property
    def checkpoint(self) -> Path:
        return GOLDEN_DIR / self.manifest["checkpoint"]

    def _npz(self, name: str):
        return np.load(self.path / f"{name}.npz")

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every recorded array, by the key the manifest gives it."""
        files = {name: self._npz(name) for name in ("inputs", "preprocess", "model")}
        out = {}
        for key, info in self.manifest["arrays"].items():
            stem = info["file"].removesuffix(".npz")
            if stem in files and key in files[stem]:
                out[key] = files[stem][key]
        return out

    @cached_property
    def image(self) -> np.ndarray:
        return np.array(Image.open(self.path / "image.png").convert("RGB"))

    @cached_property
    def clip(self) -> VideoClip:
        """The frames the original loader returned, with their source indices and timestamps, and the additional
        frames the masks are drawn on."""
        info = self.manifest["info"]
        indices = info["sampled_frame_indices"]
        frames = np.stack([np.array(Image.open(self.path / f"frame_{k:02d}.png")) for k in range(len(indices))])
        extra = {}
        for entry in info.get("additional_frames_png") or []:
            if "png" in entry:
                source = info["additional_frame_ids"][entry["additional_frame"]]
                extra[source] = np.array(Image.open(self.path / entry["png"]))
        return VideoClip(
            frames=frames,
            indices=indices,
            timestamps=info["timestamps"],
            fps=info["video_avg_fps"],
            extra_frames=extra,
        )

    @property
    def num_regions(self) -> int:
        """Number of masks (for a Lite masklet, one per object and frame)."""
        return len(self.arrays["masks"])

    def regions(self) -> list[dict]:
        """The region items, in prompt order: masks on the image, on a video frame, or masklets."""
        masks, mask_ids = self.arrays["masks"], self.arrays["mask_ids"]
        if self.modal == "image":
            return [{"mask": mask} for mask in masks]
        frame_ids = self.manifest["info"]["additional_frame_ids"]
        per_object = self.manifest["info"].get("mask_ids_raw")
        if not per_object:
            return [{"frame": frame_ids[mask_ids[i]], "mask": masks[i]} for i in range(len(masks))]
        regions, start = [], 0
        for object_frames in per_object:
            regions.append({"masklet": {frame_ids[j]: masks[start + n] for n, j in enumerate(object_frames)}})
            start += len(object_frames)
        return regions

    def messages(self) -> list[dict]:
        """The chat messages the original `mm_infer` builds from the prompt, with the media and region items.

        `mm_infer` prepends `<image>` to a full-model image prompt without one, splits the prompt at the media token
        and strips each text chunk; each `<region>` becomes a region item.
        """
        token = "<image>" if self.modal == "image" else "<video>"
        media = (
            {"type": "image", "image": self.image} if self.modal == "image" else {"type": "video", "video": self.clip}
        )
        prompt = self.manifest["prompt"]
        if self.variant == "full" and token not in prompt:
            prompt = token + prompt
        regions = iter(self.regions())
        content = [] if token in prompt else [media]
        for index, chunk in enumerate(prompt.split(token)):
            if index > 0:
                content.append(media)
            for position, piece in enumerate(chunk.strip().split("<region>")):
                if position > 0:
                    content.append({"type": "region", **next(regions)})
                if piece:
                    content.append({"type": "text", "text": piece})
        return [{"role": "user", "content": content}]

    def kmeans_init(self, mask_num: int) -> np.ndarray:
        """The original's recorded random k-means start of every region, `(R, mask_num)`; zeros for a region the
        original did not cluster (no permutation recorded; the start is then unused)."""
        zeros = np.zeros(mask_num, dtype=np.int64)
        return np.stack([self.arrays.get(f"kmeans_randperm_{i}", zeros)[:mask_num] for i in range(self.num_regions)])


def discover(variant: str | None = None, modal: str | None = None) -> list[GoldenCase]:
    cases = [GoldenCase(p.parent) for p in sorted((GOLDEN_DIR / "cases").glob("*/manifest.json"))]
    return [c for c in cases if (variant is None or c.variant == variant) and (modal is None or c.modal == modal)]


def golden_set_problem() -> str | None:
    """Why `GOLDEN_DIR` cannot be used as a golden set, or None when it can."""
    what = (
        "a golden set holds cases/<case>/manifest.json (with inputs.npz, preprocess.npz, model.npz) and the "
        'checkpoint folders the manifests name in their "checkpoint" field (relative to the set, with config.json '
        f"of model_type {' or '.join(MODEL_TYPES.values())}); see {FIXTURES / 'README.md'}"
    )
    where = (
        f"PIXELREFER_GOLDEN_DIR={os.environ['PIXELREFER_GOLDEN_DIR']!r}: "
        if "PIXELREFER_GOLDEN_DIR" in os.environ
        else ""
    )
    if not GOLDEN_DIR.is_dir():
        return f"{where}the golden set folder {GOLDEN_DIR} does not exist; {what}"
    try:
        cases = discover()
        missing = sorted({str(c.checkpoint) for c in cases if not (c.checkpoint / "config.json").is_file()})
    except (OSError, ValueError, KeyError) as error:
        return f"{where}the golden set at {GOLDEN_DIR} has an unreadable manifest ({error!r}); {what}"
    if not cases:
        return f"{where}the golden set folder {GOLDEN_DIR} has no cases/*/manifest.json; {what}"
    if missing:
        return f"{where}the golden set at {GOLDEN_DIR} names checkpoint folders without config.json: {missing}; {what}"
    return None


class ByVariant(dict):
    """A dict keyed by variant; a variant the golden set lacks skips the test that asks for it."""

    def __missing__(self, variant: str):
        pytest.skip(missing_checkpoint_reason(variant))


def missing_checkpoint_reason(variant: str) -> str:
    return (
        f"the golden set at {GOLDEN_DIR} has no {variant} checkpoint (config.json model_type {MODEL_TYPES[variant]})"
    )


def missing_case_reason(variant: str | None = None, modal: str | None = None) -> str:
    what = " ".join(x for x in (variant, modal) if x) or "any"
    return f"the golden set at {GOLDEN_DIR} has no {what} case"


@cache
def checkpoints() -> ByVariant:
    """The original checkpoint folder of each variant the set holds: the folders the manifests name first (in case
    order), then `checkpoints/*/`; a folder's variant is its config.json `model_type`."""
    candidates = [case.checkpoint for case in discover()] + sorted(
        p.parent for p in GOLDEN_DIR.glob("checkpoints/*/config.json")
    )
    found = ByVariant()
    for folder in candidates:
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError):
            continue
        for variant, expected in MODEL_TYPES.items():
            if model_type == expected:
                found.setdefault(variant, folder)
    return found


def checkpoint_for(variant: str) -> Path | None:
    """The original checkpoint folder of `variant` ("full" or "lite"), or None when the set has none."""
    return checkpoints().get(variant)


def first_case(variant: str | None = None, modal: str | None = None) -> GoldenCase | None:
    """The first case (in name order) of that variant and modality, or None when the set has none."""
    return next(iter(discover(variant=variant, modal=modal)), None)


def need_case(variant: str | None = None, modal: str | None = None) -> GoldenCase:
    """`first_case`, skipping the calling test or fixture when the set has no such case."""
    case = first_case(variant, modal)
    if case is None:
        pytest.skip(missing_case_reason(variant, modal))
    return case


def requires_checkpoint(variant: str):
    """Marks a test that needs the original checkpoint of `variant`: skipped with a reason when the set lacks it."""
    return pytest.mark.skipif(checkpoint_for(variant) is None, reason=missing_checkpoint_reason(variant))


def requires_case(variant: str | None = None, modal: str | None = None):
    """Marks a test that needs a case of that variant and modality: skipped with a reason when the set lacks one."""
    return pytest.mark.skipif(first_case(variant, modal) is None, reason=missing_case_reason(variant, modal))


def variant_params() -> list:
    """The variants "full" and "lite" as parameters, each skipped with a reason where the set lacks its checkpoint."""
    return [pytest.param(variant, marks=requires_checkpoint(variant), id=variant) for variant in VARIANTS]


def case_params(cases: list[GoldenCase], reason: str) -> list:
    """Cases as parameters named by case; one skipped parameter with `reason` when there is none."""
    if not cases:
        return [
            pytest.param(
                None, marks=pytest.mark.skip(reason=f"the golden set at {GOLDEN_DIR} has {reason}"), id="none"
            )
        ]
    return [pytest.param(case, id=case.name) for case in cases]
