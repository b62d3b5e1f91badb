"""Model cards of converted PixelRefer checkpoints, generated from their config (huggingface_hub `ModelCard`)."""

import re
from pathlib import Path
from string import Template

from huggingface_hub import ModelCard, ModelCardData
from transformers.utils import logging

from ..modeling import PixelReferConfig


logger = logging.get_logger(__name__)

ARXIV_ID = "2510.23603"
TAGS = ["region-understanding", "video", "pixelrefer"]
VARIANT_NAMES = {"full": "PixelRefer", "lite": "PixelRefer-Lite"}
# `benchmarks/RESULTS.md` of a source checkout (src/pixelrefer_hf/conversion/model_card.py -> repository root).
DEFAULT_RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "RESULTS.md"

CITATION = f"""\
@misc{{yuan2025pixelrefer,
  title         = {{PixelRefer: A Unified Framework for Spatio-Temporal Object Referring with Arbitrary Granularity}},
  author        = {{Yuqian Yuan and Wenqiao Zhang and Xin Li and others}},
  year          = {{2025}},
  eprint        = {{{ARXIV_ID}}},
  archivePrefix = {{arXiv}},
  primaryClass  = {{cs.CV}},
  url           = {{https://arxiv.org/abs/{ARXIV_ID}}}
}}"""

CONVERSION_NOTE = """\
The weights are the original release's, renamed to the Transformers layout (`pixelrefer convert`); the parity tests
of pixelrefer-hf compare every stage with the original code's recorded outputs. One deliberate difference: the
clustering of object features starts deterministically (same input, same object tokens) instead of from
`torch.randperm`; pass `region_kmeans_init` to `generate` to reproduce a particular start."""

IMAGE_SNIPPET = Template("""\
import numpy as np
import pixelrefer_hf  # registers PixelRefer with the Auto classes
from transformers import AutoModelForImageTextToText, AutoProcessor

processor = AutoProcessor.from_pretrained("$repo_id")
model = AutoModelForImageTextToText.from_pretrained("$repo_id", dtype="auto", device_map="auto")

# Put your own image here: a PIL image, an (H, W, 3) uint8 array, a path or a URL.
image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
messages = [{"role": "user", "content": [
    {"type": "image", "image": image},
    {"type": "text", "text": "What is "},
    {"type": "region", "box": [200, 120, 360, 400]},  # [x0, y0, x1, y1] in pixels; or "mask", "rle", "polygon"
    {"type": "text", "text": " doing?"},
]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt").to(model.device)
output = model.generate(**inputs, max_new_tokens=64)
print(processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])
""")

VIDEO_SNIPPET = Template("""\
import pixelrefer_hf  # registers PixelRefer with the Auto classes
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging

processor = AutoProcessor.from_pretrained("$repo_id")
model = AutoModelForImageTextToText.from_pretrained("$repo_id", dtype="auto", device_map="auto")

video = "video.mp4"  # your video: a file, a frame folder or (T, H, W, 3) uint8 frames; 1 frame per second is sampled
messages = [{"role": "user", "content": [
    {"type": "video", "video": video},
    {"type": "text", "text": "What does "},
    {"type": "region", "frame": 0, "box": [200, 120, 360, 400]},  # the object on frame 0 of the video
    {"type": "text", "text": " do in this video?"},
]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt").to(model.device)
output = model.generate(**inputs, max_new_tokens=128)
print(processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])
""")


def variant_of(config: PixelReferConfig) -> str:
    """`"lite"` for PixelRefer-Lite (Object-Only), `"full"` for PixelRefer (Vision-Object)."""
    return "lite" if config.object_only else "full"


def variant_section(config: PixelReferConfig) -> str:
    """What the variant is, with its figures from the config."""
    if config.object_only:
        return (
            "**PixelRefer-Lite (Object-Only).** No image or video tokens reach the LLM. Each region becomes exactly "
            f"**{config.max_object_tokens} object tokens** (`max_object_tokens`), which first cross-attend to a local "
            "and a global view of the image (Object-Centric Infusion), so the LLM reads the question and the object "
            "tokens only: a far shorter prompt and a far cheaper prefill than the full model.\n\n"
            "| | |\n|---|---|\n"
            f"| object tokens per region | {config.max_object_tokens} |\n"
            "| image tokens reach the LLM | no |\n"
            "| Object-Centric Infusion | yes |"
        )
    return (
        "**PixelRefer (Vision-Object).** The LLM reads the image tokens and, per region, **up to "
        f"{config.max_object_tokens} object tokens** (`max_object_tokens`; fewer when the region covers fewer patch "
        "cells) from the Scale-Adaptive Object Tokenizer.\n\n"
        "| | |\n|---|---|\n"
        f"| object tokens per region | up to {config.max_object_tokens} |\n"
        "| image tokens reach the LLM | yes |\n"
        "| Object-Centric Infusion | no |"
    )


