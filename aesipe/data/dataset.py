"""Datasets for weak supervision: images, image-level labels and (optional) pixel masks.

``open_dataset(cfg.data, split)`` gives a ``SegmentationDataset`` for PASCAL VOC 2012 + SBD
(``kind="voc"``) or any VOC-style folder with a ``class_names.txt`` (``kind="folder"``), such as the
synthetic data of ``aesipe-train synth``. numpy + Pillow only, so it is cheap to import and to send to
DataLoader workers (all state is plain data). Training tensors live in ``aesipe.data.transforms``.

Everything a user can get wrong (paths, CSV typos, missing files, mismatched sizes) raises a
one-line ``UserError`` when the dataset is opened, or, for per-image checks, when the image is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from aesipe.constants import IMAGE_SUFFIXES, MAX_CLASSES, VOID_LABEL
from aesipe.contract import class_name_problem
from aesipe.imaging import ImageReadError, image_size, read_rgb
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import load_label_png, voc_palette

from . import voc
from .labelcache import derive_labels
from aesipe.tags import read_tags_csv

if TYPE_CHECKING:
    from aesipe.config import DataConfig

CLASS_NAMES_FILE = "class_names.txt"


def _files_by_stem(folder: Path | None, suffixes: Sequence[str]) -> dict[str, Path]:
    """``{stem: path}`` of a folder's files with one of ``suffixes`` (one directory scan)."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if dot and f".{suffix.lower()}" in suffixes and entry.is_file():
                found.setdefault(stem, Path(entry.path))
    return found


