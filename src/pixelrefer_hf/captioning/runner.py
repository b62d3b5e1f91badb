"""Captioning a whole annotation file: sharded over processes, written in atomic chunks, resumable, merged.

The annotations are cut into work units, in file order: an image (a video) with `batch_size` regions or more is a unit
of its own, smaller ones are packed together up to `batch_size` regions. Under `torchrun` or `accelerate launch`
process `rank` takes units `rank, rank + world_size, ...` (rank and world size from `torch.distributed` when it is
initialised, else from `RANK`/`WORLD_SIZE`); one process takes them all. A unit is always captioned in the same
batches, so a region's caption does not depend on the number of processes, on restarts or on the chunking.

Each process writes its captions to `OUT.parts/rank<r>-<n>.jsonl` in chunks of whole units (at least `chunk_size`
annotations), each written to a temporary file and renamed into place (`os.replace`), so a chunk is there complete or
not at all. A restarted run reads the chunks that are there and skips their annotations (`OUT.parts/manifest.json`
checks that it runs with the same file, model and prompt). When every process is done, process 0 merges the chunks
into `OUT` (atomically, in file order), one JSON line per annotation: the same bytes however often the run was
interrupted. `OUT.parts` stays, so that running the command again only merges; delete it to start over.
"""

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..processing import validation
from ..processing.video import VideoClip, VideoSource, load_video, open_video
from ..processing.video_regions import parse_masklet
from .annotations import AnnotationFile, BadAnnotation, RegionAnnotation, media_file
from .captioner import CaptionItem, RegionCaption, RegionCaptioner


logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHUNK_PATTERN = "rank*-*.jsonl"
# How long a process waits at the end for the others (a shard can take days longer than another).
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class CaptionJob:
    """What to caption and where the captions go.

    annotations: the annotation file read by `read_annotations`.
    media_root: the folder its media paths are relative to.
    output: the JSON Lines file of the captions (its chunks go to `OUT.parts`).
    model_id, revision: the model, as written into every line.
    chunk_size: fewest annotations per chunk file (chunks hold whole work units).
    strict: stop at the first bad annotation (`BadAnnotation`) instead of counting it.
    progress: show a progress bar (regions/s and ETA) on process 0.
    coco_output: also write a copy of the COCO file with a `caption` per captioned annotation.
    allow_outside_media_root: accept media paths outside the media root.
    settings: further settings a restart must share (e.g. the pixel budget), for the manifest.
    """

    annotations: AnnotationFile
    media_root: Path
    output: Path
    model_id: str
    revision: str | None = None
    chunk_size: int = 500
    strict: bool = False
    progress: bool = True
    coco_output: Path | None = None
    allow_outside_media_root: bool = False
    settings: dict = field(default_factory=dict)


@dataclass
class CaptionSummary:
    """How a run went. `captioned` and `bad` count the merged output (process 0 only, else None); `done_before`
    counts this process's annotations that an earlier run had written; `output` is the merged file (process 0)."""

    total: int
    processed: int
    done_before: int
    captioned: int | None = None
    bad: int | None = None
    output: Path | None = None


def parts_dir(output: Path) -> Path:
    """The folder of a run's chunks: `OUT.parts` beside `OUT`."""
    return output.with_name(output.name + ".parts")


def work_units(records: list[RegionAnnotation], batch_size: int) -> list[list[RegionAnnotation]]:
    """The records cut into units of whole media, in file order: a media with `batch_size` regions or more alone,
    smaller ones packed up to `batch_size` regions (records without a media each count as a media of their own)."""
    groups: dict[tuple, list[RegionAnnotation]] = {}
    for record in records:
        key = (record.kind, record.media) if record.media is not None else ("none", record.key)
        groups.setdefault(key, []).append(record)
    units, current = [], []
    for group in groups.values():
        if current and len(current) + len(group) > batch_size:
            units.append(current)
            current = []
        current = current + group
        if len(current) >= batch_size:
            units.append(current)
            current = []
    return units + ([current] if current else [])


