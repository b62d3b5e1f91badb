"""SAOT, model side: crop features + box position embedding -> masked pooling -> clustering -> MLP.

All regions of a batch are handled together: the crop features arrive concatenated (varlen, one crop after the
other), masked cells are gathered with one boolean index and padded into a `(regions, cells, channels)` tensor,
and k-means runs on all regions at once.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils.import_utils import torch_compilable_check

from .configuration_pixelrefer import PixelReferConfig


@dataclass
class MaskedCells:
    """Position-embedded features at the masked cells of all regions of a batch.

    cells: `(num_regions, max(n_i, max_tokens), channels)`, row-major order, zero padded.
    valid: `(num_regions, max(n_i, max_tokens))` False on padding.
    counts: `(num_regions,)` number of masked cells `n_i` of each region.
    """

    cells: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor


@dataclass
class PooledObjects:
    """Pooled object features of all regions of a batch.

    tokens: `(num_regions, max_tokens, channels)`; rows past `counts[i]` are zero.
    counts: `(num_regions,)` number of valid tokens of each region (at most `max_tokens`).
    """

    tokens: torch.Tensor
    counts: torch.Tensor


def evenly_spaced_start(num_cells: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Deterministic k-means start: `num_clusters` cells spread evenly over each region's masked cells.

    Cells are in row-major order, so the start covers the object from top to bottom. Same input, same start, on
    any device.

    Args:
        num_cells: `(num_regions,)` masked cells per region.
    Returns:
        `(num_regions, num_clusters)` cell indices.
    """
    steps = torch.arange(num_clusters, device=num_cells.device)
    return steps[None, :] * num_cells[:, None] // num_clusters


def nearest_centroids(
    points: torch.Tensor, centroids: torch.Tensor, valid: torch.BoolTensor | None = None
) -> torch.LongTensor:
    """Index of the nearest centroid of every point, exactly as `((x - c) ** 2).sum(-1).argmin(-1)` decides it.

    Distances are estimated with one matmul (`|x|^2 - 2 x.c + |c|^2`, in float32 or wider); where the estimate cannot
    tell the winner apart within a worst-case rounding bound of both formulas (near-ties, exact ties), the candidates
    are recomputed with the original's difference formula in the input dtype and the lowest index wins a tie.

    Args:
        points: `(num_sets, num_points, channels)`.
        centroids: `(num_sets, num_clusters, channels)`.
        valid: `(num_sets, num_points)` bool, False on padding (whose labels are then the estimate's).
    Returns:
        `(num_sets, num_points)` labels.
    """
    accumulate = torch.promote_types(points.dtype, torch.float32)
    x, c = points.to(accumulate), centroids.to(accumulate)
    x_norms, c_norms = (x * x).sum(-1), (c * c).sum(-1)
    estimate = torch.baddbmm(c_norms[:, None, :] + x_norms[..., None], x, c.transpose(1, 2), alpha=-2)
    best, labels = estimate.min(-1)
    channels = points.shape[-1]
    unit = torch.finfo(accumulate).eps * (channels + 4)
    relative = 2 * torch.finfo(points.dtype).eps + unit
    scale = (x_norms.sqrt() + c_norms.sqrt().amax(-1, keepdim=True)) ** 2
    margin = 3 * relative * best.clamp(min=0) + 3 * unit * scale
    candidates = estimate <= (best + margin)[..., None]
    ambiguous = candidates.sum(-1) > 1
    if valid is not None:
        ambiguous &= valid
    if ambiguous.any():
        sets, rows, clusters = (candidates & ambiguous[..., None]).nonzero(as_tuple=True)
        exact = torch.full_like(estimate, float("inf"), dtype=points.dtype)
        exact[sets, rows, clusters] = ((points[sets, rows] - centroids[sets, clusters]) ** 2).sum(-1)
        labels[ambiguous] = exact[ambiguous].argmin(-1)
    return labels


def _kmeans_updates(
    points: torch.Tensor, valid: torch.Tensor, centroids: torch.Tensor, num_iterations: int, atol: float, rtol: float
) -> torch.Tensor:
    """`batched_kmeans` on sets padded to one length; a set that has converged drops out of the work."""
    num_clusters, channels = centroids.shape[1:]
    centroids = centroids.clone()
    active = torch.arange(len(points), device=points.device)
    for _ in range(num_iterations):
        current = centroids[active]
        labels = nearest_centroids(points, current, valid).masked_fill(~valid, num_clusters)
        sums = points.new_zeros(len(points), num_clusters + 1, channels)
        sums.scatter_add_(1, labels[..., None].expand(-1, -1, channels), points)
        sizes = torch.zeros(len(points), num_clusters + 1, dtype=points.dtype, device=points.device)
        sizes.scatter_add_(1, labels, torch.ones_like(labels, dtype=points.dtype))
        sums, sizes = sums[:, :num_clusters], sizes[:, :num_clusters, None]
        updated = torch.where(sizes > 0, sums / sizes.clamp(min=1), current)
        moving = ~((current - updated).abs() <= atol + rtol * updated.abs()).flatten(1).all(-1)
        centroids[active[moving]] = updated[moving]
        if not moving.all():
            active, points, valid = active[moving], points[moving], valid[moving]
        if not len(active):
            break
    return centroids


