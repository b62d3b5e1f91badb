"""`pixelrefer demo`: point at objects in an image or a video and ask, in the browser (optional extra `demo`).

- `session`: the logic without the page (regions -> SAM2 masks, the question -> model inputs, the per-region report,
  the streamed answer); needs no Gradio.
- `app`: the Gradio page over it (`build_demo`, `launch_demo`).
- `command`: the `pixelrefer demo` subcommand; imports Gradio only when run.
"""
