"""Access to a golden set (inputs and outputs of the original PixelRefer code), discovered from its manifests.

The set lives in `$PIXELREFER_GOLDEN_DIR` (default: `tests/fixtures/golden`). Nothing here names a case: every case
is found by its `cases/*/manifest.json`.
"""

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from pixelrefer_hf.processing.video import VideoClip


FIXTURES = Path(__file__).parent / "fixtures" / "golden"
GOLDEN_DIR = Path(os.environ.get("PIXELREFER_GOLDEN_DIR", FIXTURES))


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
            num_source_frames=info["video_num_frames"],
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
