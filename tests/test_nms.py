"""nms / batched_nms against a brute-force greedy reference; postprocess and the letterbox round trip."""
import pytest
import torch

import evaluators.nms as nms_module
from evaluators.nms import batched_nms, nms
from evaluators.postprocess import postprocess, scale_boxes_to_original


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def reference_nms(boxes, scores, threshold, labels=None, max_det=None):
    """Textbook greedy NMS in pure Python: best score first, drop what overlaps a kept box of its class."""
    boxes, scores = boxes.tolist(), scores.tolist()
    labels = [0] * len(boxes) if labels is None else labels.tolist()
    keep = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(labels[i] != labels[j] or iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
            if len(keep) == max_det:
                break
    return keep


def clustered_boxes(seed, n, n_clusters=25, n_classes=1):
    """Boxes jittered around a few centres, so many pairs overlap at every IoU level."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_clusters, 2, generator=g) * 600
    sizes = torch.rand(n_clusters, 2, generator=g) * 80 + 10
    which = torch.randint(0, n_clusters, (n,), generator=g)
    centre = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    half = sizes[which] * (0.5 + 0.2 * torch.rand(n, 2, generator=g))
    boxes = torch.cat((centre - half, centre + half), 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, n_classes, (n,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_reference(seed, threshold):
    boxes, scores, _ = clustered_boxes(seed, 600)  # more than two blocks of candidates
    assert nms(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("threshold", [0.45, 0.7])
def test_batched_nms_matches_per_class_reference(seed, threshold):
    boxes, scores, labels = clustered_boxes(seed, 500, n_classes=4)
    expected = reference_nms(boxes, scores, threshold, labels)
    assert batched_nms(boxes, scores, labels, threshold, max_det=10_000).tolist() == expected


def test_tiny_blocks_give_the_same_answer(monkeypatch):
    boxes, scores, labels = clustered_boxes(5, 200, n_clusters=8, n_classes=2)
    monkeypatch.setattr(nms_module, "BLOCK", 7)  # many block boundaries inside each cluster
    assert batched_nms(boxes, scores, labels, 0.5, max_det=10_000).tolist() == reference_nms(boxes, scores, 0.5,
                                                                                            labels)


def test_overlapping_boxes_of_different_classes_are_both_kept():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 0])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_class_offsets_hold_with_negative_coordinates():
    boxes, scores, labels = clustered_boxes(6, 300, n_classes=3)
    boxes = boxes - 2000.0
    assert batched_nms(boxes, scores, labels, 0.5, max_det=10_000).tolist() == reference_nms(boxes, scores, 0.5,
                                                                                            labels)


def test_max_det_stops_after_the_best_boxes():
    boxes, scores, labels = clustered_boxes(7, 400, n_classes=3)
    full = reference_nms(boxes, scores, 0.6, labels)
    assert len(full) > 40
    assert batched_nms(boxes, scores, labels, 0.6, max_det=40).tolist() == full[:40]
    assert nms(boxes, scores, 0.6, max_det=5).tolist() == reference_nms(boxes, scores, 0.6)[:5]


def test_only_the_max_nms_best_candidates_enter():
    boxes, scores, labels = clustered_boxes(8, 300, n_classes=2)
    top = scores.topk(50).indices
    expected = [top[i].item() for i in reference_nms(boxes[top], scores[top], 0.5, labels[top])]
    assert batched_nms(boxes, scores, labels, 0.5, max_nms=50).tolist() == expected


def test_empty_input():
    empty_boxes, empty = torch.zeros(0, 4), torch.zeros(0)
    for kept in (nms(empty_boxes, empty, 0.5), batched_nms(empty_boxes, empty, empty.long(), 0.5)):
        assert kept.dtype == torch.long and kept.shape == (0,)


def test_postprocess_filters_by_best_class_and_nms():
    boxes, scores, labels = clustered_boxes(9, 300, n_classes=3)
    class_scores = torch.rand(2, 300, 3) * 0.2  # weaker runner-up classes
    class_scores[0, torch.arange(300), labels] = scores
    class_scores[1] = class_scores[0].flip(-1)
    class_scores[:, :20] = 0.001  # not above conf: dropped
    out = postprocess(torch.stack((boxes, boxes)), class_scores, conf=0.001, iou=0.6, max_det=50)

    best, best_label = class_scores[0].max(-1)
    candidates = (best > 0.001).nonzero().flatten()
    kept = candidates[reference_nms(boxes[candidates], best[candidates], 0.6, best_label[candidates])[:50]]
    assert len(kept) == 50
    assert torch.equal(out[0]["boxes"], boxes[kept])
    assert torch.equal(out[0]["scores"], best[kept])
    assert torch.equal(out[0]["labels"], best_label[kept])
    assert set(out[1]["labels"].tolist()) <= {0, 1, 2}
    assert torch.equal(out[1]["labels"], 2 - best_label[kept])  # flipped classes, same boxes
    assert (out[0]["scores"] > 0.001).all() and out[0]["scores"].diff().le(0).all()


def test_letterbox_round_trip_back_to_original_pixels():
    """Original boxes -> letterboxed (x * ratio + pad) -> postprocess -> back: the same boxes."""
    orig_shape, ratio, pad = (480, 640), 0.5, (0.0, 40.0)  # 640x480 letterboxed into 320x320
    original = torch.tensor([[10.0, 20, 200, 300], [300, 100, 620, 470], [0, 0, 640, 480]])
    letterboxed = original * ratio + torch.tensor([pad[0], pad[1], pad[0], pad[1]])
    anchors = torch.cat((letterboxed, letterboxed + 1.5))  # each box plus a weaker near-duplicate
    class_scores = torch.zeros(1, 6, 2)
    class_scores[0, :3, 1] = torch.tensor([0.9, 0.8, 0.7])
    class_scores[0, 3:, 1] = 0.5

    result = postprocess(anchors[None], class_scores, iou=0.7)[0]
    restored = scale_boxes_to_original(result["boxes"], ratio, pad, orig_shape)
    torch.testing.assert_close(restored, original)
    assert result["labels"].tolist() == [1, 1, 1]


def test_scale_boxes_clips_to_the_image():
    boxes = torch.tensor([[-20.0, 5, 700, 50]])  # spills into the padding on both sides
    restored = scale_boxes_to_original(boxes, (2.0, 2.0), (10, 0), (100, 300))
    assert restored.tolist() == [[0.0, 2.5, 300.0, 25.0]]
    assert boxes.tolist() == [[-20.0, 5, 700, 50]]  # input untouched
