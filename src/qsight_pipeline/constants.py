"""Domain constants shared by every part of the project."""

from __future__ import annotations

# Diabetic-retinopathy grades in clinical (ordinal) order. Never sort these alphabetically.
GRADE_NAMES: tuple[str, ...] = ("No DR", "Mild", "Moderate", "Severe", "Proliferative")
NUM_GRADES = len(GRADE_NAMES)

# sovitrath's class folders, in the same clinical order (index == grade).
SOVITRATH_CLASS_FOLDERS: tuple[str, ...] = ("No_DR", "Mild", "Moderate", "Severe", "Proliferate_DR")

# Grade >= 2 is "referable" DR in screening programmes.
REFERABLE_GRADE = 2

# Names of the model's parts. They are the attribute names in ``HybridModel``, the vocabulary of a
# stage's ``trainable`` list, and the keys of every per-head metric and latency record.
ENCODER = "encoder"
COMPRESSION = "compression"
HEAD_A = "head_a"
HEAD_B = "head_b"
QUANTUM_HEAD = "quantum_head"
ENSEMBLE = "ensemble"
HEADS: tuple[str, ...] = (HEAD_A, HEAD_B, QUANTUM_HEAD)
MODEL_PARTS: tuple[str, ...] = (ENCODER, COMPRESSION, HEAD_A, HEAD_B, QUANTUM_HEAD, ENSEMBLE)

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Everything after the compression module: what the feature cache carries to rebuild it.
POST_COMPRESSION_PARTS: tuple[str, ...] = (HEAD_A, HEAD_B, ENSEMBLE)
