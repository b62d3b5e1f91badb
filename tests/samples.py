"""Sample inputs shared by the tests: chat messages with regions, and the shipped clip shrunk to a small size."""

from importlib.resources import files

import numpy as np
from PIL import Image

from pixelrefer_hf.processing.video import VideoClip, load_video


CLIP = str(files("pixelrefer_hf") / "assets" / "dog_and_laptop.mp4")
PHOTO = np.asarray(Image.open(files("pixelrefer_hf") / "assets" / "brooklyn_bridge.jpg").convert("RGB"))


def image_messages(image, regions: list[dict], question: str = "Describe") -> list[dict]:
    """One user turn: the image, the question, then each region item after a space."""
    content = [{"type": "image", "image": image}, {"type": "text", "text": question}]
    for region in regions:
        content += [{"type": "text", "text": " "}, {"type": "region", **region}]
    return [{"role": "user", "content": content}]


def shrunk_clip(width: int, height: int) -> VideoClip:
    """The shipped clip sampled at 1 fps (frames 14, 43, 72, 101, 130, plus frame 0), resized to width x height."""
    clip = load_video(CLIP, fps=1, extra_frames=[0])
    shrink = lambda frame: np.asarray(Image.fromarray(frame).resize((width, height)))  # noqa: E731
    return VideoClip(
        frames=np.stack([shrink(f) for f in clip.frames]),
        indices=clip.indices,
        timestamps=clip.timestamps,
        fps=clip.fps,
        extra_frames={0: shrink(clip.frame(0))},
    )
