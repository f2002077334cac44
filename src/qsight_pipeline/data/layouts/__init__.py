"""Dataset layouts: where the labelled images of a dataset root are, one registered class each.

``dataset.type`` names a layout; :func:`scan_dataset` finds its labelled images, and the sample
generator writes synthetic data in it. The two Kaggle layouts ship here (``tanlikesmath``,
``sovitrath``); a new one is one class in one new file of this folder, decorated with
``@register_layout("name")`` (see :mod:`.base` and docs/your-own-data.md). Every module of this package is
imported on first use, so such a file needs no other edit.

A layout that does not match raises :class:`DatasetLayoutError` with a message that names the path
that was expected and what was found there. Nothing here decodes images; see ``image_cache``.
"""

from __future__ import annotations

import importlib
import pkgutil

from qsight_pipeline.data.layouts.base import (
    IMAGE_SUFFIXES,
    RECORD_COLUMNS,
    DatasetLayout,
    DatasetLayoutError,
    LayoutScan,
    SampleImage,
    get_layout,
    is_image_file,
    layout_names,
    register_layout,
    scan_dataset,
)

# The built-in layouts first, in this order (messages list layouts in registration order), then
# any other layout module dropped into this folder.
_BUILT_IN = ("tanlikesmath", "sovitrath")
for _module in (*_BUILT_IN, *sorted(m.name for m in pkgutil.iter_modules(__path__))):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

from qsight_pipeline.data.layouts.sovitrath import SOVITRATH, SOVITRATH_IMAGE_DIR  # noqa: E402
from qsight_pipeline.data.layouts.tanlikesmath import (  # noqa: E402
    TANLIKESMATH,
    TANLIKESMATH_IMAGE_DIR,
    TANLIKESMATH_LABEL_FILES,
)

__all__ = [
    "IMAGE_SUFFIXES", "RECORD_COLUMNS", "SOVITRATH", "SOVITRATH_IMAGE_DIR", "TANLIKESMATH",
    "TANLIKESMATH_IMAGE_DIR", "TANLIKESMATH_LABEL_FILES", "DatasetLayout", "DatasetLayoutError",
    "LayoutScan", "SampleImage", "get_layout", "is_image_file", "layout_names", "register_layout",
    "scan_dataset",
]
