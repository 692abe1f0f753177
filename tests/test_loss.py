"""Detection loss: CIoU, Task-Aligned Assigner, DFL and the full loss, on tiny hand-built tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from evaluators.loss import DetectionLoss, TaskAlignedAssigner, bbox_iou, distribution_focal_loss, pad_targets
from nas.models.head import make_anchors

NC = 3
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------- CIoU

def test_ciou_of_identical_boxes_is_one():
    box = torch.tensor([[3.0, 4.0, 20.0, 11.0], [0.0, 0.0, 1.0, 7.0]])
    torch.testing.assert_close(bbox_iou(box, box), torch.ones(2), atol=1e-5, rtol=0)


def test_ciou_of_disjoint_boxes_is_negative_and_iou_zero():
    a, b = torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([5.0, 5.0, 6.0, 9.0])
    assert bbox_iou(a, b, ciou=False) == 0
    assert bbox_iou(a, b) < 0


def test_ciou_matches_the_paper_formula_on_a_simple_pair():
    a, b = torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 4.0, 2.0])
    iou = 2 / (4 + 6 - 2)                          # overlap 1 x 2, areas 4 and 6
    rho2 = (1.0 - 2.5) ** 2 + (1.0 - 1.0) ** 2     # squared distance between the centres
    c2 = 4.0 ** 2 + 2.0 ** 2                       # squared diagonal of the enclosing box (0, 0, 4, 2)
    v = 4 / math.pi ** 2 * (math.atan(3 / 2) - math.atan(2 / 2)) ** 2
    alpha = v / (1 - iou + v)
    expected = iou - rho2 / c2 - alpha * v
    assert bbox_iou(a, b).item() == pytest.approx(expected, abs=1e-5)
    assert bbox_iou(b, a).item() == pytest.approx(expected, abs=1e-5)  # symmetric
    assert bbox_iou(a, b, ciou=False).item() == pytest.approx(iou, abs=1e-6)


# ---------------------------------------------------------------- assigner

def tiny_grid():
    """A 32 px image at strides 8 and 16: 4x4 + 2x2 = 20 anchor centres, in pixels."""
    feats = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    points, strides = make_anchors(feats, (8, 16))
    return points * strides


def assign(pred_scores, pred_boxes, gt_labels, gt_boxes, gt_mask=None, topk=10):
    gt_labels, gt_boxes = torch.tensor(gt_labels), torch.tensor(gt_boxes, dtype=torch.float32)
    if gt_mask is None:
        gt_mask = torch.ones(gt_labels.shape, dtype=torch.bool)
    return TaskAlignedAssigner(NC, topk=topk)(pred_scores, pred_boxes, tiny_grid(), gt_labels, gt_boxes, gt_mask)


def shrink(box, by):
    return [box[0] + by, box[1] + by, box[2] - by, box[3] - by]


def test_assigner_picks_only_anchors_strictly_inside_the_box():
    gt = [2.0, 2.0, 18.0, 18.0]
    points = tiny_grid()
    pred_scores = torch.full((1, 20, NC), 0.5)
    pred_scores[0, :, 1] = 0.9                 # non-candidates score high too: must not matter
    pred_boxes = torch.tensor(gt).expand(1, 20, 4).clone()
    t = assign(pred_scores, pred_boxes, [[1]], [[gt]])

    inside = ((points > 2) & (points < 18)).all(-1)  # (4,4) (12,4) (4,12) (12,12) at stride 8, (8,8) at 16
    assert inside.sum() == 5
    assert torch.equal(t.fg_mask[0], inside)
    assert (t.labels[0][inside] == 1).all()
    torch.testing.assert_close(t.bboxes[0][inside], torch.tensor(gt).expand(5, 4))
    assert (t.scores[0][~inside] == 0).all()


def test_assigner_keeps_the_top_k_by_alignment_metric():
    gt = [1.0, 1.0, 31.0, 31.0]                 # every anchor is a candidate
    torch.manual_seed(0)
    pred_scores = torch.rand(1, 20, NC)
    pred_boxes = torch.tensor(gt).expand(1, 20, 4).clone()  # IoU 1 everywhere: the metric follows the score
    t = assign(pred_scores, pred_boxes, [[2]], [[gt]], topk=4)

    assert t.fg_mask.sum() == 4
    assert set(t.fg_mask[0].nonzero().flatten().tolist()) == set(pred_scores[0, :, 2].topk(4).indices.tolist())


def test_assigner_soft_targets_follow_the_tood_normalisation():
    gt = [2.0, 2.0, 18.0, 18.0]
    pred_scores = torch.linspace(0.2, 0.8, 20).view(1, 20, 1).repeat(1, 1, NC)
    # Every anchor predicts the GT box shrunk by a different amount, so IoUs differ.
    pred_boxes = torch.tensor([shrink(gt, 0.3 * i) for i in range(20)]).unsqueeze(0)
    t = assign(pred_scores, pred_boxes, [[0]], [[gt]])

    fg = t.fg_mask[0]
    iou = bbox_iou(pred_boxes[0][fg], torch.tensor(gt)).clamp(min=0)
    metric = pred_scores[0, fg, 0].sqrt() * iou.pow(6)
    expected = metric / metric.max() * iou.max()
    torch.testing.assert_close(t.scores[0, fg, 0], expected, atol=1e-5, rtol=1e-4)
    assert t.scores.max().item() == pytest.approx(iou.max().item(), abs=1e-5)
    assert (t.scores[0, :, 1:] == 0).all()     # only the GT's class column is set


def test_assigner_gives_an_anchor_claimed_twice_to_the_gt_it_overlaps_most():
    gt_a, gt_b = [0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 24.0, 24.0]
    points = tiny_grid()
    shared = int(((points - torch.tensor([12.0, 12.0])).abs().sum(-1) == 0).nonzero())  # inside both boxes
    pred_scores = torch.full((1, 20, NC), 0.5)
    for winner, other in ((0, 1), (1, 0)):
        pred_boxes = torch.tensor([gt_a, gt_b][other]).expand(1, 20, 4).clone()
        pred_boxes[0, shared] = torch.tensor(shrink([gt_a, gt_b][winner], 1.0))
        t = assign(pred_scores, pred_boxes, [[0, 1]], [[gt_a, gt_b]])
        assert t.fg_mask[0, shared]
        assert t.gt_index[0, shared] == winner
        assert t.labels[0, shared] == winner
        assert t.scores[0, shared, other] == 0


def test_assigner_handles_padding_and_images_without_boxes():
    gt = [2.0, 2.0, 18.0, 18.0]
    pred_scores = torch.full((2, 20, NC), 0.5)
    pred_boxes = torch.tensor(gt).expand(2, 20, 4).clone()
    # Image 0 has one box (plus a padding row that would cover everything), image 1 only padding.
    everything = [0.0, 0.0, 32.0, 32.0]
    t = assign(pred_scores, pred_boxes, [[1, 2], [2, 2]], [[gt, everything], [everything, everything]],
               gt_mask=torch.tensor([[True, False], [False, False]]))
    assert t.fg_mask[0].sum() == 5 and (t.gt_index[0][t.fg_mask[0]] == 0).all()
    assert not t.fg_mask[1].any() and (t.scores[1] == 0).all()
    assert (t.scores[..., 2] == 0).all()


def test_pad_targets_groups_rows_by_image():
    targets = torch.tensor([[2, 1, 0, 0, 5, 5], [0, 2, 1, 1, 4, 4], [2, 0, 2, 2, 6, 6.0]])
    labels, boxes, mask = pad_targets(targets, batch_size=3)
    assert mask.tolist() == [[True, False], [False, False], [True, True]]
    assert labels[2].tolist() == [1, 0] and labels[0, 0] == 2
    torch.testing.assert_close(boxes[2], targets[[0, 2], 2:])
    labels, boxes, mask = pad_targets(torch.zeros(0, 6), batch_size=2)
    assert mask.shape == (2, 0) and boxes.shape == (2, 0, 4)


# ---------------------------------------------------------------- DFL

def test_dfl_is_the_cross_entropy_mix_of_the_two_neighbouring_bins():
    torch.manual_seed(0)
    logits = torch.randn(1, 16)
    d = 3.3
    log_p = logits[0] - torch.logsumexp(logits[0], 0)
    expected = -log_p[3] * (4 - d) - log_p[4] * (d - 3)
    assert distribution_focal_loss(logits, torch.tensor([d])).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dfl_is_smallest_for_the_two_bin_distribution_whose_mean_is_d():
    d = torch.tensor([5.25])
    best = torch.full((1, 16), -30.0)
    best[0, 5], best[0, 6] = math.log(0.75), math.log(0.25)
    loss_best = distribution_focal_loss(best, d)
    assert (best.softmax(-1) * torch.arange(16)).sum().item() == pytest.approx(5.25, abs=1e-4)
    assert loss_best.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-4)
    torch.manual_seed(0)
    for _ in range(5):
        assert distribution_focal_loss(best + torch.randn(1, 16), d) > loss_best


# ---------------------------------------------------------------- full loss

def perfect_raw(gt, cls, nc=NC, size=64, stride=8, reg_max=16):
    """One level of raw maps that predicts `gt` exactly at every anchor inside it (sharp one-bin DFL).

    The box edges sit on multiples of the stride + stride/2, so every target distance is a whole
    number of strides and a one-bin distribution represents it without DFL's two-bin entropy.
    """
    g = size // stride
    points, _ = make_anchors([torch.zeros(1, 1, g, g)], (stride,))
    x1, y1, x2, y2 = (torch.tensor(gt) / stride).tolist()
    dist = torch.stack((points[:, 0] - x1, points[:, 1] - y1, x2 - points[:, 0], y2 - points[:, 1]), -1)
    dist = dist.clamp(0, reg_max - 1).round().long()                  # [A, 4], exact inside the box
    box_logits = 30.0 * F.one_hot(dist, reg_max).float()            # [A, 4, reg_max]
    inside = ((points * stride > torch.tensor(gt[:2])) & (points * stride < torch.tensor(gt[2:]))).all(-1)
    cls_logits = torch.full((g * g, nc), -12.0)
    cls_logits[inside, cls] = 12.0
    flat = torch.cat((box_logits.view(g * g, -1), cls_logits), 1)   # [A, 4 * reg_max + nc]
    return flat.t().reshape(1, -1, g, g)


def test_perfect_prediction_has_near_zero_loss():
    gt = [12.0, 20.0, 44.0, 52.0]                  # edges = 4 (mod 8): whole distances to the centres
    raw = [perfect_raw(gt, cls=1)]
    criterion = DetectionLoss(NC, strides=(8,))
    loss, parts = criterion(raw, torch.tensor([[0, 1, *gt]]))
    assert parts["box"] < 1e-4 and parts["dfl"] < 1e-4 and parts["cls"] < 1e-3
    blurred = raw[0].clone()
    blurred[:, :4 * 16] = 0.0                  # uniform bins: every side predicts 7.5 strides
    worse, worse_parts = criterion([blurred], torch.tensor([[0, 1, *gt]]))
    assert worse_parts["box"] > 0.1 and worse_parts["dfl"] > 1.0


def tiny_batch(seed=0, size=64):
    """Random raw maps for a 64 px batch of 2 at strides 8/16/32 and a few boxes (image 1 has one)."""
    g = torch.Generator().manual_seed(seed)
    raw = [torch.randn(2, 4 * 16 + NC, size // s, size // s, generator=g) for s in (8, 16, 32)]
    targets = torch.tensor([[0, 0, 4, 6, 30, 40], [0, 2, 20, 24, 60, 58], [1, 1, 10, 10, 50, 34.0]])
    return raw, targets


def test_loss_parts_are_floats_that_sum_to_the_loss_and_gradients_are_finite():
    raw, targets = tiny_batch()
    raw = [r.requires_grad_() for r in raw]
    loss, parts = DetectionLoss(NC)(raw, targets)
    assert loss.ndim == 0 and set(parts) == {"box", "cls", "dfl"}
    assert all(isinstance(v, float) and v > 0 for v in parts.values())
    assert loss.item() == pytest.approx(sum(parts.values()), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0 for r in raw)


def test_gains_scale_their_parts():
    raw, targets = tiny_batch()
    base = DetectionLoss(NC)(raw, targets)[1]
    doubled = DetectionLoss(NC, box=15.0, cls=1.0, dfl=3.0)(raw, targets)[1]
    for k in base:
        assert doubled[k] == pytest.approx(2 * base[k], rel=1e-5)


def test_images_without_boxes_give_only_class_loss():
    raw, _ = tiny_batch()
    raw = [r.requires_grad_() for r in raw]
    loss, parts = DetectionLoss(NC)(raw, torch.zeros(0, 6))
    assert parts["box"] == 0 and parts["dfl"] == 0 and parts["cls"] > 0
    logits = torch.cat([r[:, 64:].flatten(2) for r in raw], 2)
    # Every target is 0 and the normaliser is clamped to 1: plain summed BCE against zeros, times the gain.
    expected = 0.5 * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(r.grad).all() for r in raw)
    assert all((r.grad[:, :64] == 0).all() for r in raw)  # box bins get no signal without boxes


def test_loss_decreases_when_optimising_a_fixed_batch():
    raw, targets = tiny_batch(seed=1)
    raw = [(0.1 * r).requires_grad_() for r in raw]
    criterion = DetectionLoss(NC)
    opt = torch.optim.Adam(raw, lr=0.05)
    history = []
    for _ in range(30):
        loss, parts = criterion(raw, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), parts))
    (first, first_parts), (last, last_parts) = history[0], history[-1]
    assert all(math.isfinite(v) for v, _ in history)
    assert last < 0.5 * first
    assert last_parts["box"] < 0.8 * first_parts["box"] and last_parts["dfl"] < 0.8 * first_parts["dfl"]


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_matches_float32(device):
    raw, targets = tiny_batch()
    raw, targets = [r.to(device) for r in raw], targets.to(device)
    ref, _ = DetectionLoss(NC)(raw, targets)
    half = torch.bfloat16 if device == "cpu" else torch.float16
    low = [r.to(half).requires_grad_() for r in raw]
    with torch.autocast(device, dtype=half):
        loss, parts = DetectionLoss(NC)(low, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=0.05)  # only the inputs' rounding differs
    loss.backward()
    assert all(torch.isfinite(r.grad).all() for r in low)


def test_wrong_channel_count_is_reported():
    raw, targets = tiny_batch()
    with pytest.raises(ValueError, match="channels"):
        DetectionLoss(NC + 1)(raw, targets)
