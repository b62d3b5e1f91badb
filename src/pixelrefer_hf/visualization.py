"""Pictures of what PixelRefer sees of each region: its outline on the image, its scale-adapted crop, its mask."""

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .processing.object_crops import ObjectCrop


PALETTE = [
    (230, 25, 75),
    (255, 200, 0),
    (0, 190, 255),
    (60, 200, 75),
    (245, 130, 48),
    (200, 60, 230),
    (70, 240, 240),
    (250, 110, 190),
]
BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
MUTED_TEXT = (160, 160, 170)
MARGIN = 16
GAP = 10
OUTLINE_WIDTH = 3
MASK_ALPHA = 0.55
TINT_ALPHA = 60
IMAGE_LONG_SIDE = (480, 1024)
PANEL_SIZE = 300
FONT_SIZE = 15
NOTE = (
    "Per region: the scale-adapted crop the vision encoder sees, and the region's mask on",
    "the crop's patch grid; the masked patch features become the region's object tokens.",
)


def render_regions(
    image: Image.Image | np.ndarray, masks: Sequence[np.ndarray], crops: Sequence[ObjectCrop]
) -> Image.Image:
    """Draws the regions of one image and what the processor made of them.

    Left: the image with each region's mask outlined and numbered (one colour per region) and its crop box drawn
    thin. Right, one row per region: the scale-adapted crop, and the same crop under the region's mask on the patch
    grid (nearest-neighbour upsampled, grid lines at the patch size), labelled with the region index, the scale
    factor, the object-token count and the grid size.

    Args:
        image: the source image, PIL or `(H, W, 3)` uint8 RGB.
        masks: one `(H, W)` binary mask per region, in the image's pixels.
        crops: the regions' crops, as `PixelReferProcessor.object_crops` returns them.

    Returns:
        An RGB image wider than the source image.
    """
    if len(masks) != len(crops):
        raise ValueError(f"Got {len(masks)} masks but {len(crops)} crops; pass one crop per mask.")
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    font = ImageFont.load_default(size=FONT_SIZE)
    line_height = FONT_SIZE + 6

    overview = _draw_overview(image, masks, crops, font)
    rows = [_draw_region_row(index, crop, font, line_height) for index, crop in enumerate(crops)]
    columns = _stack_in_columns(rows, max(overview.height, max((row.height for row in rows), default=0)))

    left_width = max([overview.width] + [int(font.getlength(line)) for line in NOTE])
    width = MARGIN * 2 + left_width + sum(MARGIN + column.width for column in columns)
    note_height = GAP + line_height * len(NOTE)
    height = MARGIN * 2 + line_height + max([overview.height + note_height] + [column.height for column in columns])
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title = f"image {image.width}x{image.height}, {len(crops)} region(s): mask outlined, crop box thin"
    draw.text((MARGIN, MARGIN), title, fill=TEXT, font=font)
    left, top = MARGIN, MARGIN + line_height
    canvas.paste(overview, (left, top))
    for index, line in enumerate(NOTE):
        draw.text((left, top + overview.height + GAP + index * line_height), line, fill=MUTED_TEXT, font=font)
    left += left_width + MARGIN
    for column in columns:
        canvas.paste(column, (left, top))
        left += column.width + MARGIN
    return canvas


def region_color(index: int) -> tuple[int, int, int]:
    """The colour region `index` is drawn in."""
    return PALETTE[index % len(PALETTE)]


def _draw_overview(
    image: Image.Image, masks: Sequence[np.ndarray], crops: Sequence[ObjectCrop], font: ImageFont.FreeTypeFont
) -> Image.Image:
    """The image, scaled to a readable size, with tinted, outlined and numbered masks and thin crop boxes."""
    low, high = IMAGE_LONG_SIDE
    scale = min(max(1.0, low / max(image.size)), high / max(image.size))
    size = (round(image.width * scale), round(image.height * scale))
    canvas = image.resize(size, Image.Resampling.BICUBIC).convert("RGBA")
    labels = []
    for index, (mask, crop) in enumerate(zip(masks, crops)):
        color = region_color(index)
        region = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
        outline = Image.fromarray(np.asarray(region) - np.asarray(region.filter(ImageFilter.MinFilter(3)))).filter(
            ImageFilter.MaxFilter(OUTLINE_WIDTH)
        )
        canvas.alpha_composite(_layer(color, region.point(lambda value: TINT_ALPHA if value else 0)))
        canvas.alpha_composite(_layer(color, outline))
        x0, y0, x1, y1 = crop.box
        box = (round(x0 * scale), round(y0 * scale), round((x1 + 1) * scale) - 1, round((y1 + 1) * scale) - 1)
        ImageDraw.Draw(canvas).rectangle(box, outline=color + (200,), width=1)
        bbox = region.getbbox()
        labels.append((index, color, bbox))
    draw = ImageDraw.Draw(canvas)
    for index, color, (left, top, _, _) in labels:
        _draw_tag(draw, (left, top), str(index), color, font, canvas.size)
    return canvas.convert("RGB")