@contextlib.contextmanager
def distributed() -> Iterator[tuple[int, int, Callable[[], None]]]:
    """This process's rank, the world size and a barrier: those of `torch.distributed` when it is initialised, else
    of the `RANK`/`WORLD_SIZE` that `torchrun` and `accelerate launch` set (a gloo group is started for the barrier
    and closed afterwards)."""
    if dist.is_available() and dist.is_initialized():
        yield dist.get_rank(), dist.get_world_size(), dist.barrier
        return
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world_size == 1:
        yield 0, 1, lambda: None
        return
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=BARRIER_TIMEOUT)
    try:
        yield rank, world_size, dist.barrier
    finally:
        dist.destroy_process_group()


def run_caption_job(job: CaptionJob, captioner: RegionCaptioner) -> CaptionSummary:
    """Captions this process's shard of `job` (skipping what earlier runs wrote), then, on process 0, merges every
    process's chunks into `job.output` (and `job.coco_output`)."""
    parts = parts_dir(job.output)
    parts.mkdir(parents=True, exist_ok=True)
    with distributed() as (rank, world_size, barrier):
        _check_manifest(parts, _manifest(job, captioner))
        done = set(read_chunks(parts))
        units = work_units(job.annotations.records, captioner.batch_size)[rank::world_size]
        shard = _Shard(job, captioner, parts, rank, world_size)
        processed, done_before = shard.caption(units, done)
        barrier()
        summary = CaptionSummary(len(job.annotations.records), processed, done_before)
        if rank == 0:
            summary.captioned, summary.bad = merge_chunks(job, parts)
            summary.output = job.output
        return summary


