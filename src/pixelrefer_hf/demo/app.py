"""The demo's page: a `gr.Blocks` app over `session.Workspace`.

Open an image or a video; add regions by clicking the frame (a point, or two corners of a box), typing coordinates
or painting with the brush; each region's SAM2 mask is drawn on the frame (on a video, propagated over the sampled
frames: move the frame slider to see them); ask about `<region1>`, `<region2>`, ...; the answer streams in, beside
what the model received of each region (its scale-adapted crop, scale factor and object-token count). Problems with
the input are shown as one message on the page (`gr.Error`).

Endpoints for `gradio_client` (a `Client` keeps its own session, so its regions persist between calls):
`/open_image`, `/open_video`, `/show_frame`, `/add_region` (typed `x,y` or `x0,y0,x1,y1`), `/add_brush`,
`/remove_last`, `/clear_regions` and `/ask` (question, model name, most new tokens).
"""

import functools
from collections.abc import Callable, Iterator
from importlib.resources import files

import gradio as gr
import numpy as np

from .session import (
    EXAMPLE_QUESTION,
    DemoError,
    DemoModels,
    DrawnRegion,
    RegionReport,
    Workspace,
    parse_prompt,
    stream_answer,
)


ASSETS = files("pixelrefer_hf") / "assets"
POINT, BOX = "Point", "Box"
# System fonts: the default theme's web fonts would be fetched from the internet.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
HOW_TO = f"""
1. **Open** an image or a video (or a sample below it).
2. **Add regions**: with *Point*, click the object; with *Box*, click two opposite corners; or type `x,y` / \
`x0,y0,x1,y1`; or paint one in *Brush*. SAM2 segments each region (on a video, over every sampled frame: move the \
frame slider to see the masks).
3. **Ask** about the numbered regions, e.g. `{EXAMPLE_QUESTION}` or `How does <region1> relate to <region2>?` \
(a question without references is about all regions).
"""


def build_demo(loaded: DemoModels, max_new_tokens: int = 64) -> gr.Blocks:
    """The demo page for `loaded` models (serve it with `launch_demo`); `max_new_tokens`: the default answer length."""
    handlers = Handlers(loaded)
    with gr.Blocks(title="PixelRefer demo", analytics_enabled=False) as demo:
        gr.Markdown("# PixelRefer: ask about regions of an image or a video")
        gr.Markdown(_models_note(loaded), elem_id="models-note")
        gr.Markdown(HOW_TO)
        workspace = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Image"):
                    image = gr.Image(
                        label="Image",
                        type="numpy",
                        image_mode="RGB",
                        sources=["upload", "clipboard"],
                        height=240,
                        elem_id="image",
                    )
                    gr.Examples([[str(ASSETS / "brooklyn_bridge.jpg")]], inputs=[image], label="Sample image")
                with gr.Tab("Video"):
                    video = gr.Video(label="Video", sources=["upload"], height=240)
                    fps = gr.Number(1.0, label="Frames sampled per second", minimum=0.01)
                    gr.Examples([[str(ASSETS / "dog_and_laptop.mp4")]], inputs=[video], label="Sample video")
                with gr.Accordion("Brush", open=False):
                    editor = gr.ImageEditor(
                        label="Paint one region on the frame",
                        type="numpy",
                        image_mode="RGBA",
                        sources=[],
                        transforms=[],
                        layers=False,
                        brush=gr.Brush(colors=["rgb(230, 25, 75)"], color_mode="fixed"),
                    )
                    add_brush = gr.Button("Add the painted region")
            with gr.Column(scale=2):
                canvas = gr.Image(label="Open an image or a video", type="numpy", interactive=False, elem_id="canvas")
                position = gr.Slider(0, 1, value=0, step=1, label="Sampled frame", visible=False)
                with gr.Row():
                    mode = gr.Radio([POINT, BOX], value=POINT, label="A click adds", scale=1, elem_id="mode")
                    typed = gr.Textbox(label="or type x,y or x0,y0,x1,y1 (pixels)", scale=2)
                    add_typed = gr.Button("Add", scale=0)
                status = gr.Markdown(elem_id="status")
                regions = gr.Dataframe(label="Regions", interactive=False)
                with gr.Row():
                    remove_last = gr.Button("Remove the last region")
                    clear = gr.Button("Clear all regions")
        with gr.Row():
            question = gr.Textbox(label="Question", value=EXAMPLE_QUESTION, scale=3, elem_id="question")
            names = list(loaded.models)
            variant = gr.Radio(names, value=names[0], label="Model", visible=len(names) > 1, scale=1)
            length = gr.Slider(1, 512, value=max_new_tokens, step=1, label="Most new tokens", scale=1)
            ask = gr.Button("Ask", variant="primary", scale=0, elem_id="ask")
        with gr.Row():
            answer = gr.Textbox(label="Answer", lines=4, interactive=False, scale=2, elem_id="answer")
            crops = gr.Gallery(
                label="Scale-adapted crops the model received", columns=4, height=240, object_fit="contain", scale=1
            )
        report = gr.Dataframe(label="What the model received of each region", interactive=False, elem_id="report")

        view = [workspace, canvas, regions, editor, status]
        media_view = [*view, position]
        image.change(handlers.open_image, [image], media_view, api_name="open_image")
        video.change(handlers.open_video, [video, fps], media_view, api_name="open_video")
        position.change(handlers.show_frame, [workspace, position], view, api_name="show_frame")
        mode.change(handlers.remove_corner, [workspace, position], view, api_visibility="private")
        canvas.select(handlers.click, [workspace, mode, position], view, api_visibility="private")
        edits = [
            (add_typed, handlers.add_typed, [typed], "add_region"),
            (add_brush, handlers.add_brush, [editor], "add_brush"),
            (remove_last, handlers.remove_last, [], "remove_last"),
            (clear, handlers.clear, [], "clear_regions"),
        ]
        for button, handler, extra, name in edits:
            button.click(handler, [workspace, position, *extra], view, api_name=name)
        ask.click(handlers.ask, [workspace, question, variant, length], [answer, report, crops], api_name="ask")
    return demo


