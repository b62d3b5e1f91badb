"""The `pixelrefer` command: ask about regions of an image (`describe`), convert original checkpoints (`convert`),
publish checkpoints on the Hub (`push`), fine-tune (`train`), caption every object of a dataset (`caption`), try it in
the browser (`demo`)."""

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image, ImageOps
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    HfArgumentParser,
    PreTrainedModel,
    ProcessorMixin,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging as hf_logging

from . import __version__, tiny_random
from .conversion import ConversionReport, PushReport, convert_checkpoint, push_checkpoint
from .conversion.model_card import VARIANT_NAMES
from .processing.object_crops import ObjectCrop
from .processing.processing_pixelrefer import REGION_PLACEHOLDER
from .processing.regions import region_to_mask
from .processing.validation import load_image_file, pixel_points
from .processing.video import load_video
from .segmentation import MaskletPropagator, propagate_in_clip
from .visualization import render_regions


logger = logging.getLogger(__name__)

DEFAULT_IMAGE = "brooklyn_bridge.jpg"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EXAMPLE_QUESTION = f"What is {REGION_PLACEHOLDER}?"


class CommandError(Exception):
    """A problem with the user's input, reported as one `error:` line and exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser that reports a usage error like a `CommandError`: one `error:` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_image(path: str | Path | None = None) -> Image.Image:
    """The image at `path` as RGB (EXIF orientation applied), or the photo shipped with the package; a file that is
    missing, not an image, corrupt or too large raises a `ValueError` naming it."""
    if path is None:
        with (files("pixelrefer_hf") / "assets" / DEFAULT_IMAGE).open("rb") as file:
            return ImageOps.exif_transpose(Image.open(file)).convert("RGB")
    return Image.fromarray(load_image_file(path, "--image"))


def _pixel_numbers(text: str, what: str, layout: str) -> list[float]:
    """`"a,b,..."` -> as many numbers as `layout` names, or an argparse error saying what to pass."""
    count = layout.count(",") + 1
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(
            f"{what} {text!r} is not {layout} ({count} comma-separated numbers, in pixels)"
        )
    return values


def parse_box(text: str) -> dict[str, list[float]]:
    """`"x0,y0,x1,y1"` (pixels, x1 and y1 exclusive) -> `{"box": [x0, y0, x1, y1]}`."""
    values = _pixel_numbers(text, "box", "x0,y0,x1,y1")
    return {"box": [int(v) if v.is_integer() else v for v in values]}


def parse_point(text: str) -> dict[str, list[list[float]]]:
    """`"x,y"` (pixels) -> `{"points": [[x, y]]}`: one object marked by one point, segmented with SAM2."""
    return {"points": [_pixel_numbers(text, "point", "x,y")]}


def positive_float(text: str) -> float:
    """A finite number > 0, or an argparse error saying what to pass."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number; pass a number > 0, e.g. 1 or 0.5")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1, or an argparse error saying what to pass."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number; pass an integer >= 1, e.g. 64")
    return value


