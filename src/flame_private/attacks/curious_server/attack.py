"""The curious-server attack: run the recorded federation, try the four checks, score each against its control."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flame_private.attacks.curious_server.decryption import decryption_check
from flame_private.attacks.curious_server.distinguisher import distinguisher_check
from flame_private.attacks.curious_server.key_search import (
    key_signature,
    probe_server_process,
    scan_files,
)
from flame_private.attacks.curious_server.plaintext_scan import (
    plaintext_fedavg_items,
    run_scan,
    scan_targets,
)
from flame_private.attacks.curious_server.recorded_federation import (
    build_federation,
    run_recorded,
    server_files,
)
from flame_private.attacks.curious_server.settings import (
    CORRELATION_FOUND,
    DECRYPT_CORRELATION,
    DECRYPT_REL_ERROR,
    EXACT_FOUND,
    KEY_HOLDER_MAX_ERROR,
    SIZES,
    WORK_NAME,
    CuriousServerSettings,
)
from flame_private.attacks.result import AttackArm, AttackResult
from flame_private.config import FederationConfig, load_config
from flame_private.secure.public.context_file import load_params_context
from flame_private.secure.public.params import he_summary
from flame_private.secure.site.keys import load_secret_context

log = logging.getLogger(__name__)


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t, 2)
    log.info("curious server: %s done in %.1f s", name, timings[name])
    return out


def run_curious_server(out_dir: Path, size: str = "ci", seed: int = 0) -> AttackResult:
    """Run the federation, let the server try everything it can, and score each try against its control.

    Working files go to ``out_dir/curious-server-work`` (replaced on each run,
    but for the synthetic cohort, which is reused when its config is unchanged).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    settings = SIZES[size]
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    fed = _timed(timings, "setup", lambda: build_federation(Path(out_dir) / WORK_NAME, settings, seed))
    received, summary = _timed(timings, "federation", lambda: run_recorded(fed))
    plains = [r.plain for r in received if r.plain is not None]
    params = load_params_context(fed.server_params)
    secrets = {sid: load_secret_context(d / "secret.ctx") for sid, d in fed.site_dirs.items()}
    first_site = next(iter(fed.site_dirs))
    site_dir = fed.site_dirs[first_site]

    targets = scan_targets(plains, settings.templates_per_tensor_set)
    held = [(str(p.relative_to(fed.server_dir)), p.read_bytes()) for p in server_files(fed)]
    scans = {"he": _timed(timings, "scan: as deployed", lambda: run_scan(targets, held)),
             "plain": _timed(timings, "scan: plaintext FedAvg",
                             lambda: run_scan(targets, plaintext_fedavg_items(plains)))}
    dec = _timed(timings, "decryption", lambda: decryption_check(fed, received, params, secrets[first_site]))
    sig = key_signature(secrets[first_site], site_dir / "secret.ctx")
    keys = {"disk": scan_files(server_files(fed), sig),
            "disk_control": scan_files(sorted(p for p in site_dir.rglob("*") if p.is_file()), sig),
            "probe": _timed(timings, "memory: server process", lambda: probe_server_process(fed, sig)),
            "probe_control": _timed(timings, "memory: with the secret context",
                                    lambda: probe_server_process(fed, sig, site_dir / "secret.ctx"))}
    dist = _timed(timings, "distinguisher", lambda: distinguisher_check(received, params, secrets, settings, seed))

    findings = {
        "plaintext found in payloads or server files": bool(scans["he"]["exposed"]),
        "a ciphertext failed to parse under the params-only context": dec["valid"] != dec["ciphertexts"],
        "the params-only context allowed decryption": not dec["params_only_refused"] or dec["server_has_key_field"],
        "a server file loads as a secret key": bool(dec["server_files_loading_as_key"]),
        "a fresh key's decryption correlates with the truth": abs(dec["fresh_corr"]) >= DECRYPT_CORRELATION,
        "a fresh key's decryption is close to the truth": dec["fresh_min_rel_error"] < DECRYPT_REL_ERROR,
        "the secret key is in the server's memory": keys["probe"]["memory"]["hits"] > 0,
        "the secret key is on the server's disk": keys["disk"] > 0,
        "the server side imported key handling": bool(keys["probe"]["key_modules_server_side"]),
        "the distinguisher beats chance": dist["ciphertext"]["succeeded"],
    }
    broken = [k for k, v in findings.items() if v]
    sizes: dict[tuple[str, int, str], set[int]] = defaultdict(set)
    for r in received:
        if r.plain is not None and r.payload is not None:
            sizes[(r.plain.task, r.plain.round, r.plain.model)].add(len(r.payload))
    # zstd packs each ciphertext's uniformly random residues into a few bytes more or less (~0.1 %), whatever
    # they encrypt: sizes within a step may differ by that much, never by what the plaintext is.
    size_spread = max(((max(v) - min(v)) / max(v) for v in sizes.values() if v), default=0.0)
    fed_cfg = load_config(fed.fed_yaml, FederationConfig)
    seconds = time.perf_counter() - t0
    result = AttackResult(
        attack="curious-server", title="Curious aggregation server",
        summary=_summary(len(fed.site_yamls), settings, scans, dec, keys, dist, broken),
        seed=seed, size=size, seconds=round(seconds, 1),
        settings={**asdict(settings), "sites": len(fed.site_yamls),
                  "patients_counted": {p.site_id: p.count for p in plains if not p.is_metrics},
                  "he": he_summary(fed_cfg.he), "dp_noise_multiplier": fed_cfg.dp.noise_multiplier,
                  "task_rounds_completed": len(summary["rounds"]), "replies_recorded": len(received),
                  "server_files": [name for name, _ in held],
                  "thresholds": {"correlation_found": CORRELATION_FOUND, "exact_fraction_found": EXACT_FOUND,
                                 "decryption_correlation": DECRYPT_CORRELATION,
                                 "decryption_relative_error": DECRYPT_REL_ERROR,
                                 "key_holder_max_error": KEY_HOLDER_MAX_ERROR},
                  "findings_as_deployed": findings,
                  "ciphertexts_rejected": dec["invalid"],
                  "server_process_loaded": keys["probe"]["loaded"],
                  "scan_as_deployed": scans["he"]["rows"], "scan_plaintext": scans["plain"]["rows"],
                  "timings_s": timings},
        arms=_arms(scans, dec, keys, dist, broken, size_spread))
    log.info("curious server (%s): control ok %s, protection held %s, %.0f s", size, result.positive_control_ok,
             result.protection_held, seconds)
    return result


