"""`pixelrefer caption`: caption every object of an annotation file (see `pixelrefer caption --help`)."""

import argparse
import os
import sys
from pathlib import Path

import torch

from .. import tiny_random
from ..cli import CommandError, load_model, parse_device, positive_int
from .annotations import FORMATS, BadAnnotation, read_annotations
from .captioner import DEFAULT_PROMPT, STRATEGIES, RegionCaptioner, check_prompt
from .runner import CaptionJob, CaptionSummary, parts_dir, run_caption_job


def add_caption_command(commands: argparse._SubParsersAction) -> None:
    """Adds `caption` to the `pixelrefer` subcommands."""
    run = commands.add_parser(
        "caption",
        help="caption every object of a COCO, training-format or VideoRefer annotation file (resumable, sharded)",
        description="Caption every object of an annotation file: one JSON line per annotation in --output. The "
        "regions of an image share its prefill (prefix sharing); a killed run resumes where it stopped; under "
        "torchrun / accelerate launch each process takes its shard and process 0 merges them.",
    )
    run.add_argument("--annotations", type=Path, required=True, metavar="FILE", help="the annotation file")
    run.add_argument("--media-root", type=Path, required=True, metavar="DIR", help="folder of its images and videos")
    run.add_argument(
        "--output", type=Path, required=True, metavar="OUT.jsonl", help="the captions, one JSON line each"
    )
    run.add_argument(
        "--format", choices=("auto", *FORMATS), default="auto", help="annotation format (default: told by content)"
    )
    run.add_argument(
        "--model",
        default=tiny_random.TINY_MODEL_NAME,
        help=f"converted folder or Hub id, full or Lite (default: {tiny_random.TINY_MODEL_NAME}, random weights)",
    )
    run.add_argument(
        "--lite",
        action="store_true",
        help=f"caption with PixelRefer-Lite: the default model becomes {tiny_random.TINY_LITE_MODEL_NAME}, a --model "
        "checkpoint must be a Lite one",
    )
    run.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help=f"question asked about each region (default: {DEFAULT_PROMPT!r})"
    )
    run.add_argument("--batch-size", type=positive_int, default=8, help="most regions per generate call (default: 8)")
    run.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest caption in tokens (default: 64)")
    run.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="shared",
        help="shared: an image's prefix prefilled once for its regions (default); batched: padded batches; naive: "
        "one generate call per region (all three give the same captions)",
    )
    run.add_argument(
        "--chunk-size", type=positive_int, default=500, help="annotations per chunk written (default: 500)"
    )
    run.add_argument("--coco-output", type=Path, metavar="FILE", help="also write the COCO file with a caption each")
    run.add_argument("--strict", action="store_true", help="stop at the first bad annotation (default: count it)")
    run.add_argument(
        "--allow-outside-media-root",
        action="store_true",
        help="accept absolute media paths and paths leaving --media-root with '..'",
    )
    run.add_argument("--max-pixels", type=positive_int, help="image pixel budget (default: the processor's)")
    run.add_argument(
        "--max-frames", type=positive_int, help="most frames sampled per video (default: the processor's)"
    )
    run.add_argument("--device", type=parse_device, help="torch device (default: cuda:LOCAL_RANK if any, else cpu)")
    run.add_argument("--seed", type=int, default=0, help="seed of the tiny model's weights (default: 0)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    run.set_defaults(handler=caption)


def caption(args: argparse.Namespace) -> int:
    """Captions the annotation file and prints where the captions went (exit code 2 after an `error:` line)."""
    try:
        return _caption(args)
    except CommandError as error:
        # Under `python -m pixelrefer_hf.cli` (as torchrun and accelerate launch run it) `cli.main` runs in
        # `__main__`, whose `CommandError` is another class than the one imported here: report it as `main` does.
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _caption(args: argparse.Namespace) -> int:
    _check_arguments(args)
    # Here, not above: `pixelrefer_hf.training` imports the Trainer, which the other subcommands do not need.
    from ..training.finetune import configure_processor

    model_id = _model_name(args)
    model, processor = load_model(model_id, args.seed, args.device or _default_device())
    if args.lite and not model.config.object_only:
        raise CommandError(f"--lite, but --model {args.model} is a full PixelRefer; pass a PixelRefer-Lite checkpoint")
    configure_processor(processor, args.max_pixels, args.max_frames)
    captioner = RegionCaptioner(
        model,
        processor,
        args.prompt,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        strategy=args.strategy,
    )
    job = _job(args, model_id, getattr(model.config, "_commit_hash", None), captioner.object_only)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = run_caption_job(job, captioner)
    except (BadAnnotation, ValueError) as error:
        raise CommandError(str(error)) from error
    if summary.output is not None:
        print(_summary(job, summary))
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuses missing paths and a bad prompt before the model is loaded."""
    if not args.annotations.is_file():
        raise CommandError(f"--annotations {args.annotations} is not a file; pass the annotation file")
    if not args.media_root.is_dir():
        raise CommandError(f"--media-root {args.media_root} is not a folder; pass the folder of the media")
    try:
        check_prompt(args.prompt)
    except ValueError as error:
        raise CommandError(f"--prompt: {error}") from error


def _job(args: argparse.Namespace, model_id: str, revision: str | None, object_only: bool) -> CaptionJob:
    """The annotation file read for the model's variant, and where its captions go."""
    try:
        annotations = read_annotations(
            args.annotations,
            args.media_root,
            object_only=object_only,
            format=args.format,
            allow_outside_media_root=args.allow_outside_media_root,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    if args.coco_output is not None and annotations.format != "coco":
        raise CommandError(f"--coco-output needs a COCO annotation file; {args.annotations} is {annotations.format}")
    return CaptionJob(
        annotations,
        args.media_root,
        args.output,
        model_id=model_id,
        revision=revision,
        chunk_size=args.chunk_size,
        strict=args.strict,
        progress=args.progress,
        coco_output=args.coco_output,
        allow_outside_media_root=args.allow_outside_media_root,
        settings={"max_pixels": args.max_pixels, "max_frames": args.max_frames, "seed": args.seed},
    )


def _model_name(args: argparse.Namespace) -> str:
    if args.lite and args.model == tiny_random.TINY_MODEL_NAME:
        return tiny_random.TINY_LITE_MODEL_NAME
    return args.model


def _default_device() -> str:
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def _summary(job: CaptionJob, summary: CaptionSummary) -> str:
    lines = [
        f"Captioned {summary.captioned} of {summary.total} annotations -> {summary.output}",
        f"bad annotations: {summary.bad} (their lines have an 'error')",
        f"this process: {summary.processed} now, {summary.done_before} written by an earlier run "
        f"(chunks in {parts_dir(job.output)})",
    ]
    if job.coco_output is not None:
        lines.append(f"COCO file with captions: {job.coco_output}")
    return "\n".join(lines)


__all__ = ["add_caption_command", "caption"]