def available_devices() -> list[str]:
    """The torch devices of this machine `--device` accepts: `cpu`, then `cuda` and `cuda:N`, `mps` if present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def parse_device(text: str) -> str:
    """A torch device string this machine has (`cpu`, `cuda`, `cuda:N`, `mps`), or an argparse error listing them."""
    choices = ", ".join(available_devices())
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; pass one of: {choices}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device type {device.type!r} is not supported; pass one of: {choices}")
    if device.type == "cuda" and torch.cuda.is_available():
        available = device.index is None or device.index < torch.cuda.device_count()
    else:
        available = device.type == "cpu" or (device.type == "mps" and torch.backends.mps.is_available())
    if not available:
        raise argparse.ArgumentTypeError(
            f"device {text!r} is not available on this machine (torch {torch.__version__}); pass one of: {choices}"
        )
    return text


def read_mask(path: str) -> dict[str, np.ndarray]:
    """A mask PNG read as grayscale, nonzero = object -> `{"mask": (H, W) uint8 array}`."""
    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read mask {path!r}: {error}") from error
    return {"mask": (gray > 0).astype(np.uint8)}


def check_points(regions: Sequence[dict], size: tuple[int, int], where: str = "image") -> None:
    """Refuses a `--point` outside the `(H, W)` image (before SAM2 is loaded for it), as the SAM2 prompts would."""
    for index, region in enumerate(regions):
        if "points" in region:
            try:
                pixel_points(region["points"], None, size, f"region {index} on the {where}")
            except ValueError as error:
                raise CommandError(f"--point: {error}") from error


def build_messages(media: dict, question: str, regions: Sequence[dict]) -> list[dict]:
    """One user message: the image or video item, then the question with each `<region>` replaced by its region.

    A question without `<region>` is prefixed with one per region.
    """
    count = question.count(REGION_PLACEHOLDER)
    if count == 0:
        question = " ".join([REGION_PLACEHOLDER] * len(regions)) + "\n" + question
    elif count != len(regions):
        raise CommandError(
            f"the question has {count} {REGION_PLACEHOLDER} placeholder(s) but {len(regions)} region(s) were given "
            f"with --box/--mask/--point; put one {REGION_PLACEHOLDER} per region in the question, in order (or "
            "none, to have them put in front)"
        )
    pieces = question.split(REGION_PLACEHOLDER)
    content: list[dict] = [media]
    for piece, region in zip(pieces, regions):
        if piece:
            content.append({"type": "text", "text": piece})
        content.append({"type": "region", **region})
    if pieces[-1]:
        content.append({"type": "text", "text": pieces[-1]})
    return [{"role": "user", "content": content}]


def load_model(name: str, seed: int, device: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model and processor `name`: `tiny-random`, a converted local folder or a Hub id of a converted repo."""
    if name == tiny_random.TINY_MODEL_NAME:
        logger.warning(
            "--model %s is a tiny PixelRefer with RANDOM weights: its words are meaningless, it only shows that "
            "the pipeline runs. For real answers convert an original release, e.g. `pixelrefer convert "
            "Alibaba-DAMO-Academy/PixelRefer-2B CONVERTED_DIR`, and pass `--model CONVERTED_DIR` (or the Hub id "
            "of a converted checkpoint).",
            name,
        )
        model, processor = tiny_random.build_tiny_random(seed)
    elif name == tiny_random.TINY_LITE_MODEL_NAME:
        logger.warning("--model %s is a tiny PixelRefer-Lite with RANDOM weights: its words are meaningless.", name)
        model, processor = tiny_random.build_tiny_random(seed, object_only=True)
    else:
        try:
            processor = AutoProcessor.from_pretrained(name)
            model = AutoModelForImageTextToText.from_pretrained(name, dtype="auto")
        except (OSError, ValueError) as error:
            raise CommandError(
                f"cannot load model {name!r} ({error}); pass a converted local folder (with its weights), "
                f"a Hub id of a converted checkpoint, or {tiny_random.TINY_MODEL_NAME}"
            ) from error
    return model.to(device).eval(), processor


def load_segmenter(name: str, seed: int, device: str) -> MaskletPropagator:
    """SAM2 for point prompts and video masklets: `tiny-random`, or a SAM2 checkpoint id or folder."""
    if name == tiny_random.TINY_MODEL_NAME:
        logger.warning("--sam2 %s is a tiny SAM2 with RANDOM weights: its masks are meaningless.", name)
        return tiny_random.build_tiny_sam2(seed)
    try:
        return MaskletPropagator.from_pretrained(name, device=device)
    except OSError as error:
        raise CommandError(f"cannot load SAM2 {name!r} ({error}); pass a SAM2 checkpoint id or folder") from error


