"""PyTorch references of the two ports' module layouts, written here from their published module definitions.

Used only by ``make_weight_fixtures.py`` (run in an environment with PyTorch; the package never imports
this). Each class keeps the port's module and attribute names, since those are the state-dict keys the
converter reads; the forward passes follow the ports' code:

* princeton-vl/pytorch_stacked_hourglass ``models/layers.py`` and ``models/posenet.py``: ``Conv`` (bias,
  optional BN and ReLU), ``Residual`` (pre-activation bottleneck; ``skip_layer`` is built in every module
  and used only where the channel count changes), ``Hourglass`` (recursive: up1, pool1, low1, low2, low3,
  nearest upsampling), ``PoseNet`` (pre, hgs, features, outs, merge_features, merge_preds); trained
  models are saved inside a ``Trainer`` under ``DataParallel``, hence ``model.module.`` key prefixes.
* bearpaw/pytorch-pose ``pose/models/hourglass.py``: ``Bottleneck`` (expansion 2, bias on every
  convolution, ``downsample`` projection), ``Hourglass`` (``hg[level][0..3]``: up1, low1, low3 and the
  bottom), ``HourglassNet`` (conv1, bn1, layer1-3, hg, res, fc = conv-BN-ReLU, score, fc_, score_); the
  stem's layer2 takes its width from its 128 input channels. Saved under ``DataParallel``: ``module.``.
"""

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- pytorch_stacked_hourglass


