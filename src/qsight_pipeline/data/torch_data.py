"""PyTorch view of the decode-once image cache, and the image transforms.

The cache holds uint8 ``(N, H, W, 3)`` RGB arrays (see ``image_cache``). :class:`CachedImageDataset`
turns a row into ``{"image": float32 (3, S, S) normalised with ImageNet statistics, "grade": int64}``.
:func:`build_image_transform` is the same transform for a single decoded image, which prediction
uses on new files (decode them with :func:`load_image`). All randomness comes from torch's RNG,
so ``torch.manual_seed`` makes augmentation repeatable.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from qsight_pipeline.config import AugmentationParams, validate_block
from qsight_pipeline.data.image_cache import load_image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CachedImageDataset",
    "build_image_transform",
    "load_image",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

def _augmentation(augment: AugmentationParams | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The full augmentation settings (defaults from ``config.AugmentationParams``), or ``None``
    when augmentation is off. A typed block (what Kedro hands the nodes) is not validated again;
    a mapping (the Python API's ``DatasetConfig.augment``) is."""
    if augment is None:
        return None
    settings = validate_block(AugmentationParams, augment, "augmentation").to_dict()
    return settings if settings["enabled"] else None


def build_image_transform(
    image_size: int, train: bool = False, augment: AugmentationParams | Mapping[str, Any] | None = None
) -> Callable[[Any], torch.Tensor]:
    """A transform from a uint8 ``(H, W, 3)`` array (or a PIL image) to a normalised tensor.

    Returns float32 ``(3, image_size, image_size)``. With ``train=True`` and ``augment`` not
    ``None`` (and ``augment["enabled"]`` not false) it adds random flips, a small rotation and
    colour jitter. Unknown ``augment`` keys raise ``ValueError``, so a typo is not ignored.
    With ``augment["on_device"]`` a training transform stops at uint8 ``(3, S, S)``.
    """
    settings = _augmentation(augment)
    steps: list[Callable] = [
        v2.ToImage(),
        # A no-op for cache rows, which already have the size; needed for other inputs.
        v2.Resize((image_size, image_size), antialias=True),
    ]
    if train and settings is not None and settings["on_device"]:
        # The trainer augments and normalises whole batches on the device (data.device_augment).
        return v2.Compose([*steps, v2.ToPureTensor()])
    if train and settings is not None:
        steps += [
            v2.RandomHorizontalFlip(settings["horizontal_flip"]),
            v2.RandomVerticalFlip(settings["vertical_flip"]),
            v2.RandomRotation(settings["rotation_degrees"]),
            v2.ColorJitter(
                brightness=settings["brightness"],
                contrast=settings["contrast"],
                saturation=settings["saturation"],
                hue=settings["hue"],
            ),
        ]
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


@dataclass(frozen=True)
class MemmapReference:
    """Where a C-contiguous view of a read-only memory map lies in its file."""

    filename: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=np.dtype(self.dtype), mode="r",
                         offset=self.offset, shape=self.shape)  # fmt: skip


def memmap_reference(array: np.ndarray) -> MemmapReference | None:
    """The file position of ``array`` when it is (a contiguous slice of) a read-only ``np.memmap``
    such as ``np.load(path, mmap_mode="r")`` returns; ``None`` for anything else."""
    mapping = getattr(array, "_mmap", None)
    filename = getattr(array, "filename", None)
    if mapping is None or filename is None or not array.flags.c_contiguous or array.flags.writeable:
        return None
    mapped_at = np.frombuffer(mapping, dtype=np.uint8).__array_interface__["data"][0]
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap mapped
    position = start + array.__array_interface__["data"][0] - mapped_at
    return MemmapReference(str(filename), int(position), tuple(array.shape), array.dtype.str)


class CachedImageDataset(Dataset):
    """Rows of the image cache with their grades, as ``{"image", "grade"}`` dicts."""

    def __init__(
        self,
        images: np.ndarray,
        grades: np.ndarray,
        train: bool = False,
        augment: AugmentationParams | Mapping[str, Any] | None = None,
        image_size: int | None = None,
    ):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be a uint8 (N, H, W, 3) array, got {images.dtype} {images.shape}"
            )
        grades = np.asarray(grades, dtype=np.int64)
        if len(grades) != len(images):
            raise ValueError(f"{len(images)} images but {len(grades)} grades")
        self.images = images
        self.grades = grades
        self.image_size = int(image_size or images.shape[1])
        self.transform = build_image_transform(self.image_size, train=train, augment=augment)

    def __len__(self) -> int:
        return len(self.images)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to a spawned loader process: a memory-mapped cache travels as its file's name and
        # place, never as a copy of the pixels (gigabytes per process for a full Kaggle set).
        state = dict(self.__dict__)
        reference = memmap_reference(self.images)
        if reference is not None:
            state["images"] = reference
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("images"), MemmapReference):
            state = {**state, "images": state["images"].open()}
        self.__dict__.update(state)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # Copy the row: the cache is usually a read-only memory map.
        image = np.array(self.images[index], dtype=np.uint8, copy=True)
        return {
            "image": self.transform(image),
            "grade": torch.tensor(self.grades[index], dtype=torch.int64),
        }