def _prepare_image(args: argparse.Namespace) -> tuple[dict, list[dict], np.ndarray, list[dict]]:
    """The image item, the regions (points segmented with SAM2), the image and the regions as drawn on it."""
    try:
        image = load_image(args.image)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read image {args.image!r}: {error}") from error
    frame = np.asarray(image)
    check_points(args.regions, frame.shape[:2])
    regions = list(args.regions)
    pointed = [i for i, region in enumerate(regions) if "points" in region]
    if pointed:
        segmenter = load_segmenter(args.sam2, args.seed, args.device)
        masklets = segmenter.propagate(frame[None], [regions[i] for i in pointed], progress=False)
        for i, masklet in zip(pointed, masklets):
            regions[i] = {"mask": masklet[0]}
    return {"type": "image", "image": image}, regions, frame, regions


def _prepare_video(args: argparse.Namespace) -> tuple[dict, list[dict], np.ndarray, list[dict]]:
    """The video item, masklets propagated from the prompts on `--frame`, that frame and the prompts' masks on it."""
    try:
        clip = load_video(args.video, fps=args.fps, extra_frames=[args.frame])
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from error
    check_points(args.regions, clip.frame(args.frame).shape[:2], where=f"frame {args.frame} of the video")
    segmenter = load_segmenter(args.sam2, args.seed, args.device)
    try:
        regions = propagate_in_clip(segmenter, clip, args.regions, args.frame)
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error
    on_frame = [{"mask": region["masklet"][args.frame]} for region in regions]
    return {"type": "video", "video": clip}, regions, clip.frame(args.frame), on_frame


