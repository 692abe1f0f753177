"""Detection data for proxy training: Ultralytics YAML, COCO JSON(s), or a built-in synthetic set.

    ds = load_dataset("synthetic", "train", imgsz=320, augment=True)
    loader = make_loader(ds, batch_size=32, shuffle=True, workers=2)
    for images, targets, infos in loader: ...  # uint8 [B, 3, S, S], [M, 6] (batch_idx, cls, xyxy)

    val = load_dataset("/path/to/data.yaml", "val", imgsz=320)
    val.ground_truth(0)  # {"boxes": [N, 4] xyxy original pixels, "labels": [N]}
    print(val.summary())  # images, boxes, and what was skipped

    describe_split("coco/")  # {"train": ..., "val": ..., "held_out": None or counts}: nothing decoded
"""
from .dataset import DetectionDataset, collate, load_dataset, make_loader
from .images import clear_image_cache
from .splits import describe_split, train_image_count
from .transforms import Augment

__all__ = ["Augment", "DetectionDataset", "clear_image_cache", "collate", "describe_split", "load_dataset",
           "make_loader", "train_image_count"]
