"""The egress log: what left the site, byte for byte, in a tamper-evident, crash-safe chain.

Specification (records/egress.py, docs/dpo-guide.md):

* each message is one canonical JSON line chained by hashes, with a head file;
  its exact payload is kept in ``outbox/<seq:06d>-<kind>.bin`` (mode 0600);
* the payload is on disk before the line, the line before the head, and only
  then may the message be sent; a crash at any moment leaves a log that
  verifies and holds every message reported as logged;
* any edit, truncation or rollback is refused on open with file and line;
* a header that does not describe the payload is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from crash_harness import killed_writers

from flame_private.privacy.ledger import GENESIS_HASH, Ledger, PlannedSpend, canonical_json, entry_hash
from flame_private.records.code_identity import app_identity
from flame_private.records.egress import (
    EgressLog,
    EgressLogError,
    outbox_name,
)
from flame_private.secure.public.envelope import CiphertextEnvelope
from flame_private.site_state import init_state

SITE = "site-a"
FINGERPRINT = "ab" * 32


def envelope_for(payload: bytes, *, run_id: str = "run-1", task: str = "response", round: int = 1,
                 model: str = "response") -> CiphertextEnvelope:
    """A well-formed header for ``payload`` (the egress log does not parse ciphertexts; the audit does)."""
    return CiphertextEnvelope(kind="update", run_id=run_id, task=task,  # type: ignore[arg-type]
                              round=round, model=model,
                              layout_sha256="0" * 64, n_params=100, n_chunks=1, slots_per_chunk=4096,
                              he_fingerprint=FINGERPRINT, payload_sha256=hashlib.sha256(payload).hexdigest(),
                              n_bytes=len(payload))


def send_update(log: EgressLog, round: int, payload: bytes | None = None, **kw):
    payload = payload if payload is not None else os.urandom(1000 + round)
    return log.append(run_id="run-1", round=round, task="response", kind="update", payload=payload,
                      envelope=envelope_for(payload, round=round), app_hash="fab-test", **kw)


def send_declined(log: EgressLog, round: int, reason: str = "privacy budget exhausted"):
    return log.append(run_id="run-1", round=round, task="response", kind="declined",
                      payload=json.dumps({"reason": reason}).encode(), app_hash="fab-test")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A new site's state, initialised as onboarding does: empty egress log and ledger with their heads."""
    init_state(tmp_path / "state", SITE)
    return tmp_path / "state"


@pytest.fixture
def three(state: Path) -> EgressLog:
    log = EgressLog.open(state, SITE)
    send_update(log, 1)
    send_declined(log, 2)
    send_update(log, 3)
    return log


# --------------------------------------------------------------------------- writing and reading back


def test_each_message_is_a_chained_canonical_line_with_its_payload_kept_in_the_outbox(state: Path) -> None:
    log = EgressLog.open(state, SITE)
    payload = os.urandom(5000)
    first = send_update(log, 1, payload)
    second = send_declined(log, 2)

    assert (first.seq, first.kind, first.byte_count) == (1, "update", 5000)
    assert first.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert first.envelope == envelope_for(payload).model_dump(mode="json")
    assert first.he_fingerprint == FINGERPRINT
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert second.envelope is None and second.he_fingerprint is None
    assert (state / "outbox" / "000001-update.bin").read_bytes() == payload
    assert log.payload_path(second) == state / "outbox" / "000002-declined.bin"
    for f in (state / "egress_log.jsonl", state / "egress_log.head.json", *(state / "outbox").iterdir()):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    lines = (state / "egress_log.jsonl").read_text().splitlines()
    for line in lines:
        fields = json.loads(line)
        assert canonical_json(fields) == line and entry_hash(fields) == fields["hash"]
    assert json.loads((state / "egress_log.head.json").read_text()) == {"count": 2, "last_hash": second.hash}
    again = EgressLog.open(state, SITE)
    assert again.entries == (first, second) and again.notices == []


