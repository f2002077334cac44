"""Grading new photographs with a trained model: the Python API, calibration, heatmaps, export.

```python
from qsight_pipeline import load_model, predict_image

model = load_model("data/06_models/trained_model")          # device="cuda" for a GPU
result = predict_image(model, "photo.jpeg", heatmap=True)
result.grade_name, result.referable_probability, result.refer, result.needs_review
```
"""

from qsight_pipeline.inference.loading import LoadedModel, load_model
from qsight_pipeline.inference.predict import Prediction, predict_image, predict_images

__all__ = ["LoadedModel", "Prediction", "load_model", "predict_image", "predict_images"]
