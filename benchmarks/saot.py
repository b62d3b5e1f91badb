"""Object tokenization (SAOT) of N regions of one image: our batched path vs a per-region loop of the same components.

The per-region loop is the original release's structure (one crop through the vision encoder, one masked pooling,
one k-means at a time); the batched path is ours (all crops in one varlen vision call, all regions pooled and
clustered as tensors). Two tables:

- `clustering`: k-means alone, on the masked-cell counts of the real regions (from the processor) with random
  features of each width; `loop` runs `batched_kmeans` one region at a time.
- `object_tokens`: crops -> vision encoder -> position embedding -> masked pooling -> k-means -> projector, with a
  random-weight model of `--config`.

Latency is the median of `--repeats` runs (the two paths in turn); peak memory is the growth of allocated (CUDA) or
resident (CPU) memory.

    python benchmarks/saot.py                                              # tiny config, CPU
    python benchmarks/saot.py --config 2b --device cuda --dtype bfloat16   # PixelRefer-2B shapes
"""

import argparse
import json
import sys
from collections.abc import Callable
from importlib.resources import files

import numpy as np
import torch
from common import (
    CONFIGS,
    DTYPES,
    environment_line,
    in_fresh_process_for_memory,
    interleaved_median_seconds,
    markdown_table,
    model_config,
    peak_memory,
)
from PIL import Image

from pixelrefer_hf import PixelReferForConditionalGeneration
from pixelrefer_hf.modeling.object_tokenizer import batched_kmeans, evenly_spaced_start
from pixelrefer_hf.tiny_random import build_processor


REGION_INPUTS = ("region_pixel_values", "region_grid_thw", "region_masks", "region_mask_hw", "region_boxes")
CLUSTERING_COLUMNS = [
    ("regions", "{:d}"),
    ("width", "{:d}"),
    ("clustered", "{:d}"),
    ("loop_ms", "{:.2f}"),
    ("batched_ms", "{:.2f}"),
    ("speedup", "{:.2f}"),
    ("loop_peak_mib", "{:.1f}"),
    ("batched_peak_mib", "{:.1f}"),
]
OBJECT_TOKEN_COLUMNS = [
    ("regions", "{:d}"),
    ("crop_patches", "{:d}"),
    ("object_tokens", "{:d}"),
    ("loop_ms", "{:.1f}"),
    ("batched_ms", "{:.1f}"),
    ("speedup", "{:.2f}"),
    ("loop_peak_mib", "{:.1f}"),
    ("batched_peak_mib", "{:.1f}"),
]


def region_boxes(count: int, size: tuple[int, int], seed: int = 0) -> list[list[int]]:
    """`count` boxes of one image, from small (24 px) to large (half the image), at random places."""
    width, height = size
    rng = np.random.default_rng(seed)
    boxes = []
    for side in np.geomspace(24, min(width, height) / 2, count):
        w, h = (side * rng.uniform(0.6, 1.4, 2)).clip(8, [width, height]).astype(int)
        x0, y0 = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        boxes.append([int(x0), int(y0), int(x0 + w), int(y0 + h)])
    return boxes


def region_inputs(processor, image: Image.Image, count: int) -> dict[str, torch.Tensor]:
    """The processor's region inputs for `count` box regions of `image`."""
    text = "<image>\n" + " ".join("<region>" for _ in range(count))
    regions = [{"box": box} for box in region_boxes(count, image.size)]
    encoded = processor(text=text, images=image, regions=[regions], return_tensors="pt")
    return {name: encoded[name] for name in REGION_INPUTS}


