"""Caption every object of a dataset (`pixelrefer caption`): the annotation files read into one record per object,
the regions captioned in batches with their image's work shared, the run sharded over processes and resumable."""

from .annotations import FORMATS, AnnotationFile, BadAnnotation, RegionAnnotation, read_annotations
from .captioner import DEFAULT_PROMPT, STRATEGIES, CaptionItem, RegionCaption, RegionCaptioner
from .runner import CaptionJob, CaptionSummary, run_caption_job


__all__ = [
    "DEFAULT_PROMPT",
    "FORMATS",
    "STRATEGIES",
    "AnnotationFile",
    "BadAnnotation",
    "CaptionItem",
    "CaptionJob",
    "CaptionSummary",
    "RegionAnnotation",
    "RegionCaption",
    "RegionCaptioner",
    "read_annotations",
    "run_caption_job",
]