def batched_kmeans(
    points: torch.Tensor,
    valid: torch.Tensor,
    initial_indices: torch.Tensor,
    num_iterations: int,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    max_chunk_elements: int | None = None,
) -> torch.Tensor:
    """K-means of several point sets at once, step for step the original `kmeans_fast`.

    Each set starts from its points at `initial_indices`, assigns every point to the nearest centroid (squared L2,
    ties to the lowest index, see `nearest_centroids`), moves each centroid to the mean of its points (an empty
    cluster keeps its centroid), and stops as soon as the update changes no centroid by more than
    `atol + rtol * |new|` (keeping the centroids of before that update, as the original does) or after
    `num_iterations` updates. Sets of similar sizes are clustered together, in chunks of at most about
    `max_chunk_elements` padded elements, each trimmed to its largest set (default: 2**20 on CPU, where a chunk that
    stays in the cache is faster, and 2**26 on accelerators, where one large chunk is).

    Args:
        points: `(num_sets, max_points, channels)`, padded.
        valid: `(num_sets, max_points)` bool, False on padding (the valid points of a set come first).
        initial_indices: `(num_sets, num_clusters)` start cells of each set.
    Returns:
        `(num_sets, num_clusters, channels)` centroids.
    """
    channels = points.shape[-1]
    if max_chunk_elements is None:
        max_chunk_elements = 2**20 if points.device.type == "cpu" else 2**26
    centroids = torch.gather(points, 1, initial_indices[..., None].expand(-1, -1, channels))
    sizes = valid.sum(-1)
    order = torch.argsort(sizes, descending=True, stable=True)
    per_set = channels + initial_indices.shape[1]
    start = 0
    while start < len(order):
        largest = int(sizes[order[start]])
        chunk = order[start : start + max(1, max_chunk_elements // max(1, largest * per_set))]
        centroids[chunk] = _kmeans_updates(
            points[chunk, :largest], valid[chunk, :largest], centroids[chunk], num_iterations, atol, rtol
        )
        start += len(chunk)
    return centroids


def box_position_grid(grid_hw: torch.Tensor, boxes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Position of every cell of every crop grid in its source image, interpolated linearly over the crop's box.

    Args:
        grid_hw: `(num_regions, 2)` crop grid (rows, columns) of each region.
        boxes: `(num_regions, 4)` normalised boxes `(u0, v0, u1, v1)`: channel 0 runs from u0 (first column) towards
            u1 over the columns, channel 1 from v0 towards v1 over the rows.
    Returns:
        `(sum(rows * columns), 2)` positions, regions one after the other, cells in row-major order.
    """
    cells = grid_hw.prod(-1)
    region = torch.repeat_interleave(torch.arange(len(cells), device=cells.device), cells)
    offsets = torch.cumsum(cells, 0) - cells
    index = torch.arange(int(cells.sum()), device=cells.device) - offsets[region]
    rows, cols = grid_hw[region, 0], grid_hw[region, 1]
    row, col = index // cols, index % cols
    u0, v0, u1, v1 = boxes.to(device=cells.device, dtype=dtype)[region].unbind(-1)
    first = col.to(dtype) / cols.to(dtype) * (u1 - u0) + u0
    second = row.to(dtype) / rows.to(dtype) * (v1 - v0) + v0
    return torch.stack([first, second], dim=-1)


class PixelReferObjectTokenizer(nn.Module):
    """Scale-Adaptive Object Tokenizer (model side).

    Turns the vision features of every region's crop into at most `config.max_object_tokens` object tokens in the
    LLM width.
    """

    def __init__(self, config: PixelReferConfig):
        super().__init__()
        vision_size = config.vision_config.hidden_size
        text_size = config.text_config.hidden_size
        self.max_tokens = config.max_object_tokens
        self.kmeans_iterations = config.kmeans_iterations
        self.box_position_embedding = nn.Linear(2, vision_size)
        self.projector = nn.Sequential(nn.Linear(vision_size, text_size), nn.GELU(), nn.Linear(text_size, text_size))

    def masked_cells(
        self,
        crop_features: torch.Tensor,
        crop_grid_hw: torch.Tensor,
        masks: torch.Tensor,
        mask_grid_hw: torch.Tensor,
        boxes: torch.Tensor,
    ) -> MaskedCells:
        """Position-embedded crop features at the masked cells of every region, padded into one tensor.

        Args:
            crop_features: `(sum(h_i * w_i), C)` vision features of the crops, row-major per crop.
            crop_grid_hw: `(R, 2)` patch grid of each crop.
            masks: `(sum(mh_i * mw_i),)` masks on each region's mask grid (> 0 marks a cell of the object).
            mask_grid_hw: `(R, 2)` mask grid of each region; where the crop grid differs (the image processor resized
                the crop), the position-embedded features are bilinearly resized to the mask grid, as the original
                does (positions are embedded on the crop grid, then resized with the features).
            boxes: `(R, 4)` normalised crop boxes (see `box_position_grid`).
        """
        positions = box_position_grid(crop_grid_hw, boxes).to(crop_features.dtype)
        features = crop_features + self.box_position_embedding(positions)
        features = self._features_on_mask_grid(features, crop_grid_hw, mask_grid_hw)

        num_regions = len(mask_grid_hw)
        region = torch.repeat_interleave(torch.arange(num_regions, device=features.device), mask_grid_hw.prod(-1))
        selected = masks.to(features.device) > 0
        points, point_region = features[selected], region[selected]
        num_points = torch.bincount(point_region, minlength=num_regions)
        torch_compilable_check(
            (num_points > 0).all(),
            lambda: (
                f"Regions {torch.nonzero(num_points == 0)[:, 0].tolist()} have no cell on their mask grid; every "
                "region needs a non-empty mask (build the inputs with PixelReferProcessor, which checks them)."
            ),
        )
        slot = (
            torch.arange(len(points), device=features.device)
            - (torch.cumsum(num_points, 0) - num_points)[point_region]
        )
        width = max(int(num_points.max()), self.max_tokens)
        cells = features.new_zeros(num_regions, width, features.shape[-1])
        cells[point_region, slot] = points
        valid = torch.zeros(num_regions, width, dtype=torch.bool, device=features.device)
        valid[point_region, slot] = True
        return MaskedCells(cells=cells, valid=valid, counts=num_points)

    def pool(self, masked: MaskedCells, initial_indices: torch.LongTensor | None = None) -> PooledObjects:
        """Object features of all regions from their masked cells.

        Regions with at most `max_tokens` masked cells keep their cells as tokens; the others are clustered into
        `max_tokens` k-means centroids.

        Args:
            initial_indices: `(R, max_tokens)` k-means start of each region (indices into its masked cells, used
                for the regions that are clustered), or `None` for the deterministic evenly spaced start.
        """
        cells, valid, num_points = masked.cells, masked.valid, masked.counts
        tokens = cells[:, : self.max_tokens].clone()
        clustered = num_points > self.max_tokens
        if clustered.any():
            if initial_indices is None:
                start = evenly_spaced_start(num_points[clustered], self.max_tokens)
            else:
                start = initial_indices[clustered].to(device=cells.device, dtype=torch.long)
            tokens[clustered] = batched_kmeans(cells[clustered], valid[clustered], start, self.kmeans_iterations)
        return PooledObjects(tokens=tokens, counts=num_points.clamp(max=self.max_tokens))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Projects pooled object features `(..., C)` into the LLM width `(..., D)`."""
        return self.projector(pooled)

    @staticmethod
    def _features_on_mask_grid(
        crop_features: torch.Tensor, crop_grid_hw: torch.Tensor, mask_grid_hw: torch.Tensor
    ) -> torch.Tensor:
        """Resizes (bilinearly) the features of crops whose grid differs from their mask grid; others pass as is."""
        if torch.equal(crop_grid_hw, mask_grid_hw):
            return crop_features
        resized = []
        for feature, (h, w), (mh, mw) in zip(
            crop_features.split(crop_grid_hw.prod(-1).tolist()), crop_grid_hw.tolist(), mask_grid_hw.tolist()
        ):
            if (h, w) != (mh, mw):
                grid = feature.view(1, h, w, -1).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=(mh, mw), mode="bilinear", align_corners=False)
                feature = grid.permute(0, 2, 3, 1).reshape(mh * mw, -1)
            resized.append(feature)
        return torch.cat(resized)


__all__ = [
    "MaskedCells",
    "PixelReferObjectTokenizer",
    "PooledObjects",
    "batched_kmeans",
    "evenly_spaced_start",
    "nearest_centroids",
]