def _arms(scans: dict[str, dict[str, Any]], dec: dict[str, Any], keys: dict[str, Any], dist: dict[str, Any],
          broken: list[str], size_spread: float) -> list[AttackArm]:
    plain, he = scans["plain"], scans["he"]
    n_sources = len(plain["sources"])
    probe, probe_ctl = keys["probe"], keys["probe_control"]
    c, p = dist["ciphertext"], dist["plaintext"]
    return [
        AttackArm(
            name="plaintext FedAvg: payload scan", protection="none", is_control=True,
            attack_succeeded=n_sources > 0 and len(plain["exposed"]) == n_sources,
            metrics={"secrets": n_sources, "secrets_found": len(plain["exposed"]),
                     "max_correlation": round(plain["max_correlation"], 6),
                     "max_exact_fraction": round(plain["max_exact_fraction"], 6),
                     "min_exact_chance_p": plain["min_exact_chance_p"],
                     "payloads_scanned": plain["items"], "bytes_scanned": plain["bytes"]},
            detail=(f"The scan finds {len(plain['exposed'])} of {n_sources} secrets (each site's weights and metric "
                    f"sums, each global model and metric total) in what plaintext FedAvg would carry and keep "
                    f"(best correlation {plain['max_correlation']:.3f}).")),
        AttackArm(
            name="plaintext FedAvg: site distinguisher", protection="none", is_control=True,
            attack_succeeded=p["succeeded"],
            metrics={"accuracy": round(p["accuracy"], 4), "ci_low": round(p["ci_low"], 4),
                     "ci_high": round(p["ci_high"], 4), "samples": p["samples"], "sites": " vs ".join(dist["sites"])},
            detail=(f"On unencrypted packed updates the classifier tells {dist['sites'][0]} from {dist['sites'][1]} "
                    f"with accuracy {p['accuracy']:.3f}.")),
        AttackArm(
            name="site's secret key: decryption", protection="none", is_control=True,
            attack_succeeded=(dec["valid"] == dec["ciphertexts"] > 0 and dec["key_max_error"] <= KEY_HOLDER_MAX_ERROR
                              and dec["key_corr"] >= 0.999 and bool(dec["site_files_loading_as_key"])),
            metrics={"ciphertexts": dec["ciphertexts"], "max_abs_error": dec["key_max_error"],
                     "correlation": round(dec["key_corr"], 9),
                     "site_files_loading_as_key": len(dec["site_files_loading_as_key"])},
            detail=(f"With the site's key every ciphertext decrypts to the true values (largest error "
                    f"{dec['key_max_error']:.1e}), and trying a site's files as keys finds its secret context.")),
        AttackArm(
            name="secret context loaded in the server process", protection="none", is_control=True,
            attack_succeeded=probe_ctl["memory"]["hits"] > 0 and keys["disk_control"] > 0,
            metrics={"memory_key_hits": probe_ctl["memory"]["hits"],
                     "memory_bytes_scanned": probe_ctl["memory"]["bytes_scanned"],
                     "disk_key_hits": keys["disk_control"],
                     "key_modules_imported": ",".join(probe_ctl["key_modules_at_scan"]) or "none"},
            detail=("The same memory scan, in a server process that also loads the site's secret context, finds "
                    f"the key ({probe_ctl['memory']['hits']} hit(s)); the same file scan finds it in the site's "
                    f"folder ({keys['disk_control']} hit(s)).")),
        AttackArm(
            name="CKKS as deployed", protection="he", is_control=False, attack_succeeded=bool(broken),
            metrics={"secrets_found": len(he["exposed"]), "max_correlation": round(he["max_correlation"], 6),
                     "max_exact_fraction": round(he["max_exact_fraction"], 6),
                     "min_exact_chance_p": he["min_exact_chance_p"],
                     "payloads_scanned": he["items"], "bytes_scanned": he["bytes"],
                     "ciphertexts_valid": dec["valid"], "ciphertexts": dec["ciphertexts"],
                     "params_only_decryption_refused": dec["params_only_refused"],
                     "server_files_loading_as_key": len(dec["server_files_loading_as_key"]),
                     "fresh_key_correlation": round(dec["fresh_corr"], 6),
                     "fresh_key_min_relative_error": float(f"{dec['fresh_min_rel_error']:.4g}"),
                     "memory_key_hits": probe["memory"]["hits"],
                     "memory_bytes_scanned": probe["memory"]["bytes_scanned"], "disk_key_hits": keys["disk"],
                     "key_modules_imported": ",".join(probe["key_modules_server_side"]) or "none",
                     "distinguisher_accuracy": round(c["accuracy"], 4), "distinguisher_ci_low": round(c["ci_low"], 4),
                     "distinguisher_ci_high": round(c["ci_high"], 4), "distinguisher_samples": c["samples"],
                     "payload_size_spread_per_step": round(size_spread, 5)},
            detail=(("Nothing found: " if not broken else "Found: " + "; ".join(broken) + ". ")
                    + f"best correlation with any secret {he['max_correlation']:.3f}, fresh-key decryption "
                    f"correlation {dec['fresh_corr']:.4f}, {probe['memory']['hits']} key hits in "
                    f"{probe['memory']['bytes_scanned'] / 2**20:.0f} MiB of server memory, distinguisher "
                    f"accuracy {c['accuracy']:.3f}.")),
    ]


