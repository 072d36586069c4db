"""Bad input: every failure is a VitlabError naming the file, the tensor or option, and the fix."""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitlab.checkpoints import detect_format, load_pretrained, save_pretrained
from vitlab.errors import VitlabError

UNPICKLED: list[str] = []


def _mark() -> str:
    UNPICKLED.append("ran")
    return "object"


class Payload:
    """Unpickling this calls `_mark`: a loader that unpickles arbitrary objects would run it."""

    def __reduce__(self) -> tuple:
        return (_mark, ())


@pytest.fixture
def timm_file(tmp_path: Path, make_vit: Callable) -> Path:
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in make_vit().state_dict().items()}, str(path))
    return path


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(bytes(range(7, 250)))
    with pytest.raises(VitlabError, match=r"weights.safetensors: unrecognised binary data .* vitlab reads: .*timm ViT"):
        load_pretrained(path)


def test_text_file_renamed(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("these are my notes about ViT\n")
    with pytest.raises(VitlabError, match="notes.safetensors: a text file starting with 'these are my not"):
        detect_format(path)


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_safetensors(keep: float, timm_file: Path) -> None:
    data = timm_file.read_bytes()
    timm_file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VitlabError, match=r"model.safetensors: .*truncated"):
        load_pretrained(timm_file, num_heads=4)


