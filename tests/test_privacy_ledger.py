"""The hash-chained privacy ledger: it replays to Opacus's epsilon, and every break is caught.

Ledgers here use the RDP accountant where the accountant does not matter (it is
faster); the PRV default is exercised where the numbers are the point.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant

from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.ledger import (
    GENESIS_HASH,
    HEAD_NAME,
    LEDGER_NAME,
    Ledger,
    LedgerError,
    PlannedSpend,
    canonical_json,
    entry_hash,
)

SITE = "site-a"
DELTA = 1e-5
Q_RESPONSE, Q_EVOLUTION = 4 / 60, 4 / 48


def spend(run: str = "demo", rnd: int = 1, task: str = "response", sigma: float = 1.0,
          q: float = Q_RESPONSE, steps: int = 15) -> PlannedSpend:
    return PlannedSpend(run_id=run, round=rnd, task=task, noise_multiplier=sigma, sample_rate=q, steps=steps,
                        max_grad_norm=1.0)


# Two runs; both models each round; the evolution task has fewer training patients (larger q).
RELEASES = [
    spend("run-1", 1, "response"), spend("run-1", 1, "evolution", q=Q_EVOLUTION, steps=12),
    spend("run-1", 2, "response"), spend("run-1", 2, "evolution", q=Q_EVOLUTION, steps=12),
    spend("run-2", 1, "response", sigma=1.2), spend("run-2", 1, "evolution", sigma=1.2, q=Q_EVOLUTION, steps=12),
]


def record_all(state: Path, releases: list[PlannedSpend], accountant: str = "rdp") -> Ledger:
    """Append ``releases``; a state that does not exist yet is initialised first, as onboarding does."""
    if not state.exists():
        Ledger.initialise(state, SITE)
    ledger = Ledger.open(state, SITE)
    for s in releases:
        ledger.append(s, delta=DELTA, accountant=accountant)  # type: ignore[arg-type]
    return ledger


@pytest.fixture(scope="module")
def _four(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("four") / "state"
    record_all(state, RELEASES[:4])
    return state


@pytest.fixture
def four(_four: Path, tmp_path: Path) -> Path:
    """A fresh copy of a verified 4-entry ledger (RDP), safe to damage."""
    state = tmp_path / "state"
    shutil.copytree(_four, state)
    return state


def lines(state: Path) -> list[str]:
    return (state / LEDGER_NAME).read_text().splitlines(keepends=True)


def write_lines(state: Path, new: list[str]) -> None:
    (state / LEDGER_NAME).write_text("".join(new))


def rehash(line: str, **changes: object) -> str:
    """An entry edited by someone who also recomputed its own hash."""
    fields = {**json.loads(line), **changes}
    fields["hash"] = entry_hash(fields)
    return canonical_json(fields) + "\n"


# --------------------------------------------------------------------------- what is recorded


def test_each_entry_records_the_release_and_the_sites_prv_epsilon_after_it(tmp_path: Path) -> None:
    releases = [RELEASES[0], RELEASES[1], RELEASES[4], RELEASES[5]]  # two runs, both models, two sigmas
    ledger = record_all(tmp_path / "state", releases, accountant="prv")
    opacus = PRVAccountant()  # stepped one optimizer step at a time, as PrivacyEngine does
    for entry, release in zip(ledger.entries, releases, strict=True):
        for _ in range(release.steps):
            opacus.step(noise_multiplier=release.noise_multiplier, sample_rate=release.sample_rate)
        assert entry.epsilon_after == pytest.approx(opacus.get_epsilon(DELTA), rel=1e-9)
        assert (entry.run_id, entry.round, entry.task) == (release.run_id, release.round, release.task)
        assert (entry.site_id, entry.delta, entry.accountant) == (SITE, DELTA, "prv")
    assert ledger.epsilon() == ledger.entries[-1].epsilon_after
    assert ledger.epsilon() == epsilon_for(ledger.history(), DELTA, "prv")
    assert ledger.history() == [(s.noise_multiplier, s.sample_rate, s.steps) for s in releases]


def test_composition_over_both_models_and_several_runs_only_grows(_four: Path) -> None:
    eps = [e.epsilon_after for e in Ledger.open(_four, SITE, readonly=True).entries]
    assert all(a < b for a, b in zip(eps, eps[1:]))


def test_reopening_replays_the_same_entries_epsilon_and_head(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = record_all(state, RELEASES[:3])
    again = Ledger.open(state, SITE, recompute="all")
    assert again.entries == first.entries
    assert again.epsilon() == first.epsilon()
    assert again.head_hash == first.head_hash == first.entries[-1].hash
    assert again.notices == []
    record_all(state, RELEASES[3:])  # a later run composes on top
    assert Ledger.open(state, SITE).epsilon() == epsilon_for(
        [s.history_item() for s in RELEASES], DELTA, "rdp")


def test_entries_form_a_hash_chain_in_canonical_json(_four: Path) -> None:
    ledger = Ledger.open(_four, SITE, readonly=True)
    prev = GENESIS_HASH
    for seq, (entry, line) in enumerate(zip(ledger.entries, lines(_four), strict=True), start=1):
        fields = json.loads(line)
        assert entry.seq == seq and entry.prev_hash == prev
        assert entry.hash == entry_hash(fields) == fields["hash"]
        assert line == canonical_json(fields) + "\n"
        assert entry.time.endswith("Z")
        prev = entry.hash
    assert json.loads((_four / HEAD_NAME).read_text()) == {"count": 4, "last_hash": prev}


def test_an_initialised_ledger_is_empty_with_its_head_and_has_spent_nothing(tmp_path: Path) -> None:
    Ledger.initialise(tmp_path / "new", SITE)
    assert (tmp_path / "new" / LEDGER_NAME).read_bytes() == b""
    assert json.loads((tmp_path / "new" / HEAD_NAME).read_text()) == {"count": 0, "last_hash": GENESIS_HASH}
    ledger = Ledger.open(tmp_path / "new", SITE)
    assert (len(ledger), ledger.epsilon(), ledger.head_hash) == (0, 0.0, GENESIS_HASH)


def test_a_ledger_is_never_initialised_twice(four: Path) -> None:
    with pytest.raises(LedgerError, match="exists already: refusing to initialise it again"):
        Ledger.initialise(four, SITE)
    assert len(Ledger.open(four, SITE)) == 4


MISSING = {
    "no state directory": (lambda state: shutil.rmtree(state), "the state directory is missing"),
    "no ledger file": (lambda state: (state / LEDGER_NAME).unlink(), "the ledger is missing"),
    "no head": (lambda state: (state / HEAD_NAME).unlink(), "the head of the ledger is missing"),
}


@pytest.mark.parametrize("readonly", [False, True], ids=["training", "read-only"])
@pytest.mark.parametrize("missing", MISSING, ids=list(MISSING))
def test_a_missing_state_is_refused_never_read_as_nothing_spent(tmp_path: Path, missing: str, readonly: bool) -> None:
    """Training (and the DPO's read-only checks) refuse a missing state: it says where it looked and what to do."""
    state = tmp_path / "state"
    Ledger.initialise(state, SITE)
    remove, reason = MISSING[missing]
    remove(state)
    with pytest.raises(LedgerError, match=reason) as caught:
        Ledger.open(state, SITE, readonly=readonly)
    why = str(caught.value)
    assert str(state) in why and "flame site init-state" in why and "restore" in why and "DPO" in why
    if missing == "no state directory":
        assert not state.exists(), "nothing is created in its place"


def test_files_are_private_to_the_site_account(four: Path, tmp_path: Path) -> None:
    record_all(tmp_path / "fresh" / "state", RELEASES[:1])
    assert stat.S_IMODE((tmp_path / "fresh" / "state").stat().st_mode) == 0o700
    for name in (LEDGER_NAME, HEAD_NAME):
        assert stat.S_IMODE((four / name).stat().st_mode) == 0o600


def test_two_writers_of_one_site_keep_one_chain(tmp_path: Path) -> None:
    """Two processes of one site (two ledger objects here) append in turn: each re-reads the other's entries."""
    state = tmp_path / "state"
    Ledger.initialise(state, SITE)
    a, b = Ledger.open(state, SITE), Ledger.open(state, SITE)
    for i, release in enumerate(RELEASES[:4]):
        (a if i % 2 == 0 else b).append(release, delta=DELTA, accountant="rdp")
    final = Ledger.open(state, SITE, recompute="all")
    assert [e.seq for e in final.entries] == [1, 2, 3, 4]
    assert final.epsilon() == epsilon_for([s.history_item() for s in RELEASES[:4]], DELTA, "rdp")


def test_a_read_only_ledger_refuses_to_record(four: Path) -> None:
    with pytest.raises(LedgerError, match="read-only"):
        Ledger.open(four, SITE, readonly=True).append(RELEASES[0], delta=DELTA, accountant="rdp")


# --------------------------------------------------------------------------- tampering is caught


def _change_a_number(state: Path) -> None:
    ls = lines(state)
    ls[1] = ls[1].replace('"steps":12', '"steps":2')
    write_lines(state, ls)


def _flip_one_byte(state: Path) -> None:
    data = bytearray((state / LEDGER_NAME).read_bytes())
    i = data.index(b'"time":"', len(lines(state)[0])) + 10  # a digit of line 2's timestamp
    data[i] = ord("7") if data[i] != ord("7") else ord("8")
    (state / LEDGER_NAME).write_bytes(bytes(data))


def _rehash_a_lowered_spend(state: Path) -> None:
    ls = lines(state)
    ls[1] = rehash(ls[1], steps=1)
    write_lines(state, ls)


def _respace(state: Path) -> None:
    ls = lines(state)
    ls[1] = ls[1].replace('","', '", "', 1)
    write_lines(state, ls)


def _delete_middle_line(state: Path) -> None:
    ls = lines(state)
    write_lines(state, ls[:1] + ls[2:])


def _reorder(state: Path) -> None:
    ls = lines(state)
    write_lines(state, [ls[0], ls[2], ls[1], ls[3]])


def _garble(state: Path) -> None:
    ls = lines(state)
    ls[1] = ls[1][:40] + "\n"
    write_lines(state, ls)


def _truncate_last_entry(state: Path) -> None:
    write_lines(state, lines(state)[:-1])


def _truncate_all(state: Path) -> None:
    (state / LEDGER_NAME).unlink()


def _empty(state: Path) -> None:
    (state / LEDGER_NAME).write_bytes(b"")


def _head_count_down(state: Path) -> None:
    head = json.loads((state / HEAD_NAME).read_text())
    (state / HEAD_NAME).write_text(json.dumps({**head, "count": 2}))


def _head_hash_edited(state: Path) -> None:
    head = json.loads((state / HEAD_NAME).read_text())
    (state / HEAD_NAME).write_text(json.dumps({**head, "last_hash": "f" * 64}))


def _head_deleted(state: Path) -> None:
    (state / HEAD_NAME).unlink()


def _head_garbled(state: Path) -> None:
    (state / HEAD_NAME).write_text("{count: 4")


def _last_entry_replaced_and_head_rewritten(state: Path) -> None:
    """Replace the last release with a cheaper one, chain and head recomputed: the recorded epsilon gives it away."""
    ls = lines(state)
    ls[-1] = rehash(ls[-1], steps=1)
    write_lines(state, ls)
    (state / HEAD_NAME).write_text(json.dumps({"count": 4, "last_hash": json.loads(ls[-1])["hash"]}))


TAMPERING = {
    "a number changed in a middle entry": (_change_a_number, "line 2: hash mismatch"),
    "one byte flipped in a middle entry": (_flip_one_byte, "line 2: hash mismatch"),
    "a middle entry edited and rehashed": (_rehash_a_lowered_spend, "line 3: prev_hash .* does not match"),
    "whitespace added to a line": (_respace, "line 2: .*(hash mismatch|canonical)"),
    "a middle line deleted": (_delete_middle_line, "line 2: seq 3 where 2 was expected"),
    "two lines swapped": (_reorder, "line 2: seq 3 where 2 was expected"),
    "a complete line garbled": (_garble, "line 2: not valid JSON"),
    "the last complete entry cut off": (_truncate_last_entry, "holds 3 entries but its head records 4"),
    "the ledger deleted": (_truncate_all, "the ledger is missing"),
    "the ledger emptied": (_empty, "holds 0 entries but its head records 4"),
    "head count lowered": (_head_count_down, "entry 2 has hash .* but the head records"),
    "head hash edited": (_head_hash_edited, "entry 4 has hash .* but the head records"),
    "head deleted": (_head_deleted, "missing, but the ledger holds 4 entries"),
    "head garbled": (_head_garbled, "not a valid head"),
    "last entry cheapened, chain and head redone": (_last_entry_replaced_and_head_rewritten,
                                                    "line 4: epsilon_after=.* but Opacus"),
}


@pytest.mark.parametrize("damage", TAMPERING, ids=list(TAMPERING))
def test_tampering_is_detected_with_line_and_reason(four: Path, damage: str) -> None:
    do, reason = TAMPERING[damage]
    do(four)
    before = {p.name: p.read_bytes() for p in four.iterdir()}
    with pytest.raises(LedgerError, match=reason):
        Ledger.open(four, SITE)
    assert {p.name: p.read_bytes() for p in four.iterdir()} == before, "a broken ledger is left as found"


def test_a_middle_epsilon_rewritten_with_the_chain_redone_is_caught_by_full_verification(four: Path) -> None:
    ls = lines(four)
    out, prev = [], GENESIS_HASH
    for i, line in enumerate(ls):
        out.append(rehash(line, prev_hash=prev, **({"epsilon_after": 0.1} if i == 1 else {})))
        prev = json.loads(out[-1])["hash"]
    write_lines(four, out)
    (four / HEAD_NAME).write_text(json.dumps({"count": 4, "last_hash": prev}))
    Ledger.open(four, SITE)  # routine open recomputes only the total, which is right
    with pytest.raises(LedgerError, match="line 2: epsilon_after=0.1 but Opacus"):
        Ledger.open(four, SITE, recompute="all")


def test_another_sites_ledger_is_refused(four: Path) -> None:
    with pytest.raises(LedgerError, match="line 1: entry is for site 'site-a'; this is the ledger of 'site-b'"):
        Ledger.open(four, "site-b")


# --------------------------------------------------------------------------- crashes


def test_a_torn_final_write_is_moved_aside_and_the_chain_continues(four: Path, caplog) -> None:
    """A crash inside the write: the line never completed, so nothing was released under it."""
    good = (four / LEDGER_NAME).read_bytes()
    torn = rehash(lines(four)[-1], seq=5).encode()[:57]
    (four / LEDGER_NAME).write_bytes(good + torn)
    with caplog.at_level(logging.WARNING, logger="flame_private.privacy.ledger"):
        ledger = Ledger.open(four, SITE)
    assert len(ledger) == 4 and (four / LEDGER_NAME).read_bytes() == good
    [aside] = four.glob("privacy_ledger.torn-*.txt")
    assert aside.read_bytes() == torn and stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert "incomplete write" in ledger.notices[0] and "incomplete write" in caplog.text
    ledger.append(RELEASES[4], delta=DELTA, accountant="rdp")
    assert len(Ledger.open(four, SITE, recompute="all")) == 5


def test_read_only_opening_reports_a_torn_write_without_touching_it(four: Path) -> None:
    data = (four / LEDGER_NAME).read_bytes() + b'{"accountant":"rd'
    (four / LEDGER_NAME).write_bytes(data)
    ledger = Ledger.open(four, SITE, readonly=True)
    assert len(ledger) == 4 and "incomplete write" in ledger.notices[0]
    assert (four / LEDGER_NAME).read_bytes() == data and not list(four.glob("*torn*"))


def _crash_between_entry_and_head(state: Path) -> bytes:
    """Append a fifth entry, then put back the head as it was: the crash fell between the two writes."""
    head = (state / HEAD_NAME).read_bytes()
    Ledger.open(state, SITE).append(RELEASES[4], delta=DELTA, accountant="rdp")
    (state / HEAD_NAME).write_bytes(head)
    return head


def test_an_entry_written_before_a_crash_that_missed_the_head_is_counted(four: Path) -> None:
    _crash_between_entry_and_head(four)
    ledger = Ledger.open(four, SITE)
    assert len(ledger) == 5 and "head advanced from 4 to 5" in ledger.notices[0]
    assert json.loads((four / HEAD_NAME).read_text()) == {"count": 5, "last_hash": ledger.head_hash}


def test_read_only_opening_counts_that_entry_without_advancing_the_head(four: Path) -> None:
    head = _crash_between_entry_and_head(four)
    ledger = Ledger.open(four, SITE, readonly=True)
    assert len(ledger) == 5 and "head records 4 entries, ledger holds 5" in ledger.notices[0]
    assert (four / HEAD_NAME).read_bytes() == head


def test_a_whole_entry_missing_only_its_newline_is_kept(four: Path) -> None:
    _crash_between_entry_and_head(four)
    (four / LEDGER_NAME).write_bytes((four / LEDGER_NAME).read_bytes()[:-1])
    ledger = Ledger.open(four, SITE)
    assert len(ledger) == 5 and (four / LEDGER_NAME).read_bytes().endswith(b"}\n")


def test_the_first_entry_written_before_its_head_is_counted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record_all(state, [])
    empty_head = (state / HEAD_NAME).read_bytes()
    record_all(state, RELEASES[:1])
    (state / HEAD_NAME).write_bytes(empty_head)  # the crash fell between the first line and its head
    assert len(Ledger.open(state, SITE)) == 1
    assert json.loads((state / HEAD_NAME).read_text())["count"] == 1


def test_the_first_entry_without_any_head_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record_all(state, RELEASES[:1])
    (state / HEAD_NAME).unlink()
    with pytest.raises(LedgerError, match="missing, but the ledger holds 1 entries"):
        Ledger.open(state, SITE)
