"""Media paths read from data files (training samples, benchmark documents), resolved under their media root.

A data file is not trusted to point anywhere on disk: a path it gives must stay inside the media root the user chose
(`--media_root` of `pixelrefer train`, `PIXELREFER_EVAL_DATA` of the evaluation tasks). A relative path must not go
above the root (its normalised form must not start with `..`, even to come back into the root); an absolute path must
lie inside the root. The check is lexical (`..` collapsed, symbolic links not followed), so a link the user placed
inside the media root (e.g. to a shared COCO folder) is followed, while a data file cannot leave the root.
"""

import os
from pathlib import Path


def resolve_media_path(
    name: str | os.PathLike,
    media_root: str | os.PathLike,
    *,
    allow_outside: bool = False,
    allow_with: str = "allow_outside_media_root=True",
) -> Path:
    """The path of the media file `name` (as a data file writes it) under `media_root`.

    Args:
        name: the media path from the data file, relative to `media_root` (or absolute).
        media_root: the folder the data's media live in.
        allow_outside: accept a path that lies outside `media_root` (absolute, or leaving it with `..`).
        allow_with: how the caller's user allows that, for the error message (a keyword, a flag, a variable).
    Returns:
        `media_root / name`, normalised. Whether the file exists is not checked.
    Raises:
        `TypeError` for a `name` that is not a string or path; `ValueError` for an empty name, a name with a NUL
        character, or (unless `allow_outside`) one that lies outside `media_root`: each message names the path, the
        media root and the fix.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"media path {name!r:.80} is not a string; give the path of the media file as a string")
    text = os.fspath(name)
    if not text or "\0" in text:
        raise ValueError(f"media path {text!r:.80} is empty or holds a NUL character; give the media file's path")
    root = os.path.abspath(media_root)
    path = os.path.abspath(os.path.join(root, text))
    if allow_outside:
        return Path(path)
    if os.path.isabs(text) and os.path.commonpath([root, path]) != root:
        raise ValueError(
            f"media path {text!r} is absolute; it lies outside the media root ({root}): give it relative to the "
            f"media root, or pass {allow_with}"
        )
    if Path(os.path.normpath(text)).parts[:1] == ("..",):
        raise ValueError(
            f"media path {text!r} leaves the media root ({root}) with '..'; give a path inside it, or pass "
            f"{allow_with}"
        )
    return Path(path)


__all__ = ["resolve_media_path"]
