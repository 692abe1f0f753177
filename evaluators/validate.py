"""COCO mAP of a detector on a validation set (SPEC section 6, "Validation").

    metrics = evaluate(model, load_dataset("synthetic", "val", imgsz=320))
    metrics["map"], metrics["map50"]

Per batch: uint8 images -> float 0..1 on the device, raw maps -> `model.decode` -> score filter +
class-aware NMS (`postprocess`) -> boxes mapped back through the letterbox to original pixels.
The ground truth comes from `dataset.ground_truth(i)` (original pixels, never letterboxed), and
`coco_map` scores everything at once with faster-coco-eval.
"""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from evaluators.data import load_dataset, make_loader
from evaluators.metrics import coco_map
from evaluators.postprocess import postprocess, scale_boxes_to_original


def evaluate(model: nn.Module, data: str | Dataset | DataLoader, imgsz: int | None = None, device: str = "cpu",
             conf: float = 0.001, iou: float = 0.7, max_det: int = 300, batch: int = 16, workers: int = 0,
             amp: bool = True) -> dict[str, float]:
    """mAP@0.5:0.95, mAP@0.5 and the other COCO summary numbers of `model` on `data`.

    data: a dataset (`load_dataset(..., augment=False)`), an unshuffled DataLoader over one, or a
    dataset spec (its "val" split is loaded at `imgsz`, default the model's). The model is put in
    eval mode for the pass and given back in the mode it came in. `amp` autocasts on CUDA only.
    Returns {"map", "map50", "map75", ..., "images", "time"} (time in seconds, all of the above).
    """
    start = time.perf_counter()
    loader = _as_loader(data, imgsz or getattr(model, "imgsz", None), batch, workers)
    dataset = loader.dataset
    device = torch.device(device)
    was_training = model.training
    model.eval()
    targets, predictions = [], []
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            for images, _, infos in loader:
                images = images.to(device, non_blocking=True).float().div_(255)
                boxes, scores = model.decode(model(images))
                for det, info in zip(postprocess(boxes.float(), scores.float(), conf, iou, max_det), infos):
                    det["boxes"] = scale_boxes_to_original(det["boxes"], info["ratio"], info["pad"],
                                                           info["orig_shape"])
                    predictions.append({k: v.cpu() for k, v in det.items()})
                    targets.append(dataset.ground_truth(len(targets)))
    finally:
        model.train(was_training)
    metrics = coco_map(targets, predictions)
    return {**metrics, "images": len(targets), "time": time.perf_counter() - start}


def _as_loader(data, imgsz: int | None, batch: int, workers: int) -> DataLoader:
    if isinstance(data, DataLoader):
        # Ground truth is matched by position, so the loader must visit the images in order.
        if not isinstance(data.sampler, SequentialSampler):
            raise ValueError("evaluate() needs an unshuffled DataLoader (images are matched to ground truth by order)")
        return data
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        if imgsz is None:
            raise ValueError("evaluate() needs imgsz to load a dataset spec")
        data = load_dataset(data, "val", imgsz, augment=False)
    if getattr(data, "augment", None) is not None:
        raise ValueError("evaluate() needs a dataset without augmentation")
    return make_loader(data, batch_size=batch, shuffle=False, workers=workers)
