"""A local web page that grades one fundus photograph: ``python -m qsight_pipeline.app``."""
