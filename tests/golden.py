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

    @property
    def num_regions(self) -> int:
        return len(self.arrays["masks"])

    def messages(self) -> list[dict]:
        """The chat messages the original `mm_infer` builds from the prompt, with the image item carrying the image.

        `mm_infer` prepends `<image>` to a prompt without one, splits the prompt at `<image>` and strips each text
        chunk.
        """
        prompt = self.manifest["prompt"]
        if self.variant == "full" and "<image>" not in prompt:
            prompt = "<image>" + prompt
        content = []
        for index, chunk in enumerate(prompt.split("<image>")):
            if index > 0:
                content.append({"type": "image", "image": self.image})
            if chunk.strip():
                content.append({"type": "text", "text": chunk.strip()})
        return [{"role": "user", "content": content}]

    def kmeans_init(self, mask_num: int) -> np.ndarray:
        """The original's recorded random k-means start of every region, `(R, mask_num)`; zeros for a region the
        original did not cluster (no permutation recorded; the start is then unused)."""
        zeros = np.zeros(mask_num, dtype=np.int64)
        return np.stack(
            [self.arrays.get(f"kmeans_randperm_{i}", zeros)[:mask_num] for i in range(self.num_regions)]
        )


def discover(variant: str | None = None, modal: str | None = None) -> list[GoldenCase]:
    cases = [GoldenCase(p.parent) for p in sorted((GOLDEN_DIR / "cases").glob("*/manifest.json"))]
    return [c for c in cases if (variant is None or c.variant == variant) and (modal is None or c.modal == modal)]
