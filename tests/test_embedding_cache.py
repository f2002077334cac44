"""A frozen encoder runs once per image: the embedding table, its lineage, and training from it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from qsight_pipeline.data.loaders import make_loader
from qsight_pipeline.data.torch_data import CachedImageDataset
from qsight_pipeline.errors import ArtifactError
from qsight_pipeline.files import lineage
from qsight_pipeline.kedro_app.datasets import EmbeddingTableDataset
from qsight_pipeline.models.hybrid import ModelConfig, build_model
from qsight_pipeline.training import workflow
from qsight_pipeline.training.embedding_cache import EmbeddingDataset, embed, is_table, no_table
from qsight_pipeline.training.frozen_encoder import (
    embed_image_caches,
    encoder_frozen,
    train_on_embeddings,
    without_encoder,
)
from qsight_pipeline.training.stages import ScheduleError, default_stage_schedule, parse_stages
from qsight_pipeline.training.trainer import TrainerSettings, train_stages

SIZE = 32
FROZEN_STAGE = {"name": "classical", "num_epochs": 2, "learning_rate": 3e-3, "patience": 0,
                "active_mask": [1, 1, 0],
                "trainable": ["compression", "head_a", "head_b", "ensemble"]}  # fmt: skip


def tiny_config(freeze: bool = True) -> ModelConfig:
    return ModelConfig.from_params(
        {"encoder_type": "resnet", "encoder_name": "test_resnet", "pretrained": False,
         "compressed_dim": 8, "head_hidden_dim": 16, "gate_hidden_dim": 8,
         "freeze_encoder": freeze}, None, SIZE,
    )  # fmt: skip


def pictures(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_which_schedules_keep_the_encoder_frozen():
    guide = default_stage_schedule()
    image_stages = [s for s in guide if s.runs_on_images]
    assert not encoder_frozen(False, image_stages)  # the guide's classical stage trains it
    assert encoder_frozen(True, image_stages)
    assert encoder_frozen(False, parse_stages([FROZEN_STAGE]))  # no stage lists the encoder
    assert not encoder_frozen(True, [])  # no image stage: nothing to embed for

    kept = without_encoder(image_stages)
    assert kept[0].trainable == ("compression", "head_a", "head_b", "ensemble")
    only_encoder = parse_stages([{"name": "warm", "num_epochs": 1, "trainable": ["encoder"],
                                  "active_mask": [1, 1, 0]}])  # fmt: skip
    with pytest.raises(ScheduleError, match="model.freeze_encoder"):
        without_encoder(only_encoder)


def test_the_model_from_its_embeddings_gives_what_it_gives_from_images():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    images = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        from_images = model(images, active_mask=(1, 1, 0))
        from_rows = model(embeddings=model.encoder(images), active_mask=(1, 1, 0))
    assert torch.allclose(from_images["fused_probs"], from_rows["fused_probs"], atol=1e-6)
    with pytest.raises(ValueError, match="`images`.*`embeddings`.*`compressed`"):
        model(images, embeddings=model.encoder(images))


def _caches(config: ModelConfig) -> dict[str, np.ndarray]:
    record = {"ingestion_id": "ing-test"}
    return {split: lineage.tag(pictures(n, seed), record)
            for seed, (split, n) in enumerate((("train", 24), ("val", 8)))}  # fmt: skip


def test_training_from_the_table_is_the_frozen_training_on_images(caplog):
    """Same seed, same batches: the cached run ends with the weights and the validation QWK of
    the run that feeds images through the frozen encoder in every epoch."""
    config = tiny_config()
    caches = _caches(config)
    grades = {"train": np.arange(24) % 5, "val": np.arange(8) % 5}
    settings = TrainerSettings(seed=3, progress=False, latency_tracking=False, batch_size=8)

    with caplog.at_level(logging.INFO, logger="qsight_pipeline.training.frozen_encoder"):
        tables = embed_image_caches(caches, config, settings)
    assert tables["train"].shape == (24, build_model(config).encoder.num_features)
    assert lineage.of(tables["val"])["ingestion_id"] == "ing-test" and is_table(tables["val"])
    assert any("each of the 32 pictures embedded once" in r.getMessage() for r in caplog.records)

    torch.manual_seed(settings.seed)  # as the training node: seeded, then the model is built
    cached_model = build_model(config)
    cached = train_on_embeddings(cached_model, parse_stages([FROZEN_STAGE]), tables, grades,
                                 "ing-test", settings)  # fmt: skip

    torch.manual_seed(settings.seed)
    image_model = build_model(config)
    loaders = [make_loader(CachedImageDataset(caches[s], grades[s], preprocessing=config.preprocessing),
                           8, shuffle=s == "train", seed=settings.seed) for s in ("train", "val")]  # fmt: skip
    uncached = train_stages(image_model, [FROZEN_STAGE], *loaders, settings)

    assert cached[0]["best_val"]["ensemble"]["kappa"] == pytest.approx(
        uncached[0]["best_val"]["ensemble"]["kappa"])
    for (name, mine), theirs in zip(cached_model.state_dict().items(),
                                    image_model.state_dict().values(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5), name


def test_freeze_encoder_keeps_the_encoder_as_built_when_training_on_images():
    """The Python API's path (images, no table): the guide's classical stage lists the encoder,
    and model.freeze_encoder keeps it out."""
    torch.manual_seed(0)
    model = build_model(tiny_config(freeze=True))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    loader = make_loader(CachedImageDataset(pictures(16), np.arange(16) % 5,
                                            preprocessing=model.config.preprocessing),
                         8, shuffle=True, seed=0)  # fmt: skip
    stage = {**FROZEN_STAGE, "num_epochs": 1, "trainable": None}  # the guide's, by name
    workflow.train_image_stages(model, parse_stages([stage]), loader, loader,
                                TrainerSettings(progress=False), train_labels=np.arange(16) % 5)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


def test_a_table_of_another_encoder_is_refused(tmp_path):
    config = tiny_config()
    settings = TrainerSettings(seed=3, progress=False, batch_size=8)
    tables = embed_image_caches(_caches(config), config, settings)
    torch.manual_seed(99)  # another random init: another encoder
    with pytest.raises(ArtifactError, match=r"embedding_cache_<split>\.npy") as info:
        train_on_embeddings(build_model(config), parse_stages([FROZEN_STAGE]), tables,
                            {"train": np.zeros(24), "val": np.zeros(8)}, "ing-test", settings)
    assert "kedro run --pipelines classical" in str(info.value)  # the way out


def test_the_table_file_keeps_its_lineage_and_a_trained_encoder_marks_it_stale(tmp_path):
    path = tmp_path / "embedding_cache_train.npy"
    dataset = EmbeddingTableDataset(str(path))
    assert dataset.load().size == 0  # never written: no table

    rows = lineage.tag(np.ones((3, 4), np.float32), {"ingestion_id": "ing-1", "encoder_id": "enc-1"})
    dataset.save(rows)
    loaded = dataset.load()
    assert loaded.shape == (3, 4) and is_table(loaded) and lineage.of(loaded)["encoder_id"] == "enc-1"
    assert json.loads(path.with_name("embedding_cache_train.lineage.json").read_text())["encoder_id"] == "enc-1"

    dataset.save(no_table())  # a run that trains its encoder writes no table
    assert path.is_file()  # the old array is left (nothing is deleted without proof) ...
    assert dataset.load().size == 0  # ... but it no longer reads as a table


def test_embedding_rows_follow_the_loader_order():
    torch.manual_seed(0)
    encoder = build_model(tiny_config()).encoder
    images = pictures(10)
    dataset = CachedImageDataset(images, np.zeros(10), preprocessing=tiny_config().preprocessing)
    rows = embed(encoder, make_loader(dataset, 4, shuffle=False, seed=0), "cpu")
    with torch.no_grad():
        one = encoder.eval()(dataset[7]["image"][None])
    assert rows.shape == (10, encoder.num_features) and np.allclose(rows[7], one[0].numpy(), atol=1e-5)
    assert len(EmbeddingDataset(rows, np.zeros(10))) == 10


@pytest.mark.slow
def test_a_frozen_kedro_run_embeds_each_picture_once_beside_the_image_cache(kedro_project):
    result = kedro_project.run("--pipelines", "ingestion,classical,features", env="smoke",
                               params={"model.freeze_encoder": "true"})
    log = result.stdout + result.stderr
    assert log.count("Augmentation is off for this run") == 1
    assert "embedded once" in log and "training compression, head_a, head_b, ensemble" in log
    assert "Features from the frozen encoder's embedding tables" in log

    folder = kedro_project.data("05_model_input")
    manifest = pd.read_csv(kedro_project.data("03_primary/manifest.csv"))
    records = {}
    for split in ("train", "val", "test"):
        table = np.load(folder / f"embedding_cache_{split}.npy")
        records[split] = json.loads((folder / f"embedding_cache_{split}.lineage.json").read_text())
        assert table.dtype == np.float32 and table.shape == (records[split]["rows"], records[split]["width"])
        assert table.shape[0] == int((manifest["split"] == split).sum())
    assert len({(r["ingestion_id"], r["encoder_id"]) for r in records.values()}) == 1
    # The feature cache keeps the encoder's rows (the gate's out-of-distribution features).
    from qsight_pipeline.files.safe_pickle import safe_load

    cache = safe_load(next(kedro_project.path.glob("data/**/quantum_training_data.pkl")))
    for split in ("train", "val", "test"):
        rows = cache[f"{split}_encoder_features"]
        assert rows.dtype == np.float32
        np.testing.assert_allclose(rows, np.load(folder / f"embedding_cache_{split}.npy"), atol=1e-6)
    image_record = json.loads((folder / "image_cache_train.lineage.json").read_text())
    assert records["train"]["ingestion_id"] == image_record["ingestion_id"]

    # The quantum stage reruns from quantum_training_data.pkl alone: no pictures, no tables.
    for path in folder.glob("*.npy"):
        path.unlink()
    kedro_project.run("--pipelines", "quantum", env="smoke")
    assert kedro_project.data("08_reporting/quantum_metrics.json").is_file()