@dataclass
class SegmentationDataset:
    """One split of a dataset. ``num_classes`` counts foreground classes; label value 0 is background."""

    root: Path
    split: str
    kind: str
    class_names: tuple[str, ...]
    palette: np.ndarray
    ids: list[str]
    image_paths: Mapping[str, Path]
    mask_paths: Mapping[str, Path]
    label_indices_by_id: Mapping[str, tuple[int, ...]]
    ids_source: str = ""
    """Where the split's ids come from (a list file, a CSV, ...): what to edit to leave an image out."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names) - 1

    @property
    def has_masks(self) -> bool:
        """True when every image of the split has a ground-truth mask (evaluation is possible)."""
        return bool(self.ids) and all(i in self.mask_paths for i in self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, image_id: str) -> Path:
        try:
            return self.image_paths[image_id]
        except KeyError:
            raise UserError(f"image {image_id!r} is not in split {self.split!r} of {self.root}") from None

    def mask_path(self, image_id: str) -> Path | None:
        return self.mask_paths.get(image_id)

    def load_image(self, image_id: str) -> np.ndarray:
        """uint8 H x W x 3 RGB, upright (``aesipe.imaging``: the decoder aesipe-label uses too)."""
        path = self.image_path(image_id)
        try:
            return read_rgb(path)
        except ImageReadError as exc:
            raise UserError(f"cannot read image {path}: {exc}") from None

    def load_mask(self, image_id: str) -> np.ndarray | None:
        """uint8 H x W class indices (255 = void), or None if this image has no mask."""
        path = self.mask_paths.get(image_id)
        if path is None:
            return None
        try:
            mask = load_label_png(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read mask {path}: {exc}") from None
        try:
            expected = image_size(self.image_path(image_id))
        except ImageReadError as exc:
            raise UserError(f"cannot read image {self.image_path(image_id)}: {exc}") from None
        if mask.shape != expected:
            raise UserError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {expected[1]}x{expected[0]} (WxH)"
            )
        return mask

    def label_indices(self, image_id: str) -> tuple[int, ...]:
        """Foreground class indices present in the image, 0-based (label value - 1)."""
        return self.label_indices_by_id[image_id]

    def labels(self, image_id: str) -> np.ndarray:
        """float32 [C] multi-hot over the foreground classes."""
        vector = np.zeros(self.num_classes, dtype=np.float32)
        vector[list(self.label_indices(image_id))] = 1.0
        return vector


def _read_class_names(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) < 2:
        raise UserError(f"{path}: needs the background name and at least one class, one per line")
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{path}: class {duplicate!r} is listed twice")
    for name in names:  # the rule of exported files: a class trained here can always be exported
        problem = class_name_problem(name)
        if problem:
            raise UserError(f"{path}: class name {name!r} {problem} (tags in a CSV cell are separated by spaces; "
                            "names also go into CSV and CVAT files)")
    if len(names) > MAX_CLASSES:
        raise UserError(f"{path}: {len(names)} classes do not fit 8-bit label PNGs (at most {MAX_CLASSES}: "
                        f"value {VOID_LABEL} means void)")
    return names


def _resolve_kind(root: Path, kind: str) -> tuple[str, Path]:
    if not root.exists():
        # The synthetic data is offered only where data.root was left at its default (data/synth): a root the
        # user named is their dataset, which synthetic images would not replace.
        from aesipe.config import DataConfig

        default = Path(DataConfig.root)
        hint = (f" (make the synthetic dataset there with `aesipe-train synth {root}`, or set data.root to your "
                "dataset)" if root == default and kind != "voc" else " (data.root)")
        raise UserError(f"dataset root not found: {root}{hint}")
    if kind in ("auto", "folder") and (root / CLASS_NAMES_FILE).is_file():
        if not (root / voc.IMAGE_DIR).is_dir():
            raise UserError(f"dataset folder {root} has no {voc.IMAGE_DIR}/ folder")
        return "folder", root
    if kind == "folder":
        raise UserError(f"{root} is not a VOC-style folder: {CLASS_NAMES_FILE} is missing (background first)")
    folder = voc.find_voc_folder(root)
    if folder is None:
        raise UserError(
            f"{root} is not a dataset: expected VOCdevkit/VOC2012 (PASCAL VOC) or a folder with "
            f"{voc.IMAGE_DIR}/ and {CLASS_NAMES_FILE}"
        )
    if kind == "auto" and (folder / CLASS_NAMES_FILE).is_file():
        return "folder", folder
    return "voc", folder


def _csv_path(folder: Path, split: str, labels_csv: str | None) -> Path | None:
    if labels_csv:
        # A relative path names a file of the dataset, wherever the command runs (docs/data.md, "Paths").
        return folder / Path(labels_csv).expanduser()
    default = folder / f"labels_{split}.csv"
    return default if default.is_file() else None


def _folder_split(folder: Path, split: str) -> str:
    """The split a folder dataset actually reads: ``train_aug`` falls back to ``train`` when the folder
    has no train_aug list or CSV of its own, so the default config (``data.train_split=train_aug``,
    VOC's 10,582 images) also serves VOC-style folders such as the synthetic data."""
    if split != voc.TRAIN_AUG or voc.split_file(folder, split) or (folder / f"labels_{split}.csv").is_file():
        return split
    has_train = voc.split_file(folder, "train") is not None or (folder / "labels_train.csv").is_file()
    return "train" if has_train else split


def _folder_ids(folder: Path, split: str, csv_tags, csv_path: Path | None,
                images: Mapping[str, Path]) -> tuple[list[str], str]:
    """(ids of the split, where they come from)."""
    path = voc.split_file(folder, split)
    if path is not None:
        return voc.read_id_list(path), str(path)
    if csv_tags is not None:
        return list(csv_tags), f"the labels CSV {csv_path}"
    known = voc.available_splits(folder)
    if known:
        raise UserError(
            f"missing split file {folder / voc.SPLIT_DIRS[0] / (split + '.txt')} (available: {', '.join(known)})"
        )
    return sorted(images), ""  # a plain folder without split lists: every image is in every split


def resolve_split(data_cfg: "DataConfig", split: str) -> str:
    """The split ``open_dataset(data_cfg, split)`` really reads (``train`` for a folder's missing
    ``train_aug``): lets a pipeline see that two configured splits are the same images."""
    kind, folder = _resolve_kind(Path(data_cfg.root).expanduser(), data_cfg.kind)
    return split if kind == "voc" else _folder_split(folder, split)


def open_dataset(data_cfg: "DataConfig", split: str) -> SegmentationDataset:
    """Open ``split`` of the dataset described by ``data_cfg`` (root, kind, labels_csv)."""
    kind, folder = _resolve_kind(Path(data_cfg.root).expanduser(), data_cfg.kind)
    images = _files_by_stem(folder / voc.IMAGE_DIR, IMAGE_SUFFIXES)
    if kind == "voc":
        class_names = voc.VOC_CLASSES
        # Evaluation prefers the official masks; image-level labels prefer SBD's (a superset of ids).
        eval_mask_dirs = [d for d in (folder / voc.MASK_DIR, voc.aug_mask_dir(folder)) if d is not None and d.is_dir()]
        label_mask_dirs = eval_mask_dirs[::-1]
    else:
        class_names = _read_class_names(folder / CLASS_NAMES_FILE)
        eval_mask_dirs = [folder / voc.MASK_DIR] if (folder / voc.MASK_DIR).is_dir() else []
        label_mask_dirs = eval_mask_dirs
    foreground = class_names[1:]

    # ``split`` names the outputs (ir_labels/<split>/...); ``source`` is what a folder really reads.
    source = split if kind == "voc" else _folder_split(folder, split)
    csv_path = _csv_path(folder, source, data_cfg.labels_csv)
    csv_tags = read_tags_csv(csv_path, foreground) if csv_path is not None else None

    if kind == "voc":
        ids, list_file = voc.voc_split_ids(folder, split), voc.split_file(folder, split)
        ids_source = str(list_file) if list_file else (
            f"a {voc.TRAIN_AUG}.txt you write in {folder / voc.SPLIT_DIRS[0]} (the split is derived from the masks)")
    else:
        ids, ids_source = _folder_ids(folder, source, csv_tags, csv_path, images)
    if not ids:
        raise UserError(f"split {split!r} of {folder} lists no images")
    missing = [i for i in ids if i not in images]
    if missing:
        more = f" ({len(missing)} of {len(ids)} missing)" if len(missing) > 1 else ""
        raise UserError(f"missing image file for {missing[0]!r} in {folder / voc.IMAGE_DIR} (split {split!r}){more}")

    eval_masks: dict[str, Path] = {}
    for mask_dir in reversed(eval_mask_dirs):  # earlier folders take precedence
        eval_masks.update(_files_by_stem(mask_dir, (".png",)))
    eval_masks = {i: eval_masks[i] for i in ids if i in eval_masks}

    if csv_tags is not None:
        unlabelled = [i for i in ids if i not in csv_tags]
        if unlabelled:
            raise UserError(
                f"image {unlabelled[0]!r} of split {split!r} has no labels in {csv_path}"
                + (f" ({len(unlabelled)} images like it)" if len(unlabelled) > 1 else "")
            )
        labels = {i: csv_tags[i] for i in ids}
    else:
        label_masks: dict[str, Path] = {}
        for mask_dir in reversed(label_mask_dirs):
            label_masks.update(_files_by_stem(mask_dir, (".png",)))
        labels = derive_labels(folder, split, ids, label_masks, label_mask_dirs, len(foreground))

    return SegmentationDataset(
        root=folder,
        split=split,
        kind=kind,
        class_names=tuple(class_names),
        palette=voc_palette(),
        ids=list(ids),
        image_paths={i: images[i] for i in ids},
        mask_paths=eval_masks,
        label_indices_by_id=labels,
        ids_source=ids_source,
    )
