"""A site that fails takes no part, and nothing about why leaves it.

Flower turns an exception raised in a ClientApp into an error reply that carries
the exception's text to the server, and a site's errors name its folders, files
and patients.  So a step that fails is a decline like any other: the reason is
logged and recorded in the site's egress log, and the server gets "declined".  A
site that cannot even load replies with a fixed text.  The other sites' round
goes on.  Each test first shows that the site's error does name what must stay
at home (the positive control: a leak would be caught).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from federation_harness import LocalGrid, make_federation, run
from flwr.app import Message

from flame_private.data.checks import DataError
from flame_private.federation.protocol import read_status
from flame_private.federation.site.client_app import SITE_FAILED
from flame_private.federation.site.site import Site
from flame_private.records.egress import EgressLog
from flame_private.secure.site.ceremony import key_ceremony


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flame_private.config import HEConfig

    out = tmp_path_factory.mktemp("keys")
    key_ceremony(HEConfig(), out)
    return out


def _text(reply: Message) -> str:
    """Everything a reply tells the server, as text."""
    return reply.error.reason if reply.has_error() else str(reply.content)


def _run_recording(sites: dict[str, Path], fed: Path, ceremony: Path, run_dir: Path
                   ) -> tuple[dict, list[tuple[str, Message]]]:
    replies: list[tuple[str, Message]] = []

    def record(site_id: str, reply: Message) -> Message:
        replies.append((site_id, reply))
        return reply

    return run(LocalGrid(sites, fed, tamper=record), fed, ceremony, run_dir), replies


def _contributors(summary: dict) -> list[str]:
    return sorted(next(r for r in summary["rounds"] if r["task"] == "response")["contributors"])


def test_a_site_whose_scans_cannot_be_read_declines_and_its_folder_stays_at_home(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    moved = tmp_path / "site-d-scans-moved"
    moved.mkdir()
    yaml = sites["site-d"]
    yaml.write_text("\n".join(f"data_dir: {moved}" if line.startswith("data_dir:") else line
                              for line in yaml.read_text().splitlines()) + "\n")
    with pytest.raises(DataError, match="cannot be loaded") as raised:  # what the site's error says
        _ = Site.load(yaml, fed).splits
    assert str(moved) in str(raised.value)

    summary, replies = _run_recording(sites, fed, ceremony, tmp_path / "run")

    assert _contributors(summary) == ["site-a", "site-b", "site-c"]
    from_d = [reply for site, reply in replies if site == "site-d"]
    assert from_d
    for reply in from_d:
        assert not reply.has_error() and read_status(reply.content).status == "declined"
        assert str(moved) not in _text(reply) and "manifest" not in _text(reply)
    declined = [e for e in EgressLog.open(tmp_path / "site-d" / "state", "site-d").entries if e.kind == "declined"]
    assert len(declined) == len(from_d)
    assert "train step failed: DataError" in declined[0].reason and str(moved) in declined[0].reason


def test_a_site_that_cannot_load_sends_only_a_fixed_text(tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    secret = tmp_path / "site-d" / "secret.ctx"
    os.chmod(secret, 0o644)  # a secret key others can read: the site refuses to load it
    with pytest.raises(Exception) as raised:
        Site.load(sites["site-d"], fed)
    assert str(secret) in str(raised.value)

    summary, replies = _run_recording(sites, fed, ceremony, tmp_path / "run")

    assert _contributors(summary) == ["site-a", "site-b", "site-c"]
    from_d = [reply for site, reply in replies if site == "site-d"]
    assert from_d and all(reply.has_error() and reply.error.reason == SITE_FAILED for reply in from_d)
