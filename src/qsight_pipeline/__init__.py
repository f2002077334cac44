"""QSight: a Kedro pipeline that trains a hybrid classical + quantum diabetic-retinopathy grader."""

__version__ = "0.1.0"
