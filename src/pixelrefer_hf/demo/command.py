"""`pixelrefer demo`: the interactive page, served on this machine. Gradio (the optional extra `demo`) is imported only
when the command runs, so the rest of the command line works without it."""

import argparse
import importlib.util

import torch

from .. import cli
from ..tiny_random import TINY_LITE_MODEL_NAME, TINY_MODEL_NAME
from .session import FULL_NAME, LITE_NAME, DemoModels


TINY_NAMES = (TINY_MODEL_NAME, TINY_LITE_MODEL_NAME)


def port_number(text: str) -> int:
    """A TCP port, 1..65535, or an argparse error saying what to pass."""
    port = int(text) if text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; pass a whole number in 1..65535, e.g. 7860")
    return port


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    """Adds `pixelrefer demo` to the `pixelrefer` subcommands."""
    demo = commands.add_parser(
        "demo",
        help="interactive page: point at objects in an image or a video and ask, in the browser (extra `demo`)",
        description="Serve an interactive page: open an image or a video, add regions by click, box or brush (SAM2 "
        "masks, propagated over a video's frames), ask about them, and see what the model received of each. "
        f"Without --model and --lite-model it runs the tiny models with random weights ({TINY_MODEL_NAME}, "
        f"{TINY_LITE_MODEL_NAME}), offline. Needs Gradio: pip install 'pixelrefer-hf[demo]'.",
    )
    demo.add_argument("--model", help=f"converted PixelRefer folder or Hub id (or {TINY_MODEL_NAME})")
    demo.add_argument(
        "--lite-model",
        help=f"converted PixelRefer-Lite folder or Hub id (or {TINY_LITE_MODEL_NAME}); with --model, the page "
        "switches between the two",
    )
    demo.add_argument(
        "--sam2",
        default=TINY_MODEL_NAME,
        help="SAM2 checkpoint id or folder that segments the regions, e.g. facebook/sam2.1-hiera-tiny "
        f"(default: {TINY_MODEL_NAME}, random weights)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine)")
    demo.add_argument("--port", type=port_number, default=7860, help="port to serve on (default: 7860)")
    demo.add_argument(
        "--device",
        type=cli.parse_device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device: cpu, cuda, cuda:N or mps, when present (default: cuda if any)",
    )
    demo.add_argument(
        "--max-new-tokens", type=cli.positive_int, default=64, help="default longest answer, in tokens (default: 64)"
    )
    demo.set_defaults(handler=serve_demo)


def load_demo_models(args: argparse.Namespace) -> DemoModels:
    """The models `pixelrefer demo` was asked for: `--model` (full) and `--lite-model` (Lite), or both tiny random
    ones when neither is given, and `--sam2`."""
    names = {FULL_NAME: args.model, LITE_NAME: args.lite_model}
    if args.model is None and args.lite_model is None:
        names = {FULL_NAME: TINY_MODEL_NAME, LITE_NAME: TINY_LITE_MODEL_NAME}
    models, random_weights = {}, []
    for variant, name in names.items():
        if name is None:
            continue
        model, processor = cli.load_model(name, 0, args.device)
        if model.config.object_only != (variant == LITE_NAME):
            flag, other = ("--lite-model", "--model") if variant == LITE_NAME else ("--model", "--lite-model")
            found = LITE_NAME if model.config.object_only else FULL_NAME
            raise cli.CommandError(f"{flag} {name!r} is a {found} checkpoint; pass it with {other}")
        models[variant] = (model, processor)
        if name in TINY_NAMES:
            random_weights.append(f"{variant} {name}")
    segmenter = cli.load_segmenter(args.sam2, 0, args.device)
    if args.sam2 == TINY_MODEL_NAME:
        random_weights.append(f"SAM2 {TINY_MODEL_NAME}")
    return DemoModels(models, segmenter, random_weights)


def serve_demo(args: argparse.Namespace) -> int:
    """Serves the demo page until interrupted (Ctrl+C)."""
    if importlib.util.find_spec("gradio") is None:
        raise cli.CommandError(
            "the demo needs Gradio, which is not installed; install it with pip install 'pixelrefer-hf[demo]'"
        )
    from .app import build_demo, launch_demo

    demo = build_demo(load_demo_models(args), args.max_new_tokens)
    try:
        launch_demo(demo, args.host, args.port)
    except OSError as error:
        raise cli.CommandError(f"cannot serve on {args.host}:{args.port} ({error}); pass another --port") from error
    print(f"PixelRefer demo on {demo.local_url} (Ctrl+C stops it)", flush=True)
    demo.block_thread()
    return 0
