"""The staged trainer: learning, freezing, cache stages, records, determinism, latency."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from qsight_pipeline.data.feature_cache import FeatureCacheDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training.stages import ScheduleError
from qsight_pipeline.training.trainer import (
    TrainerSettings,
    evaluate,
    seed_everything,
    train_stages,
)

SIZE = 32


class LesionImages(Dataset):
    """Synthetic fundus stand-ins: grade g has 2g bright red 4x4 'lesions' on noise."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.grades = torch.randint(0, 5, (n,), generator=generator)
        self.images = torch.randn(n, 3, SIZE, SIZE, generator=generator) * 0.5
        for index, grade in enumerate(self.grades.tolist()):
            for _ in range(2 * grade):
                x, y = torch.randint(0, SIZE - 4, (2,), generator=generator).tolist()
                self.images[index, 0, y : y + 4, x : x + 4] += 2.0

    def __len__(self) -> int:
        return len(self.grades)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "grade": self.grades[index]}


def tiny_model(seed: int = 0, encoder_type: str = "vit", encoder_name: str = "test_vit"):
    seed_everything(seed)
    config = ModelConfig.from_params(
        {
            "encoder_type": encoder_type,
            "encoder_name": encoder_name,
            "pretrained": False,
            "compressed_dim": 16,
            "head_hidden_dim": 32,
            "gate_hidden_dim": 16,
        },
        {"enabled": False},
        SIZE,
    )
    return build_model(config)


