"""PyTorch view of the decode-once image cache, and the second half of the one pixel path.

The cache holds uint8 ``(N, S, S, 3)`` RGB pictures (:func:`~qsight_pipeline.data.image_cache.picture`).
:func:`normalise` turns pictures into the model's input with the model's mean and std
(:class:`~qsight_pipeline.data.preprocessing.Preprocessing`), and :func:`model_input` is the whole
path from a file or an array in one call. :class:`CachedImageDataset` turns a row into
``{"image": float32 (3, S, S), "grade": int64}`` through :func:`build_image_transform`: the
training augmentation (training only), then the same :func:`normalise`. All randomness comes from
torch's RNG, so ``torch.manual_seed`` makes augmentation repeatable.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from qsight_pipeline.config import AugmentationParams, validate_block
from qsight_pipeline.data.image_cache import DEFAULT_MAX_PIXELS, load_image, picture
from qsight_pipeline.data.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    from_saved,
)
from qsight_pipeline.errors import ArtifactError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CachedImageDataset",
    "build_image_transform",
    "load_image",
    "model_input",
    "normalise",
]

PreprocessingLike = Preprocessing | Mapping[str, Any] | int


def normalise(pictures: np.ndarray | torch.Tensor, preprocessing: PreprocessingLike) -> torch.Tensor:
    """uint8 pictures -> the model's float32 input: ``/ 255``, ``- mean``, ``/ std``.

    ``pictures``: NumPy ``(B, S, S, 3)`` or ``(S, S, 3)`` (as the cache and :func:`picture`
    give them; returns ``(B, 3, S, S)`` or ``(3, S, S)``), or a uint8 tensor already channels
    first (``(..., 3, S, S)``, as the training transform has it). ``preprocessing``: the model's
    (``loaded.preprocessing``, ``model.config.preprocessing``).
    """
    settings = from_saved(preprocessing)
    if isinstance(pictures, torch.Tensor):
        tensor = pictures
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(pictures))
        tensor = tensor.permute(0, 3, 1, 2) if tensor.ndim == 4 else tensor.permute(2, 0, 1)
    return normalise_unit(tensor.float() / 255.0, settings)


def normalise_unit(images: torch.Tensor, preprocessing: PreprocessingLike) -> torch.Tensor:
    """Float images in [0, 1], channels first -> ``(images - mean) / std`` (on their device)."""
    settings = from_saved(preprocessing)
    mean = torch.tensor(settings.mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(settings.std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


def model_input(
    source: str | os.PathLike | np.ndarray,
    preprocessing: PreprocessingLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """The one pixel path: a photograph (file or array) -> float32 ``(3, S, S)`` model input.

    :func:`~qsight_pipeline.data.image_cache.picture` (decode, 8-bit RGB, letterbox, crop), then
    :func:`normalise`. Training reads the pictures from the image cache and normalises them the
    same way; ``predict`` batches the same two steps.
    """
    settings = from_saved(preprocessing)
    return normalise(picture(source, settings, max_pixels), settings)


def _augmentation(augment: AugmentationParams | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The full augmentation settings (defaults from ``config.AugmentationParams``), or ``None``
    when augmentation is off. A typed block (what Kedro hands the nodes) is not validated again;
    a mapping (the Python API's ``DatasetConfig.augment``) is."""
    if augment is None:
        return None
    settings = validate_block(AugmentationParams, augment, "augmentation").to_dict()
    return settings if settings["enabled"] else None


def build_image_transform(
    preprocessing: PreprocessingLike, train: bool = False,
    augment: AugmentationParams | Mapping[str, Any] | None = None,
) -> Callable[[Any], torch.Tensor]:
    """A transform from a uint8 ``(S, S, 3)`` picture (a cache row) to the model's input.

    Returns float32 ``(3, S, S)``, normalised by :func:`normalise` with ``preprocessing``'s mean
    and std. A picture of another side is refused: it did not come through the model's pixel
    path. With ``train=True`` and ``augment`` not ``None`` (and ``augment["enabled"]`` not false)
    it adds random flips, a small rotation and colour jitter first. Unknown ``augment`` keys
    raise ``ValueError``, so a typo is not ignored. With ``augment["on_device"]`` a training
    transform stops at uint8 ``(3, S, S)``: the trainer augments and normalises on the device.
    """
    settings = from_saved(preprocessing)
    augmentation = _augmentation(augment)
    steps: list[Callable] = [v2.ToImage(), _SideCheck(settings.image_size)]
    if train and augmentation is not None and augmentation["on_device"]:
        # The trainer augments and normalises whole batches on the device (data.device_augment).
        return v2.Compose([*steps, v2.ToPureTensor()])
    if train and augmentation is not None:
        steps += [
            v2.RandomHorizontalFlip(augmentation["horizontal_flip"]),
            v2.RandomVerticalFlip(augmentation["vertical_flip"]),
            v2.RandomRotation(augmentation["rotation_degrees"]),
            v2.ColorJitter(
                brightness=augmentation["brightness"],
                contrast=augmentation["contrast"],
                saturation=augmentation["saturation"],
                hue=augmentation["hue"],
            ),
        ]
    steps += [v2.ToPureTensor(), _Normalise(settings)]
    return v2.Compose(steps)


class _SideCheck:
    """Refuses a picture whose side is not the model's: the cache was made for another model."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) != (self.size, self.size):
            raise ArtifactError(
                f"A {tuple(image.shape[-2:])} picture, but the model's input is {self.size} x "
                f"{self.size} (its preprocessing). Rebuild the image cache with `kedro run "
                "--pipelines ingestion` (or create_dataloaders again) for this model."
            )
        return image


class _Normalise:
    """:func:`normalise` as the last step of a transform (picklable, for loader processes)."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return normalise(image, self.preprocessing)


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
    """Rows of the image cache with their grades, as ``{"image", "grade"}`` dicts.

    ``preprocessing``: the model's (its side must be the cache's); a side ``int`` or None (the
    cache's side) means the ImageNet letterbox of models saved before it was recorded.
    """

    def __init__(
        self,
        images: np.ndarray,
        grades: np.ndarray,
        train: bool = False,
        augment: AugmentationParams | Mapping[str, Any] | None = None,
        preprocessing: PreprocessingLike | None = None,
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
        self.preprocessing = from_saved(preprocessing, image_size=images.shape[1])
        self.image_size = self.preprocessing.image_size
        if images.shape[1:3] != (self.image_size, self.image_size):
            raise ArtifactError(
                f"The image cache holds {images.shape[1]} x {images.shape[2]} pictures but the "
                f"model's input is {self.image_size} x {self.image_size} (its preprocessing: "
                "run.image_size or the encoder's own size). Rebuild the cache with `kedro run "
                "--pipelines ingestion` (or create_dataloaders again) for this model."
            )
        self.train, self.augment = train, augment
        self.transform = build_image_transform(self.preprocessing, train=train, augment=augment)

    def use_pictures(self, images: np.ndarray, preprocessing: PreprocessingLike) -> None:
        """The same rows as ``images`` made with another ``preprocessing`` (the model's), with
        the same grades and augmentation; other attributes (``image_ids``) are kept."""
        self.__init__(images, self.grades, self.train, self.augment, preprocessing)

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
