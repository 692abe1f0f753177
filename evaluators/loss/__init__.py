"""YOLOv8-style detection loss (TOOD assigner, GFL distribution focal loss, CIoU), see SPEC section 6."""
from .assigner import Assignment, TaskAlignedAssigner
from .boxes import bbox_iou
from .detection import DetectionLoss, distribution_focal_loss, pad_targets

__all__ = ["Assignment", "DetectionLoss", "TaskAlignedAssigner", "bbox_iou", "distribution_focal_loss",
           "pad_targets"]