def one_region(inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The inputs of region `index` alone."""
    crops = inputs["region_pixel_values"].split(inputs["region_grid_thw"].prod(-1).tolist())
    masks = inputs["region_masks"].split(inputs["region_mask_hw"].prod(-1).tolist())
    picked = slice(index, index + 1)
    return {
        "region_pixel_values": crops[index],
        "region_grid_thw": inputs["region_grid_thw"][picked],
        "region_masks": masks[index],
        "region_mask_hw": inputs["region_mask_hw"][picked],
        "region_boxes": inputs["region_boxes"][picked],
    }


def masked_cell_counts(inputs: dict[str, torch.Tensor]) -> torch.LongTensor:
    """`(R,)` masked cells of each region on its mask grid."""
    masks = inputs["region_masks"].split(inputs["region_mask_hw"].prod(-1).tolist())
    return torch.stack([(mask > 0).sum() for mask in masks])


def timings(loop, batched, args: argparse.Namespace) -> dict:
    """Median latency of the two paths, run in turn, and the speed-up (none in the memory pass)."""
    if args.memory_pass:
        return {}
    with torch.no_grad():
        loop_seconds, batched_seconds = interleaved_median_seconds(
            [loop, batched], args.repeats, torch.device(args.device)
        )
    return {
        "loop_ms": loop_seconds * 1e3,
        "batched_ms": batched_seconds * 1e3,
        "speedup": loop_seconds / batched_seconds,
    }


def peak_memories(loop, batched, device: torch.device) -> dict:
    with torch.no_grad():
        with peak_memory(device) as loop_memory:
            loop()
        with peak_memory(device) as batched_memory:
            batched()
    return {"loop_peak_mib": loop_memory["mib"], "batched_peak_mib": batched_memory["mib"]}


def clustering_row(cell_counts: torch.Tensor, width: int, args: argparse.Namespace) -> tuple[dict, Callable, Callable]:
    """k-means of the regions with more cells than object tokens, random features of `width` channels."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    max_tokens, iterations = args.max_object_tokens, args.kmeans_iterations
    counts = cell_counts[cell_counts > max_tokens]
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(len(counts), int(counts.max()) if len(counts) else 1, width, generator=generator)
    points = (points + 3 * torch.randn(len(counts), 1, width, generator=generator)).to(device=device, dtype=dtype)
    counts = counts.to(device)
    valid = torch.arange(points.shape[1], device=device) < counts[:, None]
    start = evenly_spaced_start(counts, max_tokens)

    def loop():
        for i, n in enumerate(counts.tolist()):
            batched_kmeans(points[i : i + 1, :n], valid[i : i + 1, :n], start[i : i + 1], iterations)

    def batched():
        if len(counts):
            batched_kmeans(points, valid, start, iterations)

    row = {"regions": len(cell_counts), "width": width, "clustered": len(counts), **timings(loop, batched, args)}
    return row, loop, batched


def object_tokens_row(
    model, inputs: dict[str, torch.Tensor], args: argparse.Namespace
) -> tuple[dict, Callable, Callable]:
    """Object tokens of all regions: one batched `get_region_features` vs one call per region."""
    count = len(inputs["region_grid_thw"])
    singles = [one_region(inputs, i) for i in range(count)]

    def loop():
        for single in singles:
            model.get_region_features(**single)

    def batched():
        return model.get_region_features(**inputs)

    with torch.no_grad():
        tokens = sum(len(t) for t in batched().pooler_output)
    row = {
        "regions": count,
        "crop_patches": int(inputs["region_pixel_values"].shape[0]),
        "object_tokens": tokens,
        **timings(loop, batched, args),
    }
    return row, loop, batched


def to_device(inputs: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--regions", default="1,8,32", help="comma-separated numbers of regions")
    parser.add_argument("--widths", default="32,384,1152", help="comma-separated feature widths of the clustering")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image", default=str(files("pixelrefer_hf") / "assets" / "brooklyn_bridge.jpg"))
    parser.add_argument("--memory-pass", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = model_config(args.config, object_only=False)
    args.max_object_tokens, args.kmeans_iterations = config.max_object_tokens, config.kmeans_iterations
    torch.manual_seed(0)
    model = PixelReferForConditionalGeneration(config).model.to(device=device, dtype=dtype).eval()
    image = Image.open(args.image).convert("RGB")
    counts = [int(n) for n in args.regions.split(",")]
    widths = [int(w) for w in args.widths.split(",")]

    processor = build_processor()
    all_inputs = {n: region_inputs(processor, image, n) for n in counts}
    clustering = [
        clustering_row(masked_cell_counts(inputs), width, args) for inputs in all_inputs.values() for width in widths
    ]
    tokens = [object_tokens_row(model, to_device(inputs, device, dtype), args) for inputs in all_inputs.values()]
    if args.memory_pass:
        print(json.dumps([peak_memories(loop, batched, device) for _, loop, batched in clustering + tokens]))
        return
    memories = (
        json.loads(in_fresh_process_for_memory([*(argv or sys.argv[1:]), "--memory-pass"]).splitlines()[-1])
        if device.type == "cpu"
        else [peak_memories(loop, batched, device) for _, loop, batched in clustering + tokens]
    )
    for (row, _, _), memory in zip(clustering + tokens, memories):
        row.update(memory)
    print(environment_line(device, args.dtype, config=args.config, repeats=args.repeats))
    print(f"\nclustering (k-means, {args.max_object_tokens} tokens, {args.kmeans_iterations} iterations)\n")
    print(markdown_table([row for row, _, _ in clustering], CLUSTERING_COLUMNS))
    print(f"\nobject_tokens (config {args.config}, vision width {config.vision_config.hidden_size})\n")
    print(markdown_table([row for row, _, _ in tokens], OBJECT_TOKEN_COLUMNS))


if __name__ == "__main__":
    main()
