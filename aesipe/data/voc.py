"""PASCAL VOC 2012 + SBD specifics: where the folders are, the 20 classes, the train_aug split.

Accepted roots (the first that holds ``JPEGImages`` wins): ``VOC2012`` itself, ``VOCdevkit``
(-> ``VOCdevkit/VOC2012``) or the folder above it (-> ``VOCdevkit/VOC2012``). Masks come from
``SegmentationClass`` (the 2,913 official ones) and ``SegmentationClassAug`` (SBD's 10,582 + those),
looked for inside the VOC2012 folder and, for the Aug set, also beside it.

Splits: ``train`` (1,464) and ``val`` (1,449) from ``ImageSets/Segmentation``; ``train_aug`` (10,582)
from a ``train_aug.txt`` in ``ImageSets/Segmentation`` or ``ImageSets/SegmentationAug`` when present,
else derived as every ``SegmentationClassAug`` mask id minus the val ids -- the usual recipe, written
down here because mixing up train and train_aug is the most common mistake with the reference code.
"""
from __future__ import annotations

from pathlib import Path

from aesipe.utils.errors import UserError

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
AUG_MASK_DIR = "SegmentationClassAug"
SPLIT_DIRS = ("ImageSets/Segmentation", "ImageSets/SegmentationAug")
TRAIN_AUG = "train_aug"


def find_voc_folder(root: Path) -> Path | None:
    """The VOC2012-like folder (the one holding JPEGImages) under ``root``, or None."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / IMAGE_DIR).is_dir():
            return candidate
    return None


def aug_mask_dir(voc: Path) -> Path | None:
    """SBD's SegmentationClassAug: inside VOC2012 (usual) or beside it (some download scripts)."""
    for candidate in (voc / AUG_MASK_DIR, voc.parent / AUG_MASK_DIR):
        if candidate.is_dir():
            return candidate
    return None


def read_id_list(path: Path) -> list[str]:
    """Ids of a split file: first token of every non-empty line (SBD lists may carry a second column)."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            ids.append(Path(line.split()[0]).stem)
    return ids


def available_splits(folder: Path) -> list[str]:
    names = set()
    for sub in SPLIT_DIRS:
        if (folder / sub).is_dir():
            names.update(p.stem for p in (folder / sub).glob("*.txt"))
    return sorted(names)


def split_file(folder: Path, split: str) -> Path | None:
    for sub in SPLIT_DIRS:
        path = folder / sub / f"{split}.txt"
        if path.is_file():
            return path
    return None


def voc_split_ids(voc: Path, split: str) -> list[str]:
    """Image ids of a VOC split; ``train_aug`` is derived when no list file exists."""
    path = split_file(voc, split)
    if path is not None:
        return read_id_list(path)
    if split == TRAIN_AUG:
        aug = aug_mask_dir(voc)
        val_path = split_file(voc, "val")
        if aug is None:
            raise UserError(
                f"split 'train_aug' needs SBD's {AUG_MASK_DIR} folder (in {voc} or beside it) or a "
                f"train_aug.txt in {voc / SPLIT_DIRS[0]}; or use data.train_split=train"
            )
        if val_path is None:
            raise UserError(f"cannot derive 'train_aug': missing split file {voc / SPLIT_DIRS[0] / 'val.txt'}")
        val_ids = set(read_id_list(val_path))
        return sorted(p.stem for p in aug.glob("*.png") if p.stem not in val_ids)
    known = available_splits(voc)
    raise UserError(
        f"missing split file {voc / SPLIT_DIRS[0] / (split + '.txt')}"
        f" (available: {', '.join(known + ([TRAIN_AUG] if TRAIN_AUG not in known else [])) or 'none'})"
    )
