"""A PyTorch reference of the package's network, for the side-by-side benchmark (``make bench TORCH_PYTHON=...``).

Runs in a Python that has PyTorch and NumPy (TensorFlow is not needed, nor the package): PyTorch stays out of
the package's dependencies. The network is ``hourglass_tf.model.build_model``'s (``variant="hg.lua"``, the
paper's): every layer keeps the Keras layer's name as its key in ``HourglassNet.layers``, so weights saved by
``benchmarks.inference_cases.save_weights_npz`` copy over by name (Conv2D kernels (kh, kw, in, out) -> (out, in, kh,
kw); batch norm gamma, beta, moving mean, moving variance, epsilon 1e-5). Keras' "same" padding is symmetric
for the odd kernels used here; the stem's ``ZeroPadding2D(3)`` + 7x7/2 "valid" convolution is ``padding=3``.

    python benchmarks/torch_hourglass.py CASE_JSON   # one case; prints a BENCH_RESULT line

Cases (``kind``): ``forward`` (weights .npz + input .npy -> heatmaps .npz, for the parity test),
``inference`` (seconds per batch; float32 NCHW and channels-last, bfloat16 autocast) and ``train`` (one
RMSprop step with per-stack MSE, float32 or bfloat16 autocast; first step and peak memory). Each case runs in
a fresh process, so its peak RSS is its own.
"""

import json
import os
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository: benchmarks/ is a folder there
from benchmarks.measure import RESULT_PREFIX, median_seconds, peak_rss_mb  # noqa: E402 - NumPy only, no TensorFlow

STEM_FILTERS = 64
BN_EPSILON = 1e-5


