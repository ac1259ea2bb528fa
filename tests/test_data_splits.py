"""Splits are per patient, deterministic, and never move a patient when others are added."""

from __future__ import annotations

from pathlib import Path

from data_fixtures import make_flame_site

from flame_private.config import DataConfig
from flame_private.data import load_site
from flame_private.data.splits import assign_split, split_patients, split_records

IDS = [f"site-a-{i:04d}" for i in range(2000)]


def test_deterministic_for_a_seed() -> None:
    cfg = DataConfig(split_seed=7)
    assert split_patients(IDS, cfg) == split_patients(list(reversed(IDS)), cfg)


def test_different_seeds_give_different_splits() -> None:
    a = split_patients(IDS, DataConfig(split_seed=0))
    b = split_patients(IDS, DataConfig(split_seed=1))
    moved = sum(a[p] != b[p] for p in IDS)
    assert moved > len(IDS) // 4


def test_adding_patients_never_moves_existing_ones() -> None:
    cfg = DataConfig(split_seed=3)
    before = split_patients(IDS[:500], cfg)
    after = split_patients(IDS, cfg)
    assert all(after[p] == s for p, s in before.items())


def test_fractions_are_respected_roughly() -> None:
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.1)
    splits = list(split_patients(IDS, cfg).values())
    assert abs(splits.count("test") / len(IDS) - 0.1) < 0.03
    assert abs(splits.count("val") / len(IDS) - 0.2) < 0.03
    assert set(splits) == {"train", "val", "test"}


def test_zero_fractions_put_everyone_in_train() -> None:
    assert {assign_split(p, 0, 0.0, 0.0) for p in IDS[:200]} == {"train"}


def test_split_records_is_disjoint_and_keeps_timepoints_together(tmp_path: Path) -> None:
    records = load_site(make_flame_site(tmp_path, n=6)).records
    splits = split_records(records, DataConfig(val_fraction=0.3, test_fraction=0.3, split_seed=1))
    groups = [{r.patient_id for r in g} for g in (splits.train, splits.val, splits.test)]
    assert sum(len(g) for g in groups) == 6
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    # A record carries all of a patient's timepoints, so they travel together.
    assert all(len(r.timepoints) == 3 for g in (splits.train, splits.val, splits.test) for r in g)
