"""End-to-end generation speed: batches of similar lengths vs a loop of batch-1 calls, prefill alone, and the cost of
one decoding step vs the number of regions, for PixelRefer and PixelRefer-Lite with random weights.

Tables:
- `throughput`: `--samples` prompts of mixed lengths (images at several sizes with 1-3 regions, or a 16-frame video
  with 1-2 regions), `--new-tokens` new tokens each; the loop generates them one at a time, batch B through
  `batched_generation.generate_encoded` (sorted by length, left padded). The samples are encoded once beforehand
  (the processor's work is the same for both paths); samples/s and new tokens/s of `generate`.
- `prefill`: the same samples' prefill (`logits_to_keep=1`), in the same batches vs one at a time.
- `decode`: median time of one greedy decoding step on the KV cache after a prefill with 1, 8 and 32 regions; flat,
  since decoding does no object-token work.
- `settings`: prefill and decode of one sample with each attention implementation and cache (`--attn`), and with a
  `torch.compile`d decoding step on the static cache (`--compile`). The other tables use the last `--attn`.

    python benchmarks/generate.py                                              # tiny config, CPU
    python benchmarks/generate.py --config 2b --device cuda --dtype bfloat16   # PixelRefer-2B shapes
"""

import argparse
import statistics
import time
from importlib.resources import files

import numpy as np
import torch
from common import (
    CONFIGS,
    DTYPES,
    environment_line,
    markdown_table,
    median_seconds,
    model_config,
    synchronize,
)
from PIL import Image
from transformers import CompileConfig

from pixelrefer_hf import PixelReferForConditionalGeneration
from pixelrefer_hf.batched_generation import collate_encoded, generate_encoded, length_grouped_batches
from pixelrefer_hf.processing.video import load_video
from pixelrefer_hf.tiny_random import build_processor


ASSETS = files("pixelrefer_hf") / "assets"
THROUGHPUT_COLUMNS = [
    ("variant", "{}"),
    ("media", "{}"),
    ("batch", "{}"),
    ("prompt_tokens", "{}"),
    ("samples_s", "{:.2f}"),
    ("new_tokens_s", "{:.1f}"),
    ("speedup", "{:.2f}"),
]
PREFILL_COLUMNS = [("variant", "{}"), ("media", "{}"), ("batch", "{}"), ("samples_s", "{:.2f}"), ("speedup", "{:.2f}")]
DECODE_COLUMNS = [("variant", "{}"), ("regions", "{:d}"), ("prompt_tokens", "{:d}"), ("decode_ms_per_step", "{:.2f}")]
SETTINGS_COLUMNS = [("variant", "{}"), ("setting", "{}"), ("prefill_ms", "{:.1f}"), ("decode_ms_per_step", "{:.2f}")]