class Conv(nn.Module):
    def __init__(self, inp_dim, out_dim, kernel_size=3, stride=1, bn=False, relu=True):
        super().__init__()
        self.inp_dim = inp_dim
        self.conv = nn.Conv2d(inp_dim, out_dim, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=True)
        self.relu = nn.ReLU() if relu else None
        self.bn = nn.BatchNorm2d(out_dim) if bn else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class Residual(nn.Module):
    def __init__(self, inp_dim, out_dim):
        super().__init__()
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm2d(inp_dim)
        self.conv1 = Conv(inp_dim, out_dim // 2, 1, relu=False)
        self.bn2 = nn.BatchNorm2d(out_dim // 2)
        self.conv2 = Conv(out_dim // 2, out_dim // 2, 3, relu=False)
        self.bn3 = nn.BatchNorm2d(out_dim // 2)
        self.conv3 = Conv(out_dim // 2, out_dim, 1, relu=False)
        self.skip_layer = Conv(inp_dim, out_dim, 1, relu=False)
        self.need_skip = inp_dim != out_dim

    def forward(self, x):
        residual = self.skip_layer(x) if self.need_skip else x
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + residual


class StackedHourglass(nn.Module):
    """``Hourglass`` of pytorch_stacked_hourglass (``increase=0``)."""

    def __init__(self, n, f):
        super().__init__()
        self.up1 = Residual(f, f)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.low1 = Residual(f, f)
        self.n = n
        self.low2 = StackedHourglass(n - 1, f) if n > 1 else Residual(f, f)
        self.low3 = Residual(f, f)

    def forward(self, x):
        up1 = self.up1(x)
        low3 = self.low3(self.low2(self.low1(self.pool1(x))))
        return up1 + F.interpolate(low3, size=up1.shape[2:], mode="nearest")


class PoseNet(nn.Module):
    def __init__(self, nstack, inp_dim, oup_dim, depth=4):
        super().__init__()
        self.nstack = nstack
        self.pre = nn.Sequential(
            Conv(3, 64, 7, 2, bn=True, relu=True),
            Residual(64, 128),
            nn.MaxPool2d(2, 2),
            Residual(128, 128),
            Residual(128, inp_dim),
        )
        self.hgs = nn.ModuleList([nn.Sequential(StackedHourglass(depth, inp_dim)) for _ in range(nstack)])
        self.features = nn.ModuleList(
            [
                nn.Sequential(Residual(inp_dim, inp_dim), Conv(inp_dim, inp_dim, 1, bn=True, relu=True))
                for _ in range(nstack)
            ]
        )
        self.outs = nn.ModuleList([Conv(inp_dim, oup_dim, 1, relu=False, bn=False) for _ in range(nstack)])
        self.merge_features = nn.ModuleList([Merge(inp_dim, inp_dim) for _ in range(nstack - 1)])
        self.merge_preds = nn.ModuleList([Merge(oup_dim, inp_dim) for _ in range(nstack - 1)])

    def forward(self, imgs):
        x = self.pre(imgs)
        preds = []
        for i in range(self.nstack):
            feature = self.features[i](self.hgs[i](x))
            pred = self.outs[i](feature)
            preds.append(pred)
            if i < self.nstack - 1:
                x = x + self.merge_preds[i](pred) + self.merge_features[i](feature)
        return torch.stack(preds, 1)


class Merge(nn.Module):
    def __init__(self, x_dim, y_dim):
        super().__init__()
        self.conv = Conv(x_dim, y_dim, 1, relu=False, bn=False)

    def forward(self, x):
        return self.conv(x)


class Trainer(nn.Module):
    """pytorch_stacked_hourglass saves ``Trainer(DataParallel(PoseNet))``: keys ``model.module.*``."""

    def __init__(self, net):
        super().__init__()
        self.model = nn.DataParallel(net)


# ---------------------------------------------------------------- bearpaw/pytorch-pose


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 2, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + residual


class PoseHourglass(nn.Module):
    def __init__(self, num_blocks, planes, depth):
        super().__init__()
        self.depth = depth
        self.upsample = nn.Upsample(scale_factor=2)
        hg = []
        for i in range(depth):
            res = [self._residual(num_blocks, planes) for _ in range(3 if i else 4)]
            hg.append(nn.ModuleList(res))
        self.hg = nn.ModuleList(hg)

    @staticmethod
    def _residual(num_blocks, planes):
        return nn.Sequential(*[Bottleneck(planes * 2, planes) for _ in range(num_blocks)])

    def _forward(self, n, x):
        up1 = self.hg[n - 1][0](x)
        low1 = self.hg[n - 1][1](F.max_pool2d(x, 2, stride=2))
        low2 = self._forward(n - 1, low1) if n > 1 else self.hg[n - 1][3](low1)
        return up1 + self.upsample(self.hg[n - 1][2](low2))

    def forward(self, x):
        return self._forward(self.depth, x)


class HourglassNet(nn.Module):
    def __init__(self, num_stacks=2, num_blocks=1, num_classes=16, num_feats=128, depth=4):
        super().__init__()
        self.inplanes = 64
        self.num_feats = num_feats
        self.num_stacks = num_stacks
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_residual(self.inplanes, 1)
        self.layer2 = self._make_residual(self.inplanes, 1)
        self.layer3 = self._make_residual(self.num_feats, 1)
        self.maxpool = nn.MaxPool2d(2, stride=2)
        ch = self.num_feats * 2
        self.hg = nn.ModuleList([PoseHourglass(num_blocks, self.num_feats, depth) for _ in range(num_stacks)])
        self.res = nn.ModuleList([self._make_residual(self.num_feats, num_blocks) for _ in range(num_stacks)])
        self.fc = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(ch, ch, 1, bias=True), nn.BatchNorm2d(ch), self.relu) for _ in range(num_stacks)]
        )
        self.score = nn.ModuleList([nn.Conv2d(ch, num_classes, 1, bias=True) for _ in range(num_stacks)])
        self.fc_ = nn.ModuleList([nn.Conv2d(ch, ch, 1, bias=True) for _ in range(num_stacks - 1)])
        self.score_ = nn.ModuleList([nn.Conv2d(num_classes, ch, 1, bias=True) for _ in range(num_stacks - 1)])

    def _make_residual(self, planes, blocks):
        downsample = None
        if self.inplanes != planes * 2:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 2, kernel_size=1, bias=True))
        layers = [Bottleneck(self.inplanes, planes, 1, downsample)]
        self.inplanes = planes * 2
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.maxpool(self.layer1(x))))
        out = []
        for i in range(self.num_stacks):
            y = self.fc[i](self.res[i](self.hg[i](x)))
            score = self.score[i](y)
            out.append(score)
            if i < self.num_stacks - 1:
                x = x + self.fc_[i](y) + self.score_[i](score)
        return out
