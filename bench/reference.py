"""The textbook MNIST GAN loop, as people run it: the yardstick of the throughput benchmarks.

A faithful copy of the loop that tutorials and the PyTorch-GAN collection teach: torchvision's
MNIST dataset yields PIL images through ``ToTensor``/``Normalize``, a ``DataLoader(batch_size=64,
shuffle=True)`` batches them, MLP G (100→256→512→1024→784, LeakyReLU 0.2, Tanh) and D
(784→512→256→1, LeakyReLU 0.2, Sigmoid) trained with ``BCELoss`` and Adam 2e-4 (β1 0.5), a
``.to(device)`` per batch and noise drawn per batch. Its only change is the fix it needs to run
correctly: D's step sees ``fake.detach()``.

Needs only torch and torchvision (``prepare`` gives torchvision's MNIST the folder layout it reads:
``<root>/MNIST/raw/t10k-*-ubyte``, unpacked from the IDX files of a data directory).
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def prepare(data_dir: Path, root: Path) -> Path:
    """``root``, holding torchvision's MNIST test split unpacked from ``data_dir``'s IDX files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (raw / name).exists():
            with gzip.open(data_dir / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        # torchvision checks that the training split is there too before it reads the test one
        # (train=False); only the test split is at hand, so it stands in under both names.
        train_name = name.replace("t10k", "train")
        if not (raw / train_name).exists():
            shutil.copyfile(raw / name, raw / train_name)
    return root


def models() -> tuple[nn.Module, nn.Module]:
    generator = nn.Sequential(
        nn.Linear(100, 256), nn.LeakyReLU(0.2),
        nn.Linear(256, 512), nn.LeakyReLU(0.2),
        nn.Linear(512, 1024), nn.LeakyReLU(0.2),
        nn.Linear(1024, 784), nn.Tanh(),
    )  # fmt: skip
    discriminator = nn.Sequential(
        nn.Linear(784, 512), nn.LeakyReLU(0.2),
        nn.Linear(512, 256), nn.LeakyReLU(0.2),
        nn.Linear(256, 1), nn.Sigmoid(),
    )  # fmt: skip
    return generator, discriminator


def train(root: Path, steps: int, device: str = "cpu", warmup: int = 50) -> float:
    """Train ``warmup + steps`` batches; returns real images through D per second over the last
    ``steps`` (after warm-up)."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    mnist = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    loader = DataLoader(mnist, batch_size=64, shuffle=True, drop_last=True)
    G, D = (m.to(device) for m in models())
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    done, start = 0, time.perf_counter()
    while done < warmup + steps:
        for imgs, _ in loader:
            real = imgs.view(imgs.size(0), -1).to(device)
            valid = torch.ones(imgs.size(0), 1, device=device)
            fake_label = torch.zeros(imgs.size(0), 1, device=device)
            z = torch.randn(imgs.size(0), 100, device=device)

            # Generator
            gen_imgs = G(z)
            g_loss = bce(D(gen_imgs), valid)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()

            # Discriminator (the fix: the fakes are detached)
            real_loss = bce(D(real), valid)
            fake_loss = bce(D(gen_imgs.detach()), fake_label)
            d_loss = (real_loss + fake_loss) / 2
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()

            done += 1
            if done == warmup:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if done == warmup + steps:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * 64 / (time.perf_counter() - start)
