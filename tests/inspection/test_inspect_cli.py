"""`vitlab inspect`: the files appear, the numbers in inspect.json and on stdout are the API's, bad input is
one line and exit status 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
import vitlab.inspect
from vitlab.checkpoints import convert
from vitlab.cli.main import main
from vitlab.cli.predict import image_paths
from vitlab.data.datasets import load_dataset
from vitlab.data.preprocessing import load_images
from vitlab.evaluation.classification import to_model_inputs
from vitlab.inspection.attention import PATCH_MEAN

PEERS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "peers"
PICTURES = {"rollout.png", "attention_heads.png", "attention_distance.png", "position_embedding_similarity.png",
            "patch_filters.png"}


def inspect(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["inspect", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inspect_files")


def _save(files: Path, name: str, make_tiny: Callable, **options: Any) -> Path:
    model = make_tiny(**{"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, **options})
    model.labels = [f"class {i}" for i in range(model.num_classes)]
    return vitlab.save_pretrained(model, files / name)


@pytest.fixture(scope="module")
def rgb(files: Path, make_tiny: Callable) -> Path:
    return _save(files, "rgb", make_tiny)


@pytest.fixture(scope="module")
def grey(files: Path, make_tiny: Callable) -> Path:
    return _save(files, "grey", make_tiny, in_chans=1, num_classes=10)


@pytest.fixture(scope="module")
def hybrid(files: Path, make_tiny: Callable) -> Path:
    """A hybrid: a one-stage ResNet stem of output stride 4 instead of pixel patches."""
    return _save(files, "hybrid", make_tiny, hybrid_layers=(1,))


@pytest.fixture(scope="module")
def images(files: Path) -> Path:
    """Three PNGs of other sizes than the model's 16x16 (they are resized to it), plus a non-image file."""
    folder = files / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB").save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / "b.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image, not named like one: skipped\n")
    return folder


def _report(out: Path) -> dict[str, Any]:
    assert {p.name for p in out.iterdir()} >= PICTURES | {"inspect.json"}
    for name in PICTURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "inspect.json").read_text())


def _close(got: Any, want: torch.Tensor, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want.double().numpy(), atol=atol, rtol=0)


def test_files_and_numbers_are_the_apis(capsys: pytest.CaptureFixture[str], rgb: Path, images: Path,
                                        tmp_path: Path) -> None:
    code, out, err = inspect(capsys, "--checkpoint", rgb, "--images", images, "--out", tmp_path / "out", "--show", 2,
                             "--layer", 1, "--batch-size", 2, "--json")
    assert code == 0, err
    report = _report(tmp_path / "out")
    model = vitlab.load_pretrained(rgb)
    x = load_images(image_paths([str(images)]), model.preprocessing)
    assert report["images"]["count"] == 3 and report["images"]["size"] == [16, 16]
    _close(report["mean_attention_distance"]["pixels"], vitlab.inspect.mean_attention_distance(model, x))
    _close(report["mean_attention_distance"]["per_layer"], vitlab.inspect.mean_attention_distance(model, x).mean(1))
    _close(report["rollout"]["maps"], vitlab.inspect.attention_rollout(model, x[:2]))
    first_layer = vitlab.inspect.attention_maps(model, x[:2])[0]
    _close(report["layer_attention"]["maps"], first_layer[:, :, 0, 1:].reshape(2, 2, 4, 4))
    assert report["layer_attention"]["layer"] == 1 and report["rollout"]["of"] == "class token"
    _close(report["position_embedding_similarity"], vitlab.inspect.position_embedding_similarity(model))
    pca = vitlab.inspect.patch_embedding_components(model, 28)
    _close(report["patch_embedding"]["explained_variance_ratio"], pca.explained_variance_ratio)
    _close(report["patch_embedding"]["filters"], pca.components)
    with torch.no_grad():
        best = model(x[:2]).softmax(-1).max(-1)
    shown = report["images"]["shown"]
    assert [s["label"] for s in shown] == [model.labels[i] for i in best.indices]
    _close([s["probability"] for s in shown], best.values)
    assert [Path(s["image"]).name for s in shown] == ["a.png", "b.png"]

    printed = json.loads(out)  # stdout: the same report without its two largest arrays
    assert "position_embedding_similarity" not in printed and "filters" not in printed["patch_embedding"]
    del report["position_embedding_similarity"], report["patch_embedding"]["filters"]
    assert printed == report
    assert set(printed["files"]) == {name[:-4] for name in PICTURES}