def _draw_region_row(index: int, crop: ObjectCrop, font: ImageFont.FreeTypeFont, line_height: int) -> Image.Image:
    """One region: a header, then its crop and the crop under the patch-grid mask, side by side."""
    color = region_color(index)
    crop_image = Image.fromarray(crop.image)
    grid_h, grid_w = crop.mask.shape
    patch = crop_image.height // grid_h
    zoom = PANEL_SIZE / max(crop_image.size)
    size = (round(crop_image.width * zoom), round(crop_image.height * zoom))
    shown = crop_image.resize(size, Image.Resampling.BICUBIC)
    masked = _overlay_grid_mask(shown, crop.mask, color)

    x0, y0, x1, y1 = crop.box
    header = f"region {index}: scale x{crop.scale:.2f}, {crop.num_tokens} object tokens"
    captions = (
        f"crop ({x0},{y0})-({x1},{y1}) -> {crop_image.width}x{crop_image.height}",
        f"mask on {grid_h}x{grid_w} grid of {patch}px patches, {int(np.count_nonzero(crop.mask))} cells",
    )
    caption_width = max(int(font.getlength(text)) for text in (header, *captions))
    panels_width = max(size[0] * 2 + GAP, caption_width)
    row = Image.new("RGB", (panels_width, line_height * 3 + size[1]), BACKGROUND)
    draw = ImageDraw.Draw(row)
    draw.rectangle((0, 2, FONT_SIZE - 4, FONT_SIZE), fill=color)
    draw.text((FONT_SIZE + 2, 0), header, fill=TEXT, font=font)
    draw.text((0, line_height), captions[0], fill=MUTED_TEXT, font=font)
    draw.text((0, line_height * 2), captions[1], fill=MUTED_TEXT, font=font)
    top = line_height * 3
    row.paste(shown, (0, top))
    row.paste(masked, (size[0] + GAP, top))
    return row


def _stack_in_columns(rows: Sequence[Image.Image], min_height: int) -> list[Image.Image]:
    """Rows stacked top to bottom, wrapping into about as many columns as there are rows per column."""
    if not rows:
        return []
    per_column = math.ceil(math.sqrt(len(rows)))
    budget = max(min_height, sum(sorted(row.height for row in rows)[-per_column:]) + GAP * (per_column - 1))
    groups: list[list[Image.Image]] = [[]]
    for row in rows:
        if groups[-1] and sum(r.height + GAP for r in groups[-1]) + row.height > budget:
            groups.append([])
        groups[-1].append(row)
    columns = []
    for group in groups:
        column = Image.new(
            "RGB", (max(r.width for r in group), sum(r.height for r in group) + GAP * (len(group) - 1)), BACKGROUND
        )
        top = 0
        for row in group:
            column.paste(row, (0, top))
            top += row.height + GAP
        columns.append(column)
    return columns


def _overlay_grid_mask(crop: Image.Image, mask: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """`crop` dimmed, with the grid mask in `color` (opacity follows the mask value) and the patch grid drawn."""
    grid_h, grid_w = mask.shape
    alpha = Image.fromarray(np.clip(np.asarray(mask, dtype=np.float32), 0, 1) * MASK_ALPHA * 255).convert("L")
    alpha = alpha.resize(crop.size, Image.Resampling.NEAREST)
    dimmed = Image.blend(crop, Image.new("RGB", crop.size, BACKGROUND), 0.35)
    out = Image.composite(Image.new("RGB", crop.size, color), dimmed, alpha).convert("RGBA")
    lines = Image.new("RGBA", crop.size)
    draw = ImageDraw.Draw(lines)
    for i in range(grid_w + 1):
        x = min(round(i * crop.width / grid_w), crop.width - 1)
        draw.line((x, 0, x, crop.height), fill=(255, 255, 255, 90))
    for j in range(grid_h + 1):
        y = min(round(j * crop.height / grid_h), crop.height - 1)
        draw.line((0, y, crop.width, y), fill=(255, 255, 255, 90))
    out.alpha_composite(lines)
    return out.convert("RGB")


def _draw_tag(
    draw: ImageDraw.ImageDraw,
    corner: tuple[int, int],
    text: str,
    color: tuple[int, int, int],
    font: ImageFont.FreeTypeFont,
    bounds: tuple[int, int],
) -> None:
    """A filled label with `text` just above `corner` (inside the image when there is no room above)."""
    width, height = int(font.getlength(text)) + 10, FONT_SIZE + 6
    x = min(max(corner[0], 0), bounds[0] - width)
    y = corner[1] - height if corner[1] >= height else corner[1]
    y = min(y, bounds[1] - height)
    draw.rectangle((x, y, x + width, y + height), fill=color)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.text((x + 5, y + 2), text, fill=(0, 0, 0) if luminance > 150 else (255, 255, 255), font=font)


def _layer(color: tuple[int, int, int], alpha: Image.Image) -> Image.Image:
    """A layer of `color` with the opacity `alpha` (mode L)."""
    layer = Image.new("RGBA", alpha.size, color)
    layer.putalpha(alpha)
    return layer


__all__ = ["render_regions", "region_color"]
