"""Small real models for tests, and BatchNorm statistics worth fusing."""
import torch
import torch.nn as nn

from nas.models.zoo import pan_neck, stage_backbone


def tiny_arch(branches: int = 2, width: int = 16, nc: int = 3, imgsz: int = 64) -> dict:
    """A real V3 detector, as small as the architecture allows: DFC, SE and re-param branches."""
    stage = dict(depth=1, expansion=2, kernel=3, stride=2, se=0.0, ratio=2, dfc=0, branches=branches, scale=True)
    stages = [dict(stage, width=8), dict(stage, width=16, dfc=5), dict(stage, width=24, se=0.25, kernel=5),
              dict(stage, width=32)]
    backbone, taps = stage_backbone(8, stages, 48)
    head = pan_neck(taps, len(backbone), (width, width, width), 1, width, branches=branches)
    return {"nc": nc, "imgsz": imgsz, "backbone": backbone, "head": head}


def randomize_bn(model: nn.Module, seed: int = 0, spread: float = 0.5) -> nn.Module:
    """Non-trivial BN statistics, so a wrong fusion cannot hide behind mean 0 / var 1 (mode unchanged)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * spread)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * spread)
    return model
