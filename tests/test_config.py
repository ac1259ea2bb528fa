"""Configuration loading (config.py): every error names the file and the dotted field; shipped YAML is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from flame_private.config import (
    HE_MAX_MODULUS_BITS,
    CohortConfig,
    ConfigError,
    DataConfig,
    DPConfig,
    FederationConfig,
    HEConfig,
    ScannerProfile,
    SiteConfig,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path: Path, data: Any, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _error(path: Path, model: type = CohortConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, model)
    message = str(info.value)
    assert str(path) in message, "the error must name the file"
    return message


def _field_line(message: str, field: str) -> str:
    """The line of the error message about ``field`` or a part of it (fails if the field is not named)."""
    lines = [ln.strip() for ln in message.splitlines()
             if ln.strip().startswith(f"{field}:") or ln.strip().startswith(f"{field}.")]
    assert lines, f"field {field!r} not named in:\n{message}"
    return lines[0]


# --------------------------------------------------------------------------- shipped files


def _cases(*cases: tuple[Any, str]) -> list[Any]:
    """(edit, dotted field) pairs, with the field as the test id."""
    return [pytest.param(edit, field, id=field) for edit, field in cases]


def _shipped(kind_dir: str) -> list[Path]:
    return sorted((CONFIGS / kind_dir).glob("*.yaml"))


@pytest.mark.parametrize(
    ("path", "model"),
    [pytest.param(p, CohortConfig, id=f"cohort/{p.name}") for p in _shipped("cohort")]
    + [pytest.param(p, FederationConfig, id=f"federation/{p.name}") for p in _shipped("federation")]
    + [pytest.param(p, SiteConfig, id=f"sites/{p.name}") for p in _shipped("sites")],
)
def test_every_shipped_config_validates_against_its_kind(path: Path, model: type) -> None:
    assert isinstance(load_config(path, model), model)


def test_every_shipped_config_folder_is_covered() -> None:
    """A new folder of YAML under configs/ must be added to the test above (the study YAML at the top: below)."""
    folders = {p.parent.name for p in CONFIGS.rglob("*.yaml")}
    assert folders == {"configs", "cohort", "federation", "sites"}
    assert _shipped("cohort") and _shipped("federation") and _shipped("sites")
    assert [p.name for p in CONFIGS.glob("*.yaml")] == ["study.yaml"]


def test_the_shipped_study_config_validates_with_each_of_its_sizes() -> None:
    from flame_private.study.config import StudyConfig, load_study_config

    for size in [None, *load_study_config(CONFIGS / "study.yaml").sizes]:
        assert isinstance(load_study_config(CONFIGS / "study.yaml", size), StudyConfig)


def test_site_configs_are_named_after_their_site() -> None:
    for path in _shipped("sites"):
        assert load_config(path, SiteConfig).site_id == path.stem


def test_shipped_site_configs_point_into_this_repository() -> None:
    repo = CONFIGS.parent
    for path in _shipped("sites"):
        cfg = load_config(path, SiteConfig)
        assert cfg.privacy_policy == repo / "privacy_budgets" / f"{cfg.site_id}.yaml"
        assert cfg.privacy_policy.is_file()
        assert cfg.state_dir == repo / "runs" / "demo" / "state" / cfg.site_id


# --------------------------------------------------------------------------- paths in a site YAML


SITE_PATHS = ("data_dir", "state_dir", "privacy_policy", "secret_context")


def _site_yaml(folder: Path, **paths: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder, {"site_id": "site-a", "data_dir": "data", "state_dir": "state",
                           "privacy_policy": "../policies/site-a.yaml", "secret_context": "keys/secret.ctx", **paths},
                  name="site.yaml")


def test_relative_site_paths_resolve_against_the_yaml_folder_from_any_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml_path = _site_yaml(tmp_path / "deploy" / "site-a")
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    loaded = []
    for cwd, given in ((tmp_path, Path("deploy/site-a/site.yaml")), (elsewhere, Path("../../deploy/site-a/site.yaml")),
                       (yaml_path.parent, Path("site.yaml"))):
        monkeypatch.chdir(cwd)
        loaded.append(load_config(given, SiteConfig))
    assert loaded[0] == loaded[1] == loaded[2]
    cfg = loaded[0]
    root = tmp_path.resolve()
    assert cfg.data_dir == root / "deploy" / "site-a" / "data"
    assert cfg.state_dir == root / "deploy" / "site-a" / "state"
    assert cfg.privacy_policy == root / "deploy" / "policies" / "site-a.yaml"
    assert cfg.secret_context == root / "deploy" / "site-a" / "keys" / "secret.ctx"


def test_absolute_site_paths_are_kept_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = {k: f"/srv/flame/{k}" for k in SITE_PATHS}
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_site_yaml(tmp_path / "conf", **absolute), SiteConfig)
    assert {k: str(getattr(cfg, k)) for k in SITE_PATHS} == absolute


def test_a_site_config_built_in_python_keeps_its_paths_as_given() -> None:
    cfg = SiteConfig(site_id="site-a", data_dir=Path("data"), state_dir=Path("state"), privacy_policy=Path("p.yaml"))
    assert (cfg.data_dir, cfg.state_dir, cfg.privacy_policy) == (Path("data"), Path("state"), Path("p.yaml"))


# --------------------------------------------------------------------------- file-level failures


def test_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "nope.yaml")
    assert "not found" in message


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "name: [unclosed\nseed: 1\n"))
    assert "not valid YAML" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", "", "# only a comment\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    message = _error(_write(tmp_path, text))
    assert "mapping" in message


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    message = _error(tmp_path)
    assert "cannot read" in message


# --------------------------------------------------------------------------- field-level failures


def test_unknown_key_is_refused_and_named(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["sites"][1]["scanner"]["noise_sdd"] = 0.05  # misspelt
    line = _field_line(_error(_write(tmp_path, cohort_raw)), "sites.1.scanner.noise_sdd")
    assert "unknown key" in line


def test_unknown_top_level_key_is_refused(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["seeed"] = 3
    assert "unknown key" in _field_line(_error(_write(tmp_path, cohort_raw)), "seeed")


@pytest.mark.parametrize(
    ("edit", "field"),
    _cases(
        (lambda r: r["sites"][1]["scanner"].__setitem__("noise_sd", "loud"), "sites.1.scanner.noise_sd"),
        (lambda r: r.__setitem__("grid", "big"), "grid"),
        (lambda r: r.__setitem__("grid", 24.5), "grid"),
        (lambda r: r["sites"][0].__setitem__("n_patients", [4]), "sites.0.n_patients"),
        (lambda r: r.__setitem__("sites", {"site_id": "a"}), "sites"),
        (lambda r: r["sites"][2]["scanner"].__setitem__("spacing_factor", [1.0, 1.0]),
         "sites.2.scanner.spacing_factor"),
        (lambda r: r["sites"][0].__setitem__("treatment_mix", {"neutron": 1.0}), "sites.0.treatment_mix.neutron"),
    ),
)
def test_wrong_type_is_refused_and_named(tmp_path: Path, cohort_raw: dict, edit, field: str) -> None:
    edit(cohort_raw)
    _field_line(_error(_write(tmp_path, cohort_raw)), field)


@pytest.mark.parametrize(
    ("edit", "field"),
    _cases(
        (lambda r: r["sites"][1]["scanner"].__setitem__("noise_sd", 0.9), "sites.1.scanner.noise_sd"),
        (lambda r: r["sites"][0].__setitem__("n_patients", 0), "sites.0.n_patients"),
        (lambda r: r.__setitem__("grid", 8), "grid"),
        (lambda r: r.__setitem__("seed", -1), "seed"),
        (lambda r: r.__setitem__("therapy", {"prescription_gy": 120}), "therapy.prescription_gy"),
        (lambda r: r.__setitem__("difficulty", {"pseudoprogression_base": 1.5}), "difficulty.pseudoprogression_base"),
        (lambda r: r["sites"][2]["scanner"].__setitem__("spacing_factor", [1.0, 1.0, 5.0]),
         "sites.2.scanner.spacing_factor.2"),
        (lambda r: r["sites"][0].__setitem__("treatment_mix", {"photon": -0.5}), "sites.0.treatment_mix.photon"),
        (lambda r: r["sites"][0].__setitem__("site_id", "bad id/with slash"), "sites.0.site_id"),
        (lambda r: r.__setitem__("followup", {"evaluation_days": [3, 84]}), "followup.evaluation_days.0"),
    ),
)
def test_out_of_range_value_is_refused_and_named(tmp_path: Path, cohort_raw: dict, edit, field: str) -> None:
    edit(cohort_raw)
    _field_line(_error(_write(tmp_path, cohort_raw)), field)


def test_every_invalid_field_is_reported_at_once(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["grid"] = 8
    cohort_raw["sites"][1]["scanner"]["noise_sd"] = 0.9
    cohort_raw["sites"][0]["colour"] = "red"
    message = _error(_write(tmp_path, cohort_raw))
    assert "3 invalid field(s)" in message
    for field in ("grid", "sites.1.scanner.noise_sd", "sites.0.colour"):
        _field_line(message, field)


def test_the_offending_value_is_shown(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["sites"][1]["scanner"]["noise_sd"] = 0.9
    assert "0.9" in _field_line(_error(_write(tmp_path, cohort_raw)), "sites.1.scanner.noise_sd")


def test_missing_required_field_is_named(tmp_path: Path, cohort_raw: dict) -> None:
    del cohort_raw["sites"][2]["n_patients"]
    assert "required" in _field_line(_error(_write(tmp_path, cohort_raw)), "sites.2.n_patients").lower()


def test_duplicate_site_ids_are_refused(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["sites"][2]["site_id"] = "site-a"
    line = _field_line(_error(_write(tmp_path, cohort_raw)), "sites")
    assert "duplicate site_id: site-a" in line


@pytest.mark.parametrize("mix", [{"photon": 0.0}, {"photon": 0.0, "carbon": 0.0}, {}])
def test_treatment_mix_must_offer_a_modality(tmp_path: Path, cohort_raw: dict, mix: dict) -> None:
    cohort_raw["sites"][1]["treatment_mix"] = mix
    assert "at least one modality" in _field_line(_error(_write(tmp_path, cohort_raw)), "sites.1.treatment_mix")


def test_treatment_mix_may_leave_modalities_out_or_at_zero(cohort_raw: dict) -> None:
    cohort_raw["sites"][0]["treatment_mix"] = {"carbon": 0.0, "proton": 2.0}
    cfg = parse_config(cohort_raw, CohortConfig)
    assert cfg.sites[0].treatment_mix == {"carbon": 0.0, "proton": 2.0}


def test_resection_probabilities_must_sum_to_one(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["sites"][0]["patients"] = {"resection_probs": [0.5, 0.5, 0.5]}
    assert "sum to 1" in _field_line(_error(_write(tmp_path, cohort_raw)), "sites.0.patients.resection_probs")


def test_sampling_ranges_must_be_ordered(tmp_path: Path, cohort_raw: dict) -> None:
    cohort_raw["tumour"] = {"rho_range": [0.1, 0.01]}
    assert "rho_range" in _field_line(_error(_write(tmp_path, cohort_raw)), "tumour")


@pytest.mark.parametrize("orientation", ["RAR", "XYZ", "RA", "RASL", "LLS"])
def test_scanner_orientation_needs_one_code_per_axis(orientation: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="orientation"):
        ScannerProfile(orientation=orientation)


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "las", "SAR", "PIL"])
def test_scanner_orientation_accepts_any_axis_permutation_and_case(orientation: str) -> None:
    assert ScannerProfile(orientation=orientation).orientation == orientation.upper()


def test_parse_config_errors_name_the_given_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline\.yaml: 1 invalid field\(s\)\n  grid:"):
        parse_config({"grid": 1, "sites": [{"site_id": "a", "n_patients": 1}]}, CohortConfig, "inline.yaml")


def test_configs_are_frozen(cohort_cfg: CohortConfig) -> None:
    with pytest.raises(pydantic.ValidationError):
        cohort_cfg.seed = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- federation parts


def test_he_defaults_are_secure_and_valid() -> None:
    he = HEConfig()
    assert sum(he.coeff_mod_bit_sizes) <= HE_MAX_MODULUS_BITS[he.poly_modulus_degree]
    assert (he.poly_modulus_degree, he.coeff_mod_bit_sizes, he.scale_bits) == (4096, [32], 30)
    assert he.weight_bound is None and he.max_patients == 1000  # automatic weight bound; public patient bound


def test_he_packing_bounds_are_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, {"he": {"max_patients": 0}})
    _field_line(_error(path, FederationConfig), "he.max_patients")
    path = _write(tmp_path, {"he": {"weight_bound": -1.0}})
    _field_line(_error(path, FederationConfig), "he.weight_bound")


def test_he_bound_table_is_the_128_bit_standard() -> None:
    assert HE_MAX_MODULUS_BITS == {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def test_he_refuses_a_coefficient_modulus_above_the_128_bit_bound(tmp_path: Path) -> None:
    path = _write(tmp_path, {"he": {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 60]}})
    line = _field_line(_error(path, FederationConfig), "he")
    assert "120 bits" in line and "109" in line and "N=4096" in line


@pytest.mark.parametrize(("n", "bits"), [(4096, [40, 29, 40]), (8192, [60, 40, 40, 60]), (16384, [60] * 7)])
def test_he_accepts_moduli_at_or_under_the_bound(n: int, bits: list[int]) -> None:
    assert sum(bits) <= HE_MAX_MODULUS_BITS[n]
    HEConfig(poly_modulus_degree=n, coeff_mod_bit_sizes=bits, scale_bits=min(bits) - 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [4096, 8192, 16384])
def test_he_refuses_one_bit_over_the_bound(n: int) -> None:
    bound = HE_MAX_MODULUS_BITS[n]
    bits = [60] * (bound // 60) + [bound % 60 + 1]
    if bits[-1] < 20:  # keep each prime in its allowed range
        bits = bits[:-2] + [40, bits[-2] - 40 + bits[-1]]
    assert sum(bits) == bound + 1
    with pytest.raises(pydantic.ValidationError, match="128-bit security"):
        HEConfig(poly_modulus_degree=n, coeff_mod_bit_sizes=bits, scale_bits=20)  # type: ignore[arg-type]


def test_he_refuses_a_scale_too_big_for_the_smallest_prime(tmp_path: Path) -> None:
    path = _write(tmp_path, {"he": {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 60],
                                    "scale_bits": 40}})
    assert "headroom" in _field_line(_error(path, FederationConfig), "he")
    HEConfig(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 60], scale_bits=38)  # two bits of headroom: fine
    with pytest.raises(pydantic.ValidationError, match="headroom"):
        HEConfig(coeff_mod_bit_sizes=[32], scale_bits=31)  # the default prime leaves room for scale 2^30 at most


def test_he_refuses_an_unsupported_ring_dimension(tmp_path: Path) -> None:
    path = _write(tmp_path, {"he": {"poly_modulus_degree": 2048}})
    _field_line(_error(path, FederationConfig), "he.poly_modulus_degree")


def test_dp_refuses_both_noise_multiplier_and_target_epsilon(tmp_path: Path) -> None:
    path = _write(tmp_path, {"dp": {"noise_multiplier": 1.0, "target_epsilon": 3.0}})
    assert "exactly one" in _field_line(_error(path, FederationConfig), "dp")


def test_dp_refuses_neither_noise_multiplier_nor_target_epsilon(tmp_path: Path) -> None:
    path = _write(tmp_path, {"dp": {"noise_multiplier": None}})
    assert "exactly one" in _field_line(_error(path, FederationConfig), "dp")


def test_dp_accepts_target_epsilon_with_the_noise_multiplier_cleared() -> None:
    dp = DPConfig(noise_multiplier=None, target_epsilon=3.0)
    assert dp.target_epsilon == 3.0 and dp.noise_multiplier is None


def test_dp_disabled_needs_neither() -> None:
    DPConfig(enabled=False, noise_multiplier=None, target_epsilon=None)


def test_dp_accepts_target_epsilon_alone() -> None:
    dp = parse_config({"target_epsilon": 3.0}, DPConfig, "dp.yaml")
    assert dp.target_epsilon == 3.0 and dp.noise_multiplier is None


def test_federation_needs_at_least_three_sites(tmp_path: Path) -> None:
    _field_line(_error(_write(tmp_path, {"min_sites": 2}), FederationConfig), "min_sites")


def test_data_split_must_leave_patients_for_training() -> None:
    with pytest.raises(pydantic.ValidationError, match="training"):
        DataConfig(val_fraction=0.5, test_fraction=0.5)
    assert DataConfig(grid=48).voxel_mm == pytest.approx(4.0)


def test_site_config_refuses_an_unknown_layout(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIGS / "sites" / "site-a.yaml").read_text(encoding="utf-8"))
    raw["layout"] = "brats2019"
    _field_line(_error(_write(tmp_path, raw), SiteConfig), "layout")


def test_dp_defaults_to_unit_noise_when_neither_is_given() -> None:
    assert parse_config({}, DPConfig, "dp.yaml").noise_multiplier == 1.0


def test_dp_refusal_of_two_noise_settings_names_both() -> None:
    with pytest.raises(ConfigError, match="not noise_multiplier and target_epsilon"):
        parse_config({"noise_multiplier": 1.0, "target_epsilon": 3.0}, DPConfig, "dp.yaml")


def test_a_key_given_twice_in_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cohort.yaml"
    path.write_text("seed: 1\nseed: 2\nsites: [{site_id: a, n_patients: 1}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate key 'seed'") as err:
        load_config(path, CohortConfig)
    assert str(path) in str(err.value)
