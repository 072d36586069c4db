"""Feature extraction, the files it writes, and the on-disk feature cache, with tiny models on `digits`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vitlab
from vitlab import VitlabError
from vitlab.data.datasets import load_dataset
from vitlab.evaluation import feature_cache
from vitlab.evaluation.classification import to_model_inputs
from vitlab.evaluation.feature_cache import DatasetSpec, FeatureExtractor, default_cache_dir, folder_fingerprint
from vitlab.evaluation.features import extract_features, save_features
from vitlab.evaluation.fewshot import evaluate_fewshot
from vitlab.models.vit import ViTConfig, VisionTransformer

DIGITS_TEST = DatasetSpec("digits", split="test")


def tiny_vit(seed: int = 0, **overrides) -> VisionTransformer:
    """A 1-channel ViT for 8 px digits: 4×4 patches of 2 px, random (initialised) weights."""
    torch.manual_seed(seed)
    config = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=10)
    return VisionTransformer(ViTConfig(**{**config, **overrides})).eval()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return vitlab.save_pretrained(tiny_vit(), tmp_path / "tiny")


@pytest.fixture
def digits_test():
    return load_dataset("digits", split="test")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every feature computation the cache could not spare (the split computed)."""
    seen: list[str] = []
    real = feature_cache.extract_features

    def counting(model, dataset, **kwargs):
        seen.append(dataset.split)
        return real(model, dataset, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_features", counting)
    return seen


def test_pre_logits_and_tokens_match_the_model(digits_test) -> None:
    model = tiny_vit(representation_size=12)
    subset = digits_test.subset(np.arange(20))
    pooled = extract_features(model, subset, batch_size=7, progress=False)  # batches of 7, 7, 6
    tokens = extract_features(model, subset, pool="tokens", batch_size=64, progress=False)
    with torch.no_grad():
        expected_tokens = model.forward_features(to_model_inputs(subset.images, model.preprocessing))
        expected = model.forward_head(expected_tokens, pre_logits=True)
    assert pooled.dtype == torch.float32 and pooled.shape == (20, 12)
    assert tokens.shape == (20, 1 + 16, 16)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tokens, expected_tokens, rtol=1e-5, atol=1e-6)


def test_training_mode_is_restored_and_grey_images_feed_a_colour_model(digits_test) -> None:
    model = tiny_vit(in_chans=3).train()
    features = extract_features(model, digits_test.subset(np.arange(5)), progress=False)
    assert model.training and features.shape == (5, 16)


def test_images_smaller_than_a_patch_are_refused(digits_test) -> None:
    model = tiny_vit(img_size=32, patch_size=16)
    with pytest.raises(VitlabError, match=r"digits has 8×8 images but the model's patches are 16×16 pixels.*at least 16 px first"):
        extract_features(model, digits_test, progress=False)
    bigger = load_dataset("digits", split="test", image_size=16).subset(np.arange(3))
    assert extract_features(model, bigger, progress=False).shape == (3, 16)


def test_bad_pool_is_refused(digits_test) -> None:
    with pytest.raises(VitlabError, match="pool 'cls' is not one of pre_logits, tokens"):
        extract_features(tiny_vit(), digits_test, pool="cls")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["f.npy", "f.npz", "f.safetensors"])
def test_save_features_round_trip(tmp_path: Path, name: str) -> None:
    features, labels = torch.randn(4, 3, 2), torch.tensor([0, 2, 1, 0])
    files = save_features(tmp_path / name, features, labels, ["a", "b", "c"], {"pool": "tokens"})
    assert files[0] == tmp_path / name
    if name.endswith(".npy"):
        assert files == [tmp_path / "f.npy", tmp_path / "f.labels.npy"]
        loaded, loaded_labels = np.load(files[0]), np.load(files[1])
    elif name.endswith(".npz"):
        with np.load(files[0], allow_pickle=False) as archive:
            loaded, loaded_labels = archive["features"], archive["labels"]
            assert archive["classes"].tolist() == ["a", "b", "c"]
    else:
        tensors = load_file(files[0])
        loaded, loaded_labels = tensors["features"].numpy(), tensors["labels"].numpy()
        metadata = vitlab.checkpoints.files.read_safetensors_metadata(files[0])
        assert json.loads(metadata["classes"]) == ["a", "b", "c"] and metadata["pool"] == "tokens"
    np.testing.assert_array_equal(loaded, features.numpy())
    np.testing.assert_array_equal(loaded_labels, labels.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)  # no temporary files left


def test_save_features_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(VitlabError, match=r"--out .*f\.pt: write features to a \.npy, \.npz, \.safetensors file"):
        save_features(tmp_path / "f.pt", torch.zeros(1, 1), torch.zeros(1, dtype=torch.int64), ["a"])


# --- the cache -------------------------------------------------------------------------------------------------