def launch_demo(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Starts serving `demo` on `host:port` in the background (offline: no share link, no telemetry, system fonts);
    `demo.block_thread()` waits until Ctrl+C, `demo.close()` stops it."""
    demo.launch(server_name=host, server_port=port, theme=THEME, prevent_thread_lock=True, share=False, quiet=True)


def _models_note(loaded: DemoModels) -> str:
    """What runs behind the page, and a warning when weights are random."""
    note = f"Models: {', '.join(loaded.models)}; SAM2 segments the regions."
    if loaded.random_weights:
        note += (
            f"\n\n**Random weights** ({', '.join(loaded.random_weights)}): tiny models built offline, so what they "
            "give (the masks and the words) is meaningless, while the flow (SAM2 masks, scale-adapted crops, object "
            "tokens, the answer) is real. For real answers: `pixelrefer demo --model CONVERTED_DIR --lite-model "
            "CONVERTED_LITE_DIR --sam2 facebook/sam2.1-hiera-tiny`."
        )
    return note


def _on_page(handler: Callable) -> Callable:
    """Shows a `DemoError` of `handler` as one message on the page (`gr.Error`), without a trace."""

    @functools.wraps(handler)
    def shown(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from error

    return shown


def _opened(workspace: Workspace | None) -> Workspace:
    if workspace is None:
        raise DemoError("no image or video is open; open one first (the Image and Video tabs)")
    return workspace


class Handlers:
    """The page's event handlers; each takes and returns the visitor's `Workspace` (a `gr.State`)."""

    def __init__(self, loaded: DemoModels):
        self.loaded = loaded

    @_on_page
    def open_image(self, image: np.ndarray | None) -> tuple:
        workspace = None if image is None else Workspace.from_image(image)
        return *self._view(workspace, 0), gr.Slider(value=0, visible=False)

    @_on_page
    def open_video(self, video: str | None, fps: float) -> tuple:
        workspace = None if video is None else Workspace.from_video(video, fps)
        num_frames = 0 if workspace is None else len(workspace.clip.indices)
        slider = gr.Slider(maximum=max(num_frames - 1, 1), value=0, visible=num_frames > 1)
        return *self._view(workspace, 0), slider

    @_on_page
    def show_frame(self, workspace: Workspace | None, position: int) -> tuple:
        return self._view(workspace, position)

    @_on_page
    def remove_corner(self, workspace: Workspace | None, position: int) -> tuple:
        if workspace is not None:
            workspace.pending_corner = None
        return self._view(workspace, position)

    @_on_page
    def click(
        self,
        workspace: Workspace | None,
        mode: str,
        position: int,
        event: gr.SelectData,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's way to ask for a progress bar)
    ) -> tuple:
        x, y = (int(value) for value in event.index)
        workspace = _opened(workspace)
        if mode == BOX:
            region = workspace.add_corner(x, y, position, self.loaded.segmenter)
        else:
            region = workspace.add({"points": [[x, y]]}, position, self.loaded.segmenter)
        status = f"Box corner at {x},{y}: click the opposite corner." if region is None else None
        return self._view(workspace, position, status)

    @_on_page
    def add_typed(
        self,
        workspace: Workspace | None,
        position: int,
        text: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple:
        workspace = _opened(workspace)
        workspace.add(parse_prompt(text), position, self.loaded.segmenter)
        return self._view(workspace, position)

    @_on_page
    def add_brush(
        self,
        workspace: Workspace | None,
        position: int,
        painted: dict | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple:
        workspace = _opened(workspace)
        workspace.add({"mask": _painted_mask(painted)}, position, self.loaded.segmenter)
        return self._view(workspace, position)

    @_on_page
    def remove_last(self, workspace: Workspace | None, position: int) -> tuple:
        _opened(workspace).remove_last()
        return self._view(workspace, position)

    @_on_page
    def clear(self, workspace: Workspace | None, position: int) -> tuple:
        _opened(workspace).regions.clear()
        return self._view(workspace, position)

    def ask(
        self, workspace: Workspace | None, question: str, variant: str, max_new_tokens: int
    ) -> Iterator[tuple[str, dict, list]]:
        """Streams the answer; first yields what the model receives of each region.

        The crops are sent once: Gradio rewrites an image's cache file each time it is sent, which would cut short a
        download of the previous copy. The table goes with every piece, so that the last one holds everything.
        """
        try:
            model, processor = self.loaded.models[variant]
            workspace = _opened(workspace)
            request = workspace.request(processor, question)
            table = _report_table(request.reports, workspace)
            yield "", table, [(report.crop.image, _caption(report)) for report in request.reports]
            answer = ""
            for answer in stream_answer(model, processor, request, int(max_new_tokens)):
                yield answer.strip(), table, gr.skip()
            if not answer.strip():
                yield "(no visible text: the answer is whitespace or special tokens)", table, gr.skip()
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from error

    def _view(self, workspace: Workspace | None, position: int, status: str | None = None) -> tuple:
        """The page's view of `workspace`: the state, the frame with the regions, their table, the brush canvas on
        the frame, and a status line (the last region added, unless `status` is given)."""
        if workspace is None:
            empty = {"headers": ["region"], "data": []}
            return None, gr.Image(None, label="Open an image or a video"), empty, None, ""
        header, rows = workspace.regions_table()
        frame = workspace.clip.frame(workspace.source_frame(position))
        label = f"{workspace.describe_frame(position).capitalize()}: click to add a region"
        if status is None:
            status = _added(workspace.regions[-1], workspace) if workspace.regions else "No region yet."
        canvas = gr.Image(workspace.overlay(position), label=label)
        editor = {"background": frame, "layers": [], "composite": None}
        return workspace, canvas, {"headers": header, "data": rows}, editor, status


def _painted_mask(painted: dict | None) -> np.ndarray:
    """The brushed region: the pixels painted on any layer of the `gr.ImageEditor` value, `(H, W)` uint8."""
    layers = [] if painted is None else [layer for layer in painted.get("layers") or [] if layer is not None]
    if not layers:
        raise DemoError("nothing is painted; paint the object in the Brush panel, then add it")
    return (np.max([layer[..., 3] for layer in layers], axis=0) > 0).astype(np.uint8)


def _added(region: DrawnRegion, workspace: Workspace) -> str:
    frames = f", propagated to {len(region.masklet)} frame(s)" if workspace.is_video else ""
    pixels = int(np.count_nonzero(region.masklet[region.frame]))
    return f"Region {len(workspace.regions)} ({region.describe_prompt()}): SAM2 mask of {pixels} px{frames}."


def _caption(report: RegionReport) -> str:
    return f"region {report.number}: scale x{report.crop.scale:.2f}, {report.num_tokens} object tokens"


def _report_table(reports: list[RegionReport], workspace: Workspace) -> dict:
    """Per `<region>` of the question: the frames it is read on, its crop box, size, scale, tokens and mask grid."""
    header = ["region", "read on", "crop box x0,y0,x1,y1", "crop WxH", "scale", "object tokens", "grid HxW"]
    rows = [
        [
            report.number,
            ",".join(f"frame {frame}" for frame in report.frames) if workspace.is_video else "image",
            ",".join(str(value) for value in report.crop.box),
            f"{report.crop.image.shape[1]}x{report.crop.image.shape[0]}",
            round(report.crop.scale, 2),
            report.num_tokens,
            "x".join(str(value) for value in report.crop.mask.shape),
        ]
        for report in reports
    ]
    return {"headers": header, "data": rows}
