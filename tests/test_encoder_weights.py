"""Retinal foundation encoders: weights files in RETFound's and RETFound-Green's published layouts.

The files are written here from randomly initialised timm models, in each publisher's layout;
nothing is downloaded. ViT-L/16 (RETFound's 303M parameters) is only built on the meta device.
"""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from qsight_pipeline.models.encoder_weights import adapt_state_dict, fit_problems
from qsight_pipeline.models.encoders import EncoderWeightsError, create_encoder

TINY_VIT = "vit_tiny_patch16_224"
GREEN = "vit_small_patch14_reg4_dinov2"


def mae_checkpoint(encoder_state: dict, width: int, device: str = "cpu") -> dict:
    """RETFound's published layout: ``{"model": MAE state}``, the encoder under timm's names plus
    MAE's decoder and mask token; no classifier head."""
    decoder = {
        "mask_token": torch.zeros(1, 1, 16, device=device),
        "decoder_embed.weight": torch.zeros(16, width, device=device),
        "decoder_embed.bias": torch.zeros(16, device=device),
        "decoder_pos_embed": torch.zeros(1, 197, 16, device=device),
        "decoder_blocks.0.norm1.weight": torch.ones(16, device=device),
        "decoder_norm.weight": torch.ones(16, device=device),
        "decoder_pred.weight": torch.zeros(768, 16, device=device),
    }
    return {"model": {**encoder_state, **decoder}}


def test_retfound_mae_layout_loads_and_says_what_it_dropped(tmp_path, caplog):
    torch.manual_seed(0)
    source = timm.create_model(TINY_VIT, pretrained=False, num_classes=0).eval()
    weights = tmp_path / "RETFound_cfp_weights.pth"
    torch.save(mae_checkpoint(source.state_dict(), source.num_features), weights)

    with caplog.at_level(logging.INFO, logger="qsight_pipeline.models.encoder_weights"):
        encoder = create_encoder("vit", TINY_VIT, image_size=224, pretrained_weights=weights).eval()

    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(encoder(image), source(image), atol=1e-6)
    lines = [r.getMessage() for r in caplog.records if "loaded from" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "RETFound" in lines[0]  # the layout it recognised
    assert "mask_token" in lines[0] and "decoder_embed" in lines[0]  # the keys it dropped


def test_a_file_that_does_not_fill_the_encoder_is_refused_in_one_line(tmp_path):
    source = timm.create_model("test_vit", pretrained=False, num_classes=0)
    state = source.state_dict()
    del state["norm.weight"], state["blocks.0.attn.qkv.weight"]
    state["fc_norm_of_another_model.weight"] = torch.ones(3)
    weights = tmp_path / "partial.pth"
    torch.save(mae_checkpoint(state, source.num_features), weights)

    with pytest.raises(EncoderWeightsError) as info:
        create_encoder("vit", "test_vit", pretrained_weights=weights)
    message = str(info.value)
    assert "\n" not in message and "model.pretrained_weights" in message
    assert all(key in message for key in ("blocks.0.attn.qkv.weight", "norm.weight",
                                          "fc_norm_of_another_model.weight"))


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    weights = tmp_path / "crafted.pth"
    torch.save({"model": timm.create_model("test_vit", num_classes=0).state_dict(),
                "args": logging.Formatter()}, weights)
    with pytest.raises(EncoderWeightsError, match=r"`logging\.Formatter`") as info:
        create_encoder("vit", "test_vit", pretrained_weights=weights)
    assert "model.pretrained_weights" in str(info.value)


def test_retfound_green_layout_loads_at_its_size_and_at_the_run_size(tmp_path, caplog):
    torch.manual_seed(1)
    # RETFound-Green's release: timm's state dict of this model at 392 px, num_classes=0.
    source = timm.create_model(GREEN, pretrained=False, img_size=392, num_classes=0)
    weights = tmp_path / "retfoundgreen_statedict.pth"
    torch.save(source.state_dict(), weights)
    # The same weights saved from a DDP wrapper carry a `module.` prefix.
    prefixed = tmp_path / "retfoundgreen_ddp.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, prefixed)

    with caplog.at_level(logging.INFO, logger="qsight_pipeline.models.encoder_weights"):
        encoder = create_encoder("vit", GREEN, image_size=392, pretrained_weights=weights)
    loaded = encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    assert any("every key of the file used" in r.getMessage() for r in caplog.records)

    smaller = create_encoder("vit", GREEN, image_size=224, pretrained_weights=prefixed)
    assert smaller.pos_embed.shape[1] == 16 * 16 < source.pos_embed.shape[1] == 28 * 28
    assert torch.equal(smaller.blocks[3].mlp.fc1.weight, source.blocks[3].mlp.fc1.weight)


def test_retfound_vit_large_names_map_onto_timm_vit_large_patch16_224():
    """RETFound's ViT-L/16 keys (every tensor on the meta device: nothing is allocated)."""
    name = "vit_large_patch16_224"
    with torch.device("meta"):
        encoder = timm.create_model(name, pretrained=False, num_classes=0)
        checkpoint = mae_checkpoint(
            {k: torch.empty_like(v) for k, v in encoder.state_dict().items()}, 1024, device="meta"
        )
    state, dropped = adapt_state_dict(dict(checkpoint["model"]), encoder, name)

    assert fit_problems(state, encoder) == ""
    assert sorted(dropped) == sorted(k for k in checkpoint["model"] if k.startswith(("decoder_", "mask")))
    assert round(sum(v.numel() for v in state.values()) / 1e6) == 303
    assert state["pos_embed"].shape == (1, 197, 1024)  # the class token's position included
