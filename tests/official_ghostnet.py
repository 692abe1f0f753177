"""An independent transcription of the official GhostNet V1/V2 trunks (huawei-noah), used only
to check our counts at any width. Structure and naming follow the official files, not ours."""
import math

import torch.nn as nn


def _make_divisible(v, divisor, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    def __init__(self, in_chs, se_ratio=0.25):
        super().__init__()
        reduced_chs = _make_divisible(in_chs * se_ratio, 4)
        self.conv_reduce = nn.Conv2d(in_chs, reduced_chs, 1, bias=True)
        self.conv_expand = nn.Conv2d(reduced_chs, in_chs, 1, bias=True)


class ConvBnAct(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)


class GhostModuleV2(nn.Module):
    def __init__(self, inp, oup, kernel_size=1, ratio=2, dw_size=3, stride=1, relu=True, mode=None):
        super().__init__()
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_channels))
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels))
        if mode == "attn":
            self.short_conv = nn.Sequential(
                nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False), nn.BatchNorm2d(oup),
                nn.Conv2d(oup, oup, (1, 5), 1, (0, 2), groups=oup, bias=False), nn.BatchNorm2d(oup),
                nn.Conv2d(oup, oup, (5, 1), 1, (2, 0), groups=oup, bias=False), nn.BatchNorm2d(oup))


class GhostBottleneckV2(nn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, dw_kernel_size=3, stride=1, se_ratio=0.0, layer_id=None,
                 attn=True):
        super().__init__()
        mode = "attn" if attn and layer_id > 1 else "original"
        self.ghost1 = GhostModuleV2(in_chs, mid_chs, relu=True, mode=mode)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, (dw_kernel_size - 1) // 2,
                                     groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        if se_ratio:
            self.se = SqueezeExcite(mid_chs, se_ratio)
        self.ghost2 = GhostModuleV2(mid_chs, out_chs, relu=False, mode="original")
        if not (in_chs == out_chs and stride == 1):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, (dw_kernel_size - 1) // 2, groups=in_chs,
                          bias=False), nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False), nn.BatchNorm2d(out_chs))


CFGS = [[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[3, 72, 24, 0, 1]], [[5, 72, 40, 0.25, 2]],
        [[5, 120, 40, 0.25, 1]], [[3, 240, 80, 0, 2]],
        [[3, 200, 80, 0, 1], [3, 184, 80, 0, 1], [3, 184, 80, 0, 1], [3, 480, 112, 0.25, 1],
         [3, 672, 112, 0.25, 1]],
        [[5, 672, 160, 0.25, 2]],
        [[5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1], [5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1]]]


def official_trunk(width=1.0, attn=True) -> nn.Module:
    """Stem + blocks + final ConvBnAct of the official GhostNet (attn=False: V1, True: V2)."""
    output_channel = _make_divisible(16 * width, 4)
    layers = [nn.Conv2d(3, output_channel, 3, 2, 1, bias=False), nn.BatchNorm2d(output_channel)]
    input_channel, layer_id = output_channel, 0
    for cfg in CFGS:
        for k, exp_size, c, se_ratio, s in cfg:
            output_channel = _make_divisible(c * width, 4)
            hidden_channel = _make_divisible(exp_size * width, 4)
            layers.append(GhostBottleneckV2(input_channel, hidden_channel, output_channel, k, s,
                                            se_ratio=se_ratio, layer_id=layer_id, attn=attn))
            input_channel = output_channel
            layer_id += 1
    layers.append(ConvBnAct(input_channel, _make_divisible(exp_size * width, 4), 1))
    return nn.Sequential(*layers)