class HourglassNet(nn.Module):
    """The stacked hourglass of ``hourglass_tf.model.build_model`` (hg.lua layout) in PyTorch, NCHW.

    Input (N, 3, H, W) float RGB in [0, 1]; output a list of ``num_stacks`` heatmaps (N, K, H/4, W/4).
    Layers are created by a dry run of ``forward`` at construction, named as the Keras layers.
    """

    def __init__(self, num_stacks=8, num_blocks=1, filters=256, depth=4, num_joints=16):
        super().__init__()
        self.num_stacks, self.num_blocks, self.filters, self.depth, self.num_joints = (
            num_stacks,
            num_blocks,
            filters,
            depth,
            num_joints,
        )
        self.layers = nn.ModuleDict()
        self._building = True
        size = 4 * 2**depth
        with torch.no_grad():
            self.forward(torch.zeros(2, 3, size, size))  # batch 2: batch norm needs 2 values
        self._building = False

    def _layer(self, name, factory):
        if name not in self.layers:
            if not self._building:
                raise KeyError(f"layer {name!r} was not built")
            self.layers[name] = factory()
        return self.layers[name]

    def _conv(self, x, name, out, kernel, stride=1, padding=None):
        padding = (kernel - 1) // 2 if padding is None else padding
        conv = self._layer(name, lambda: nn.Conv2d(x.shape[1], out, kernel, stride, padding))
        return conv(x)

    def _bn(self, x, name):
        return self._layer(name, lambda: nn.BatchNorm2d(x.shape[1], eps=BN_EPSILON, momentum=0.1))(x)

    def _residual(self, x, filters, name):
        y = x
        for i, (width, kernel) in enumerate(((filters // 2, 1), (filters // 2, 3), (filters, 1)), start=1):
            y = self._conv(F.relu(self._bn(y, f"{name}_bn{i}")), f"{name}_conv{i}", width, kernel)
        skip = x if x.shape[1] == filters else self._conv(x, f"{name}_skip", filters, 1)
        return skip + y

    def _sequence(self, x, name):
        for b in range(1, self.num_blocks + 1):
            x = self._residual(x, self.filters, f"{name}_res{b}")
        return x

    def _hourglass(self, x, depth, name):
        level = f"{name}_d{depth}"
        up1 = self._sequence(x, f"{level}_skip")
        low = self._sequence(F.max_pool2d(x, 2, 2), f"{level}_low1")
        low = self._hourglass(low, depth - 1, name) if depth > 1 else self._sequence(low, f"{level}_bottom")
        low = self._sequence(low, f"{level}_low3")
        return up1 + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, image):
        x = self._conv(image, "stem_conv", STEM_FILTERS, 7, stride=2, padding=3)
        x = F.relu(self._bn(x, "stem_bn"))
        x = self._residual(x, 128, "stem_res1")
        x = self._residual(F.max_pool2d(x, 2, 2), 128, "stem_res2")
        inter = self._residual(x, self.filters, "stem_res3")
        outputs = []
        for s in range(1, self.num_stacks + 1):
            prefix = f"hg{s}"
            x = self._sequence(self._hourglass(inter, self.depth, prefix), f"{prefix}_out")
            x = F.relu(self._bn(self._conv(x, f"{prefix}_lin_conv", self.filters, 1), f"{prefix}_lin_bn"))
            heatmaps = self._conv(x, f"stack_{s}", self.num_joints, 1)
            outputs.append(heatmaps)
            if s < self.num_stacks:
                back = self._conv(x, f"{prefix}_features_back", self.filters, 1)
                inter = inter + back + self._conv(heatmaps.float(), f"{prefix}_heatmaps_back", self.filters, 1)
        return outputs


def load_npz(net, path):
    """Copies weights saved by ``save_weights_npz`` (``"{layer}/{index}"`` -> array) into ``net`` by layer name.

    Raises:
      ValueError: a layer of ``net`` missing from the file, or a shape that does not match.
    """
    arrays = np.load(path)
    for name, layer in net.layers.items():
        try:
            if isinstance(layer, nn.Conv2d):
                kernel, bias = arrays[f"{name}/0"], arrays[f"{name}/1"]
                layer.weight.data.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                layer.bias.data.copy_(torch.from_numpy(bias))
            else:
                for i, target in enumerate((layer.weight, layer.bias, layer.running_mean, layer.running_var)):
                    target.data.copy_(torch.from_numpy(arrays[f"{name}/{i}"]))
        except (KeyError, RuntimeError) as error:
            raise ValueError(f"{path}: layer {name!r} does not match: {error}") from None


def _net(num_stacks, filters, num_joints=16, channels_last=False, seed=0):
    torch.manual_seed(seed)
    net = HourglassNet(num_stacks=num_stacks, filters=filters, num_joints=num_joints)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def forward_case(weights, images, output, num_stacks, num_blocks, filters, depth, num_joints):
    """Heatmaps of the copied weights on ``images`` (N, H, W, 3) .npy; written as NHWC ``stack_i`` arrays."""
    net = HourglassNet(num_stacks, num_blocks, filters, depth, num_joints)
    load_npz(net, weights)
    net.eval()
    x = torch.from_numpy(np.load(images).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        outputs = net(x)
    np.savez(output, **{f"stack_{i}": o.numpy().transpose(0, 2, 3, 1) for i, o in enumerate(outputs, start=1)})
    return {"stacks": len(outputs)}


def inference_case(num_stacks, filters, input_size, precision="float32", batch_sizes=(1, 8), repeats=5):
    """Seconds per batch (eager ``inference_mode``), NCHW and channels-last; ``precision`` float32 or
    bfloat16 (CPU autocast). Both layouts are timed; the result keeps each and the best."""
    rng = np.random.default_rng(0)
    out = {"precision": precision, "num_stacks": num_stacks, "layouts": {}, "batches": {}}
    for layout in ("contiguous", "channels_last"):
        net = _net(num_stacks, filters, channels_last=layout == "channels_last").eval()
        out["layouts"][layout] = {}
        for batch in batch_sizes:
            x = torch.from_numpy(rng.random((batch, 3, input_size, input_size), dtype=np.float32))
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)

            def run(x=x, net=net):
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
                    return net(x)[-1].float()

            out["layouts"][layout][str(batch)] = median_seconds(run, repeats, warmup=2)
        del net
    for batch in batch_sizes:
        best = min(out["layouts"], key=lambda layout: out["layouts"][layout][str(batch)])
        seconds = out["layouts"][best][str(batch)]
        out["batches"][str(batch)] = {"seconds": seconds, "images_per_s": batch / seconds, "layout": best}
    return out


def train_case(num_stacks, filters, input_size, batch_size=8, precision="float32", repeats=3, channels_last=True):
    """Seconds per RMSprop training step (per-stack MSE summed, as the package's compiled Keras loss),
    float32 or bfloat16 autocast (outputs and loss float32), the first step, and peak memory."""
    net = _net(num_stacks, filters, channels_last=channels_last).train()
    optimizer = torch.optim.RMSprop(net.parameters(), lr=2.5e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch_size, 3, input_size, input_size), dtype=np.float32))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(rng.random((batch_size, 16, input_size // 4, input_size // 4), dtype=np.float32))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
            outputs = net(x)
        loss = sum(F.mse_loss(o.float(), y) for o in outputs)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    seconds = median_seconds(step, repeats, warmup=1)
    return {
        "precision": precision,
        "num_stacks": num_stacks,
        "batch_size": batch_size,
        "seconds": seconds,
        "images_per_s": batch_size / seconds,
        "first_step_seconds": first,
        "channels_last": channels_last,
    }


CASES = {"forward": forward_case, "inference": inference_case, "train": train_case}


def main(argv):
    if len(argv) != 2:
        raise SystemExit("usage: python benchmarks/torch_hourglass.py CASE_JSON")
    case = json.loads(argv[1])
    kind = case.pop("kind")
    if kind not in CASES:
        raise SystemExit(f"unknown case kind {kind!r}; expected one of {sorted(CASES)}")
    torch.set_num_threads(case.pop("threads", None) or len(os.sched_getaffinity(0)))
    result = CASES[kind](**case)
    result.update(peak_rss_mb=peak_rss_mb(), torch=torch.__version__, threads=torch.get_num_threads())
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