def test_an_update_carries_the_ledger_entry_that_paid_for_it(state: Path) -> None:
    ledger = Ledger.open(state, SITE)
    spend = PlannedSpend(run_id="run-1", round=1, task="response", noise_multiplier=1.1, sample_rate=0.05,
                         steps=20, max_grad_norm=1.0)
    paid = ledger.append(spend, delta=1e-5, accountant="rdp")
    log = EgressLog.open(state, SITE)
    entry = send_update(log, 1, ledger_entry=paid)
    assert entry.ledger_seq == paid.seq == 1
    assert entry.epsilon_after == paid.epsilon_after
    assert entry.dp is not None and entry.dp.model_dump() == {
        "noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 20, "max_grad_norm": 1.0, "delta": 1e-5}

    with pytest.raises(EgressLogError, match="covers 'run-1' round 1"):
        send_update(log, 2, ledger_entry=paid)  # another round's spend
    assert len(EgressLog.open(state, SITE)) == 1


def test_transport_and_patients_are_recorded_when_given_and_absent_otherwise(state: Path) -> None:
    log = EgressLog.open(state, SITE)
    old = send_update(log, 1)  # as written before these were recorded: no keys at all, same hash rules
    new = send_update(log, 2, transport="simulation", patients=120)
    declined = log.append(run_id="run-1", round=3, task="response", kind="declined", payload=b"{}",
                          reason="budget", transport="supernode-tls")
    lines = [json.loads(x) for x in (state / "egress_log.jsonl").read_text().splitlines()]
    assert "transport" not in lines[0] and "patients" not in lines[0]
    assert (lines[1]["transport"], lines[1]["patients"], lines[2]["transport"]) == ("simulation", 120, "supernode-tls")
    again = EgressLog.open(state, SITE)
    assert again.entries == (old, new, declined)
    assert (old.transport, old.patients, new.transport, new.patients) == (None, None, "simulation", 120)

    with pytest.raises(EgressLogError, match="transport"):
        send_update(log, 4, transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(EgressLogError, match="releases nothing computed from patients"):
        log.append(run_id="run-1", round=4, task="response", kind="declined", payload=b"{}", reason="x", patients=3)
    assert len(EgressLog.open(state, SITE)) == 3


def test_the_default_app_hash_is_the_identity_of_the_installed_code(state: Path) -> None:
    log = EgressLog.open(state, SITE)
    entry = log.append(run_id="r", round=1, task="evolution", kind="declined", payload=b'{"reason":"x"}')
    assert entry.app_hash == app_identity()


def test_app_identity_covers_every_py_file_path_and_byte(tmp_path: Path) -> None:
    import flame_private

    ident = app_identity()
    assert len(ident) == 64 and int(ident, 16) >= 0
    tree = tmp_path / "pkg"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.py").write_text("x = 1\n")
    (tree / "sub" / "b.py").write_text("y = 2\n")
    (tree / "notes.txt").write_text("not code")
    base = app_identity(tree)
    assert base == app_identity(tree)
    (tree / "notes.txt").write_text("changed")
    assert app_identity(tree) == base, "only .py files count"
    (tree / "sub" / "b.py").write_text("y = 3\n")
    assert app_identity(tree) != base
    (tree / "sub" / "b.py").write_text("y = 2\n")
    (tree / "sub" / "b.py").rename(tree / "b2.py")
    assert app_identity(tree) != base, "paths count"
    assert app_identity(Path(flame_private.__file__).parent) == ident


# --------------------------------------------------------------------------- refusals before anything is written


@pytest.mark.parametrize(("change", "message"), [
    ({"payload": b"other bytes"}, "do not describe this payload"),
    ({"round": 2}, "not 'run-1' round 2"),
    ({"envelope": None}, "needs its ciphertext envelope"),
    ({"envelope": {"kind": "update"}}, "invalid header field"),
    ({"kind": "metrics"}, "holds 'model' content, not what kind 'metrics' carries"),
    ({"kind": "declined"}, "carries no ciphertext envelope"),
])
def test_a_header_that_does_not_describe_the_message_is_refused_and_nothing_written(
        three: EgressLog, state: Path, change: dict, message: str) -> None:
    payload = b"\x01" * 64
    args = {"run_id": "run-1", "round": 1, "task": "response", "kind": "update", "payload": payload,
            "envelope": envelope_for(payload)}
    before = (state / "egress_log.jsonl").read_bytes()
    with pytest.raises(EgressLogError, match=message):
        three.append(**{**args, **change})
    assert (state / "egress_log.jsonl").read_bytes() == before
    assert not (state / "outbox" / outbox_name(4, args["kind"])).exists()
    assert not (state / "outbox" / outbox_name(4, change.get("kind", "update"))).exists()


def test_metrics_are_logged_under_their_own_kind(state: Path) -> None:
    log = EgressLog.open(state, SITE)
    payload = os.urandom(300)
    entry = log.append(run_id="run-1", round=1, task="evolution", kind="metrics", payload=payload,
                       envelope=envelope_for(payload, task="evolution", model="metrics:evolution"))
    assert entry.kind == "metrics" and (state / "outbox" / "000001-metrics.bin").read_bytes() == payload
    with pytest.raises(EgressLogError, match="holds 'metrics' content, not what kind 'update' carries"):
        log.append(run_id="run-1", round=1, task="evolution", kind="update", payload=payload,
                   envelope=envelope_for(payload, task="evolution", model="metrics:evolution"))


def test_a_read_only_log_refuses_to_record(three: EgressLog, state: Path) -> None:
    ro = EgressLog.open(state, SITE, readonly=True)
    assert len(ro) == 3
    with pytest.raises(EgressLogError, match="read-only"):
        send_declined(ro, 4)


# --------------------------------------------------------------------------- tamper evidence


def _lines(state: Path) -> list[bytes]:
    return (state / "egress_log.jsonl").read_bytes().splitlines(keepends=True)


def _write_lines(state: Path, lines: list[bytes]) -> None:
    (state / "egress_log.jsonl").write_bytes(b"".join(lines))


def test_changing_one_byte_of_an_entry_is_refused_naming_the_line(three: EgressLog, state: Path) -> None:
    lines = _lines(state)
    lines[1] = lines[1].replace(b'"round":2', b'"round":7')
    _write_lines(state, lines)
    with pytest.raises(EgressLogError, match=r"egress_log.jsonl, line 2: hash mismatch"):
        EgressLog.open(state, SITE)


def test_a_rehashed_edit_breaks_the_chain_at_the_next_line(three: EgressLog, state: Path) -> None:
    lines = _lines(state)
    fields = json.loads(lines[0])
    fields["byte_count"] = 1
    fields["hash"] = entry_hash(fields)
    lines[0] = (canonical_json(fields) + "\n").encode()
    _write_lines(state, lines)
    with pytest.raises(EgressLogError, match=r"line 2: prev_hash .* entries were removed, inserted or reordered"):
        EgressLog.open(state, SITE)


def test_a_non_canonical_rewrite_is_refused(three: EgressLog, state: Path) -> None:
    lines = _lines(state)
    lines[2] = (json.dumps(json.loads(lines[2]), sort_keys=True) + "\n").encode()  # same content, spaces added
    _write_lines(state, lines)
    with pytest.raises(EgressLogError, match="line 3: not in canonical form"):
        EgressLog.open(state, SITE)


def test_entries_cut_off_the_end_are_caught_by_the_head(three: EgressLog, state: Path) -> None:
    _write_lines(state, _lines(state)[:2])
    with pytest.raises(EgressLogError, match="holds 2 entries but its head records 3: entries were removed"):
        EgressLog.open(state, SITE)


def test_an_initialised_log_is_empty_with_its_head_and_is_never_initialised_twice(state: Path) -> None:
    assert (state / "egress_log.jsonl").read_bytes() == b""
    assert json.loads((state / "egress_log.head.json").read_text()) == {"count": 0, "last_hash": "0" * 64}
    assert len(EgressLog.open(state, SITE)) == 0
    with pytest.raises(EgressLogError, match="exists already"):
        EgressLog.initialise(state, SITE)


@pytest.mark.parametrize("readonly", [False, True], ids=["sending", "read-only"])
@pytest.mark.parametrize("remove", ["state", "egress_log.jsonl", "egress_log.head.json"])
def test_a_missing_log_head_or_state_is_refused_saying_where_and_what_to_do(state: Path, remove: str,
                                                                           readonly: bool) -> None:
    if remove == "state":
        shutil.rmtree(state)
    else:
        (state / remove).unlink()
    with pytest.raises(EgressLogError, match="missing") as caught:
        EgressLog.open(state, SITE, readonly=readonly)
    assert str(state) in str(caught.value) and "flame site init-state" in str(caught.value)
    assert "restore" in str(caught.value)


@pytest.mark.parametrize(("head", "message"), [
    (None, "missing, but the egress log holds 3 entries"),
    (b'{"count":3,"last_hash":"' + b"1" * 64 + b'"}\n', "entry 3 has hash .* but the head records 111111"),
    (b'{"count":1}\n', "not a valid head"),
])
def test_a_deleted_or_rewritten_head_is_refused(three: EgressLog, state: Path, head: bytes | None,
                                                message: str) -> None:
    path = state / "egress_log.head.json"
    if head is None:
        path.unlink()
    else:
        path.write_bytes(head)
    with pytest.raises(EgressLogError, match=message):
        EgressLog.open(state, SITE)


def test_another_sites_log_is_refused(three: EgressLog, state: Path) -> None:
    with pytest.raises(EgressLogError, match="line 1: entry is for site 'site-a'"):
        EgressLog.open(state, "site-b")


# --------------------------------------------------------------------------- what a crash leaves


def test_a_torn_final_line_was_never_sent_and_is_moved_aside(three: EgressLog, state: Path) -> None:
    with (state / "egress_log.jsonl").open("ab") as f:
        f.write(b'{"app_hash":"fab-test","byte_count":12')
    ro = EgressLog.open(state, SITE, readonly=True)
    assert len(ro) == 3 and "incomplete write" in ro.notices[0]
    assert (state / "egress_log.jsonl").read_bytes().endswith(b'"byte_count":12'), "read-only changes nothing"

    log = EgressLog.open(state, SITE)
    assert len(log) == 3 and "moved to egress_log.torn-" in log.notices[0]
    assert [p.read_bytes() for p in state.glob("egress_log.torn-*.txt")] == [b'{"app_hash":"fab-test","byte_count":12']
    assert send_declined(log, 4).seq == 4
    assert EgressLog.open(state, SITE).notices == []


def test_a_crash_between_line_and_head_keeps_the_entry_and_advances_the_head(three: EgressLog, state: Path) -> None:
    head = state / "egress_log.head.json"
    old_head = head.read_bytes()
    send_declined(three, 4)
    head.write_bytes(old_head)  # as if killed before the head was replaced

    ro = EgressLog.open(state, SITE, readonly=True)
    assert len(ro) == 4 and "head records 3 entries, the log holds 4" in ro.notices[0]
    assert head.read_bytes() == old_head
    log = EgressLog.open(state, SITE)
    assert len(log) == 4 and "head advanced from 3 to 4" in log.notices[0]
    assert json.loads(head.read_text())["count"] == 4


def test_a_complete_final_line_without_its_newline_is_kept(three: EgressLog, state: Path) -> None:
    path = state / "egress_log.jsonl"
    send_declined(three, 4)
    path.write_bytes(path.read_bytes()[:-1])
    log = EgressLog.open(state, SITE)
    assert len(log) == 4 and "lacked its final newline" in log.notices[0]
    assert path.read_bytes().endswith(b"}\n")


def test_a_payload_left_by_an_interrupted_append_is_replaced_by_the_next_one(three: EgressLog, state: Path) -> None:
    orphan = state / "outbox" / "000004-update.bin"
    orphan.write_bytes(b"prepared, never logged, never sent")
    payload = os.urandom(64)
    send_update(EgressLog.open(state, SITE), 4, payload)
    assert orphan.read_bytes() == payload


def test_two_handles_on_one_log_interleave_without_breaking_the_chain(state: Path) -> None:
    a, b = EgressLog.open(state, SITE), EgressLog.open(state, SITE)
    for r in range(1, 7):
        send_declined(a if r % 2 else b, r)
    log = EgressLog.open(state, SITE)
    assert [e.seq for e in log.entries] == [1, 2, 3, 4, 5, 6] and [e.round for e in log.entries] == list(range(1, 7))


# --------------------------------------------------------------------------- SIGKILL at random moments

ITERATIONS = 25
SEED = 20260107

HELPER = r"""
import hashlib, json, os, sys
from flame_private.records.egress import EgressLog
from flame_private.secure.public.envelope import CiphertextEnvelope

def say(text):  # one write(2) of a whole line: a SIGKILL cannot leave half of it in the pipe
    os.write(1, (text + "\n").encode())

state = sys.argv[1]
say("helper ready")
for command in sys.stdin:
    run = "crash-" + command.split()[1]
    pid = os.fork()
    if pid == 0:
        try:
            log = EgressLog.open(state, "site-a")
            k = 0
            while True:
                k += 1
                if k % 3:
                    payload = os.urandom(200_000 + k)
                    env = CiphertextEnvelope(kind="update", run_id=run, task="response", round=k, model="response",
                                             layout_sha256="0" * 64, n_params=100, n_chunks=1, slots_per_chunk=4096,
                                             he_fingerprint="ab" * 32,
                                             payload_sha256=hashlib.sha256(payload).hexdigest(), n_bytes=len(payload))
                    log.append(run_id=run, round=k, task="response", kind="update", payload=payload, envelope=env,
                               app_hash="fab-test")
                else:
                    log.append(run_id=run, round=k, task="response", kind="declined",
                               payload=json.dumps({"reason": "test"}).encode(), app_hash="fab-test")
                say(f"sent {k}")
        except BaseException as exc:
            say(f"writer failed: {exc!r}")
        finally:
            os._exit(1)
    say(f"writer {pid}")
    os.waitpid(pid, 0)
    say("reaped")
"""


def _payloads_match(log: EgressLog) -> None:
    for e in log.entries:
        data = log.payload_path(e).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e.byte_count, e.payload_sha256), e.seq


@pytest.mark.slow  # about 5 s
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_at_random_moments_never_loses_a_logged_message_or_its_payload(tmp_path: Path) -> None:
    state = tmp_path / "state"
    EgressLog.initialise(state, SITE)
    sent_total, entries_before = 0, 0
    kills = killed_writers(HELPER, state, tmp_path / "helper.stderr", ITERATIONS, SEED, 0.2, reported="sent ")
    with contextlib.closing(kills):
        for i, sent in enumerate(kills):
            log = EgressLog.open(state, SITE)  # verifies the chain and the head; repairs what a crash leaves
            assert len(log) >= entries_before + sent, f"iteration {i}: a message reported as logged was lost"
            assert len(log) <= entries_before + sent + 1, f"iteration {i}: more than one unreported entry"
            _payloads_match(log)  # the payload is on disk before its line
            sent_total += sent
            entries_before = len(log)
    final = EgressLog.open(state, SITE, readonly=True)
    assert final.notices == []
    assert len(final) >= sent_total > ITERATIONS // 2


def test_a_node_records_its_declared_transport_or_what_its_config_shows() -> None:
    from flwr.app import Context, RecordDict

    from flame_private.federation.site.client_app import _transport

    def node(**config: object) -> Context:
        return Context(run_id=1, node_id=1, node_config=config, state=RecordDict(), run_config={})  # type: ignore

    assert _transport(node(**{"partition-id": 0, "num-partitions": 3})) == "simulation"
    assert _transport(node(**{"site-config": "/srv/site.yaml"})) == "supernode"  # TLS not declared: not claimed
    assert _transport(node(**{"site-config": "/srv/site.yaml", "transport": "supernode-tls"})) == "supernode-tls"
    with pytest.raises(ValueError, match="transport='tls'"):
        _transport(node(**{"site-config": "/srv/site.yaml", "transport": "tls"}))
