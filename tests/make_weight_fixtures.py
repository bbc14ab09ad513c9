"""Writes the weight-conversion fixtures in tests/fixtures/weights/ with real PyTorch.

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy   # PyTorch is not a package dependency
    /tmp/torchenv/bin/python tests/make_weight_fixtures.py

For each port (``torch_reference.py``: pytorch_stacked_hourglass's PoseNet and pytorch-pose's HourglassNet),
tiny random networks (random weights and batch-norm statistics, our own data) are saved by ``torch.save`` as the
ports save them, in the zip layout (2 stacks) and the legacy layout (1 stack, ``_use_new_zipfile_serialization=
False``, as 2017-era files are), with ``NAME.npz`` beside each: ``image`` (N, H, W, 3) RGB in [0, 1] and
``heatmaps`` (S, N, H/4, W/4, K), every stack's output computed by PyTorch in eval mode. pytorch-pose's input is
the image minus the MPII mean its training subtracted (``MPII_MEAN``), as its data loader does.
"""

import pathlib

import numpy as np
import torch
import torch_reference as ref

OUT = pathlib.Path(__file__).resolve().parent / "fixtures" / "weights"
MPII_MEAN = (0.4404, 0.4440, 0.4327)  # pytorch-pose's data/mpii/mean.pth.tar, subtracted (never divided by std)


def randomise(net, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
            elif isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=generator))
    return net.eval()


def save(name, checkpoint, legacy, image, heatmaps):
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, OUT / name, _use_new_zipfile_serialization=not legacy)
    np.savez(OUT / f"{name.split('.')[0]}.npz", image=image, heatmaps=heatmaps)
    print(f"{name}: {(OUT / name).stat().st_size} bytes, heatmaps {heatmaps.shape}")


def main():
    torch.manual_seed(0)
    image = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    nchw = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()
    for stacks, legacy in ((2, False), (1, True)):
        layout = "legacy" if legacy else "zip"
        net = randomise(ref.PoseNet(stacks, inp_dim=16, oup_dim=16), seed=stacks)
        with torch.no_grad():
            heatmaps = net(nchw).permute(1, 0, 3, 4, 2).numpy()  # (N, S, K, H, W) -> (S, N, H, W, K)
        trainer = ref.Trainer(net)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        checkpoint = {"state_dict": trainer.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
        save(f"psh_{stacks}stack_{layout}.pt", checkpoint, legacy, image, heatmaps)

        net = randomise(ref.HourglassNet(stacks, num_blocks=1, num_classes=16, num_feats=8), seed=10 + stacks)
        mean = torch.tensor(MPII_MEAN).view(1, 3, 1, 1)
        with torch.no_grad():
            heatmaps = torch.stack(net(nchw - mean)).permute(0, 1, 3, 4, 2).numpy()
        wrapped = torch.nn.DataParallel(net)
        optimizer = torch.optim.RMSprop(net.parameters(), lr=2.5e-4)
        checkpoint = {
            "epoch": 5,
            "arch": "hg",
            "state_dict": wrapped.state_dict(),
            "perf": 0.5,
            "optimizer": optimizer.state_dict(),
        }
        save(f"pytorch_pose_{stacks}stack_{layout}.pth.tar", checkpoint, legacy, image, heatmaps)


if __name__ == "__main__":
    main()