def test_truncated_pth(tmp_path: Path, make_vit: Callable) -> None:
    path = tmp_path / "model.pth"
    torch.save(make_vit().state_dict(), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(VitlabError, match="model.pth: corrupt or truncated zip archive"):
        load_pretrained(path, num_heads=4)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.bin").touch()
    with pytest.raises(VitlabError, match="empty.bin: the file is empty"):
        load_pretrained(tmp_path / "empty.bin")


def test_zip_without_weights(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.npz", "w") as archive:
        for name in ("a.txt", "b.txt", "c.csv"):
            archive.writestr(name, "x")
    with pytest.raises(VitlabError, match=r"a zip archive with 3 entries \(a.txt, b.txt, c.csv\), none of them ViT weights"):
        load_pretrained(tmp_path / "model.npz")


def test_npz_without_vit_layout(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", x=np.zeros(3), y=np.ones(2))
    with pytest.raises(VitlabError, match=r"a numpy .npz archive with 2 arrays \(x, y\), none in a Google ViT layout"):
        load_pretrained(tmp_path / "data.npz")


def test_resnet_keys(tmp_path: Path) -> None:
    tensors = {
        "conv1.weight": torch.zeros(8, 3, 7, 7),
        "layer1.0.conv1.weight": torch.zeros(8, 8, 1, 1),
        "fc.weight": torch.zeros(2, 8),
    }
    save_file(tensors, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(VitlabError, match=r"a safetensors file with 3 tensors whose names look like a ResNet \(conv1.weight"):
        load_pretrained(tmp_path / "resnet.safetensors")


def test_pickled_object_is_not_unpickled(tmp_path: Path, make_vit: Callable) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": make_vit().state_dict(), "extra": Payload()}, path)
    with pytest.raises(VitlabError, match=r"evil.pth: holds pickled Python objects \(.*_mark\) that vitlab will not unpickle"):
        load_pretrained(path, num_heads=4)
    assert UNPICKLED == []


def test_training_checkpoint_with_namespace(tmp_path: Path, make_vit: Callable) -> None:
    torch.save({"model": make_vit().state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "train.pth")
    with pytest.raises(VitlabError, match=r"argparse.Namespace.*torch.save\(checkpoint.state_dict\(\)"):
        load_pretrained(tmp_path / "train.pth")


def test_pth_without_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "best": 0.5}, tmp_path / "meta.pth")
    with pytest.raises(VitlabError, match="a dict with keys epoch, best, with no state dict"):
        load_pretrained(tmp_path / "meta.pth")


def test_missing_heads(timm_file: Path) -> None:
    with pytest.raises(VitlabError, match=r"does not record the number of attention heads .*pass num_heads=N or model=NAME"):
        load_pretrained(timm_file)


def test_override_contradicting_tensors(timm_file: Path) -> None:
    pattern = (
        r"embed_dim=48 contradicts .*patch_embed.proj.weight is \(32, 3, 4, 4\) in the checkpoint "
        r"but \(48, 3, 4, 4\) in a model with embed_dim=48. Likely cause"
    )
    with pytest.raises(VitlabError, match=pattern):
        load_pretrained(timm_file, num_heads=4, embed_dim=48)


def test_model_name_contradicting_tensors(timm_file: Path) -> None:
    pattern = r"is not a vit_small_patch16_224, which has embed_dim=384: patch_embed.proj.weight is \(32, 3, 4, 4\)"
    with pytest.raises(VitlabError, match=pattern):
        load_pretrained(timm_file, model="vit_small_patch16_224")


def test_unknown_model_name(timm_file: Path) -> None:
    with pytest.raises(VitlabError, match="unknown model 'vit_smol_patch16_224'"):
        load_pretrained(timm_file, model="vit_smol_patch16_224")


def test_tensor_that_does_not_fit(tmp_path: Path, make_vit: Callable) -> None:
    state = {k: v.contiguous() for k, v in make_vit().state_dict().items()}
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(20, 32)
    save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(VitlabError, match=r"blocks.1.mlp.fc1.weight is \(20, 32\) in the checkpoint but \(48, 32\) in the"):
        load_pretrained(tmp_path / "odd.safetensors", num_heads=4)


def test_unsupported_variant(tmp_path: Path, make_vit: Callable) -> None:
    state = {k: v.contiguous() for k, v in make_vit().state_dict().items()}
    state["dist_token"] = torch.zeros(1, 1, 32)
    save_file(state, str(tmp_path / "deit.safetensors"))
    with pytest.raises(VitlabError, match="dist_token belongs to a DeiT distillation token"):
        load_pretrained(tmp_path / "deit.safetensors", num_heads=4)


def test_all_zero_head_warns(tmp_path: Path, make_vit: Callable) -> None:
    model = make_vit()
    torch.nn.init.zeros_(model.head.weight)
    save_pretrained(model, tmp_path / "in21k")
    with pytest.warns(UserWarning, match=r"head.weight is all zeros .*uniform logits.*num_classes=N.*num_classes=0"):
        load_pretrained(tmp_path / "in21k")


def test_new_head_replaces_the_old(tmp_path: Path, make_vit: Callable, recwarn: pytest.WarningsRecorder) -> None:
    model = make_vit()
    model.labels = list("abcde")
    torch.nn.init.zeros_(model.head.weight)
    save_pretrained(model, tmp_path / "ckpt")
    fresh = load_pretrained(tmp_path / "ckpt", num_classes=3)
    assert fresh.head.weight.shape == (3, 32) and not fresh.head.weight.any() and fresh.labels is None
    assert load_pretrained(tmp_path / "ckpt", num_classes=0).config.num_classes == 0
    assert not recwarn.list


def test_img_size_not_multiple_of_patch(timm_file: Path) -> None:
    with pytest.raises(VitlabError, match="img_size 30x30 is not a multiple of the patch size 4"):
        load_pretrained(timm_file, num_heads=4, img_size=30)


def test_unknown_option(timm_file: Path) -> None:
    with pytest.raises(VitlabError, match="unknown option\\(s\\) num_head for load_pretrained"):
        load_pretrained(timm_file, num_head=4)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VitlabError, match="nowhere.pth: no such file or folder"):
        load_pretrained(tmp_path / "nowhere.pth")


def test_folder_without_config(tmp_path: Path, timm_file: Path) -> None:
    with pytest.raises(VitlabError, match=r"a folder without config.json \(it holds: model.safetensors\); .*pass the file"):
        load_pretrained(tmp_path)


def test_foreign_hugging_face_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "swin"}')
    with pytest.raises(VitlabError, match="model_type 'swin'; vitlab reads model_type 'vit'"):
        load_pretrained(tmp_path)