def _boxes(rng: np.random.Generator, count: int, width: int, height: int) -> list[dict]:
    regions = []
    for _ in range(count):
        w, h = int(rng.integers(width // 8, width // 2)), int(rng.integers(height // 8, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        regions.append({"box": [x0, y0, x0 + w, y0 + h]})
    return regions


def _messages(media: dict, regions: list[dict]) -> list[dict]:
    content = [media, {"type": "text", "text": "Describe"}]
    for region in regions:
        content += [{"type": "region", **region}, {"type": "text", "text": " and"}]
    return [{"role": "user", "content": content}]


def photo(scale: float = 1.0) -> Image.Image:
    """The bundled 640 x 422 photo, resized by `scale`."""
    image = Image.open(ASSETS / "brooklyn_bridge.jpg").convert("RGB")
    return image.resize((round(image.width * scale), round(image.height * scale)))


def image_conversations(
    count: int, max_scale: float = 1.0, regions: int | None = None, seed: int = 0
) -> list[list[dict]]:
    """The bundled photo at scales 0.3-1.0 of `max_scale` (with 1.0: ~250 to ~1500 prompt tokens), with `regions`
    regions each (default: 1-3)."""
    rng = np.random.default_rng(seed)
    chats = []
    for scale in np.linspace(0.3, 1.0, count):
        image = photo(scale * max_scale)
        number = regions or int(rng.integers(1, 4))
        regions_of_image = _boxes(rng, number, image.width, image.height)
        chats.append(_messages({"type": "image", "image": image}, regions_of_image))
    return chats


def video_conversations(count: int, seed: int = 0) -> list[list[dict]]:
    """The bundled video at 16 frames, 1-2 box regions drawn on sampled frames."""
    clip = load_video(str(ASSETS / "dog_and_laptop.mp4"), fps=None, max_frames=16)
    height, width = clip.frames.shape[1:3]
    rng = np.random.default_rng(seed)
    chats = []
    for _ in range(count):
        regions = _boxes(rng, int(rng.integers(1, 3)), width, height)
        for region in regions:
            region["frame"] = int(rng.choice(clip.indices))
        chats.append(_messages({"type": "video", "video": clip}, regions))
    return chats


def region_conversation(count: int, scale: float = 1.0) -> list[dict]:
    image = photo(scale)
    return _messages({"type": "image", "image": image}, _boxes(np.random.default_rng(1), count, *image.size))


class Bench:
    """One variant's random-weight model and processor, and the measurements on them."""

    def __init__(self, variant: str, args: argparse.Namespace, attn: str, processor=None):
        self.variant, self.args, self.attn = variant, args, attn
        self.device, self.dtype = torch.device(args.device), getattr(torch, args.dtype)
        config = model_config(args.config, object_only=variant == "Lite")
        config._attn_implementation = attn
        torch.manual_seed(0)
        self.model = PixelReferForConditionalGeneration(config).to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor or build_processor(object_only=variant == "Lite")
        self.pad_id = self.processor.tokenizer.pad_token_id

    def encode(self, chats: list[list[dict]]) -> list:
        samples = [
            self.processor.apply_chat_template([chat], add_generation_prompt=True, tokenize=True, return_dict=True)
            for chat in chats
        ]
        return [sample.to(self.device, dtype=self.dtype) for sample in samples]

    def _timed(self, fn) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        fn()
        synchronize(self.device)
        return time.perf_counter() - start

    def generation_seconds(self, samples: list, batch: int, **kwargs) -> float:
        new = self.args.new_tokens
        options = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, **kwargs}
        with torch.no_grad():
            return self._timed(lambda: generate_encoded(self.model, samples, self.pad_id, batch, **options))

    def prefill_seconds(self, samples: list, batch: int) -> float:
        lengths = [sample["input_ids"].shape[1] for sample in samples]

        def run():
            for indices in length_grouped_batches(lengths, batch):
                inputs = collate_encoded([samples[i] for i in indices], self.pad_id).to(self.device)
                self.model(**inputs, logits_to_keep=1, use_cache=True)

        with torch.no_grad():
            return self._timed(run)

    def one_prefill_seconds(self, sample) -> float:
        with torch.no_grad():
            return median_seconds(
                lambda: self.model(**sample, logits_to_keep=1, use_cache=True), self.args.repeats, self.device
            )

    def decode_step_seconds(self, sample, cache_implementation: str | None = None, compiled: bool = False) -> float:
        """Median time of one greedy step on the cache after `sample`'s prefill (through `generate`, which compiles
        the step with `compiled` on the static cache): `(time(N + 1 tokens) - time(1 token)) / N`."""
        options = {"do_sample": False, "cache_implementation": cache_implementation}
        if compiled:
            mode = "default" if self.device.type == "cpu" else "reduce-overhead"
            options["compile_config"] = CompileConfig(mode=mode)
            options["compile_config"]._compile_all_devices = True
        elif cache_implementation == "static":
            options["disable_compile"] = True
        steps = self.args.new_tokens

        def run(tokens):
            with torch.no_grad():
                self.model.generate(**sample, max_new_tokens=tokens, min_new_tokens=tokens, **options)

        run(steps + 1)
        first = statistics.median(self._timed(lambda: run(1)) for _ in range(self.args.repeats))
        whole = statistics.median(self._timed(lambda: run(steps + 1)) for _ in range(self.args.repeats))
        return max(whole - first, 0.0) / steps


def throughput_rows(bench: Bench, media: str, samples: list) -> tuple[list[dict], list[dict]]:
    lengths = [int(sample["input_ids"].shape[1]) for sample in samples]
    spread = f"{min(lengths)}-{max(lengths)}"
    bench.generation_seconds(samples[:1], 1)
    generate_rows, prefill_rows = [], []
    loop_gen = loop_prefill = None
    for batch in bench.args.batch_sizes:
        seconds = bench.generation_seconds(samples, batch)
        prefill = bench.prefill_seconds(samples, batch)
        loop_gen, loop_prefill = loop_gen or seconds, loop_prefill or prefill
        name = "loop" if batch == 1 else str(batch)
        generate_rows.append(
            {
                "variant": bench.variant,
                "media": media,
                "batch": name,
                "prompt_tokens": spread,
                "samples_s": len(samples) / seconds,
                "new_tokens_s": len(samples) * bench.args.new_tokens / seconds,
                "speedup": loop_gen / seconds,
            }
        )
        prefill_rows.append(
            {
                "variant": bench.variant,
                "media": media,
                "batch": name,
                "samples_s": len(samples) / prefill,
                "speedup": loop_prefill / prefill,
            }
        )
    return generate_rows, prefill_rows


def decode_rows(bench: Bench) -> list[dict]:
    rows = []
    for count in bench.args.decode_regions:
        (sample,) = bench.encode([region_conversation(count, bench.args.max_scale)])
        rows.append(
            {
                "variant": bench.variant,
                "regions": count,
                "prompt_tokens": int(sample["input_ids"].shape[1]),
                "decode_ms_per_step": bench.decode_step_seconds(sample) * 1e3,
            }
        )
    return rows


def settings_rows(bench: Bench) -> list[dict]:
    """Prefill and decoding step of one sample with each `--attn` implementation (the last one also on the static
    cache, and compiled with `--compile`)."""
    args = bench.args
    settings = [(attn, None, False) for attn in args.attn] + [(args.attn[-1], "static", False)]
    if args.compile:
        settings.append((args.attn[-1], "static", True))
    rows, benches = [], {bench.attn: bench}
    for attn, cache, compiled in settings:
        if attn not in benches:
            benches[attn] = Bench(bench.variant, args, attn, bench.processor)
        bench = benches[attn]
        (sample,) = bench.encode([region_conversation(2, args.max_scale)])
        name = attn + (f" + {cache} cache" if cache else "") + (" + compile" if compiled else "")
        rows.append(
            {
                "variant": bench.variant,
                "setting": name,
                "prefill_ms": bench.one_prefill_seconds(sample) * 1e3,
                "decode_ms_per_step": bench.decode_step_seconds(sample, cache, compiled) * 1e3,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--samples", type=int, default=16, help="prompts per throughput run")
    parser.add_argument("--batch-sizes", default="1,4,16", help="comma-separated; 1 is the loop of batch-1 calls")
    parser.add_argument("--media", default="images,video", help="comma-separated: images, video")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--regions", type=int, help="regions per image sample (default: 1-3)")
    parser.add_argument("--max-scale", type=float, default=1.0, help="size of the largest image, x the 640x422 photo")
    parser.add_argument("--decode-regions", default="1,8,32")
    parser.add_argument("--attn", default="eager,sdpa", help="attention implementations of the settings table")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd step on the static cache")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.decode_regions = [int(n) for n in args.decode_regions.split(",")]
    args.attn = args.attn.split(",")
    if args.batch_sizes[0] != 1:
        parser.error("--batch-sizes must start with 1 (the loop every speed-up is relative to)")
    device = torch.device(args.device)
    print(environment_line(device, args.dtype, config=args.config, samples=args.samples, new_tokens=args.new_tokens))
    make = {"images": lambda n: image_conversations(n, args.max_scale, args.regions), "video": video_conversations}
    throughput, prefill, decode, settings = [], [], [], []
    for variant in ("full", "Lite"):
        bench = Bench(variant, args, args.attn[-1])
        for media in args.media.split(","):
            rows = throughput_rows(bench, media, bench.encode(make[media](args.samples)))
            throughput += rows[0]
            prefill += rows[1]
        decode += decode_rows(bench)
        settings += settings_rows(bench)
        del bench
    for title, rows, columns in [
        ("throughput (generate, greedy)", throughput, THROUGHPUT_COLUMNS),
        ("prefill", prefill, PREFILL_COLUMNS),
        ("decode (one step on the KV cache)", decode, DECODE_COLUMNS),
        ("settings (one sample, 2 regions)", settings, SETTINGS_COLUMNS),
    ]:
        print(f"\n{title}\n")
        print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
