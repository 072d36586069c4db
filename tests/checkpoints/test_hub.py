"""Hub ids: which sources are Hub ids, what is fetched, and every way fetching fails (no network needed: the
download function is replaced)."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

import vitlab
from vitlab.checkpoints import convert
from vitlab.checkpoints.hub import hub_repo_id
from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer


def tiny() -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=3)
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


def not_found() -> RepositoryNotFoundError:
    error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(error, "404")
    return error


class FakeHub:
    """Stands in for `huggingface_hub.snapshot_download`: repositories by id, online or not, cached or not."""

    def __init__(self, repos: dict[str, Path], online: bool = True, cached: bool = True):
        self.repos, self.online, self.cached, self.calls = repos, online, cached, []

    def __call__(self, repo_id: str, allow_patterns: list[str], local_files_only: bool) -> str:
        self.calls.append((repo_id, tuple(allow_patterns), local_files_only))
        if not local_files_only and not self.online:
            raise LocalEntryNotFoundError("cannot reach the Hub")
        if local_files_only and not self.cached:
            raise LocalEntryNotFoundError("not in the cache")
        if repo_id not in self.repos:
            raise not_found()
        return str(self.repos[repo_id])


@pytest.fixture
def hf_repo(tmp_path: Path) -> Path:
    return convert(vitlab.save_pretrained(tiny(), tmp_path / "vitlab"), tmp_path / "hf", to="hf")


def test_hub_ids_and_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub_repo_id("hf-hub:google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    assert hub_repo_id("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k") == "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    assert hub_repo_id("runs/mine") is None  # a local folder wins
    assert hub_repo_id(Path("owner/name")) is None
    assert hub_repo_id("./owner/name") is None and hub_repo_id("model.safetensors") is None
    with pytest.raises(VitlabError, match="not a Hub repository id"):
        hub_repo_id("hf-hub:no-slash")


def test_online_fetch_reads_only_configs_and_safetensors(hf_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FakeHub({"google/tiny": hf_repo})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    model = vitlab.load_pretrained("hf-hub:google/tiny")
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(images), tiny()(images))
    assert hub.calls == [("google/tiny", ("*.json", "*.safetensors"), False)]
    assert vitlab.load_pretrained("google/tiny", num_classes=5).num_classes == 5


def test_pickled_weights_only_when_there_are_no_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "timm-repo"
    folder.mkdir()
    torch.save(tiny().state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_custom", "num_classes": 3,
                                                         "pretrained_cfg": {"input_size": [3, 16, 16]}}))
    safetensors_only = tmp_path / "configs-only"
    safetensors_only.mkdir()
    calls = []

    def download(repo_id: str, allow_patterns: list[str], local_files_only: bool) -> str:
        calls.append(tuple(allow_patterns))
        return str(folder if "*.bin" in allow_patterns else safetensors_only)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    model = vitlab.load_pretrained("timm/tiny", num_heads=2)
    assert model.config.embed_dim == 16 and calls == [("*.json", "*.safetensors"), ("*.json", "*.bin", "*.pth")]


def test_offline_uses_the_cache(hf_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FakeHub({"google/tiny": hf_repo}, online=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    assert vitlab.load_pretrained("hf-hub:google/tiny").num_classes == 3
    assert [call[2] for call in hub.calls] == [False, True]


def test_offline_without_cache_says_what_to_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub({}, online=False, cached=False))
    with pytest.raises(VitlabError, match=r"google/vit-base-patch16-224: the Hugging Face Hub cannot be reached .* "
                                          r"`hf download google/vit-base-patch16-224"):
        vitlab.load_pretrained("hf-hub:google/vit-base-patch16-224")


def test_missing_repository_and_non_vit_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub({"google/bert": bert}))
    with pytest.raises(VitlabError, match="no such model repository on the Hugging Face Hub"):
        vitlab.load_pretrained("hf-hub:google/nothing")
    with pytest.raises(VitlabError, match="and there is no local file or folder runs/typo"):
        vitlab.load_pretrained("runs/typo")
    with pytest.raises(VitlabError, match="hf-hub:google/bert: not a ViT checkpoint .*model_type .bert."):
        vitlab.load_pretrained("hf-hub:google/bert")