def loaders(n_train: int = 160, n_val: int = 64, seed: int = 0):
    train = DataLoader(
        LesionImages(n_train, seed=1),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    val = DataLoader(LesionImages(n_val, seed=2), batch_size=64)
    return train, val


CLASSICAL = {
    "name": "classical",
    "num_epochs": 2,
    "learning_rate": 3e-3,
    "patience": 0,
    "active_mask": [1, 1, 0],
}


def settings(**overrides) -> TrainerSettings:
    return TrainerSettings(**{"progress": False, "device": "cpu", **overrides})


def metric_view(summaries):
    """Everything in the summaries except wall-clock timings."""
    return [
        {
            **{k: v for k, v in s.items() if k not in ("history", "latency_samples_ms")},
            "history": [
                {k: v for k, v in r.items() if k not in ("seconds", "latency_ms")}
                for r in s["history"]
            ],
        }
        for s in summaries
    ]


def test_a_tiny_model_learns_the_synthetic_grades():
    model = tiny_model()
    train, val = loaders(n_train=256, n_val=128)
    stage = {**CLASSICAL, "num_epochs": 6}
    (summary,) = train_stages(model, [stage], train, val, settings())

    result = evaluate(model, val, (1, 1, 0), settings())
    # Chance accuracy over 5 balanced grades is 0.2 and chance QWK is 0.
    assert result["metrics"]["ensemble"]["accuracy"] > 0.35
    assert result["metrics"]["ensemble"]["quadratic_weighted_kappa"] > 0.4
    # The restored weights are the best epoch's: evaluation reproduces its validation score.
    assert result["metrics"]["ensemble"]["quadratic_weighted_kappa"] == pytest.approx(
        summary["best_val"]["ensemble"]["kappa"]
    )


def test_epoch_records_follow_the_contract():
    model = tiny_model()
    train, val = loaders()
    records = []
    (summary,) = train_stages(
        model, [CLASSICAL], train, val, settings(epoch_callback=records.append)
    )

    assert set(summary) >= {
        "name",
        "epochs_run",
        "best_epoch",
        "stopped_early",
        "best_val",
        "history",
    }
    assert summary["epochs_run"] == 2 and not summary["stopped_early"]
    assert records == summary["history"]
    record = records[0]
    assert set(record) == {
        "stage", "epoch", "seconds", "learning_rate", "train", "val",
        "ensemble_weights", "uncertainty", "latency_ms",
    }  # fmt: skip
    for split in ("train", "val"):
        # The masked quantum head is absent; the others carry loss, accuracy and kappa.
        assert set(record[split]) == {"loss", "head_a", "head_b", "ensemble"}
        assert set(record[split]["head_a"]) == {"loss", "accuracy", "kappa"}
    assert record["ensemble_weights"]["quantum_head"] == 0.0
    assert sum(record["ensemble_weights"].values()) == pytest.approx(1.0)
    assert set(record["uncertainty"]) == {"entropy", "disagreement"}
    # Latency on (the default): p50/p95 per component for every batch.
    assert set(record["latency_ms"]) == {"encoder", "compression", "head_a", "head_b", "ensemble"}
    assert all({"p50", "p95", "mean", "count"} <= set(v) for v in record["latency_ms"].values())
    assert summary["latency_samples_ms"]["encoder"]
    # Timing wraps the model from outside and leaves no hook behind.
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_latency_off_records_nothing():
    model = tiny_model()
    train, val = loaders()
    (summary,) = train_stages(model, [CLASSICAL], train, val, settings(latency_tracking=False))
    assert all(record["latency_ms"] == {} for record in summary["history"])
    assert summary["latency_samples_ms"] == {}
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_same_seed_gives_identical_history():
    runs = []
    for _ in range(2):
        model = tiny_model(seed=3)
        train, val = loaders(seed=3)
        runs.append(train_stages(model, [CLASSICAL], train, val, settings(seed=3)))
    assert metric_view(runs[0]) == metric_view(runs[1])


def test_frozen_parts_do_not_change_and_masked_heads_get_no_gradient():
    # A ResNet encoder, so frozen BatchNorm running statistics are covered too.
    model = tiny_model(encoder_type="resnet", encoder_name="test_resnet")
    assert any("running_mean" in key for key in model.encoder.state_dict())
    train, val = loaders(n_train=64, n_val=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage = {
        "name": "heads_only",
        "num_epochs": 1,
        "learning_rate": 1e-2,
        "active_mask": [1, 0, 0],
        "trainable": ["head_a", "ensemble"],
    }
    train_stages(model, [stage], train, val, settings())
    after = model.state_dict()
    for key, value in after.items():
        if key.split(".", 1)[0] not in ("head_a", "ensemble"):
            # BatchNorm running statistics included: frozen parts run in eval mode.
            assert torch.equal(before[key], value), f"frozen weight {key} changed"
    assert not torch.equal(before["head_a.net.0.weight"], after["head_a.net.0.weight"])
    assert all(p.grad is None for p in model.head_b.parameters())


def test_cache_stage_uses_cached_logits_for_frozen_heads_and_rejects_image_stages():
    model = tiny_model()
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 5, 96)
    features = rng.normal(size=(96, 16)).astype(np.float32)
    features[:, 0] += grades  # a learnable signal in the compressed features
    # One-hot-ish cached logits for head A that are right, head B that are noise.
    logits_a = np.eye(5, dtype=np.float32)[grades] * 4
    logits_b = rng.normal(size=(96, 5)).astype(np.float32)
    dataset = FeatureCacheDataset(features, grades, logits_a, logits_b)
    row = dataset[0]
    assert set(row) == {"compressed", "logits_head_a", "logits_head_b", "grade"}
    train = DataLoader(
        dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    val = DataLoader(dataset, batch_size=32)

    calls = []
    model.head_a.register_forward_hook(lambda *args: calls.append("head_a"))
    stage = {"name": "ensemble", "num_epochs": 3, "learning_rate": 1e-2, "active_mask": [1, 1, 0]}
    (summary,) = train_stages(model, [stage], train, val, settings())
    assert calls == []  # head A was never run: its cached logits were used
    # The gate learns to trust the head whose cached logits are right.
    assert summary["history"][-1]["ensemble_weights"]["head_a"] > 0.5
    assert summary["best_val"]["ensemble"]["accuracy"] > 0.9

    with pytest.raises(ValueError, match="needs image batches"):
        train_stages(model, [CLASSICAL], train, val, settings())


def test_invalid_schedule_fails_before_training():
    model = tiny_model()
    train, val = loaders(n_train=32, n_val=32)
    with pytest.raises(ScheduleError, match="learning_rate"):
        train_stages(model, [{**CLASSICAL, "learning_rate": -1}], train, val, settings())


def test_early_stopping_restores_the_best_epoch():
    model = tiny_model()
    train, val = loaders(n_train=64, n_val=32)
    # A huge learning rate makes validation worse after the first epochs.
    stage = {**CLASSICAL, "num_epochs": 8, "patience": 1, "learning_rate": 5.0}
    (summary,) = train_stages(model, [stage], train, val, settings())
    kappas = [r["val"]["ensemble"]["kappa"] for r in summary["history"]]
    if summary["stopped_early"]:
        assert summary["epochs_run"] < 8
        assert summary["epochs_run"] == summary["best_epoch"] + 1
    assert summary["best_val"]["ensemble"]["kappa"] == max(kappas)


def test_checkpoints_are_written_every_epoch(tmp_path):
    model = tiny_model()
    train, val = loaders(n_train=32, n_val=32)
    train_stages(model, [CLASSICAL], train, val, settings(checkpoint_dir=tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["stage_classical_epoch_1.pth", "stage_classical_epoch_2.pth"]
    checkpoint = torch.load(tmp_path / names[-1], weights_only=True)
    assert {
        "model",
        "optimizer",
        "scaler",
        "rng",
        "history",
        "best",
        "bad_epochs",
        "fingerprint",
    } <= set(checkpoint)


def test_class_balance_and_mixed_precision_on_cpu_are_reported(caplog):
    model = tiny_model()
    train, val = loaders(n_train=32, n_val=32)
    with caplog.at_level(logging.INFO):
        train_stages(
            model,
            [{**CLASSICAL, "num_epochs": 1}],
            train,
            val,
            settings(mixed_precision=True),
            class_counts=[10, 5, 0, 3, 2],
        )
    text = caplog.text
    assert "autocast is off on CPU" in text
    assert "Class-balanced loss weights" in text
