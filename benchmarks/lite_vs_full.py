"""PixelRefer (Vision-Object) vs PixelRefer-Lite (Object-Only) on the same image and regions.

Prints, per variant: LLM input length, vision-encoder patches, prefill FLOPs (counted with
`torch.utils.flop_counter`), prefill latency (median of repeated runs), peak memory of the prefill (CUDA: peak
allocated above the loaded model; CPU: peak growth of resident memory during the first prefill, sampled), the peak
total (weights included: allocated on CUDA, resident on CPU) and greedy
decode tokens/s on the KV cache after the prefill. Random weights (the cost does not depend on them):

    python benchmarks/lite_vs_full.py                          # tiny config, CPU
    python benchmarks/lite_vs_full.py --config 2b --device cuda --dtype bfloat16   # PixelRefer-2B shapes
"""

import argparse
import json
import multiprocessing
import os
import statistics
import time
from importlib.resources import files

import torch
from common import CONFIGS, DTYPES, PeakResidentMemory, environment_line, model_config
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from pixelrefer_hf import PixelReferForConditionalGeneration
from pixelrefer_hf.tiny_random import build_processor


REGIONS = [[425, 20, 472, 225], [405, 215, 492, 385]]
QUESTION = "What is <region>, and how does it relate to <region>?"
PIXEL_KEYS = ("pixel_values", "pixel_values_videos", "region_pixel_values", "region_context_pixel_values")


def build_inputs(object_only: bool, image_path: str) -> dict[str, torch.Tensor]:
    processor = build_processor(object_only=object_only)
    image = Image.open(image_path).convert("RGB")
    content = [{"type": "image", "image": image}]
    pieces = QUESTION.split("<region>")
    for piece, box in zip(pieces, REGIONS):
        content += [{"type": "text", "text": piece}, {"type": "region", "box": box}]
    content.append({"type": "text", "text": pieces[-1]})
    messages = [{"role": "user", "content": content}]
    return dict(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True))


def measure(variant: str, inputs: dict[str, torch.Tensor], args: argparse.Namespace) -> dict:
    """Runs in a fresh process: builds the model, then measures memory, FLOPs and timings of one variant."""
    object_only = variant == "Lite"
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    config = model_config(args.config, object_only)
    torch.manual_seed(0)
    model = PixelReferForConditionalGeneration(config).to(device=device, dtype=dtype).eval()
    inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    patches = sum(int(inputs[key].shape[0]) for key in PIXEL_KEYS if key in inputs)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, repeats):
        timings = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            timings.append(time.perf_counter() - start)
        return statistics.median(timings)

    def prefill():
        return model(**inputs, logits_to_keep=1, use_cache=True)

    def decode_seconds(steps):
        """Greedy decoding steps after a prefill, on the KV cache (the prefill is not timed)."""
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        cache, token, mask = out.past_key_values, out.logits[:, -1:].argmax(-1), inputs["attention_mask"]
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        return time.perf_counter() - start

    with torch.no_grad():
        if device.type == "cuda":
            prefill()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            prefill()
            total = torch.cuda.max_memory_allocated()
            peak = total - base
        else:
            with PeakResidentMemory() as memory:
                prefill()
            peak, total = memory.growth, memory.peak
        with FlopCounterMode(display=False) as counter:
            prefill()
        prefill_time = timed(prefill, args.repeats)
        decode_time = decode_seconds(args.new_tokens)
    return {
        "variant": variant,
        "llm_input_length": int(inputs["input_ids"].shape[1]),
        "vision_patches": patches,
        "prefill_gflops": counter.get_total_flops() / 1e9,
        "prefill_ms": prefill_time * 1e3,
        "peak_mib": peak / 2**20,
        "peak_total_mib": total / 2**20,
        "decode_tok_s": args.new_tokens / decode_time,
    }


def _worker(variant: str, inputs: dict, args: argparse.Namespace, queue) -> None:
    queue.put(measure(variant, inputs, args))


def run_isolated(variant: str, args: argparse.Namespace) -> dict:
    """Each variant's model in a fresh process, so that one's memory does not hide the other's."""
    inputs = build_inputs(variant == "Lite", args.image)
    # Large allocations are mmap-ed (and returned to the OS when freed), so resident memory follows the tensors.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_worker, args=(variant, inputs, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    header = (
        f"config={args.config} device={args.device} dtype={args.dtype} image={args.image} "
        f"regions={len(REGIONS)} repeats={args.repeats} new_tokens={args.new_tokens}"
    )
    columns = [
        ("variant", "{}"),
        ("llm_input_length", "{:d}"),
        ("vision_patches", "{:d}"),
        ("prefill_gflops", "{:.2f}"),
        ("prefill_ms", "{:.1f}"),
        ("peak_mib", "{:.0f}"),
        ("peak_total_mib", "{:.0f}"),
        ("decode_tok_s", "{:.1f}"),
    ]
    lines = [header, "| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[name]) for name, fmt in columns) + " |")
    full, lite = rows
    lines.append(
        f"Lite / full: LLM input x{lite['llm_input_length'] / full['llm_input_length']:.3f}, "
        f"prefill FLOPs x{lite['prefill_gflops'] / full['prefill_gflops']:.3f}, "
        f"prefill latency x{lite['prefill_ms'] / full['prefill_ms']:.3f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--image", default=str(files("pixelrefer_hf") / "assets" / "brooklyn_bridge.jpg"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = [run_isolated(variant, args) for variant in ("full", "Lite")]
    print(environment_line(torch.device(args.device), args.dtype))
    print(format_table(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
