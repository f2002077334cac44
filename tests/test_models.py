"""The hybrid model: encoders through timm, shapes, masking, the gate and weight loading."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from qsight_pipeline.models.encoders import EncoderError, EncoderWeightsError, create_encoder
from qsight_pipeline.models.hybrid import GatedEnsemble, ModelConfig, build_model
from qsight_pipeline.training.latency import LatencyTracker, track_latency

SIZE = 32


def tiny_config(
    encoder_type: str = "vit", encoder_name: str = "test_vit", **overrides
) -> ModelConfig:
    params = {
        "encoder_type": encoder_type,
        "encoder_name": encoder_name,
        "pretrained": False,
        "compressed_dim": 8,
        "head_hidden_dim": 16,
        "gate_hidden_dim": 8,
        **overrides,
    }
    return ModelConfig.from_params(params, {"enabled": False}, SIZE)


@pytest.mark.parametrize(("encoder_type", "name"), [("vit", "test_vit"), ("resnet", "test_resnet")])
def test_forward_shapes_for_tiny_vit_and_resnet(encoder_type, name):
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_type, name))
    out = model(torch.randn(3, 3, SIZE, SIZE), active_mask=(1, 1, 0))

    assert out["compressed"].shape == (3, 8)
    assert out["logits_head_a"].shape == out["logits_head_b"].shape == (3, 5)
    assert "logits_quantum_head" not in out
    assert out["fused_probs"].shape == (3, 5)
    assert out["head_weights"].shape == (3, 3)
    assert out["entropy"].shape == out["disagreement"].shape == (3,)
    assert torch.allclose(out["fused_probs"].sum(1), torch.ones(3))
    assert model.encoder_name == name and not model.quantum_enabled


def test_gate_weights_are_zero_for_masked_heads_and_sum_to_one():
    torch.manual_seed(0)
    ensemble = GatedEnsemble(compressed_dim=8, hidden_dim=8)
    compressed = torch.randn(6, 8)
    logits = {h: torch.randn(6, 5) for h in ("head_a", "head_b", "quantum_head")}
    for mask in [(1, 1, 1), (1, 0, 1), (0, 0, 1), (1, 1, 0)]:
        out = ensemble(compressed, logits, [bool(m) for m in mask])
        weights = out["head_weights"]
        assert torch.allclose(weights.sum(1), torch.ones(6))
        for index, flag in enumerate(mask):
            if not flag:
                assert torch.all(weights[:, index] == 0)
        assert torch.all(out["disagreement"] >= 0)
    # One active head: the fused distribution is that head's, with no disagreement.
    out = ensemble(compressed, logits, [False, False, True])
    assert torch.allclose(out["fused_probs"], logits["quantum_head"].softmax(-1), atol=1e-6)
    assert torch.allclose(out["disagreement"], torch.zeros(6), atol=1e-6)


def test_masked_head_gets_no_gradient_and_is_not_computed():
    torch.manual_seed(0)
    model = build_model(tiny_config())
    calls = []
    model.head_b.register_forward_hook(lambda *args: calls.append("head_b"))
    out = model(torch.randn(4, 3, SIZE, SIZE), active_mask=(1, 0, 0))
    (out["fused_probs"].log().mean() + out["logits_head_a"].mean()).backward()

    assert calls == []
    assert all(p.grad is None for p in model.head_b.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head_a.parameters())
    assert "logits_head_b" not in out and torch.all(out["head_weights"][:, 1:] == 0)


def test_quantum_mask_is_forced_off_without_a_quantum_head():
    model = build_model(tiny_config())
    out = model(compressed=torch.randn(2, 8), active_mask=(1, 1, 1))
    assert "logits_quantum_head" not in out
    assert torch.all(out["head_weights"][:, 2] == 0)
    with pytest.raises(ValueError, match="no head"):
        model(compressed=torch.randn(2, 8), active_mask=(0, 0, 1))


def test_precomputed_head_logits_replace_the_head():
    model = build_model(tiny_config()).eval()
    given = torch.randn(2, 5)
    out = model(compressed=torch.randn(2, 8), head_logits={"head_a": given}, active_mask=(1, 1, 0))
    assert torch.equal(out["logits_head_a"], given)


def test_latency_is_timed_only_inside_track_latency():
    model = build_model(tiny_config()).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    model(images, active_mask=(1, 1, 0))
    tracker = LatencyTracker()
    with track_latency(model, tracker):
        model(images, active_mask=(1, 1, 0))
        model(images, active_mask=(1, 1, 0))
    summary = tracker.summary()
    assert set(summary) == {"encoder", "compression", "head_a", "head_b", "ensemble"}
    assert all(s["count"] == 2 and s["p95"] >= s["p50"] > 0 for s in summary.values())
    model(images, active_mask=(1, 1, 0))
    assert tracker.summary()["encoder"]["count"] == 2
    # The hooks are gone: the model carries nothing of the tracker after the block.
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_config_round_trip_and_unknown_keys():
    config = tiny_config()
    assert ModelConfig(**config.to_dict()) == config
    with pytest.raises(ValueError, match="model.encoder_nme"):
        ModelConfig.from_params({"encoder_nme": "x"}, None, 32)


def test_unknown_encoder_names_the_setting():
    with pytest.raises(EncoderError, match="model.encoder_name"):
        create_encoder("vit", "vit_tinyy_patch16_224", pretrained=False)
    with pytest.raises(EncoderError, match="model.encoder_type"):
        create_encoder("cnn", pretrained=False)


def test_failed_download_names_both_settings(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    # Stop timm before it touches the network, so the test is fast and offline.
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)
    with pytest.raises(EncoderWeightsError) as info:
        create_encoder("resnet", "test_resnet", image_size=SIZE, pretrained=True)
    message = str(info.value)
    assert "model.pretrained_weights" in message and "model.pretrained" in message
    assert "test_resnet" in message
    assert isinstance(info.value.__cause__, OSError)  # the network's error, kept for the traceback


def test_local_weights_file_is_loaded_and_mismatch_is_explained(tmp_path, caplog):
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    weights = tmp_path / "test_resnet.pth"
    torch.save({"state_dict": source.state_dict()}, weights)

    with caplog.at_level(logging.INFO):
        encoder = create_encoder(
            "resnet", "test_resnet", pretrained=False, pretrained_weights=weights
        )
    assert torch.equal(encoder.conv1[0].weight, source.conv1[0].weight)

    with pytest.raises(EncoderWeightsError, match="missing.pth") as info:
        create_encoder("resnet", "test_resnet", pretrained_weights=tmp_path / "missing.pth")
    assert "model.pretrained_weights" in str(info.value)

    with pytest.raises(EncoderWeightsError, match="test_resnet.pth") as info:
        create_encoder("vit", "test_vit", image_size=SIZE, pretrained_weights=weights)
    assert "model.pretrained_weights" in str(info.value)


def test_vit_weights_file_is_resized_to_the_configured_image_size(tmp_path):
    torch.manual_seed(2)
    source = timm.create_model("test_vit", pretrained=False)  # its own default size, 1000 classes
    weights = tmp_path / "test_vit.pth"
    torch.save(source.state_dict(), weights)
    encoder = create_encoder("vit", "test_vit", image_size=SIZE, pretrained_weights=weights)
    assert encoder.pos_embed.shape[1] < source.pos_embed.shape[1]
    assert torch.equal(encoder.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert encoder(torch.randn(1, 3, SIZE, SIZE)).shape == (1, encoder.num_features)


def test_missing_quantum_packages_warn_and_fall_back_to_classical(monkeypatch, caplog):
    import qsight_pipeline.models.quantum as quantum

    monkeypatch.setattr(quantum, "quantum_dependencies_missing", lambda *a, **k: ["qiskit"])
    config = ModelConfig(**{**tiny_config().to_dict(), "quantum": {"enabled": True, "n_qubits": 2}})
    with caplog.at_level(logging.WARNING):
        model = build_model(config)
    assert model.quantum_head is None and not model.quantum_enabled
    assert "qiskit" in caplog.text and "classical-only" in caplog.text


def test_real_quantum_head_plugs_in():
    pytest.importorskip("qiskit_machine_learning")
    config = ModelConfig(
        **{**tiny_config().to_dict(), "quantum": {"enabled": True, "n_qubits": 2, "reps": 1}}
    )
    model = build_model(config)
    assert model.quantum_enabled
    out = model(compressed=torch.randn(3, 8), active_mask=(0, 1, 1))
    assert out["logits_quantum_head"].shape == (3, 5)
    assert torch.all(out["head_weights"][:, 0] == 0)
    out["fused_probs"].log().mean().backward()
    assert any(p.grad is not None for p in model.quantum_head.parameters())