def test_a_dataset_resized_to_the_model(capsys: pytest.CaptureFixture[str], grey: Path, tmp_path: Path) -> None:
    code, out, err = inspect(capsys, "--checkpoint", grey, "--data", "digits", "--split", "val", "--num-images", 20,
                             "--out", tmp_path, "--show", 3)
    assert code == 0, err
    assert "20 images at 16x16 px; maps show the class token" in out and "mean attention distance per layer" in out
    report = _report(tmp_path)
    model = vitlab.load_pretrained(grey)
    dataset = load_dataset("digits", None, "val")  # 8x8 digits: resized to 16x16
    x = to_model_inputs(dataset.images[:20], model.preprocessing)
    _close(report["mean_attention_distance"]["pixels"], vitlab.inspect.mean_attention_distance(model, x))
    assert [s["true"] for s in report["images"]["shown"]] == [dataset.classes[int(i)] for i in dataset.labels[:3]]
    assert report["layer_attention"]["layer"] == 2  # the last by default
    assert report["patch_embedding"]["components"] == 16  # 1 x 4 x 4 values a filter: 16 components, not 28


def test_other_formats_give_the_same_numbers(capsys: pytest.CaptureFixture[str], rgb: Path, images: Path,
                                             tmp_path: Path) -> None:
    timm = convert(rgb, tmp_path / "timm.safetensors", to="timm")  # records neither heads nor the crop
    sources = {"vitlab": (rgb, []), "timm": (timm, ["--num-heads", 2, "--set", "crop_pct=1"]),
               "hf": (convert(rgb, tmp_path / "hf", to="hf"), [])}
    reports = {}
    for name, (source, extra) in sources.items():
        code, out, err = inspect(capsys, "--checkpoint", source, "--images", images, "--out", tmp_path / name,
                                 "--json", *extra)
        assert code == 0, err
        reports[name] = json.loads(out)
    for name in ("timm", "hf"):
        for key in ("mean_attention_distance", "rollout", "layer_attention"):
            assert np.allclose(_numbers(reports[name][key]), _numbers(reports["vitlab"][key]), atol=1e-5), (name, key)


def _numbers(section: dict[str, Any]) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in section.values() if isinstance(v, list)])


@pytest.mark.parametrize("source, extra", [("jax_vit/model.npz", []), ("timm_vit/model.safetensors", ["--num-heads", "4"]),
                                           ("hf_vit", ["--img-size", "48"])], ids=["npz", "timm", "hf at 48 px"])
