"""Starting a federation from public weights: ``initial_weights`` pins a checkpoint by its SHA-256.

Every site must start round 1 from the same bytes, or its update is added to a
model nobody else has; and a DPO must be able to tell which weights a run
started from.  So the checkpoint is named with its hash in the federation YAML,
and anything else is refused with the file and the field named.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.config import ConfigError, DataConfig, FederationConfig, ModelConfig, SiteConfig, load_config
from flame_private.data.checks import load_site
from flame_private.data.splits import split_records
from flame_private.experiments import initial_model, make_dataset
from flame_private.federation.site.task import load_model as site_round_one_model
from flame_private.models import build_model
from flame_private.models.io import file_sha256, save_model

SMALL = ModelConfig(response_channels=(8, 16, 32), evolution_channels=(8, 16, 32), norm_groups=4, dropout=0.0)
DATA = DataConfig(grid=24, val_fraction=0.25, test_fraction=0.25)


def public_checkpoint(tmp_path: Path, task: str = "response", model_cfg: ModelConfig = SMALL,
                      data_cfg: DataConfig = DATA) -> Path:
    """A checkpoint whose weights no seed would give: every tensor filled with a distinct constant."""
    model = build_model(task, model_cfg)  # type: ignore[arg-type]
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.fill_(0.01 * (i + 1))
    return save_model(tmp_path / f"public-{task}.pt", task, model, model_cfg, data_cfg,  # type: ignore[arg-type]
                      card={})


def pinned(path: Path, sha256: str | None = None, task: str = "response") -> FederationConfig:
    return FederationConfig(model=SMALL, data=DATA, batch_size=2,
                            initial_weights={task: {"path": path, "sha256": sha256 or file_sha256(path)}})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_one_starts_from_the_pinned_checkpoint_and_the_other_task_from_the_seed(tmp_path: Path) -> None:
    ckpt = public_checkpoint(tmp_path)
    fed = pinned(ckpt)
    expected = torch.load(ckpt, weights_only=True)["state_dict"]
    got = site_round_one_model("response", fed)  # what every site trains in round 1
    assert all(torch.equal(got.state_dict()[k], v) for k, v in expected.items())
    unpinned = FederationConfig(model=SMALL, data=DATA, batch_size=2)
    assert not same_weights(got, initial_model("response", unpinned))  # control: the seed gives other weights
    assert same_weights(site_round_one_model("evolution", fed), initial_model("evolution", unpinned))


def test_the_hash_is_the_files_sha256_as_sha256sum_prints_it(tmp_path: Path) -> None:
    ckpt = public_checkpoint(tmp_path)
    assert file_sha256(ckpt) == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_a_checkpoint_with_other_bytes_than_the_pinned_ones_is_refused(tmp_path: Path) -> None:
    ckpt = public_checkpoint(tmp_path)
    fed = pinned(ckpt)
    model = build_model("response", SMALL)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # one weight nudged: a different model under the same name
    save_model(ckpt, "response", model, SMALL, DATA, card={})
    with pytest.raises(ConfigError, match=re.escape(str(ckpt))) as err:
        initial_model("response", fed)
    assert "initial_weights.response.sha256" in str(err.value) and file_sha256(ckpt) in str(err.value)


@pytest.mark.parametrize("problem", ["missing", "other task", "other network", "other grouping", "other grid",
                                     "not a checkpoint"])
def test_a_pinned_file_that_cannot_start_the_run_is_refused_naming_it_and_the_field(tmp_path: Path,
                                                                                    problem: str) -> None:
    """Including checkpoints whose tensors fit but mean something else: other GroupNorm groups, another grid
    (the volumes and intensities its linear weights read are on another scale)."""
    if problem == "missing":
        ckpt, sha = tmp_path / "gone.pt", "0" * 64
    else:
        if problem == "other task":
            ckpt = public_checkpoint(tmp_path, "evolution")
        elif problem == "other network":
            ckpt = public_checkpoint(tmp_path, model_cfg=SMALL.model_copy(update={"response_channels": (8, 16)}))
        elif problem == "other grouping":
            ckpt = public_checkpoint(tmp_path, model_cfg=SMALL.model_copy(update={"norm_groups": 2}))
        elif problem == "other grid":
            ckpt = public_checkpoint(tmp_path, data_cfg=DATA.model_copy(update={"grid": 32}))
        else:
            ckpt = tmp_path / "notes.pt"
            ckpt.write_bytes(b"not a model")
        sha = file_sha256(ckpt)
    with pytest.raises(ConfigError, match=re.escape(str(ckpt))) as err:
        initial_model("response", pinned(ckpt, sha))
    assert "initial_weights.response" in str(err.value)
    if problem in ("other grouping", "other grid"):
        assert {"other grouping": "model.norm_groups", "other grid": "data.grid"}[problem] in str(err.value)


def test_the_yaml_pins_a_path_relative_to_its_own_folder_and_a_full_hex_hash(tmp_path: Path) -> None:
    ckpt = public_checkpoint(tmp_path)
    good = {"model": SMALL.model_dump(mode="json"), "data": DATA.model_dump(mode="json"),
            "initial_weights": {"response": {"path": ckpt.name, "sha256": file_sha256(ckpt).upper()}}}
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(good))
    fed = load_config(tmp_path / "fed.yaml", FederationConfig)
    assert fed.initial_weights["response"].path == ckpt
    assert fed.initial_weights["response"].sha256 == file_sha256(ckpt)  # either case; kept as sha256sum prints it
    good["initial_weights"]["response"]["sha256"] = file_sha256(ckpt)[:63]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(good))
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*initial_weights\.response\.sha256"):
        load_config(tmp_path / "bad.yaml", FederationConfig)


def test_flame_train_central_saves_a_regression_start_that_a_federation_can_pin(cohort_dir: Path,
                                                                               tmp_path: Path) -> None:
    """``--start-from-regression --epochs 0``: the saved network is the regression of its wide features on the
    pooled training patients (as ``start_from_regression`` sets it), and the printed hash pins it."""
    from flame_private.training import start_from_regression

    fed = FederationConfig(model=SMALL, data=DATA, batch_size=2)
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(fed.model_dump(mode="json")))
    sites = []
    for s in ("site-a", "site-b", "site-c"):
        cfg = SiteConfig(site_id=s, data_dir=cohort_dir / s, layout="flame", state_dir=tmp_path / "state",
                         privacy_policy=tmp_path / "policy.yaml")
        (tmp_path / f"{s}.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        sites += ["--sites", str(tmp_path / f"{s}.yaml")]
    out = tmp_path / "public"
    result = CliRunner().invoke(app, ["train", "central", *sites, "--task", "response", "-f",
                                      str(tmp_path / "fed.yaml"), "--start-from-regression", "--epochs", "0",
                                      "-o", str(out)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    ckpt = out / "response.pt"
    lines = result.output.splitlines()  # the hash and the YAML line come unwrapped, to be copied whole
    assert f"sha256: {file_sha256(ckpt)}" in result.output
    assert f"initial_weights: {{response: {{path: {ckpt.resolve()}, sha256: {file_sha256(ckpt)}}}}}" in lines

    from torch.utils.data import ConcatDataset

    train = ConcatDataset([make_dataset("response", split_records(load_site(cohort_dir / s, "flame").records,
                                                                  DATA).train, fed)
                           for s in ("site-a", "site-b", "site-c")])
    want = initial_model("response", fed)
    start_from_regression(want, train)
    got = initial_model("response", pinned(ckpt))
    assert same_weights(got, want)
    assert not torch.equal(got.clinical.weight, initial_model("response", fed).clinical.weight)


def test_a_regression_start_is_for_the_response_model_only(cohort_dir: Path, tmp_path: Path) -> None:
    fed = FederationConfig(model=SMALL, data=DATA, batch_size=2)
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(fed.model_dump(mode="json")))
    site = SiteConfig(site_id="site-a", data_dir=cohort_dir / "site-a", layout="flame", state_dir=tmp_path / "state",
                      privacy_policy=tmp_path / "policy.yaml")
    (tmp_path / "site-a.yaml").write_text(yaml.safe_dump(site.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train", "central", "--sites", str(tmp_path / "site-a.yaml"), "--task",
                                      "evolution", "-f", str(tmp_path / "fed.yaml"), "--start-from-regression"],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "response model" in result.output
