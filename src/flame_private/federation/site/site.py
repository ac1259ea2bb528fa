"""What a site does in a federated round, without Flower: train, spend, encrypt, log.

One method per protocol step (docs/design.md 2), each step one line of intent:
check the privacy policy (before any scan is read), decrypt the global model,
check the budget, train under DP-SGD, record the spend (fsynced) before anything
leaves, encrypt, log the egress, reply.  A site whose policy is missing, unfilled,
invalid or not valid today declines every step, and records why in its egress
log; it does not crash.  The ClientApp only unpacks messages and calls these;
tests call them directly.  What is computed (model, data, training, metric sums)
comes from ``task``; how it may leave is ``_release``, the one spend path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flame_private.config import DPConfig, FederationConfig, SiteConfig, Task, load_config
from flame_private.data.checks import load_site
from flame_private.data.splits import Splits, split_records
from flame_private.evaluation import evaluate_with_baselines
from flame_private.federation.protocol import SiteStatus
from flame_private.federation.site import task as task_fns
from flame_private.metrics import PATIENT_SENSITIVITY, released_metrics, sums_kind
from flame_private.models.io import save_model
from flame_private.privacy import REFUSALS, BudgetGuard, Ledger, PlannedSpend, PolicyError, load_policy
from flame_private.records.code_identity import app_identity
from flame_private.records.egress import MAX_REASON_CHARS, EgressLog, Transport
from flame_private.secure.public.envelope import CiphertextEnvelope, Content, envelope_model, parse_envelope
from flame_private.secure.public.errors import HEError
from flame_private.secure.public.packing import ParamLayout
from flame_private.secure.site.codec import decrypt_aggregate, encrypt_update
from flame_private.secure.site.keys import SecretContext, load_secret_context
from flame_private.server_optimizer import ServerOptimizerError, next_global
from flame_private.training import frozen_state_keys, training_size

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """What the site sends back: a ciphertext and its header, or a refusal."""

    status: Literal["ok", "declined"]
    reason: str = ""
    """Why the site declined: logged and kept at the site, never sent."""
    header_json: str | None = None
    payload: bytes | None = None

    def status_json(self, site_id: str) -> str:
        """The plaintext status that leaves the site: who, and ok or declined; nothing else."""
        return SiteStatus(site_id=site_id, status=self.status).model_dump_json()


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN (undefined, e.g. a class absent) becomes null, also inside intervals."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        return [clean(x) for x in v] if isinstance(v, list) else v
    return {k: clean(v) for k, v in metrics.items()}


METRIC_SCALE = 4096.0
"""Metric sums are encrypted divided by this: voxel counts must stay inside the CKKS headroom."""


def _metrics_state(vector: np.ndarray) -> dict[str, torch.Tensor]:
    return {"sums": torch.tensor(vector / METRIC_SCALE, dtype=torch.float64)}


def _metrics_layout(task: Task, fed: FederationConfig) -> ParamLayout:
    """Metric sums of at most METRIC_SCALE in magnitude per site, one count per site, at most max_sites sites."""
    zeros = sums_kind(task)().vector()
    return ParamLayout.from_state_dict(_metrics_state(zeros), value_bound=1.0, count_bound=fed.he.max_sites,
                                       max_sites=fed.he.max_sites)


@dataclass
class Site:
    """A site's long-lived state across the rounds of a run."""

    config: SiteConfig
    fed: FederationConfig
    secret: SecretContext
    ledger: Ledger
    egress: EgressLog
    app_hash: str
    guard: BudgetGuard | None = None
    """None until the site's privacy policy loads (``_policy_refusal`` re-reads it at each step)."""
    _splits: Splits | None = None
    transport: Transport | None = None
    """How this site's messages reach the server, recorded with each in the egress log (None: not known)."""
    _datasets: dict[tuple[str, str], Any] = field(default_factory=dict)
    _layouts: dict[str, ParamLayout] = field(default_factory=dict)
    _run_dp: DPConfig | None = None

    @classmethod
    def load(cls, site_yaml: Path, fed_yaml: Path, app_hash: str | None = None,
             transport: Transport | None = None) -> Site:
        """Everything a site needs but its scans; refuses (with the reason) a world-readable key or a broken ledger.

        A missing, unfilled or invalid privacy policy does not raise: the site then declines every
        step, recording why in its egress log.  Scans are read at the first step the policy allows,
        never before (``splits``).
        """
        config = load_config(site_yaml, SiteConfig)
        fed = load_config(fed_yaml, FederationConfig)
        for task in fed.tasks:  # a pinned start that is not the agreed checkpoint stops the site here, not in round 1
            if task in fed.initial_weights:
                task_fns.load_model(task, fed)
        if config.secret_context is None:
            raise ValueError(f"{site_yaml}: secret_context is not set; the site cannot decrypt or encrypt")
        secret = load_secret_context(config.secret_context)
        site = cls(config=config, fed=fed, secret=secret, ledger=Ledger.open(config.state_dir, config.site_id),
                   egress=EgressLog.open(config.state_dir, config.site_id), app_hash=app_hash or app_identity(),
                   transport=transport)
        if site._policy_refusal() is None and site.guard is not None:
            policy = site.guard.policy
            if policy.delta != fed.dp.delta or policy.accountant != fed.dp.accountant:
                log.warning("%s: the approved policy (delta %g, %s) governs accounting, not the run config "
                            "(delta %g, %s)", config.site_id, policy.delta, policy.accountant, fed.dp.delta,
                            fed.dp.accountant)
        return site

    @property
    def site_id(self) -> str:
        return self.config.site_id

    @property
    def splits(self) -> Splits:
        """The site's patients, read and checked on first use (after the policy allowed a step)."""
        if self._splits is None:
            records = load_site(self.config.data_dir, self.config.layout, self.config.site_id).records
            self._splits = split_records(records, self.fed.data)
        return self._splits

    def _policy_refusal(self) -> str | None:
        """Why the site's privacy policy allows no step today, or None.  Cheap: no scan is read.

        A policy that did not load is re-read at each step, so a corrected file takes
        effect without restarting the site.
        """
        try:
            if self.guard is None:
                self.guard = BudgetGuard(load_policy(self.config.privacy_policy), self.ledger)
            self.guard.check_policy()
        except PolicyError as exc:
            return str(exc)
        return None

    def _allowed(self, run_id: str, round_: int, task: Task) -> BudgetGuard | Reply:
        """The budget guard when the policy allows a step today; else the declined reply, recorded in the egress log.

        Every step checks this first, before any scan is read: a site without a valid
        policy takes no part, and the server learns only "declined".
        """
        reason = self._policy_refusal()
        if reason is None and self.guard is not None:
            return self.guard
        return self._decline(run_id, round_, task, reason or "no privacy policy", level=logging.ERROR)

    # ------------------------------------------------------------------ helpers

    def dataset(self, task: Task, split: str) -> Any:
        key = (task, split)
        if key not in self._datasets:
            self._datasets[key] = task_fns.load_data(task, getattr(self.splits, split), self.fed)
        return self._datasets[key]

    def run_dp(self) -> DPConfig:
        """The run's DP settings here: with ``dp.run_epsilon``, this site's noise for the whole run (solved once)."""
        if self._run_dp is None:
            sizes = {task: training_size(task, self.dataset(task, "train")) for task in self.fed.tasks}
            self._run_dp = task_fns.run_dp(self.fed, sizes)
            if self.fed.dp.run_epsilon is not None:
                log.info("%s: noise multiplier %.3f keeps this run within epsilon %g", self.site_id,
                         self._run_dp.noise_multiplier, self.fed.dp.run_epsilon)
        return self._run_dp

    def layout(self, task: Task) -> ParamLayout:
        """What of ``task``'s model travels: every entry, or only those that train (``frozen_state_keys``)."""
        if task not in self._layouts:
            he = self.fed.he  # public bounds; the weight bound from the round-1 model unless the config sets it
            state = task_fns.load_model(task, self.fed).state_dict()
            frozen = frozen_state_keys(task, self.fed.model.response_trainable, state)
            self._layouts[task] = ParamLayout.from_state_dict(state, exclude=frozen, value_bound=he.weight_bound,
                                                              count_bound=he.max_patients, max_sites=he.max_sites)
        return self._layouts[task]

    def global_model(self, task: Task, run_id: str, expected_round: int, header_json: str | None,
                     payload: bytes | None) -> torch.nn.Module:
        """Without a ciphertext: the initial model (seeded, or the pinned public checkpoint).  With one: the
        server's sum of ``expected_round``.

        The aggregate is checked before anything is decrypted (``decrypt_aggregate``):
        this run, this task, ``expected_round``, the agreed parameters, and
        ``min_sites`` to ``he.max_sites`` distinct sites.  Anything else raises
        HEError; the caller declines the round.  The run's server optimiser step turns the
        decrypted average into the global model (``server_optimizer``; fedavg: the average
        itself); a site whose optimiser state cannot give the model the others compute
        raises ServerOptimizerError.
        """
        model = task_fns.load_model(task, self.fed)
        if header_json is None or payload is None:
            if expected_round > 0:
                log.warning("%s: no global %s model for round %d; starting from the initial model", self.site_id,
                            task, expected_round)
            return model
        state, total = decrypt_aggregate(self.secret, header_json, payload, self.layout(task), run_id=run_id,
                                         task=task, round=expected_round, model=envelope_model(task, "model"),
                                         content="model", min_sites=self.fed.min_sites,
                                         max_sites=self.fed.he.max_sites)
        own = model.state_dict()  # the entries that do not travel keep the initial values every site has
        state = next_global(self.fed.server_optimizer, Path(self.config.state_dir), run_id, task, expected_round,
                            state, {k: own[k] for k in state})
        model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}})
        log.info("%s: decrypted global %s model of round %d (%d patients)", self.site_id, task, expected_round,
                 total)
        return model

    def decline(self, run_id: str, round_: int, task: Task, reason: str) -> Reply:
        """Decline a step that failed unexpectedly (the ClientApp's guard): recorded and logged as an error."""
        return self._decline(run_id, round_, task, reason, level=logging.ERROR)

    def _decline(self, run_id: str, round_: int, task: Task, reason: str, level: int = logging.WARNING) -> Reply:
        """Tell the server only "declined"; the reason stays in the site's log and egress record.

        The reason is logged in full the first time; a later decline for the same reason
        points to the egress entry that holds it, so the log says it once.
        """
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS - 20] + " [... cut short]"
        earlier = next((e.seq for e in self.egress.entries if e.kind == "declined" and e.reason == reason), None)
        reply = Reply(status="declined", reason=reason)
        entry = self.egress.append(run_id=run_id, round=round_, task=task, kind="declined",
                                   payload=reply.status_json(self.site_id).encode(), reason=reason,
                                   app_hash=self.app_hash, transport=self.transport)
        if earlier is None:
            log.log(level, "%s declines %s round %d: %s", self.site_id, task, round_, reason)
        else:
            log.log(level, "%s declines %s round %d for the same reason as egress log entry %d (logged in full "
                           "then; recorded again in entry %d)", self.site_id, task, round_, earlier, entry.seq)
        return reply

    def _received(self, task: Task, run_id: str, expected_round: int, header_json: str | None,
                  payload: bytes | None, step: str) -> torch.nn.Module | str:
        """The checked, decrypted global model, or the reason to decline the round."""
        try:
            return self.global_model(task, run_id, expected_round, header_json, payload)
        except (HEError, ServerOptimizerError) as exc:
            return (f"refused the global {task} model sent for {step} (expected the aggregate of round "
                    f"{expected_round} of run {run_id}): {exc}")

    def _release(self, guard: BudgetGuard, planned: PlannedSpend,
                 compute: Callable[[], tuple[dict[str, torch.Tensor], int]], *, kind: Literal["update", "metrics"],
                 patients: int, what: str) -> Reply:
        """The privacy rule of a site, the one path by which anything computed from its patients leaves.

        ``guard.spend`` authorises ``planned`` (policy and cap), runs ``compute`` (the
        training, or the noised metric sums: a state and its count), and records the
        release in the ledger (fsync, cap re-checked); only then is the result encrypted,
        logged in the egress log with the entry that covers it, and returned to be sent.
        A refusal at any step declines the round: the server gets "declined", the reason
        stays in the egress log, and a refusal at record time drops the computed update.
        ``kind`` says what is encrypted: the model update of ``planned.task``, or its metric sums.
        """
        run_id, round_, task = planned.run_id, planned.round, planned.task
        try:
            spent = guard.spend(planned, compute)
        except REFUSALS as exc:
            return self._decline(run_id, round_, task, str(exc))
        state, count = spent.value
        content: Content = "model" if kind == "update" else "metrics"
        layout = self.layout(task) if content == "model" else _metrics_layout(task, self.fed)
        try:  # a weight or count beyond the public bounds is refused, never clipped (docs/encryption.md)
            env, ct = encrypt_update(self.secret, state, count, site_id=self.site_id, run_id=run_id, task=task,
                                     round=round_, model=envelope_model(task, content), layout=layout,
                                     content=content)
        except HEError as exc:
            what_failed = "the trained update" if kind == "update" else "the metric sums"
            return self._decline(run_id, round_, task, f"{what_failed} cannot be encrypted: {exc}")
        header = env.model_dump_json()
        self.egress.append(run_id=run_id, round=round_, task=task, kind=kind, payload=ct, envelope=header,
                           ledger_entry=spent.entry, app_hash=self.app_hash, transport=self.transport,
                           patients=patients)
        log.info("%s: %s round %d %s, epsilon now %.3f, sent %d bytes", self.site_id, task, round_, what,
                 spent.entry.epsilon_after, len(ct))
        return Reply(status="ok", header_json=header, payload=ct)

    # ------------------------------------------------------------------ protocol steps

    def train_round(self, run_id: str, task: Task, round_: int, header_json: str | None,
                    payload: bytes | None, start: str | None = None) -> Reply:
        """Train on the global model of round ``round_ - 1`` under DP-SGD and return Enc([n_k w_k | n_k]).

        ``start``: where the server's run config starts the task (``FederationConfig.model_start``); declined when
        this site's federation config starts it elsewhere (another seed or pinned checkpoint).
        """
        guard = self._allowed(run_id, round_, task)
        if isinstance(guard, Reply):
            return guard
        own = self.fed.model_start(task)
        if start is not None and start != own:
            return self._decline(run_id, round_, task, f"the run starts the {task} model from {start}, this site's "
                                                       f"federation config from {own}: not the same run")
        model = self._received(task, run_id, round_ - 1, header_json, payload, "training")
        if isinstance(model, str):
            return self._decline(run_id, round_, task, model)
        if self.fed.lr_schedule != "constant" and not 1 <= round_ <= self.fed.rounds:
            return self._decline(run_id, round_, task, f"round {round_} is outside this site's run of "
                                                       f"{self.fed.rounds} rounds, where its learning-rate "
                                                       "schedule is defined")
        train_ds = self.dataset(task, "train")
        n_patients = training_size(task, train_ds)  # the patients DP-SGD samples from, and the update's weight
        if n_patients == 0:
            return self._decline(run_id, round_, task, f"no patient to train the {task} model on at this site")
        settings = task_fns.train_settings(self.fed, round_)
        try:
            dp = self.run_dp()
        except ValueError as exc:  # dp.run_epsilon below what the run's evaluations alone spend
            return self._decline(run_id, round_, task, f"dp.run_epsilon: {exc}", level=logging.ERROR)
        plan = task_fns.train_plan(model, task, train_ds, settings, dp)
        if plan is None:
            return self._decline(run_id, round_, task, "the run config disables DP; this site only releases "
                                                       "DP-SGD updates")
        return self._release(guard, plan.planned_spend(run_id, round_, task),
                             lambda: (task_fns.train_fn(model, task, train_ds, settings, plan), n_patients),
                             kind="update", patients=n_patients, what=f"trained ({plan.steps} steps)")

    def evaluate_round(self, run_id: str, task: Task, round_: int, header_json: str,
                       payload: bytes) -> Reply:
        """Score the global model on the validation split; return Enc(DP-noised metric sums).

        Validation patients are protected like training patients: each one's
        contribution is bounded, Gaussian noise is added (the Gaussian mechanism),
        and the release is checked against the budget and recorded in the ledger
        before it leaves.
        """
        guard = self._allowed(run_id, round_, task)
        if isinstance(guard, Reply):
            return guard
        model = self._received(task, run_id, round_, header_json, payload, "evaluation")
        if isinstance(model, str):
            return self._decline(run_id, round_, task, model)
        ds = self.dataset(task, "val")
        return self._release(guard, task_fns.evaluation_spend(run_id, round_, task, self.fed),
                             lambda: (_metrics_state(task_fns.evaluate_fn(model, task, ds, self.fed)), 1),
                             kind="metrics", patients=len(self.splits.val), what="evaluated (DP-noised metric sums)")

    def decrypt_metrics(self, run_id: str, task: Task, round_: int, header_json: str,
                        payload: bytes) -> dict[str, Any]:
        """The federation's metrics: the decrypted sum of every site's metric sums of ``round_``."""
        env: CiphertextEnvelope = parse_envelope(header_json)
        layout = _metrics_layout(task, self.fed)
        state, sites = decrypt_aggregate(self.secret, env, payload, layout, run_id=run_id, task=task,
                                         round=round_, model=envelope_model(task, "metrics"), content="metrics",
                                         min_sites=self.fed.min_sites,
                                         max_sites=self.fed.he.max_sites)
        kind = sums_kind(task)
        vector = state["sums"].numpy() * sites * METRIC_SCALE  # the sum, not the mean over sites
        noise = self.fed.evaluation.noise_multiplier * PATIENT_SENSITIVITY[task] * float(np.sqrt(sites))
        # DP-noised sums: clamped to valid ranges, each metric with its noise spread, or "too noisy to report".
        return {**released_metrics(kind, vector, noise), "sites": float(sites), "round": float(env.round),
                "dp_noise_std_per_sum": noise}

    def finish(self, run_id: str, task: Task, round_: int, model_ct: tuple[str, bytes],
               metrics_ct: tuple[str, bytes] | None, metrics_round: int | None = None) -> Reply:
        """The last step: export the final model and say "ok", or decline; either status is recorded before it
        leaves, like every message."""
        guard = self._allowed(run_id, round_, task)
        if isinstance(guard, Reply):
            return guard
        try:
            self.export(run_id, task, round_, model_ct, metrics_ct, metrics_round)
        except (HEError, ServerOptimizerError) as exc:
            return self._decline(run_id, round_, task, f"refused the final model or metrics: {exc}",
                                 level=logging.ERROR)
        reply = Reply(status="ok")
        self.egress.append(run_id=run_id, round=round_, task=task, kind="finished",
                           payload=reply.status_json(self.site_id).encode(), app_hash=self.app_hash,
                           transport=self.transport)
        return reply

    def export(self, run_id: str, task: Task, round_: int, model_ct: tuple[str, bytes],
               metrics_ct: tuple[str, bytes] | None, metrics_round: int | None = None,
               out: Path | None = None) -> dict[str, Any]:
        """Decrypt the final global model (of ``round_``) and metrics, write ``<task>.pt`` + model card.

        Raises PolicyError when no privacy policy is valid today, and HEError, before
        decrypting, for a model or metrics that are not the aggregate the server said it sends.
        """
        reason = self._policy_refusal()
        if reason is not None or self.guard is None:
            raise PolicyError(reason or f"{self.site_id}: no privacy policy")
        guard = self.guard
        out = out or Path(self.config.state_dir) / "exports" / run_id
        model = self.global_model(task, run_id, round_, *model_ct)
        env = parse_envelope(model_ct[0])
        metrics = (self.decrypt_metrics(run_id, task, round_ if metrics_round is None else metrics_round, *metrics_ct)
                   if metrics_ct else {})
        # The site's own patients, scored where they are: exact, with 95 % intervals, beside the baselines
        # fitted on the same site's training patients; never released.
        local: dict[str, Any] = {}
        for split in ("val", "test"):
            ds = self.dataset(task, split)
            if len(ds):
                scored = evaluate_with_baselines(model, task, self.dataset(task, "train"), ds,
                                                 self.fed.data.voxel_mm**3 / 1000.0, self.fed.batch_size)
                local[split] = _finite(scored["model"])
                local[f"{split}_baselines"] = {k: _finite(v) for k, v in scored["baselines"].items()}
        card = {
            "run_id": run_id, "site_id": self.site_id, "rounds": env.round, "contributors_last_round": env.contributors,
            "federated_validation_metrics": _finite(metrics),
            "local_metrics_not_released": local,
            "test": local.get("test", {"n": 0.0}),
            "baselines": local.get("test_baselines", {}),
            "training": {"local_epochs": self.fed.local_epochs, "batch_size": self.fed.batch_size,
                         "learning_rate": self.fed.learning_rate, "lr_schedule": self.fed.lr_schedule,
                         "dp": self.fed.dp.model_dump(mode="json"),
                         "he": self.fed.he.model_dump(mode="json"),
                         "initial_weights": (
                             self.fed.initial_weights[task].model_dump(mode="json")
                             if task in self.fed.initial_weights else f"seeded (seed {self.fed.seed})")},
            "privacy": {"site_epsilon_spent": guard.spent(), "delta": guard.policy.delta,
                        "epsilon_cap": guard.policy.epsilon_cap, "accountant": guard.policy.accountant,
                        "unit_of_privacy": "patient"},
            "app_hash": self.app_hash,
        }
        save_model(out / f"{task}.pt", task, model, self.fed.model, self.fed.data, card=card)
        (out / f"{task}-metrics.json").write_text(
            json.dumps({"federated_dp": _finite(metrics), "local_not_released": local}, indent=2) + "\n",
            encoding="utf-8")
        return card