def results_section(results: str | Path | None = None) -> str:
    """The Lite/full trade-off figures of `benchmarks/RESULTS.md` (headings demoted), or a note that they are pending.

    An explicit `results` path must exist; the default one (`DEFAULT_RESULTS`) may be absent.
    """
    path = Path(results) if results is not None else DEFAULT_RESULTS
    if not path.is_file():
        if results is not None:
            raise FileNotFoundError(f"results file {path} does not exist; pass the benchmarks' RESULTS.md")
        logger.info("No %s: the model card says the Lite/full figures are pending.", path)
        return (
            "Figures pending: measured prompt lengths, prefill FLOPs, latency and memory of both variants on the same "
            "inputs will come from `benchmarks/lite_vs_full.py` of pixelrefer-hf."
        )
    lines, in_code = [], False
    for line in path.read_text().strip().splitlines():
        in_code ^= line.lstrip().startswith("```")
        lines.append("##" + line if not in_code and re.match(r"#+ ", line) else line)
    intro = "Measured with `benchmarks/lite_vs_full.py` of pixelrefer-hf (its `RESULTS.md`, headings demoted):"
    return intro + "\n\n" + "\n".join(lines)


def _card_data(variant: str, base_model: str) -> ModelCardData:
    """The card's YAML metadata: license, library, pipeline, base model and tags."""
    return ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=base_model,
        tags=[*TAGS, variant],
    )


def _intro_section(repo_id: str, base_model: str, name: str) -> str:
    """The card's title and what the checkpoint is."""
    return f"""\
# {repo_id.split("/")[-1]}

[{base_model}](https://huggingface.co/{base_model}) ({name}) converted to the Hugging Face Transformers layout with
pixelrefer-hf. [PixelRefer](https://arxiv.org/abs/{ARXIV_ID}) ([code](https://github.com/alibaba-damo-academy/PixelRefer))
is a region-level multimodal LLM: point at objects in an image or a video (masks, boxes, COCO RLE, polygons) and ask
about them. It is VideoLLaMA3 (SigLIP-NaViT vision encoder + Qwen2.5) plus the Scale-Adaptive Object Tokenizer, which
turns each region into object tokens."""


def _usage_section(repo_id: str) -> str:
    """How to load the checkpoint from `repo_id` and ask about regions of an image or a video."""
    return f"""\
Needs the `pixelrefer-hf` package: `import pixelrefer_hf` registers the model and its processor with the Auto
classes (no `trust_remote_code`).

### Images

```python
{IMAGE_SNIPPET.substitute(repo_id=repo_id).strip()}
```

### Videos

```python
{VIDEO_SNIPPET.substitute(repo_id=repo_id).strip()}
```

A region of a video is drawn on one frame (`"frame"`, an index into the source video), or is a masklet
`{{"masklet": {{frame: mask, ...}}}}`; SAM2 makes one from a single box with
`pixelrefer_hf.segmentation.propagate_in_clip(MaskletPropagator.from_pretrained("facebook/sam2.1-hiera-tiny"),
load_video("video.mp4", extra_frames=[0]), [{{"box": [...]}}], prompt_frame=0)`. PixelRefer reads the sampled frames
as video tokens and the object on its frame; PixelRefer-Lite reads the object on every frame of its masklet, each
with its timestamp."""


def build_model_card(
    config: PixelReferConfig, repo_id: str, base_model: str, results: str | Path | None = None
) -> ModelCard:
    """The model card (README.md) of a converted checkpoint pushed to `repo_id`.

    Args:
        config: the converted checkpoint's config (variant and `max_object_tokens`).
        repo_id: the Hub id the checkpoint is pushed to, used in the usage snippets.
        base_model: the Hub id of the original release it was converted from (card metadata `base_model`).
        results: `benchmarks/RESULTS.md` with the Lite/full figures; defaults to the source checkout's.
    """
    variant = variant_of(config)
    sections = {
        f"Variant: {variant}": variant_section(config),
        "Usage": _usage_section(repo_id),
        "Lite vs. full": results_section(results),
        "Conversion": CONVERSION_NOTE,
        "Citation": f"```bibtex\n{CITATION}\n```",
    }
    body = "\n\n".join(
        [_intro_section(repo_id, base_model, VARIANT_NAMES[variant])]
        + [f"## {title}\n\n{text}" for title, text in sections.items()]
    )
    return ModelCard(f"---\n{_card_data(variant, base_model).to_yaml()}\n---\n\n{body}\n")


__all__ = [
    "ARXIV_ID",
    "DEFAULT_RESULTS",
    "VARIANT_NAMES",
    "build_model_card",
    "results_section",
    "variant_of",
    "variant_section",
]
