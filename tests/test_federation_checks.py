"""What the server and each site refuse: a site counted twice, too many sites, a stale or foreign aggregate.

The minimum of three contributors exists so that no site can learn another's
update from the sum; these tests check that nobody can meet it, or slip past
the overflow bound, by miscounting, and that a site checks the aggregate it is
sent before decrypting it (declining the round, with the reason kept at home).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from federation_harness import LocalGrid, make_federation, run
from flwr.app import Message

from flame_private.federation.protocol import UPDATE, ct_record, read_ct_record
from flame_private.federation.server.checkpoint import Checkpoint
from flame_private.federation.site.site import Site
from flame_private.records.egress import EgressLog
from flame_private.secure.site.ceremony import key_ceremony


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    key_ceremony(__import__("flame_private.config", fromlist=["HEConfig"]).HEConfig(), out)
    return out


def _round(summary: dict, task: str, round_: int) -> dict:
    return next(r for r in summary["rounds"] if r["task"] == task and r["round"] == round_)


def _as_site(yaml: Path, site_id: str) -> None:
    """Make this node claim ``site_id`` (its own policy and state, another site's name)."""
    yaml.write_text("\n".join(f"site_id: {site_id}" if line.startswith("site_id:") else line
                              for line in yaml.read_text().splitlines()) + "\n")
    policy = yaml.parent / "policy.yaml"
    policy.write_text("\n".join(f"site_id: {site_id}" if line.startswith("site_id:") else line
                                for line in policy.read_text().splitlines()) + "\n")


def test_one_site_on_two_nodes_is_counted_once_and_cannot_make_up_the_minimum(tmp_path: Path, cohort_dir: Path,
                                                                               ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    _as_site(sites["site-c"], "site-a")  # site-a runs a second node
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-b"]
    assert any("site id site-a already replied" in why for why in r["rejected"].values())
    assert "2 valid contribution(s)" in r["refused"]


def test_a_duplicate_is_dropped_and_the_round_goes_on_with_enough_distinct_sites(tmp_path: Path, cohort_dir: Path,
                                                                                 ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    _as_site(sites["site-d"], "site-a")
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-b", "site-c"] and "refused" not in r
    header, _ = Checkpoint(tmp_path / "run" / "server").model("response")
    assert json.loads(header)["contributor_ids"] == ["site-a", "site-b", "site-c"]


def test_more_contributors_than_max_sites_is_refused(tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """The overflow headroom is sized for he.max_sites sites: one more and the sum could wrap."""
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    fed.write_text(fed.read_text().replace("he: {max_patients: 16}", "he: {max_patients: 16, max_sites: 3}"))
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert len(r["contributors"]) == 4
    assert "4 valid contribution(s), between 3 and 3 (max_sites) required" in r["refused"]


def _claim_two_sites(site_id: str, reply: Message) -> Message:
    """site-b's update header says it sums two sites while naming only site-b; the ciphertext is untouched."""
    if site_id == "site-b" and reply.metadata.message_type == "train" and UPDATE in reply.content:
        header, payload = read_ct_record(reply.content[UPDATE])  # type: ignore[arg-type]
        reply.content[UPDATE] = ct_record(json.dumps({**json.loads(header), "contributors": 2}), payload)
    return reply


def test_an_update_counting_more_than_its_own_site_is_rejected(tmp_path: Path, cohort_dir: Path,
                                                               ceremony: Path) -> None:
    """Otherwise the aggregate's count would say five sites where four are named, and every site would decline it."""
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    summary = run(LocalGrid(sites, fed, tamper=_claim_two_sites), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-c", "site-d"] and "refused" not in r
    assert any(k.startswith("site-b") and "says 2 contributor(s) but names 1" in why
               for k, why in r["rejected"].items())
    header, _ = Checkpoint(tmp_path / "run" / "server").model("response")
    assert json.loads(header)["contributors"] == 3


def _drop_in_train_call(call: int, *sites: str):
    """Drop these sites' replies to the ``call``-th round of train messages (1-based)."""
    seen: dict[str, int] = {}

    def tamper(site_id: str, reply: Message) -> Message | None:
        if reply.metadata.message_type != "train":
            return reply
        seen[site_id] = seen.get(site_id, 0) + 1
        return None if site_id in sites and seen[site_id] == call else reply
    return tamper


def test_after_a_refused_round_the_unchanged_model_carries_its_new_round(tmp_path: Path, cohort_dir: Path,
                                                                        ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=3, tasks="[response]")
    summary = run(LocalGrid(sites, fed, tamper=_drop_in_train_call(2, "site-c", "site-d")), fed, ceremony,
                  tmp_path / "run")
    assert "refused" in _round(summary, "response", 2)
    r3 = _round(summary, "response", 3)
    assert "refused" not in r3 and len(r3["contributors"]) == 4  # every site accepted the carried model
    assert all(s == "ok" for s in summary["exports"]["response"].values())


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, cohort_dir: Path, ceremony: Path):
    """A 2-round federation: its round-1 and round-2 aggregates, and a site to send them to."""
    root = tmp_path_factory.mktemp("fed")
    sites, fed = make_federation(root, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    run(LocalGrid(sites, fed), fed, ceremony, root / "run")
    round1 = Checkpoint(root / "run" / "server").model("response")
    site = Site.load(sites["site-a"], fed)
    return site, round1


def _declined_reason(site: Site) -> str:
    last = EgressLog.open(site.config.state_dir, site.site_id, readonly=True).entries[-1]
    assert last.kind == "declined"
    return last.reason


def _forged(header: str, **changes) -> str:
    return json.dumps({**json.loads(header), **changes})


def test_a_site_trains_on_the_aggregate_of_the_previous_round(finished) -> None:
    """The control for the refusals below: the right aggregate is accepted."""
    site, (header, payload) = finished
    reply = site.train_round("run-1", "response", 2, header, payload)
    assert reply.status == "ok"


@pytest.mark.parametrize(("round_", "run_id", "changes", "why"), [
    (3, "run-1", {}, "expected the aggregate of round 2"),  # stale: round 1's sum replayed at round 3
    (2, "run-2", {}, "run id is 'run-1', expected 'run-2'"),  # another run's aggregate
    (2, "run-1", {"contributors": 4, "contributor_ids": ["site-a", "site-a", "site-b", "site-c"]},
     "counts site(s) site-a more than once"),
    (2, "run-1", {"contributors": 17, "contributor_ids": [f"s{i}" for i in range(17)]},
     "sums 17 site(s); between 3 and 16 are required"),
    (2, "run-1", {"contributors": 2, "contributor_ids": ["site-a", "site-b"]},
     "sums 2 site(s); between 3 and 16 are required"),
    (2, "run-1", {"he_fingerprint": "0" * 64}, "HE fingerprint"),
])
def test_a_site_declines_an_aggregate_that_is_not_the_one_it_expects(finished, round_, run_id, changes, why) -> None:
    site, (header, payload) = finished
    reply = site.train_round(run_id, "response", round_, _forged(header, **changes), payload)
    assert reply.status == "declined"
    assert json.loads(reply.status_json(site.site_id)) == {"site_id": "site-a", "status": "declined"}
    reason = _declined_reason(site)
    assert why in reason, reason


def test_a_site_declines_evaluating_a_model_of_another_round(finished) -> None:
    site, (header, payload) = finished
    reply = site.evaluate_round("run-1", "response", 2, header, payload)  # round 1's model called round 2's
    assert reply.status == "declined"
    assert "expected the aggregate of round 2" in _declined_reason(site)