def read_chunks(parts: Path) -> dict[str, tuple[str, str | None]]:
    """The lines of every chunk in `parts`: annotation id (JSON text) -> (line, caption or None for a bad one)."""
    lines: dict[str, tuple[str, str | None]] = {}
    for chunk in sorted(parts.glob(CHUNK_PATTERN)):
        for number, line in enumerate(chunk.read_text(encoding="utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
                lines.setdefault(json.dumps(entry["id"]), (line, entry["caption"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f"{chunk}, line {number}: not a caption line; the chunks in {parts} are written whole by this "
                    "command, so this one was changed by hand: delete it (its annotations are captioned again)"
                ) from None
    return lines


def merge_chunks(job: CaptionJob, parts: Path) -> tuple[int, int]:
    """Writes `job.output` from the chunks, one line per annotation in file order; returns (captioned, bad)."""
    lines = read_chunks(parts)
    records = job.annotations.records
    missing = [record for record in records if record.key not in lines]
    if missing:
        raise ValueError(
            f"{len(missing)} annotations (the first: {missing[0].id!r}) have no line in {parts}; run the same "
            "command again to caption them"
        )
    write_atomic(job.output, "".join(lines[record.key][0] + "\n" for record in records))
    captions = {key: caption for key, (_, caption) in lines.items() if caption is not None}
    if job.coco_output is not None:
        write_atomic(job.coco_output, json.dumps(_captioned_coco(job.annotations.coco, captions), ensure_ascii=False))
    return len(captions), len(records) - len(captions)


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, flushed to disk, then renames it to `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "x", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class _Shard:
    """One process's units: media loaded once per unit, regions captioned, lines written in chunks."""

    def __init__(self, job: CaptionJob, captioner: RegionCaptioner, parts: Path, rank: int, world_size: int):
        self.job, self.captioner, self.parts, self.rank = job, captioner, parts, rank
        self.world_size = world_size
        written = [int(path.stem.split("-")[1]) for path in parts.glob(f"rank{rank:05d}-*.jsonl")]
        self.next_chunk = max(written, default=-1) + 1
        self.bad = 0

    def caption(self, units: list[list[RegionAnnotation]], done: set[str]) -> tuple[int, int]:
        """Captions the annotations of `units` whose keys are not in `done`; returns (processed now, done before)."""
        todo = [[record for record in unit if record.key not in done] for unit in units]
        total = sum(map(len, todo))
        description = "captioning" + (f" (process {self.rank} of {self.world_size})" if self.world_size > 1 else "")
        bar = tqdm(total=total, unit="region", desc=description, disable=not self.job.progress or self.rank != 0)
        buffer: list[str] = []
        # The warnings about bad annotations go above the bar instead of through it.
        with bar, logging_redirect_tqdm(loggers=[logging.getLogger("pixelrefer_hf")]):
            for unit in filter(None, todo):
                buffer += self._caption_unit(unit)
                bar.update(len(unit))
                bar.set_postfix(bad=self.bad)
                if len(buffer) >= self.job.chunk_size:
                    self._write_chunk(buffer)
                    buffer = []
        if buffer:
            self._write_chunk(buffer)
        return total, sum(map(len, units)) - total

    def _write_chunk(self, lines: list[str]) -> None:
        chunk = self.parts / f"rank{self.rank:05d}-{self.next_chunk:06d}.jsonl"
        write_atomic(chunk, "".join(line + "\n" for line in lines))
        self.next_chunk += 1

    def _caption_unit(self, records: list[RegionAnnotation]) -> list[str]:
        """The lines of one unit's records, in their order (bad ones with their `error`)."""
        lines: dict[str, str] = {}
        regions: dict[str, tuple[RegionAnnotation, Path, dict]] = {}
        for record in records:
            try:
                if record.error is not None:
                    raise BadAnnotation(record.error)
                path = media_file(self.job.media_root, record.media, self.job.allow_outside_media_root)
                regions[record.key] = (record, path, record.load())
            except (BadAnnotation, ValueError, TypeError) as error:
                lines[record.key] = self._bad(record, str(error))
        media = self._load_media(list(regions.values()))
        items = []
        for record, path, region in regions.values():
            if isinstance(media[record.key], str):
                lines[record.key] = self._bad(record, media[record.key])
            else:
                items.append((record, CaptionItem(media[record.key], region, media_key=(record.kind, str(path)))))
        for (record, _), caption in zip(items, self.captioner.caption([item for _, item in items])):
            lines[record.key] = self._bad(record, caption.error) if caption.error else self._line(record, caption)
        return [lines[record.key] for record in records]

    def _load_media(self, entries: list[tuple[RegionAnnotation, Path, dict]]) -> dict:
        """Each record's image or video (or why it cannot be loaded), each file decoded once."""
        by_file: dict[tuple[str, Path], list[tuple[RegionAnnotation, dict]]] = {}
        for record, path, region in entries:
            by_file.setdefault((record.kind, path), []).append((record, region))
        media = {}
        for (kind, path), group in by_file.items():
            media.update((self._load_video if kind == "video" else self._load_image)(path, group))
        return media

    def _load_image(self, path: Path, group: list[tuple[RegionAnnotation, dict]]) -> dict:
        try:
            image = validation.as_rgb_array(path, f"image {group[0][0].media!r}")
        except (ValueError, TypeError) as error:
            return {record.key: str(error) for record, _ in group}
        loaded = {}
        for record, _ in group:
            if record.image_size is None or tuple(record.image_size) == image.shape[:2]:
                loaded[record.key] = image
            else:
                loaded[record.key] = (
                    f"the file gives its image as (H, W) = {tuple(record.image_size)}, but {record.media} is "
                    f"{image.shape[:2]}; fix its height and width (or the path)"
                )
        return loaded

    def _load_video(self, path: Path, group: list[tuple[RegionAnnotation, dict]]) -> dict:
        """The video decoded once for all its records: the sampled frames (full model) and every frame a record
        reads; a record whose frames are outside the video gets the reason instead."""
        try:
            source = open_video(path)
        except ValueError as error:
            return {record.key: str(error) for record, _ in group}
        with source:
            loaded, frames = {}, set()
            for record, region in group:
                try:
                    wanted = self._frames(region)
                    frames.update(validation.frame_indices(wanted, source.num_frames, source.name))
                except (ValueError, TypeError) as error:
                    loaded[record.key] = str(error)
            if len(loaded) == len(group):
                return loaded
            try:
                clip = self._decode(source, sorted(frames))
            except ValueError as error:
                clip = str(error)
        return {record.key: loaded.get(record.key, clip) for record, _ in group}

    def _frames(self, region: dict) -> list[int]:
        """The source frames a region is read on: its key frame (full model; the masklet's first without one) or
        every frame of its masklet (Lite)."""
        masklet, key_frame = parse_masklet(region, 0, 0)
        if self.captioner.object_only:
            return sorted(masklet)
        return [min(masklet) if key_frame is None else key_frame]

    def _decode(self, source: VideoSource, frames: list[int]) -> VideoClip:
        processor = self.captioner.processor
        if self.captioner.object_only:
            return load_video(source, frame_indices=frames)
        return load_video(source, fps=processor.video_fps, max_frames=processor.video_max_frames, extra_frames=frames)

    def _line(self, record: RegionAnnotation, caption: RegionCaption) -> str:
        return self._json(record, caption=caption.text, object_tokens=caption.object_tokens)

    def _bad(self, record: RegionAnnotation, reason: str) -> str:
        """The line of a bad annotation, logged and counted (or, with `strict`, the end of the run)."""
        reason = " ".join(reason.split())
        media = f"{record.kind} {record.media!r}" if record.media is not None else f"no {record.kind}"
        message = f"annotation {record.id!r} ({media}): {reason}"
        if self.job.strict:
            raise BadAnnotation(message)
        logger.warning("%s", message)
        self.bad += 1
        return self._json(record, caption=None, object_tokens=None, error=reason)

    def _json(self, record: RegionAnnotation, **fields) -> str:
        line = {"id": record.id, record.kind: record.media, **fields}
        line.update(prompt=self.captioner.prompt, model=self.job.model_id, revision=self.job.revision)
        return json.dumps(line, ensure_ascii=False)


def _manifest(job: CaptionJob, captioner: RegionCaptioner) -> dict:
    """What a restart must share with the run that wrote the chunks."""
    digest = hashlib.sha256()
    with open(job.annotations.path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {
        "annotations_sha256": digest.hexdigest(),
        "format": job.annotations.format,
        "model": job.model_id,
        "revision": job.revision,
        "object_only": captioner.object_only,
        "prompt": captioner.prompt,
        "max_new_tokens": captioner.generation["max_new_tokens"],
        **job.settings,
    }


def _check_manifest(parts: Path, manifest: dict) -> None:
    """Writes the manifest of a new run (every process writes the same one), or checks that a restart has it."""
    path = parts / MANIFEST
    if not path.exists():
        write_atomic(path, json.dumps(manifest, indent=1))
        return
    written = json.loads(path.read_text(encoding="utf-8"))
    changed = [
        f"{key} {written.get(key)!r} (now {value!r})" for key, value in manifest.items() if written.get(key) != value
    ]
    if changed:
        raise ValueError(
            f"{parts} holds captions of another run: {'; '.join(changed)}; rerun with the same options to resume it, "
            f"or delete {parts} (or pass another --output) to start over"
        )


def _captioned_coco(coco: dict | None, captions: dict[str, str]) -> dict:
    """A copy of the COCO file with a `caption` in each captioned annotation."""
    if coco is None:
        raise ValueError("a captioned COCO copy needs a COCO annotation file")
    annotations = [
        {**annotation, "caption": captions[json.dumps(annotation["id"])]}
        if json.dumps(annotation.get("id")) in captions
        else annotation
        for annotation in coco["annotations"]
    ]
    return {**coco, "annotations": annotations}


__all__ = [
    "CaptionJob",
    "CaptionSummary",
    "distributed",
    "merge_chunks",
    "parts_dir",
    "read_chunks",
    "run_caption_job",
    "work_units",
    "write_atomic",
]