def _summary(n_sites: int, s: CuriousServerSettings, scans: dict[str, dict[str, Any]], dec: dict[str, Any],
             keys: dict[str, Any], dist: dict[str, Any], broken: list[str]) -> str:
    c, p = dist["ciphertext"], dist["plaintext"]
    plain, he = scans["plain"], scans["he"]
    probe, probe_ctl = keys["probe"], keys["probe_control"]
    verdict = ("In every check the server learned nothing from the content of what it handled."
               if not broken else "WARNING: the server learned something: " + "; ".join(broken) + ".")
    return (
        f"We ran a real federation of {n_sites} simulated hospitals (synthetic patients, {len(s.tasks)} model(s), "
        f"{s.rounds} round(s), DP-SGD and CKKS encryption as deployed) and recorded every byte the aggregation "
        f"server received and every file it kept. A curious server then tried four things, each first shown "
        f"to work with the protection off. (1) Searching those bytes for the hospitals' model weights and metric "
        f"sums: on what unencrypted FedAvg would carry, the search finds {len(plain['exposed'])} of "
        f"{len(plain['sources'])} (correlation {plain['max_correlation']:.2f}); as deployed it finds "
        f"{len(he['exposed'])} (best correlation {he['max_correlation']:.2f}). (2) Decrypting: all {dec['valid']} "
        f"ciphertexts are valid, nothing the server holds can decrypt them, and a key it makes itself gives "
        f"values unrelated to the truth (correlation {dec['fresh_corr']:.3f}), while the hospitals' key "
        f"recovers them to within {dec['key_max_error']:.0e}. (3) Looking for the secret key: no trace in "
        f"{probe['memory']['bytes_scanned'] / 2**20:.0f} MiB of the server's memory or in its files "
        f"({probe['memory']['hits'] + keys['disk']} hits), while the same search finds it as soon as the key is "
        f"loaded ({probe_ctl['memory']['hits']} hit(s) in memory). (4) Telling two hospitals' encrypted updates "
        f"apart: accuracy {c['accuracy']:.2f} ({100 * s.confidence:.1f}% interval {c['ci_low']:.2f}-"
        f"{c['ci_high']:.2f}; chance is 0.50), against {p['accuracy']:.2f} on the same updates unencrypted. "
        f"{verdict} What the server still sees: who took part, when, and how large each message is. Because "
        f"all hospitals share one key, a server colluding with one hospital could decrypt every update; "
        f"differential privacy still bounds what that reveals about any patient.")
