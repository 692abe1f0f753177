"""Small real models for tests, BatchNorm statistics worth fusing, and the shared data sets."""
import os
from pathlib import Path

import pytest
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


COCO128 = Path(os.environ.get("NAS_COCO128") or Path(__file__).resolve().parents[2] / "shared/data/coco128")


def require_data(path: Path, what: str) -> Path:
    """`path` if it exists. Otherwise the test SKIPS, saying what is missing, except in CI (CI=true),
    where a missing data set is a FAILURE: CI must not pass by skipping the real-data checks."""
    if not path.exists():
        message = f"{what} not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the data set must be there)")
        pytest.skip(message)
    return path


def coco128() -> Path:
    """The coco128 folder (../shared/data/coco128, or $NAS_COCO128), under require_data's rule."""
    return require_data(COCO128 / "data.yaml", "coco128 (set NAS_COCO128)").parent


def require_postgres() -> str:
    """$NAS_TEST_POSTGRES (a PostgreSQL URL), under require_data's rule: SKIP without it, FAIL in CI."""
    url = os.environ.get("NAS_TEST_POSTGRES")
    if not url:
        message = "no PostgreSQL server: set NAS_TEST_POSTGRES or run .ci/postgres start"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: .ci/run starts one)")
        pytest.skip(message)
    return url