def test_peer_checkpoints(capsys: pytest.CaptureFixture[str], source: str, extra: list[str], images: Path,
                          tmp_path: Path) -> None:
    if not (PEERS / source).exists():
        pytest.skip(f"peer fixtures not found at {PEERS}")
    code, out, err = inspect(capsys, "--checkpoint", PEERS / source, "--images", images, "--out", tmp_path, "--json",
                             *extra)
    assert code == 0, err
    report = _report(tmp_path)
    size = 48 if "--img-size" in extra else 32
    assert report["images"]["size"] == [size, size] and report["model"]["grid_size"] == [size // 4, size // 4]
    assert np.array(report["position_embedding_similarity"]).shape == (size // 4,) * 4


def test_img_size_resamples_the_model(capsys: pytest.CaptureFixture[str], rgb: Path, images: Path,
                                      tmp_path: Path) -> None:
    code, _, err = inspect(capsys, "--checkpoint", rgb, "--images", images, "--out", tmp_path, "--img-size", 24)
    assert code == 0, err
    report = _report(tmp_path)
    assert report["model"]["img_size"] == [24, 24] and report["images"]["size"] == [24, 24]
    assert np.array(report["rollout"]["maps"]).shape == (3, 6, 6)
    assert np.max(report["mean_attention_distance"]["pixels"]) <= 20 * 2**0.5  # the farthest 4-px patch centres


def test_without_class_token(capsys: pytest.CaptureFixture[str], files: Path, images: Path, tmp_path: Path,
                             make_tiny: Callable) -> None:
    source = _save(files, "avg", make_tiny, class_token=False, global_pool="avg")
    code, out, err = inspect(capsys, "--checkpoint", source, "--images", images, "--out", tmp_path)
    assert code == 0, err
    assert "maps show the mean over the patch tokens" in out
    report = _report(tmp_path)
    assert report["rollout"]["of"] == report["layer_attention"]["of"] == PATCH_MEAN
    np.testing.assert_allclose(np.sum(report["rollout"]["maps"], axis=(1, 2)), 1.0, atol=1e-5)


def test_weights_only_without_images(capsys: pytest.CaptureFixture[str], rgb: Path, tmp_path: Path) -> None:
    code, out, err = inspect(capsys, "--checkpoint", rgb, "--out", tmp_path)
    assert code == 0, err
    assert "attention pictures skipped" in out
    assert {p.name for p in tmp_path.iterdir()} == {"position_embedding_similarity.png", "patch_filters.png",
                                                    "inspect.json"}


def test_hybrid_skips_patch_filters_with_a_warning(capsys: pytest.CaptureFixture[str], hybrid: Path, images: Path,
                                                   tmp_path: Path) -> None:
    source = hybrid
    code, _, err = inspect(capsys, "--checkpoint", source, "--images", images, "--out", tmp_path, "--json")
    assert code == 0, err
    assert err.splitlines() == ["vitlab inspect: warning: no patch_filters.png: a hybrid model's patch embedding is a "
                                "1x1 convolution over ResNet features: no pixel filters"]
    report = json.loads((tmp_path / "inspect.json").read_text())
    assert "skipped" in report["patch_embedding"] and not (tmp_path / "patch_filters.png").exists()
    assert report["model"]["patch_size"] == 4 and len(report["mean_attention_distance"]["pixels"]) == 2


def test_too_many_components_are_capped_with_a_warning(capsys: pytest.CaptureFixture[str], grey: Path,
                                                       tmp_path: Path) -> None:
    code, _, err = inspect(capsys, "--checkpoint", grey, "--out", tmp_path, "--components", 40)
    assert code == 0, err
    assert "--components 40: the patch filters have only 16 principal components; showing 16" in err
    assert json.loads((tmp_path / "inspect.json").read_text())["patch_embedding"]["components"] == 16


BAD_INPUT = {
    "non-image file": ("--images {bad}/notes.png", "notes.png: unreadable image"),
    "empty folder": ("--images {bad}/empty", "empty: a folder with no images"),
    "missing image": ("--images {bad}/gone.jpg", "gone.jpg: no such image file or folder"),
    "layer 0": ("--images {images} --layer 0", "--layer 0 is out of range: this model has 2 layers, numbered 1 to 2"),
    "layer too deep": ("--layer 3", "--layer 3 is out of range"),
    "images and data": ("--images {images} --data digits", "give images with --images or a dataset with --data, not both"),
    "grey data, RGB model": ("--data digits", "the model expects 3-channel images but dataset digits has 1-channel"),
    "no images": ("--data digits --num-images 0", "--num-images must be at least 1, got 0"),
    "show 0": ("--images {images} --show 0", "--show must be at least 1"),
    "img size not whole patches": ("--img-size 18", "not a multiple of"),
    "hybrid filters asked for": ("--checkpoint {hybrid} --components 4", "no pixel patch filters"),
}


@pytest.fixture(scope="module")
def bad(files: Path) -> Path:
    folder = files / "bad"
    (folder / "empty").mkdir(parents=True)
    (folder / "notes.png").write_text("a text file named .png\n")
    return folder


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], rgb: Path, images: Path, bad: Path,
                                      hybrid: Path, tmp_path: Path, case: str) -> None:
    command, message = BAD_INPUT[case]
    argv = [word.format(images=images, bad=bad, hybrid=hybrid) for word in command.split()]
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(rgb), *argv]
    code, out, err = inspect(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2, err
    assert "Traceback" not in err and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("vitlab inspect: error: "), err
    assert message in err, err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_without_a_classifier_head(capsys: pytest.CaptureFixture[str], rgb: Path, images: Path, tmp_path: Path) -> None:
    code, out, err = inspect(capsys, "--checkpoint", rgb, "--images", images, "--out", tmp_path, "--num-classes", 0,
                             "--json")
    assert code == 0, err
    assert [s["label"] for s in json.loads(out)["images"]["shown"]] == [None, None, None]
