"""Ethics-committee and consortium reports, made from a small real federation.

Four sites train both models for two rounds (DP-SGD, CKKS, the real server and
site code); site-d's committee approved a small budget, so it takes part in
round 1 and declines round 2.  Two attack results are given as evidence.

Specification (reports/, docs/reports.md):

* every epsilon in the report is the ledger's, and replaying the ledger with
  the Opacus accountant gives the same numbers;
* the chain heads (count and hash) of the ledger and the egress log are in the
  report, verified;
* "what left the site" is the egress log's count by kind, its bytes, and
  whether every update and metrics message was a ciphertext;
* each attack is shown with its summary, arms, verdict and figures; with no
  attack results the report says plainly that none were run;
* HTML and PDF say the same thing; French reports are in French;
* the consortium overview shows each site's spend against its cap, the rounds
  it took part in and the rounds it declined, with the reason its egress log
  recorded;
* bad input gives exit status 3 (2 for a value not among an option's choices), an error naming the file,
  and no report.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_harness import (
    Federation,
    build_federation,
    gradient_inversion,
    html_text,
    membership_inference,
    pdf_images,
    pdf_text,
    write_attacks,
)
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.privacy import Ledger
from flame_private.privacy.accounting import epsilon_for
from flame_private.records.egress import EgressLog
from flame_private.reports import (
    build_consortium_report,
    build_ethics_report,
    consortium_document,
    ethics_document,
)
from flame_private.reports.meaning import max_true_positive_rate, per_hundred
from flame_private.reports.output import render

WIDE = {"COLUMNS": "200"}
LANGS = ("en", "fr")
FORMATS = ("html", "pdf")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, cohort_dir: Path) -> Federation:
    return build_federation(tmp_path_factory.mktemp("fed"), cohort_dir, n_sites=4, rounds=2, caps={"site-d": 7.5})


@pytest.fixture(scope="module")
def attacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_attacks(tmp_path_factory.mktemp("attacks") / "attacks", gradient_inversion(), membership_inference())


@pytest.fixture(scope="module")
def facts(fed: Federation, attacks: Path):
    return build_ethics_report(fed.sites["site-a"], attacks_dir=attacks, study="GBM-FL pilot")


@pytest.fixture(scope="module")
def ethics(facts) -> dict[tuple[str, str], bytes]:
    """The site-a report rendered in both languages and both formats."""
    return {(lang, fmt): render(ethics_document(facts, lang), fmt) for lang in LANGS for fmt in FORMATS}


def text(rendered: dict[tuple[str, str], bytes], lang: str, fmt: str) -> str:
    data = rendered[(lang, fmt)]
    return pdf_text(data) if fmt == "pdf" else html_text(data)


@pytest.fixture(scope="module")
def consortium(fed: Federation):
    return build_consortium_report(list(fed.sites.values()))


# --------------------------------------------------------------------------- the facts


def test_every_epsilon_is_the_ledgers_and_replaying_the_ledger_agrees(fed: Federation, facts) -> None:
    ledger = Ledger.open(fed.state("site-a"), "site-a", readonly=True)
    assert len(ledger) == 6  # 2 rounds x 2 models, and the final evaluation of each model
    assert [r.epsilon_after for r in facts.spend.rows] == [e.epsilon_after for e in ledger.entries]
    assert all(math.isclose(r.epsilon_replayed, r.epsilon_after, rel_tol=1e-9) for r in facts.spend.rows)
    assert facts.spend.replay_agrees and facts.spend.verified
    assert facts.spend.spent == pytest.approx(epsilon_for(ledger.history(), 1e-5, "prv"), rel=1e-12)
    assert [r.purpose for r in facts.spend.rows] == ["training"] * 3 + ["evaluation", "training", "evaluation"]
    assert all(r.sent for r in facts.spend.rows)
    by_model = {(m.task, m.purpose): (m.releases, m.steps) for m in facts.spend.mechanisms}
    assert by_model[("response", "training")][0] == 2 and by_model[("evolution", "evaluation")] == (1, 1)


def test_the_chain_heads_are_those_of_the_ledger_and_the_egress_log(fed: Federation, facts) -> None:
    ledger = Ledger.open(fed.state("site-a"), "site-a", readonly=True)
    egress = EgressLog.open(fed.state("site-a"), "site-a", readonly=True)
    assert (facts.chain("ledger").count, facts.chain("ledger").hash) == (len(ledger), ledger.head_hash)
    assert (facts.chain("egress").count, facts.chain("egress").hash) == (len(egress), egress.head_hash)
    assert facts.chain("ledger").verified and facts.chain("egress").verified


def test_what_left_the_site_is_the_egress_log(fed: Federation, facts) -> None:
    egress = EgressLog.open(fed.state("site-a"), "site-a", readonly=True)
    assert facts.egress.messages_by_kind == {"update": 4, "metrics": 2, "declined": 0, "finished": 2}
    assert facts.egress.total_bytes == sum(e.byte_count for e in egress.entries)
    assert facts.egress.all_ciphertexts is True and facts.egress.verified
    [row_e, row_r] = sorted(facts.egress.participation, key=lambda p: p.task)
    assert (row_e.task, row_e.rounds_sent, row_r.rounds_sent) == ("evolution", [1, 2], [1, 2])


def test_a_clean_site_with_protective_attacks_gets_a_clean_verdict(facts) -> None:
    assert facts.verdict.level == "ok", facts.verdict
    assert [a.result.passed for a in facts.attacks] == [True, True]


# --------------------------------------------------------------------------- what the reader sees


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_the_report_shows_every_ledger_epsilon_and_both_chain_heads(ethics, facts, lang: str, fmt: str) -> None:
    body = text(ethics, lang, fmt)
    for row in facts.spend.rows:
        shown = f"{row.epsilon_after:.3f}"
        assert (shown.replace(".", ",") if lang == "fr" else shown) in body
    for chain in facts.chains:
        assert chain.hash in body
    assert "site-a" in body and "GBM-FL pilot" in body and "T-site-a" in body  # identity, approval reference


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_meaning_of_epsilon_is_one_concrete_sentence(ethics, facts, fmt: str) -> None:
    x = per_hundred(max_true_positive_rate(facts.spend.spent, 1e-5, 0.01))
    shown = f"{x:.0f}" if x == int(x) else f"{x:.1f}"
    assert (f"an attacker who wrongly accuses at most 1 in 100 non-participants of having been in the study can "
            f"correctly identify at most {shown} in 100 participants") in text(ethics, "en", fmt)
    assert f"peut identifier correctement au plus {shown.replace('.', ',')} participants sur 100" in \
        text(ethics, "fr", fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_french_report_is_in_french(ethics, fmt: str) -> None:
    body = text(ethics, "fr", fmt)
    for phrase in ("Rapport sur le budget de confidentialité", "Le budget de confidentialité approuvé",
                   "Ce qui a quitté le site", "Ce qui n'a jamais quitté le site", "Le modèle de menace et ses limites",
                   "Tous les sites partagent une même clé de chiffrement", "Intégrité des registres", "Approbation",
                   "Conclusion : les registres sont vérifiés", "le patient"):
        assert phrase in body, phrase
    for english in ("What left the site", "Stated limits", "Sign-off", "Verdict:"):
        assert english not in body, english
    assert "page 1 sur" in body if fmt == "pdf" else '<html lang="fr">' in ethics[("fr", "html")].decode()


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_english_report_states_the_threat_model_and_its_limits(ethics, fmt: str) -> None:
    body = text(ethics, "en", fmt)
    for phrase in ("All sites share one encryption key", "With only 2 sites", "at least 3 contributing sites",
                   "no defence against a site that deliberately sends a harmful (poisoned) update",
                   "send one site's encrypted update back", "MRI scans (T1, T1ce, T2, FLAIR)",
                   "Only encrypted model data left the site", "Verdict: the records verify"):
        assert phrase in body, phrase


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_attack_is_shown_with_its_arms_verdict_and_figures(ethics, fmt: str) -> None:
    body = text(ethics, "en", fmt)
    for phrase in ("Gradient inversion of one site's update", "A curious server tries to rebuild",
                   "no DP, plaintext update", "DP-SGD + CKKS", "ssim = 0.910", "Membership inference on the published",
                   "tpr_at_1pct_fpr = 0.012", "Protection held", "inversion-panel.png"):
        assert phrase in body, phrase
    data = ethics[("en", fmt)]
    if fmt == "pdf":
        assert pdf_images(data) >= 2  # the spend plot and the attack's panel
    else:
        assert data.count(b"data:image/png;base64,") >= 2 and b"<img" in data and b"src=\"http" not in data


def test_without_attack_results_the_report_says_none_were_run(fed: Federation, tmp_path: Path) -> None:
    facts = build_ethics_report(fed.sites["site-b"])
    assert facts.attacks == [] and facts.verdict.level == "ok"
    assert "No attack simulation was run for this report" in html_text(render(ethics_document(facts, "en"), "html"))
    empty = tmp_path / "attacks"
    empty.mkdir()
    facts = build_ethics_report(fed.sites["site-b"], attacks_dir=empty)
    body = pdf_text(render(ethics_document(facts, "fr"), "pdf"))
    assert f"Aucun résultat d'attaque n'a été trouvé dans {empty}" in body
    assert "Aucune simulation d'attaque n'a été réalisée" in body


def test_an_attack_the_protection_did_not_stop_fails_the_verdict(fed: Federation, tmp_path: Path) -> None:
    folder = write_attacks(tmp_path / "attacks", gradient_inversion(protection_held=False, figure=None))
    facts = build_ethics_report(fed.sites["site-b"], attacks_dir=folder)
    assert facts.verdict.level == "fail"
    assert [r.code for r in facts.verdict.reasons] == ["attack_failed"]
    body = html_text(render(ethics_document(facts, "en"), "html"))
    assert "VERDICT: PROBLEM FOUND" in body and "PROTECTION DID NOT HOLD" in body


def test_a_figure_the_result_names_but_that_is_missing_is_noted(fed: Federation, tmp_path: Path) -> None:
    folder = write_attacks(tmp_path / "attacks", gradient_inversion())
    (folder / "inversion-panel.png").unlink()
    facts = build_ethics_report(fed.sites["site-b"], attacks_dir=folder)
    assert "Figure inversion-panel.png is named by the result but missing" in \
        html_text(render(ethics_document(facts, "en"), "html"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_report_states_how_the_messages_actually_travelled(ethics, facts, fmt: str) -> None:
    assert facts.egress.transports == {"in-process": 8}  # this federation ran in one process: no network
    en, fr = text(ethics, "en", fmt), text(ethics, "fr", fmt)
    assert "in one process, for a test or an attack simulation (no network, so no TLS): 8 messages" in en
    assert "How this site's messages travelled to the server, as its egress log records it" in en
    assert "travel inside TLS." not in en and "travelled inside TLS" not in en
    assert "dans un seul processus, pour un test ou une simulation d'attaque (pas de réseau, donc pas de TLS)" in fr


def test_transport_in_words_for_each_recorded_way_and_for_old_records() -> None:
    from flame_private.reports.ethics_safeguards import transport_text

    assert transport_text({"supernode-tls": 3}, "en") == ("over the network through the site's Flower SuperNode, "
                                                          "inside TLS (as declared in its configuration): 3 messages")
    assert transport_text({"simulation": 1, "not-recorded": 2}, "en") == (
        "Flower simulation on one machine (no network, so no TLS): 1 message; not recorded (logged before the "
        "transport was recorded): 2 messages")
    assert transport_text({}, "fr") == "rien n'a été envoyé"


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_report_states_the_patients_the_budget_covers_and_delta_against_one_over_n(
        fed: Federation, ethics, facts, fmt: str) -> None:
    egress = EgressLog.open(fed.state("site-a"), "site-a", readonly=True)
    train = {e.patients for e in egress.entries if e.kind == "update"}
    val = {e.patients for e in egress.entries if e.kind == "metrics"}
    assert len(train) == len(val) == 1 and None not in train | val  # recorded with every release
    n = max(train) + max(val)
    assert facts.egress.patients == n
    ratio = round(1 / (n * 1e-5)) if math.isclose(1 / (n * 1e-5), round(1 / (n * 1e-5))) else \
        math.floor(1 / (n * 1e-5))
    assert (f"delta = 10⁻⁵, 1/n = 1/{n}: delta is {ratio:,} times smaller than 1/n." in text(ethics, "en", fmt))
    assert f"({max(train)} training, {max(val)} validation)" in text(ethics, "en", fmt)
    shown = f"{ratio:,}".replace(",", " ")
    assert f"delta = 10⁻⁵, 1/n = 1/{n} : delta est {shown} fois plus petit que 1/n." in text(ethics, "fr", fmt)


def test_without_a_recorded_patient_count_the_report_says_so(facts) -> None:
    old = facts.model_copy(update={"egress": facts.egress.model_copy(update={"training_patients": [],
                                                                           "validation_patients": []})})
    body = html_text(render(ethics_document(old, "en"), "html"))
    assert "The number of patients is not recorded in this site's egress log" in body and "1/n = 1/" not in body
    assert "not recorded in the egress log" in body  # at a glance
    assert "n'est pas enregistré dans le journal des envois" in pdf_text(render(ethics_document(old, "fr"), "pdf"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_chain_heads_are_read_aloud_fingerprints_with_the_full_hash_machine_readable(ethics, facts, fmt) -> None:
    from flame_private.reports.i18n import grouped

    for lang in LANGS:
        body = text(ethics, lang, fmt)
        for chain in facts.chains:
            fingerprint = grouped(chain.hash)
            assert fingerprint == " ".join(chain.hash[i:i + 4] for i in range(0, 20, 4))
            assert fingerprint in body
            name = "privacy_ledger" if chain.record == "ledger" else "egress_log"
            assert f"{name} entries={chain.count} sha256={chain.hash}" in body
    ledger, egress = facts.chain("ledger"), facts.chain("egress")
    data = ethics[("en", fmt)]
    if fmt == "html":
        assert f'<meta name="flame:privacy-ledger-head" content="{ledger.count}:{ledger.hash}">'.encode() in data
        assert f'<meta name="flame:egress-log-head" content="{egress.count}:{egress.hash}">'.encode() in data
    else:
        import io

        import pypdf

        keywords = pypdf.PdfReader(io.BytesIO(data)).metadata["/Keywords"]
        assert f"flame:privacy-ledger-head={ledger.count}:{ledger.hash}" in keywords
        assert f"flame:egress-log-head={egress.count}:{egress.hash}" in keywords


def test_without_attack_evidence_the_report_says_formal_guarantee_only(fed: Federation, ethics) -> None:
    plain = build_ethics_report(fed.sites["site-b"])
    for fmt in FORMATS:
        en = text({("en", fmt): render(ethics_document(plain, "en"), fmt)}, "en", fmt)
        fr = text({("fr", fmt): render(ethics_document(plain, "fr"), fmt)}, "fr", fmt)
        assert "none attached: formal guarantee only" in en and "Formal guarantee only: no attack-simulation" in en
        assert "aucune jointe : garantie formelle uniquement" in fr and "Garantie formelle uniquement" in fr
        assert "formal guarantee only" not in text(ethics, "en", fmt).lower()  # site-a has attack evidence


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_the_words_read_as_a_person_writes_them(ethics, consortium, lang: str, fmt: str) -> None:
    docs = [text(ethics, lang, fmt), text({(lang, fmt): render(consortium_document(consortium, lang), fmt)}, lang,
                                          fmt)]
    for body in docs:
        assert "site site-" not in body and "site(s)" not in body and "(nt)" not in body
        assert "publication" not in body.lower() or lang == "en"
    cons = docs[1]
    assert ("of 4 sites." if lang == "en" else "de 4 sites.") in cons


# --------------------------------------------------------------------------- the consortium


def test_the_consortium_counts_rounds_taken_part_in_and_refusals(fed: Federation, consortium) -> None:
    lines = {s.site_id: s for s in consortium.sites}
    assert [s.site_id for s in consortium.sites] == ["site-a", "site-b", "site-c", "site-d"]
    assert {s: (x.rounds_taken_part, x.rounds_declined) for s, x in lines.items()} == {
        "site-a": (4, 0), "site-b": (4, 0), "site-c": (4, 0), "site-d": (2, 2)}
    d = lines["site-d"]
    # Round 1 trained both models; in round 2 training would pass the cap but the cheaper evaluation did not.
    assert d.spent is not None and d.spent <= d.epsilon_cap == 7.5 and d.releases == 4
    # Every refusal the server saw is on the site's own record, with its reason.
    server_declined = sum(1 for r in fed.summary["rounds"] if "site-d" in r.get("declined", {}))
    assert len(d.declined) == server_declined == 2 and {x.round for x in d.declined} == {2}
    assert all("above the approved cap of 7.50" in x.reason for x in d.declined)
    assert consortium.level == "ok"


@pytest.mark.parametrize("lang", LANGS)
def test_the_consortium_gives_the_last_day_each_policy_applies(consortium, lang: str) -> None:
    from datetime import timedelta

    from flame_private.reports.i18n import day

    body = html_text(render(consortium_document(consortium, lang), "html"))
    for s in consortium.sites:  # expires_on is the first day the policy no longer applies
        assert day(s.expires_on - timedelta(days=1), lang) in body
        assert day(s.expires_on, lang) not in body
    assert ("Policy applies until (last day, inclusive)" if lang == "en"
            else "Politique en vigueur jusqu'au (inclus)") in body


@pytest.mark.parametrize("lang", LANGS)
def test_the_consortium_overview_shows_each_sites_spend_against_its_cap(consortium, lang: str) -> None:
    pdf, html = (render(consortium_document(consortium, lang), fmt) for fmt in ("pdf", "html"))
    for body in (pdf_text(pdf), html_text(html)):
        for s in consortium.sites:
            sep = "," if lang == "fr" else "."
            assert f"{s.spent:.2f} / {s.epsilon_cap:.2f}".replace(".", sep) in body
            assert s.ledger.hash in body and s.egress.hash in body
        assert "above the approved cap of 7.50" in body  # site-d's reason, as the site recorded it
        assert ("Refus de participer" if lang == "fr" else "Refusals to take part") in body
    assert pdf_text(pdf).count("page 1 of" if lang == "en" else "page 1 sur") == 1


# --------------------------------------------------------------------------- the command


def test_flame_report_ethics_writes_the_report_and_exits_0(fed: Federation, attacks: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "ethics-site-c.pdf"
    result = CliRunner().invoke(app, ["report", "ethics", "--site", str(fed.sites["site-c"]), "--lang", "fr",
                                      "--out", str(out), "--attack-results", str(attacks),
                                      "--he-params", str(fed.keys / "server-params.ctx")], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "verdict: ok" in result.output
    body = pdf_text(out)
    assert "Rapport sur le budget de confidentialité" in body and "site-c" in body
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind


def test_flame_report_consortium_takes_the_sites_after_one_option(fed: Federation, tmp_path: Path) -> None:
    out = tmp_path / "consortium.html"
    result = CliRunner().invoke(app, ["report", "consortium", "--sites", str(fed.sites["site-a"]),
                                      str(fed.sites["site-d"]), "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    body = html_text(out.read_bytes())
    assert "site-a" in body and "site-d" in body and "site-b" not in body


@pytest.mark.parametrize("case", ["no site file", "no policy", "unreadable ledger", "no attacks folder",
                                  "not an attack result", "unknown format", "unknown language", "site twice"])
def test_bad_input_exits_2_naming_the_file_and_writes_nothing(fed: Federation, tmp_path: Path, case: str) -> None:
    import yaml

    site = fed.sites["site-b"]
    out = tmp_path / "report.pdf"
    args = ["report", "ethics", "--site", str(site), "--out", str(out)]
    if case == "no site file":
        args[3], named = str(tmp_path / "missing.yaml"), "missing.yaml: file not found"
    elif case in ("no policy", "unreadable ledger"):
        cfg = yaml.safe_load(site.read_text())
        if case == "no policy":
            cfg["privacy_policy"] = str(tmp_path / "gone.yaml")
            named = "gone.yaml: file not found"
        else:
            cfg["state_dir"] = str(tmp_path / "state")
            (tmp_path / "state" / "privacy_ledger.jsonl").mkdir(parents=True)  # a folder where the file should be
            named = "privacy_ledger.jsonl: cannot read"
        args[3] = str(tmp_path / "site.yaml")
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(cfg))
    elif case == "no attacks folder":
        args += ["--attack-results", str(tmp_path / "nowhere")]
        named = "nowhere: attack results folder not found"
    elif case == "not an attack result":
        (tmp_path / "attacks").mkdir()
        (tmp_path / "attacks" / "notes.json").write_text('{"attack": "rumour"}')
        args += ["--attack-results", str(tmp_path / "attacks")]
        named = "notes.json: not a valid attack result"
    elif case == "unknown format":
        args[5], named = str(tmp_path / "report.docx"), "cannot tell the format from the file name"
        out = tmp_path / "report.docx"
    elif case == "unknown language":
        args += ["--lang", "de"]
        named = "'de' is not one of 'en', 'fr'"
    else:
        args = ["report", "consortium", "--sites", str(site), str(site), "--out", str(out)]
        named = "site 'site-b' is already given by"
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exit_code == (2 if case == "unknown language" else 3), result.output
    assert named in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_the_reports_never_import_key_handling() -> None:
    import subprocess
    import sys

    code = ("import sys; import flame_private.reports, flame_private.reports.cli, flame_private.reports.bundle, "
            "flame_private.reports.pdf, flame_private.reports.html; "
            "print(sorted(m for m in sys.modules if m.startswith('flame_private.secure.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "flame_private.secure.site" not in out, out
