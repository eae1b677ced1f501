"""The demo's stand-in for ImageNet weights: a MobileNetV2 pretrained on the synthetic training tags.

Every network of the method keeps its backbone BatchNorm frozen, as it would with ImageNet weights. A
plain random init cannot work that way (identity BatchNorm statistics shrink the activations ~10x per
stage: the scores come out exactly 0), and no ImageNet weights are available offline. So the demo first
trains a plain torchvision MobileNetV2 as a multi-label classifier on the *image-level tags* of the
training split (the same weak supervision the method uses; no masks), with BatchNorm training, and
writes its state_dict. Stage 1, IRN and the segmenter then load it like an ImageNet file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from aesipe.utils.atomic import atomic_save


def pretrain_on_tags(
    path: Path,
    data_cfg,
    split: str,
    steps: int = 200,
    batch_size: int = 16,
    crop_size: int = 96,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write ``path`` (torchvision ``mobilenet_v2`` state_dict) unless it exists; returns it."""
    import torchvision
    from tqdm import tqdm

    from aesipe.data import open_dataset
    from aesipe.data.transforms import ClassificationDataset

    if path.is_file():
        return path
    torch.manual_seed(seed)
    ds = open_dataset(data_cfg, split)
    batch_size = min(batch_size, len(ds))  # a tiny dataset still makes full batches (never an empty epoch)
    samples = ClassificationDataset(ds, crop_size=crop_size, resize_long=(int(crop_size * 0.8), int(crop_size * 1.2)),
                                    flip=True, seed=seed)
    net = torchvision.models.mobilenet_v2(weights=None)
    head = torch.nn.Linear(net.last_channel, ds.num_classes)
    optimizer = torch.optim.Adam([*net.features.parameters(), *head.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    step, epoch = 0, 0
    bar = tqdm(total=steps, desc="tag pretraining", disable=not progress, dynamic_ncols=True)
    while step < steps:
        samples.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(samples, batch_size, shuffle=True, drop_last=True, generator=generator)
        for batch in loader:
            features = net.features(batch["image"]).mean(dim=(2, 3))
            loss = F.multilabel_soft_margin_loss(head(features), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= steps:
                break
        epoch += 1
    bar.close()
    atomic_save(path, lambda handle: torch.save(net.state_dict(), handle))
    return path
