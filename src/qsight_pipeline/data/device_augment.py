"""Random augmentation of whole image batches on the training device (``augmentation.on_device``).

Per-image torchvision transforms in loader processes cost a few milliseconds per image on a CPU
core; a large GPU trains thousands of images per second, so a few cores cannot feed it. With
``on_device: true`` the loader only hands over uint8 images (4x fewer bytes to copy than float)
and :class:`BatchAugmentation` flips, rotates and colour-jitters every image of a batch with its
own random parameters (kornia's batched augmentations), then normalises with the model's mean and
std (``data.torch_data.normalise_unit``, the one normalisation), on the device.
The settings mean what they mean for the per-image transforms (``data.torch_data``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from qsight_pipeline.config import AugmentationParams
from qsight_pipeline.data.preprocessing import Preprocessing, from_saved
from qsight_pipeline.data.torch_data import _augmentation, normalise_unit


class BatchAugmentation:
    """``(images uint8 (B, 3, H, W), training) -> normalised float images``, on their device.

    Float batches are passed through: they come from a loader that already normalised them
    (validation, or augmentation off).
    """

    def __init__(
        self, augment: AugmentationParams | Mapping[str, Any] | None,
        preprocessing: Preprocessing | Mapping[str, Any] | int,
    ) -> None:
        self.settings = _augmentation(augment)
        self.preprocessing = from_saved(preprocessing)
        self._pipeline: Any = None

    def _build(self) -> Any:
        # lazy: optional dependency
        import kornia.augmentation as K  # optional dependency: pip install -e ".[gpu]"

        s = self.settings
        assert s is not None
        return K.AugmentationSequential(
            K.RandomHorizontalFlip(p=s["horizontal_flip"]),
            K.RandomVerticalFlip(p=s["vertical_flip"]),
            K.RandomRotation(degrees=s["rotation_degrees"], p=1.0),
            K.ColorJitter(s["brightness"], s["contrast"], s["saturation"], s["hue"], p=1.0),
        )

    def __call__(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        x = images.float().div_(255.0)
        if training and self.settings is not None:
            if self._pipeline is None:
                self._pipeline = self._build().to(images.device)
            x = self._pipeline(x)
        return normalise_unit(x, self.preprocessing)


def with_device_augmentation(
    settings: Any, augment: AugmentationParams | Mapping[str, Any] | None,
    preprocessing: Preprocessing | Mapping[str, Any] | int,
) -> Any:
    """``settings`` (a TrainerSettings) with the batch augmentation when ``on_device`` is on,
    normalising with the model's ``preprocessing``."""
    if not augment or not augment.get("on_device"):
        return settings
    return settings.model_copy(update={"image_transform": BatchAugmentation(augment, preprocessing)})
