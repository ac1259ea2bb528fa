"""The aggregation server (Flower ServerApp): rounds, tasks, checkpoints; no key anywhere.

Each round, for each task: send the current encrypted global model, add the
sites' encrypted updates (EncryptedFedAvg), checkpoint the encrypted sum, then
collect and add the encrypted metric sums.  A restarted server resumes after
the last checkpointed round.  At the end every site receives the final
encrypted models and metrics to decrypt and export.

This module and everything it imports must never load key material: the
server process holds only the params-only context.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from flame_private.config import FederationConfig, Task, load_config
from flame_private.federation.checkpoint import Checkpoint, carried_forward
from flame_private.federation.protocol import (
    INSTRUCTION,
    METRICS,
    MODEL,
    Instruction,
    ct_record,
    instruction_record,
    read_ct_record,
    read_status,
)
from flame_private.federation.strategy import EncryptedFedAvg
from flame_private.secure.params import ParamsContext, he_fingerprint, load_params_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    federation_config: Path
    params_context: Path
    run_dir: Path
    run_id: str
    expected_sites: int
    node_wait_s: float = 120.0

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> ServerSettings:
        """From Flower's run config (pyproject ``[tool.flwr.app.config]`` or ``flwr run --run-config``)."""
        return cls(federation_config=Path(str(run_config["federation-config"])),
                   params_context=Path(str(run_config["params-context"])),
                   run_dir=Path(str(run_config["run-dir"])), run_id=str(run_config["run-id"]),
                   expected_sites=int(run_config.get("expected-sites", 0)))


def wait_for_nodes(grid: Grid, n: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= n or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def run_server(grid: Grid, settings: ServerSettings) -> dict[str, Any]:
    """The whole federated run; returns the server's (ciphertext-free) summary."""
    fed = load_config(settings.federation_config, FederationConfig)
    ctx: ParamsContext = load_params_context(settings.params_context)
    if ctx.fingerprint != he_fingerprint(fed.he):
        raise ValueError(f"{settings.params_context}: HE fingerprint {ctx.fingerprint[:16]}... does not match the "
                         f"run config's parameters ({he_fingerprint(fed.he)[:16]}...)")
    strategy = EncryptedFedAvg(ctx, settings.run_id, fed.min_sites, fed.he.max_sites)
    strategy.summary()
    ckpt = Checkpoint(settings.run_dir / "server")
    nodes = wait_for_nodes(grid, max(settings.expected_sites, fed.min_sites), settings.node_wait_s)
    log.info("%d site(s) connected", len(nodes))
    for round_ in range(1, fed.rounds + 1):
        for task in fed.tasks:
            if ckpt.last_round(task) >= round_:
                log.info("%s round %d already done (checkpoint): skipped", task, round_)
                continue
            _train_and_evaluate(grid, strategy, ckpt, fed, settings.run_id, task, round_, ctx.fingerprint)
    finals = _finish(grid, strategy, ckpt, fed, settings.run_id, ctx.fingerprint)
    summary = {"run_id": settings.run_id, "rounds": ckpt.state["rounds"], "exports": finals}
    (settings.run_dir / "server" / "summary.json").write_text(json.dumps(summary, indent=1) + "\n",
                                                              encoding="utf-8")
    return summary


def _instruction(fed: FederationConfig, run_id: str, task: Task, round_: int, step: str, has_model: bool,
                 fingerprint: str, metrics_round: int | None = None) -> Instruction:
    return Instruction(run_id=run_id, task=task, round=round_, step=step, has_model=has_model,  # type: ignore[arg-type]
                       min_sites=fed.min_sites, he_fingerprint=fingerprint, metrics_round=metrics_round)


def _train_and_evaluate(grid: Grid, strategy: EncryptedFedAvg, ckpt: Checkpoint, fed: FederationConfig,
                        run_id: str, task: Task, round_: int, fingerprint: str) -> None:
    """One round of one task: collect and add the updates, evaluate if due, then commit the round at once."""
    current = ckpt.model(task)
    ins = _instruction(fed, run_id, task, round_, "train", current is not None, fingerprint)
    arrays = ct_record(*current) if current else ArrayRecord()
    replies = grid.send_and_receive(strategy.configure_train(round_, arrays, instruction_record(ins), grid),
                                    timeout=fed.reply_timeout_s)
    new, _ = strategy.aggregate_train(round_, replies)
    outcome = strategy.last
    summary: dict[str, Any] = {"contributors": outcome.contributors, "declined": outcome.declined,
                               "rejected": outcome.rejected}
    if new is None:
        # Refused: the global model stays as it was; sites' spend is on their ledgers (over-counted, never under).
        carried = carried_forward(current, round_) if current else None
        ckpt.commit(task, round_, {**summary, "refused": outcome.refusal}, model=carried)
        return
    model = read_ct_record(new)
    if not (fed.evaluation.every_round or round_ == fed.rounds):
        # Each evaluation costs the sites privacy budget: by default only the final models are scored.
        ckpt.commit(task, round_, summary, model=model)
        log.info("%s round %d: aggregated %d updates, checkpointed", task, round_, len(outcome.contributors))
        return
    ins = _instruction(fed, run_id, task, round_, "evaluate", True, fingerprint)
    replies = grid.send_and_receive(strategy.configure_evaluate(round_, new, instruction_record(ins), grid),
                                    timeout=fed.reply_timeout_s)
    strategy.aggregate_evaluate(round_, replies)
    summary["evaluated_by"] = strategy.last.contributors
    ckpt.commit(task, round_, summary, model=model, metrics=strategy.last.aggregate)
    log.info("%s round %d: aggregated %d updates, checkpointed", task, round_, len(outcome.contributors))


def _finish(grid: Grid, strategy: EncryptedFedAvg, ckpt: Checkpoint, fed: FederationConfig, run_id: str,
            fingerprint: str) -> dict[str, Any]:
    """Send each final encrypted model and metric sum to every site, which decrypts and exports them."""
    out: dict[str, Any] = {}
    for task in fed.tasks:
        model = ckpt.model(task)
        if model is None:
            out[task] = "no global model (every round refused)"
            continue
        metrics = ckpt.metrics(task)
        metrics_round = json.loads(metrics[0])["round"] if metrics else None
        ins = _instruction(fed, run_id, task, ckpt.last_round(task), "finish", True, fingerprint, metrics_round)
        messages = []
        for node in grid.get_node_ids():
            content = {MODEL: ct_record(*model)}
            if metrics:
                content[METRICS] = ct_record(*metrics)
            messages.append(Message(RecordDict({INSTRUCTION: instruction_record(ins), **content}),
                                    dst_node_id=node, message_type=MessageType.QUERY))
        replies = grid.send_and_receive(messages, timeout=fed.reply_timeout_s)
        out[task] = {}
        for r in replies:
            if r.has_error():
                out[task][str(r.metadata.src_node_id)] = f"error: {r.error.reason}"
            else:
                status = read_status(r.content)
                out[task][status.site_id] = status.status
    return out


def make_server_app(settings: ServerSettings | None = None) -> ServerApp:
    """A ServerApp; settings from the argument (simulation) or Flower's run config (deployment)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, settings or ServerSettings.from_run_config(dict(context.run_config)))

    return app


app = make_server_app()
