"""Ghost building blocks, the YOLO-style detector, and architecture YAML.

    from nas.models import build_model, ghostnet_trunk, reparameterize
"""
from .arch import dump_arch, load_arch, save_arch
from .bottleneck import GhostBottleneck, ghost_module
from .common import ConvBNAct, SqueezeExcite, make_divisible
from .ghostv1 import GhostModule
from .ghostv2 import DFCAttention, GhostModuleV2
from .ghostv3 import GhostModuleV3, RepConv, reparameterize
from .graph import Detector, LayerGraph, build_model
from .head import REG_MAX, Detect
from .neck import GhostCSP
from .registry import REGISTRY
from .zoo import ghostnet_backbone, ghostnet_trunk, ghostnet_yolo, pan_neck, stage_backbone

__all__ = [
    "ConvBNAct", "DFCAttention", "Detect", "Detector", "GhostBottleneck", "GhostCSP", "GhostModule",
    "GhostModuleV2", "GhostModuleV3", "LayerGraph", "REG_MAX", "REGISTRY", "RepConv", "SqueezeExcite",
    "build_model", "dump_arch", "ghost_module", "ghostnet_backbone", "ghostnet_trunk", "ghostnet_yolo",
    "load_arch", "make_divisible", "pan_neck", "reparameterize", "save_arch", "stage_backbone",
]
