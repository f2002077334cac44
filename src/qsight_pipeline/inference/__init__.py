"""Grading new photographs with a trained model: the Python API, calibration, heatmaps, export.

```python
from qsight_pipeline import load_model, predict_image

model = load_model("data/06_models/trained_model")          # device="cuda" for a GPU
result = predict_image(model, "photo.jpeg", heatmap=True)
result.grade_name, result.referable_probability, result.refer, result.needs_review
```
"""

from qsight_pipeline.lazy_exports import lazy_getattr

# Loaded on first use (torch is behind them): the pipelines' node modules import light parts of
# this package (``inference.rows``) when `kedro` starts.
_EXPORTS = {
    "LoadedModel": "qsight_pipeline.inference.loading",
    "load_model": "qsight_pipeline.inference.loading",
    "Prediction": "qsight_pipeline.inference.predict",
    "predict_image": "qsight_pipeline.inference.predict",
    "predict_images": "qsight_pipeline.inference.predict",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