def describe(args: argparse.Namespace) -> int:
    """Answers a question about regions of an image or a video and prints how each region was tokenized."""
    if not args.regions:
        raise CommandError(
            "no region given; point at an object with --box x0,y0,x1,y1, --mask PNG or --point x,y (repeatable)"
        )
    if args.video is not None and args.image is not None:
        raise CommandError("pass --image or --video, not both")
    set_seed(args.seed)
    prepare = _prepare_video if args.video is not None else _prepare_image
    media, regions, frame, on_frame = prepare(args)
    messages = build_messages(media, args.question, regions)
    try:
        masks = [region_to_mask(region, frame.shape[:2], region_index=i) for i, region in enumerate(on_frame)]
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error
    model, processor = load_model(args.model, args.seed, args.device)
    try:
        crops = processor.object_crops(frame, on_frame)
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    except ValueError as error:
        raise CommandError(str(error)) from error

    with torch.inference_mode():
        output = model.generate(**inputs.to(model.device), max_new_tokens=args.max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    answer = processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    if not answer:
        answer = f"(no visible text: the {len(new_tokens)} new tokens are whitespace or special tokens)"
    print(f"Answer: {answer}")
    print()
    if args.video is not None:
        print(
            f"Crops on frame {args.frame}; Lite reads the object on every masklet frame, the full model on this one."
        )
    print(_crops_table(crops, regions if args.video is not None else None))

    if args.save_vis is not None:
        args.save_vis.parent.mkdir(parents=True, exist_ok=True)
        render_regions(Image.fromarray(frame), masks, crops).save(args.save_vis)
        print(f"\nSaved the visualization to {args.save_vis}")
    return 0


def train(args: argparse.Namespace) -> int:
    """Fine-tunes a model on data in the original release's format (`pixelrefer train --help` lists the options:
    PixelRefer's and every `TrainingArguments` flag)."""
    from .training import PixelReferTrainArguments, check_data, configure_processor, finetune

    parser = TrainArgumentParser((PixelReferTrainArguments, TrainingArguments), prog="pixelrefer train")
    train_args, training_args = parser.parse_args_into_dataclasses(args=_merge_repeated(args.options, "--data"))
    model, processor = load_model(train_args.model, training_args.seed, "cpu")
    configure_processor(processor, train_args.max_pixels, train_args.max_frames)
    try:
        if train_args.check_data:
            return _report_bad_samples(check_data(train_args.data, processor, train_args.media_root), train_args)
        training_args.output_dir = train_args.output
        finetune(model.train(), processor, train_args, training_args)
    except ValueError as error:
        print(file=sys.stderr)  # ends the progress bar's line, so that the error is a line of its own
        raise CommandError(str(error)) from error
    print(f"Saved the fine-tuned model and its processor to {train_args.output}")
    return 0


class TrainArgumentParser(HfArgumentParser):
    """`HfArgumentParser` with `pixelrefer`'s usage errors: one `error:` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _merge_repeated(options: list[str], flag: str) -> list[str]:
    """`--data a --data b` -> `--data a b` (the dataclass field takes a list)."""
    merged, values, current = [], [], None
    for option in options:
        if option.startswith("-"):
            current = option if option == flag else None
            if current is None:
                merged.append(option)
        elif current is not None:
            values.append(option)
        else:
            merged.append(option)
    return [flag, *values, *merged] if values else merged


def _report_bad_samples(bad: list, train_args) -> int:
    """Prints every bad sample `check_data` found; exit code 2 if there is one."""
    for error in bad:
        print(f"bad sample: {_one_line(error)}")
    if bad:
        print(f"error: {len(bad)} bad samples in {', '.join(train_args.data)}", file=sys.stderr)
        return 2
    print(f"All samples of {', '.join(train_args.data)} are valid.")
    return 0


def _crops_table(crops: Sequence[ObjectCrop], masklets: Sequence[dict] | None = None) -> str:
    """How each region was tokenized (crop box, size, scale, tokens, grid), plus its masklet frames for a video."""
    header = ["region", "crop box x0,y0,x1,y1", "crop WxH", "scale", "tokens", "grid HxW"]
    rows = [
        [
            str(index),
            ",".join(str(v) for v in crop.box),
            f"{crop.image.shape[1]}x{crop.image.shape[0]}",
            f"{crop.scale:.2f}",
            str(crop.num_tokens),
            "x".join(str(v) for v in crop.mask.shape),
        ]
        for index, crop in enumerate(crops)
    ]
    if masklets is not None:
        header.append("masklet frames")
        for row, region in zip(rows, masklets):
            row.append(",".join(str(k) for k in region["masklet"]))
    return _table(header, rows)


def convert(args: argparse.Namespace) -> int:
    """Converts an original PixelRefer release folder and prints what the conversion did."""
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if args.progress_off:
        hf_logging.disable_progress_bar()
    try:
        report = convert_checkpoint(args.src, args.dst, dtype=DTYPES.get(args.dtype), progress=not args.progress_off)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    print(_conversion_summary(args.src, report))
    return 0


def push(args: argparse.Namespace) -> int:
    """Pushes an original (converted on the fly) or converted checkpoint to the Hub and prints where it went."""
    try:
        report = push_checkpoint(
            args.src,
            args.repo_id,
            base_model=args.base_model,
            private=args.private or None,
            revision=args.revision,
            commit_message=args.commit_message,
            exist_ok=args.exist_ok,
            token=args.token,
            max_shard_size=args.max_shard_size,
            results=args.results,
            progress=not args.progress_off,
        )
    except (FileNotFoundError, ValueError, HfHubHTTPError) as error:
        raise CommandError(str(error).strip()) from error
    print(_push_summary(args.src, report))
    return 0


def _push_summary(src: Path, report: PushReport) -> str:
    how = "converted on the fly" if report.source_kind == "original" else "already converted"
    load = f'AutoModelForImageTextToText.from_pretrained("{report.repo_id}") after `import pixelrefer_hf`'
    return "\n".join(
        [
            f"Pushed {src} ({how}) -> {report.repo_id}@{report.revision}",
            f"variant: {report.variant} ({VARIANT_NAMES[report.variant]})",
            f"repo: {'created' if report.created_repo else 'existing'}",
            f"commit: {report.commit_url}",
            f"files: {len(report.files)} ({report.num_shards} weight shard(s)): {', '.join(report.files)}",
            "",
            "Next:",
            f'  pixelrefer describe --model {report.repo_id} --box x0,y0,x1,y1 "{EXAMPLE_QUESTION}"',
            f"  or in Python: {load}",
        ]
    )


def _conversion_summary(src: Path, report: ConversionReport) -> str:
    name = "PixelRefer" if report.variant == "full" else "PixelRefer-Lite"
    dst = report.output_dir
    lines = [
        f"Converted {src} -> {dst}",
        f"variant: {report.variant} ({name})",
        f"tensors read: {report.num_tensors}",
        f"dropped (unused by the model): {', '.join(report.dropped_keys) or 'none'}",
        f"missing (left at their initial values): {', '.join(report.missing_keys) or 'none'}",
        f"processor: {'written' if report.has_processor else f'not written (no tokenizer files in {src})'}",
        "",
        "Next:",
    ]
    if report.has_processor:
        lines.append(f'  pixelrefer describe --model {dst} --box x0,y0,x1,y1 "{EXAMPLE_QUESTION}"')
    else:
        lines.append(f"  put the release's Qwen2.5 tokenizer files into {src} and convert again, to get a processor")
    lines.append(f'  or in Python: AutoModelForImageTextToText.from_pretrained("{dst}") after `import pixelrefer_hf`')
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in (header, *rows))


# The region options of `describe`, each repeatable and collected in order into `args.regions`.
REGION_OPTIONS = (
    ("--box", parse_box, "X0,Y0,X1,Y1", "a region as a box in pixels (x1, y1 exclusive); repeatable"),
    ("--mask", read_mask, "PNG", "a region as a mask PNG of the image's size (nonzero = object); repeatable"),
    ("--point", parse_point, "X,Y", "a region as one point on the object, segmented with SAM2 (--sam2); repeatable"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `pixelrefer` command."""
    from .captioning.command import add_caption_command  # here, not above: it imports this module
    from .demo.command import add_demo_command  # here, not above: it imports this module

    parser = ArgumentParser(prog="pixelrefer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pixelrefer-hf {_package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log informational messages")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_describe(commands)
    _add_convert(commands)
    _add_push(commands)
    commands.add_parser(
        "train",
        add_help=False,
        help="fine-tune on data in the original release's format with the HF Trainer (`pixelrefer train --help`)",
    ).set_defaults(handler=train)
    add_caption_command(commands)
    add_demo_command(commands)
    return parser


def _add_describe(commands: argparse._SubParsersAction) -> None:
    ask = commands.add_parser(
        "describe",
        help="ask a question about regions of an image or a video",
        description="Ask about regions of an image or a video; each <region> in the question is one --box, --mask or "
        "--point, in order (on --frame of a --video, propagated to the other frames with SAM2).",
    )
    ask.add_argument("question", help=f"the question, with one {REGION_PLACEHOLDER} per region (or none)")
    ask.add_argument("--image", help="image file (default: a photo of the Brooklyn Bridge shipped with the package)")
    ask.add_argument(
        "--video",
        help="video file or frame folder; the regions are prompts on --frame, propagated with SAM2 into masklets",
    )
    ask.add_argument("--frame", type=int, default=0, help="video frame the regions are drawn on (default: 0)")
    ask.add_argument("--fps", type=positive_float, default=1.0, help="video frames sampled per second (default: 1)")
    ask.add_argument(
        "--sam2",
        default=tiny_random.TINY_MODEL_NAME,
        help="SAM2 checkpoint id or folder for --point and --video, e.g. facebook/sam2.1-hiera-tiny "
        f"(default: {tiny_random.TINY_MODEL_NAME}, random weights)",
    )
    for flag, parse, metavar, help_text in REGION_OPTIONS:
        ask.add_argument(flag, dest="regions", action="append", type=parse, metavar=metavar, help=help_text)
    ask.add_argument(
        "--model",
        default=tiny_random.TINY_MODEL_NAME,
        help=f"converted folder or Hub id (default: {tiny_random.TINY_MODEL_NAME}, random weights)",
    )
    ask.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest answer, in tokens (default: 64)")
    ask.add_argument("--seed", type=int, default=0, help="random seed, also of the tiny model's weights (default: 0)")
    ask.add_argument(
        "--device",
        type=parse_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device: cpu, cuda, cuda:N or mps, when present (default: cuda if any)",
    )
    ask.add_argument("--save-vis", type=Path, metavar="OUT.png", help="save a picture of the regions and their crops")
    ask.set_defaults(handler=describe)


def _add_convert(commands: argparse._SubParsersAction) -> None:
    conv = commands.add_parser(
        "convert",
        help="convert an original PixelRefer release folder to a Transformers folder",
        description="Convert an original PixelRefer / PixelRefer-Lite release folder to a Transformers folder.",
    )
    conv.add_argument(
        "src", type=Path, help="original release folder (config.json and weights), or its Hub id (downloaded)"
    )
    conv.add_argument("dst", type=Path, help="output folder")
    conv.add_argument("--dtype", choices=sorted(DTYPES), help="weight dtype (default: the original's)")
    conv.add_argument("--no-progress", dest="progress_off", action="store_true", help="hide progress bars")
    conv.set_defaults(handler=convert)


def _add_push(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser(
        "push",
        help="push an original or converted checkpoint to the Hugging Face Hub, with a model card",
        description=(
            "Push a PixelRefer / PixelRefer-Lite checkpoint to the Hub in one commit: safetensors weights, config, "
            "generation config, processor files with the chat template and a generated model card. An original "
            "release folder is converted first. Nothing is created when a check fails."
        ),
    )
    publish.add_argument(
        "src", type=Path, help="original release folder (converted on the fly) or a folder from `pixelrefer convert`"
    )
    publish.add_argument("repo_id", help="target model repo, namespace/name")
    publish.add_argument(
        "--base-model",
        required=True,
        metavar="ORIGINAL_REPO_ID",
        help="Hub id of the original release the checkpoint comes from, e.g. Alibaba-DAMO-Academy/PixelRefer-2B "
        "(model card metadata; required: it cannot be told from the weights)",
    )
    publish.add_argument("--private", action="store_true", help="create the repo private (ignored if it exists)")
    publish.add_argument(
        "--revision", metavar="BRANCH", help="branch to commit to, created when missing (default: main)"
    )
    publish.add_argument(
        "--commit-message", help="commit message (default: Upload <variant> converted from <base model>)"
    )
    publish.add_argument(
        "--exist-ok",
        action="store_true",
        help="add a commit to an existing repo (default: an existing repo is an error)",
    )
    publish.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the saved login)")
    publish.add_argument(
        "--max-shard-size",
        default="5GB",
        metavar="SIZE",
        help="re-save weights in shards of at most SIZE when a weight file is larger (default: 5GB)",
    )
    publish.add_argument(
        "--results",
        type=Path,
        metavar="RESULTS.md",
        help="benchmark results for the model card's Lite/full figures (default: benchmarks/RESULTS.md of the "
        "source checkout; the card says they are pending when there is none)",
    )
    publish.add_argument("--no-progress", dest="progress_off", action="store_true", help="hide progress bars")
    publish.set_defaults(handler=push)


def _package_version() -> str:
    try:
        return version("pixelrefer-hf")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return __version__


def main(argv: list[str] | None = None) -> int:
    """Runs the `pixelrefer` command; returns its exit code (2 for a usage or input error)."""
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if rest and args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.options = rest
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_logger = logging.getLogger("pixelrefer_hf")
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.handler(args)
    except SystemExit as exit_:  # `pixelrefer train`'s own argument parser: --help, or a usage error
        return exit_.code if isinstance(exit_.code, int) else 2
    except CommandError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)


if __name__ == "__main__":
    # `python -m pixelrefer_hf.cli` (as torchrun and accelerate start it) runs this file as `__main__`; the
    # subcommand modules import `pixelrefer_hf.cli`, so run that module's `main`, whose `CommandError` they raise.
    from pixelrefer_hf.cli import main as package_main

    sys.exit(package_main())
