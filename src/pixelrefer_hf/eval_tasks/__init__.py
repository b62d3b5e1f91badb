"""lmms-eval integration (model "pixelrefer" and region-benchmark tasks)."""
