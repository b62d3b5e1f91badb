"""The batched k-means decides exactly as the original's formula: the nearest centroid by
`((x - c) ** 2).sum(-1).argmin(-1)` (ties to the lowest index), and clustering sets together, in chunks, or dropping
converged sets early gives bitwise the centroids of clustering each set alone."""

import pytest
import torch

from pixelrefer_hf.modeling.object_tokenizer import batched_kmeans, evenly_spaced_start, nearest_centroids


def reference_labels(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return ((points[:, :, None] - centroids[:, None]) ** 2).sum(-1).argmin(-1)


@pytest.mark.parametrize("channels", [8, 384, 1152])
def test_nearest_centroid_equals_the_difference_formula(channels):
    generator = torch.Generator().manual_seed(channels)
    points = torch.randn(4, 300, channels, generator=generator) + 3 * torch.randn(4, 1, channels, generator=generator)
    centroids = points[:, ::10][:, :16].clone()
    centroids[:, 7] = centroids[:, 2]  # duplicate centroids: exact ties, the lower index must win
    labels = nearest_centroids(points, centroids)
    assert torch.equal(labels, reference_labels(points, centroids))
    assert not (labels == 7).any()


def test_exact_ties_of_integer_points_go_to_the_lowest_index():
    generator = torch.Generator().manual_seed(0)
    points = torch.randint(0, 3, (3, 200, 6), generator=generator).float()
    centroids = torch.randint(0, 3, (3, 12, 6), generator=generator).float()
    assert torch.equal(nearest_centroids(points, centroids), reference_labels(points, centroids))


def test_near_ties_in_bfloat16_follow_the_bfloat16_formula():
    generator = torch.Generator().manual_seed(1)
    points = (torch.randn(2, 256, 64, generator=generator) * 0.05 + 4).bfloat16()
    centroids = points[:, :24].clone()
    assert torch.equal(nearest_centroids(points, centroids), reference_labels(points, centroids))


def sets_of_different_sizes(channels: int = 48):
    generator = torch.Generator().manual_seed(2)
    sizes = torch.tensor([40, 300, 33, 120, 300, 75])
    points = torch.zeros(len(sizes), int(sizes.max()), channels)
    for index, size in enumerate(sizes.tolist()):
        centre = 4 * torch.randn(1, channels, generator=generator)
        points[index, :size] = centre + torch.randn(size, channels, generator=generator) * (index + 1) / 3
    valid = torch.arange(points.shape[1]) < sizes[:, None]
    return points, valid, sizes


@pytest.mark.parametrize("max_chunk_elements", [None, 1, 20_000])
def test_batched_sets_equal_each_set_alone(max_chunk_elements):
    points, valid, sizes = sets_of_different_sizes()
    start = evenly_spaced_start(sizes, 16)
    batched = batched_kmeans(points, valid, start, num_iterations=20, max_chunk_elements=max_chunk_elements)
    for index, size in enumerate(sizes.tolist()):
        alone = batched_kmeans(
            points[index : index + 1, :size], valid[index : index + 1, :size], start[index : index + 1], 20
        )
        assert torch.equal(batched[index], alone[0]), index


def test_converged_sets_keep_the_centroids_of_before_the_last_update():
    """Two well separated blobs from a start on one point of each: the first update converges the centroids onto the
    blob means, the second changes nothing, and the result is the first update's (as the original breaks)."""
    blob = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    points = torch.cat([blob, blob + 100])[None]
    valid = torch.ones(1, 8, dtype=torch.bool)
    centroids = batched_kmeans(points, valid, torch.tensor([[0, 4]]), num_iterations=10)
    torch.testing.assert_close(centroids[0], torch.tensor([[0.5, 0.5], [100.5, 100.5]]), atol=0, rtol=0)
    one_update = batched_kmeans(points, valid, torch.tensor([[0, 4]]), num_iterations=1)
    assert torch.equal(one_update, centroids)
