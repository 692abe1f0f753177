"""coco_map against pycocotools, the reference implementation, on the same per-image dicts."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from evaluators.metrics import STAT_NAMES, coco_map


def _as_list(x):
    return np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64).tolist()


def pycocotools_map(targets, predictions) -> dict[str, float]:
    """The reference: pycocotools, GT built like a COCO json file (categories = GT labels only),
    detections through loadRes. pycocotools' -1 ("no GT to measure") is read as 0.0, as coco_map does."""
    gt = COCO()
    annotations = []
    for image_id, t in enumerate(targets, 1):
        for box, label in zip(_as_list(t["boxes"]), _as_list(t["labels"])):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    gt.dataset = {"images": [{"id": i} for i in range(1, len(targets) + 1)],
                  "categories": [{"id": c} for c in sorted({a["category_id"] for a in annotations})],
                  "annotations": annotations}
    detections = []
    for image_id, p in enumerate(predictions, 1):
        for box, score, label in zip(_as_list(p["boxes"]), _as_list(p["scores"]), _as_list(p["labels"])):
            x1, y1, x2, y2 = box
            detections.append({"image_id": image_id, "category_id": int(label),
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if detections:
            dt = gt.loadRes(detections)
        else:  # loadRes cannot take an empty list (it reads anns[0]); an empty result set is this
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, evaluator.stats)}


def random_boxes(rng, n, size=640.0):
    """xyxy boxes with sizes spread over COCO's small, medium and large ranges."""
    wh = np.exp(rng.uniform(np.log(4), np.log(300), (n, 2)))
    xy = rng.uniform(0, size, (n, 2))
    return np.concatenate((xy, xy + wh), 1)


def random_case(seed, n_images, nc, max_gt=8, max_fp=12):
    """Ground truth plus predictions that jitter, drop and mislabel some GT boxes and add false positives.
    Label `nc` is predicted but never in GT; some images get no GT or no predictions."""
    rng = np.random.default_rng(seed)
    targets, predictions = [], []
    for i in range(n_images):
        n_gt = 0 if i % 5 == 4 else int(rng.integers(1, max_gt + 1))
        boxes = random_boxes(rng, n_gt)
        labels = rng.integers(0, nc, n_gt)
        targets.append({"boxes": boxes, "labels": labels})

        found = rng.random(n_gt) < 0.8
        wh = boxes[found, 2:] - boxes[found, :2]
        jittered = boxes[found] + rng.normal(0, 0.08, (found.sum(), 4)) * np.tile(wh, 2)
        jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
        found_labels = np.where(rng.random(found.sum()) < 0.1, rng.integers(0, nc + 1, found.sum()), labels[found])
        n_fp = 0 if i % 7 == 3 else int(rng.integers(0, max_fp + 1))
        fp_labels = rng.integers(0, nc + 1, n_fp)
        p_boxes = np.concatenate((jittered, random_boxes(rng, n_fp)))
        p_labels = np.concatenate((found_labels, fp_labels))
        p_scores = np.concatenate((rng.uniform(0.3, 1.0, len(jittered)), rng.uniform(0.0, 0.7, n_fp)))
        if i % 7 == 3:
            p_boxes, p_labels, p_scores = p_boxes[:0], p_labels[:0], p_scores[:0]
        predictions.append({"boxes": p_boxes, "scores": p_scores, "labels": p_labels})
    return targets, predictions


def as_tensors(images):
    return [{k: torch.as_tensor(v) for k, v in d.items()} for d in images]


def assert_same(ours, reference):
    assert set(ours) == set(STAT_NAMES)
    for name in STAT_NAMES:
        assert ours[name] == pytest.approx(reference[name], abs=1e-9), name


@pytest.mark.parametrize("seed,n_images,nc", [(0, 12, 3), (1, 30, 8), (2, 5, 1), (3, 40, 20), (4, 1, 2)])
def test_matches_pycocotools_on_random_cases(seed, n_images, nc):
    targets, predictions = random_case(seed, n_images, nc)
    reference = pycocotools_map(targets, predictions)
    assert 0.0 < reference["map"] < 1.0  # a case where mistakes matter
    assert_same(coco_map(targets, predictions), reference)


def test_accepts_tensors_like_arrays():
    targets, predictions = random_case(5, 10, 4)
    assert coco_map(as_tensors(targets), as_tensors(predictions)) == coco_map(targets, predictions)


def test_more_than_100_predictions_per_image_are_cut_like_pycocotools():
    targets, predictions = random_case(6, 3, 2, max_gt=8, max_fp=250)
    assert max(len(p["scores"]) for p in predictions) > 100
    assert_same(coco_map(targets, predictions), pycocotools_map(targets, predictions))


def test_class_never_in_ground_truth_is_left_out_of_the_mean():
    targets, predictions = random_case(7, 8, 3)
    # A class predicted with high confidence everywhere but absent from GT changes nothing.
    extra = [{"boxes": np.concatenate((p["boxes"], t["boxes"][:1] + 3)) if len(t["boxes"]) else p["boxes"],
              "scores": np.concatenate((p["scores"], np.ones(min(1, len(t["boxes"]))))),
              "labels": np.concatenate((p["labels"], np.full(min(1, len(t["boxes"])), 99)))}
             for t, p in zip(targets, predictions)]
    assert coco_map(targets, extra) == coco_map(targets, predictions)
    assert_same(coco_map(targets, extra), pycocotools_map(targets, extra))


def test_perfect_predictions_score_one():
    targets, _ = random_case(8, 10, 5)
    perfect = [{**t, "scores": np.ones(len(t["labels"]))} for t in targets]
    result = coco_map(targets, perfect)
    assert result["map"] == result["map50"] == result["map75"] == result["mar100"] == 1.0


def test_no_predictions_at_all_is_zero():
    targets, _ = random_case(9, 6, 3)
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)} for _ in targets]
    result = coco_map(targets, empty)
    assert result == dict.fromkeys(STAT_NAMES, 0.0)
    assert_same(result, pycocotools_map(targets, empty))


def test_no_ground_truth_at_all_is_zero():
    _, predictions = random_case(10, 6, 3)
    no_gt = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)} for _ in predictions]
    result = coco_map(no_gt, predictions)
    assert result == dict.fromkeys(STAT_NAMES, 0.0)
    assert_same(result, pycocotools_map(no_gt, predictions))


def test_nothing_at_all_and_no_images():
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}] * 3
    assert coco_map(empty, empty) == dict.fromkeys(STAT_NAMES, 0.0)
    assert coco_map([], []) == dict.fromkeys(STAT_NAMES, 0.0)


def test_image_count_mismatch_is_refused():
    targets, predictions = random_case(11, 4, 2)
    with pytest.raises(ValueError, match="4 target images but 3"):
        coco_map(targets, predictions[:3])
