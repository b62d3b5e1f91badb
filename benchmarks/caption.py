"""Region captioning throughput (the engine of `pixelrefer caption`): regions/s on one image with 1, 8 and 32 regions,
for one `generate` call per region (`naive`), padded batches (`batched`) and the image's prefix prefilled once for
all its regions (`shared`), PixelRefer and PixelRefer-Lite, random weights.

Every strategy decodes exactly `--new-tokens` tokens per region (`min_new_tokens`), so that all do the same decoding
work, and the table says whether each strategy's ids are the naive ones; times are medians of `--repeats` runs. The
image is the bundled photo (640x422, at the processor's full pixel budget); the regions are random boxes (fixed
seed).

    python benchmarks/caption.py                                              # tiny config, CPU
    python benchmarks/caption.py --config 2b --device cuda --dtype bfloat16   # PixelRefer-2B shapes
"""

import argparse
import json
import statistics
import sys
import time
from importlib.resources import files

import numpy as np
import torch
from common import CONFIGS, DTYPES, environment_line, markdown_table, model_config, synchronize

from pixelrefer_hf import PixelReferForConditionalGeneration
from pixelrefer_hf.captioning import CaptionItem, RegionCaptioner
from pixelrefer_hf.processing.validation import as_rgb_array
from pixelrefer_hf.tiny_random import build_processor


COLUMNS = [
    ("variant", "{}"),
    ("regions", "{:d}"),
    ("strategy", "{}"),
    ("seconds", "{:.2f}"),
    ("regions_s", "{:.2f}"),
    ("speedup", "{:.2f}"),
    ("same_ids", "{}"),
]


def random_boxes(count: int, height: int, width: int, seed: int = 0) -> list[dict]:
    """`count` boxes of 24 to 160 pixels a side inside a `(height, width)` image."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        box_w, box_h = (int(side) for side in rng.integers(24, 161, size=2))
        x0, y0 = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
        boxes.append({"box": [x0, y0, x0 + box_w, y0 + box_h]})
    return boxes


def build_model(config: str, object_only: bool, device: torch.device, dtype: str):
    torch.manual_seed(0)
    model = PixelReferForConditionalGeneration(model_config(config, object_only))
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = model.config.text_config.eos_token_id
    return model, build_processor(object_only=object_only)


def measure(
    captioners: dict[str, RegionCaptioner], items: list[CaptionItem], repeats: int, device: torch.device
) -> dict:
    """Per strategy, the median seconds of a `caption` call over `items` and its token ids. The strategies take turns
    in every repeat (after a warm-up on one region), so that a change in the machine's load hits them alike."""
    timings = {strategy: [] for strategy in captioners}
    ids = {}
    for captioner in captioners.values():
        captioner.caption(items[:1])
    for _ in range(repeats):
        for strategy, captioner in captioners.items():
            synchronize(device)
            start = time.perf_counter()
            captions = captioner.caption(items)
            synchronize(device)
            timings[strategy].append(time.perf_counter() - start)
            ids[strategy] = [caption.token_ids for caption in captions]
    return {strategy: (statistics.median(timings[strategy]), ids[strategy]) for strategy in captioners}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 8, 32], help="regions per image")
    parser.add_argument("--batch-size", type=int, default=32, help="most regions per generate call")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens decoded per region")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per strategy (the median is reported)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    settings = {"config": args.config, "new_tokens": args.new_tokens, "batch": args.batch_size}
    print(environment_line(device, args.dtype, **settings, repeats=args.repeats), flush=True)
    image = as_rgb_array(files("pixelrefer_hf") / "assets" / "brooklyn_bridge.jpg", "the photo")
    rows = []
    for variant, object_only in (("full", False), ("Lite", True)):
        model, processor = build_model(args.config, object_only, device, args.dtype)
        captioners = {
            strategy: RegionCaptioner(
                model,
                processor,
                batch_size=args.batch_size,
                max_new_tokens=args.new_tokens,
                strategy=strategy,
                min_new_tokens=args.new_tokens,
            )
            for strategy in ("naive", "batched", "shared")
        }
        for count in args.regions:
            items = [CaptionItem(image, box, "photo") for box in random_boxes(count, *image.shape[:2])]
            results = measure(captioners, items, args.repeats, device)
            naive_seconds, naive_ids = results["naive"]
            for strategy, (seconds, ids) in results.items():
                row = {"variant": variant, "regions": count, "strategy": strategy, "seconds": seconds}
                row.update(regions_s=count / seconds, speedup=naive_seconds / seconds, same_ids=ids == naive_ids)
                rows.append(row)
                print(markdown_table([row], COLUMNS).splitlines()[-1], file=sys.stderr, flush=True)
        del model, captioners
    print()
    print("captioning: regions/s of each strategy on one image (speedup: over naive; same_ids: the naive ids)")
    print(markdown_table(rows, COLUMNS))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
