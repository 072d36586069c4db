"""Fine-tuning mechanics on tiny models and the built-in digits: the recipe, the new head, resampled position
embeddings, frozen parameters, grey data for colour models, the CLI and its mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vitlab
from vitlab.cli.main import main
from vitlab.errors import VitlabError
from vitlab.models.position import resample_pos_embed
from vitlab.models.vit import VisionTransformer
from vitlab.training.finetune import freeze, pretrained_for_finetuning
from vitlab.training.loop import train
from vitlab.training.recipe import TrainConfig


def source_model(tmp_path: Path, in_chans: int = 1, num_classes: int = 7) -> Path:
    """A 'pretrained' tiny ViT (8 px, 2-px patches) with random weights everywhere, head included."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=8, patch_size=2, in_chans=in_chans, embed_dim=32, depth=3, num_heads=2, mlp_dim=64,
                              num_classes=num_classes)
    torch.nn.init.normal_(model.head.weight)
    with torch.no_grad():
        model.pos_embed.normal_()
    return vitlab.save_pretrained(model, tmp_path / f"pretrained-{in_chans}")


def finetune_config(tmp_path: Path, source: Path, **overrides) -> TrainConfig:
    values = dict(data="digits", pretrained=str(source), epochs=1, batch_size=64, out=str(tmp_path / "run"))
    return TrainConfig.resolve(None, **{**values, **overrides})


def test_the_papers_recipe_over_the_dataset_preset(tmp_path: Path) -> None:
    config = finetune_config(tmp_path, Path("weights"))
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay, config.grad_clip_norm) == ("sgd", 0.03, 0.9, 0.0, 1.0)
    assert config.min_lr == 0.0 and config.mixup_alpha == 0.0 and config.label_smoothing == 0.0
    assert config.hflip is False and config.model is None  # digits stay unflipped; the model comes from the weights
    assert finetune_config(tmp_path, Path("w"), optimizer="adamw", lr=3e-4).optimizer == "adamw"
    with pytest.raises(VitlabError, match="freezing needs pretrained weights"):
        TrainConfig.resolve(None, data="digits", freeze_blocks=1)


def test_new_head_is_zero_and_positions_are_resampled(tmp_path: Path) -> None:
    source = source_model(tmp_path)
    original = vitlab.load_pretrained(source)
    model = pretrained_for_finetuning(str(source), 10, None, {"img_size": 16})
    assert model.num_classes == 10 and torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    assert model.config.img_size == (16, 16) and model.preprocessing.img_size == (16, 16)
    expected = resample_pos_embed(original.pos_embed.detach(), (8, 8), (4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    torch.testing.assert_close(model.blocks[1].mlp.fc1.weight, original.blocks[1].mlp.fc1.weight)


def test_frozen_parameters_do_not_change_and_the_rest_trains(tmp_path: Path) -> None:
    source = source_model(tmp_path)
    before = load_file(source / "model.safetensors")
    result = train(finetune_config(tmp_path, source, freeze_blocks=2, img_size=16), progress=False)
    after = load_file(result.run_dir / "model.safetensors")
    for name in ("patch_embed.proj.weight", "cls_token", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias"):
        assert torch.equal(after[name], before[name]), name
    expected_pos = resample_pos_embed(before["pos_embed"], (8, 8), (4, 4), num_prefix_tokens=1)
    assert torch.equal(after["pos_embed"], expected_pos)  # resampled once, then frozen
    for name in ("blocks.2.attn.qkv.weight", "norm.weight"):
        assert not torch.equal(after[name], before[name]), name
    assert after["head.weight"].shape == (10, 32) and torch.count_nonzero(after["head.weight"]) > 0
    assert 0.0 <= result.test.top1 <= 1.0


def test_linear_probe_trains_the_head_only(tmp_path: Path) -> None:
    source = source_model(tmp_path)
    model = pretrained_for_finetuning(str(source), 10, None, {})
    frozen = freeze(model, backbone=True)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"] and "norm.weight" in frozen
    with pytest.raises(VitlabError, match="freeze_blocks=4 but the model has 3 blocks"):
        freeze(model, blocks=4)


def test_grey_data_for_a_colour_model_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = source_model(tmp_path, in_chans=3)
    out = tmp_path / "cli-run"
    code = main(["finetune", "--pretrained", str(source), "--epochs", "1", "--batch-size", "64", "--out", str(out),
                 "--layer-decay", "0.75", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pretrained"] == str(source) and 0.0 <= summary["top1"] <= 1.0 and summary["split"] == "test"
    model = vitlab.load_pretrained(out)
    assert model.config.in_chans == 3 and model.labels == [str(d) for d in range(10)]
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["pretrained"] == str(source) and saved["layer_decay"] == 0.75 and saved["optimizer"] == "sgd"


@pytest.mark.parametrize("argv, needle", [
    (["finetune", "--epochs", "1"], "finetune needs --pretrained SOURCE"),
    (["finetune", "--pretrained", "{source}", "--img-size", "9"], "not a multiple of the patch size 2"),
    (["finetune", "--pretrained", "{source}", "--freeze-blocks", "9"], "freeze_blocks=9 but the model has 3 blocks"),
    (["finetune", "--pretrained", "{tmp}/nothing-here"], "nothing-here: no such file or folder"),
    (["train", "--set", "freeze_backbone=true"], "freezing needs pretrained weights"),
    (["finetune", "--pretrained", "{big_patches}"], "a whole image is smaller than one patch"),
])  # fmt: skip
def test_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    source = source_model(tmp_path)
    big_patches = vitlab.save_pretrained(VisionTransformer(img_size=32, patch_size=16, in_chans=1, embed_dim=16, depth=1,
                                                           num_heads=2, mlp_dim=32), tmp_path / "big-patches")
    argv = [a.format(source=source, tmp=tmp_path, big_patches=big_patches) for a in argv] + ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "state.pt").exists()


def test_an_interrupted_finetune_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitlab.training.loop import TrainingRun

    source = source_model(tmp_path)
    options = dict(epochs=2, freeze_blocks=1, train_per_class=20)
    whole = train(finetune_config(tmp_path / "whole", source, **options), progress=False)
    real_epoch = TrainingRun._epoch

    def stop_in_epoch_two(self, epoch, step):
        if epoch == 1:
            raise KeyboardInterrupt  # as if killed after epoch 1 was saved
        return real_epoch(self, epoch, step)

    config = finetune_config(tmp_path / "stopped", source, **options)
    monkeypatch.setattr(TrainingRun, "_epoch", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(TrainingRun, "_epoch", real_epoch)
    resumed = train(config, resume=True, progress=False)
    expected, got = load_file(whole.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert len(resumed.epochs) == 2 and whole.epochs[-1]["val_top1"] == resumed.epochs[-1]["val_top1"]