def test_second_call_reads_the_cache_without_loading_the_model(checkpoint: Path, tmp_path: Path, calls) -> None:
    first = FeatureExtractor(checkpoint, cache_dir=tmp_path / "cache", progress=False).features(DIGITS_TEST)
    again = FeatureExtractor(checkpoint, cache_dir=tmp_path / "cache", progress=False)
    second = again.features(DIGITS_TEST)
    assert calls == ["test"] and again._model is None  # neither run nor even loaded
    assert (first.cached, second.cached) == (False, True)
    torch.testing.assert_close(second.features, first.features, rtol=0, atol=0)
    assert torch.equal(second.labels, first.labels) and second.classes == first.classes
    assert (second.dataset, second.split) == ("digits", "test")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_cache_key_covers_checkpoint_overrides_data_and_pool(checkpoint: Path, tmp_path: Path, calls) -> None:
    cache = tmp_path / "cache"
    FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DIGITS_TEST)
    FeatureExtractor(checkpoint, {"img_size": 16}, cache_dir=cache, progress=False).features(DIGITS_TEST)
    FeatureExtractor(checkpoint, cache_dir=cache, pool="tokens", progress=False).features(DIGITS_TEST)
    FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DatasetSpec("digits", split="val"))
    FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DatasetSpec("digits", split="test", image_size=10))
    assert calls == ["test", "test", "test", "val", "test"]
    assert len(list(cache.glob("*.json"))) == 5


def test_new_weights_in_the_same_folder_invalidate_the_cache(checkpoint: Path, tmp_path: Path, calls) -> None:
    cache = tmp_path / "cache"
    before = FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DIGITS_TEST)
    weights = checkpoint / "model.safetensors"
    old = weights.stat().st_mtime_ns
    vitlab.save_pretrained(tiny_vit(seed=1), checkpoint)
    if weights.stat().st_mtime_ns == old:  # a file system with coarse timestamps: make the rewrite visible
        os.utime(weights, ns=(old + 10**9, old + 10**9))
    after = FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DIGITS_TEST)
    assert calls == ["test", "test"] and not after.cached
    assert not torch.allclose(before.features, after.features)


@pytest.mark.parametrize("damage", ["garbage tensors", "truncated json", "json removed", "other key", "wrong shape"])
def test_a_damaged_entry_is_recomputed_with_a_warning(checkpoint: Path, tmp_path: Path, calls, damage: str) -> None:
    cache = tmp_path / "cache"
    good = FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DIGITS_TEST)
    tensors, sidecar = next(cache.glob("*.safetensors")), next(cache.glob("*.json"))
    description = json.loads(sidecar.read_text())
    if damage == "garbage tensors":
        tensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    elif damage == "truncated json":
        sidecar.write_text(sidecar.read_text()[:20])
    elif damage == "json removed":
        sidecar.unlink()
    elif damage == "other key":
        sidecar.write_text(json.dumps({**description, "key": {"version": 0}}))
    else:
        sidecar.write_text(json.dumps({**description, "shape": [1, 2]}))
    with pytest.warns(UserWarning, match="ignoring a damaged feature cache entry"):
        again = FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DIGITS_TEST)
    torch.testing.assert_close(again.features, good.features)
    third = FeatureExtractor(checkpoint, cache_dir=cache, progress=False).features(DIGITS_TEST)  # rewritten: clean
    assert calls == ["test", "test"] and third.cached


def test_an_unwritable_cache_is_a_warning(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="cannot write the feature cache"):
        result = FeatureExtractor(checkpoint, cache_dir=tmp_path / "cache", progress=False).features(DIGITS_TEST)
    assert result.features.shape == (len(result.labels), 16)


def test_without_cache_nothing_is_written(checkpoint: Path, tmp_path: Path, calls) -> None:
    for _ in range(2):
        FeatureExtractor(checkpoint, cache=False, cache_dir=tmp_path / "cache", progress=False).features(DIGITS_TEST)
    assert calls == ["test", "test"] and not (tmp_path / "cache").exists()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "vc"))
    assert default_cache_dir() == tmp_path / "vc" / "features"
    monkeypatch.delenv("VITLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "vitlab" / "features"


def test_data_folder_fingerprint_sees_added_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "1.png").write_bytes(b"x")
    before = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "train" / "cat" / "2.png").write_bytes(b"y")
    os.utime(tmp_path / "train" / "cat", ns=(1, 1))  # whatever the clock's granularity: the folder changed
    assert folder_fingerprint(tmp_path) != before


def test_a_missing_checkpoint_fails_before_any_data(tmp_path: Path) -> None:
    with pytest.raises(VitlabError, match="no such file or folder"):
        FeatureExtractor(tmp_path / "missing")


def test_shots_above_the_smallest_class_fail_before_computing(checkpoint: Path, tmp_path: Path, calls) -> None:
    extractor = FeatureExtractor(checkpoint, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(VitlabError, match=r"--shots 200 is more than the \d+ images of class '\d', the smallest class in digits train"):
        evaluate_fewshot(extractor, DatasetSpec("digits"), DIGITS_TEST, shots=[1, 200])
    assert calls == [] and extractor._model is None
    result = evaluate_fewshot(extractor, DatasetSpec("digits"), DIGITS_TEST, shots=[1, 5], seeds=2)
    assert (result.train_split, result.eval_split, result.from_cache) == ("train", "test", False)
    assert all(0.0 <= r.mean <= 1.0 for r in result.results) and calls == ["train", "test"]
    # the refusal also holds when the labels come from the cache
    with pytest.raises(VitlabError, match="--shots 200"):
        evaluate_fewshot(extractor, DatasetSpec("digits"), DIGITS_TEST, shots=[200])
