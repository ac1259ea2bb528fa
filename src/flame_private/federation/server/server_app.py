"""The aggregation server (Flower ServerApp): rounds, tasks, checkpoints; no key anywhere.

Each round, for each task (docs/design.md 2): send the current encrypted
global model, collect the sites' encrypted updates and add them
(EncryptedFedAvg), send the sum to be scored when an evaluation is due and add
the encrypted metric sums, then checkpoint the round as one unit.  The
checkpoint's ``state.json`` alone says which rounds are done, so a restarted
server resumes after the last one it names.  At the end every site receives
the final encrypted models and metrics to decrypt and export.

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

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from flame_private.config import FederationConfig, Task, load_config
from flame_private.federation.protocol import (
    INSTRUCTION,
    METRICS,
    MODEL,
    Instruction,
    ct_record,
    instruction_record,
    read_status,
)
from flame_private.federation.server.checkpoint import Checkpoint, carried_forward, write_atomic
from flame_private.federation.server.strategy import Ciphertext, EncryptedFedAvg
from flame_private.secure.public.context_file import load_params_context
from flame_private.secure.public.params import ParamsContext, he_fingerprint

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
    """The whole federated run; returns the server's (ciphertext-free) summary.

    ``state.json`` of the checkpoint alone says which rounds are done: a
    restarted server skips them and goes on with the next.
    """
    fed = load_config(settings.federation_config, FederationConfig)
    ctx: ParamsContext = load_params_context(settings.params_context)
    if ctx.fingerprint != he_fingerprint(fed.he):
        raise ValueError(f"{settings.params_context}: HE fingerprint {ctx.fingerprint[:16]}... does not match the "
                         f"run config's parameters ({he_fingerprint(fed.he)[:16]}...)")
    fedavg = EncryptedFedAvg(ctx, settings.run_id, fed.min_sites, fed.he.max_sites)
    fedavg.summary()
    run = _Run(grid, fed, fedavg, Checkpoint(settings.run_dir / "server"), settings.run_id, ctx.fingerprint)
    nodes = wait_for_nodes(grid, max(settings.expected_sites, fed.min_sites), settings.node_wait_s)
    log.info("%d site(s) connected", len(nodes))
    for round_ in range(1, fed.rounds + 1):
        for task in fed.tasks:
            if run.ckpt.last_round(task) >= round_:
                log.info("%s round %d already done (checkpoint): skipped", task, round_)
                continue
            _round(run, task, round_)
    summary = {"run_id": settings.run_id, "rounds": run.ckpt.state["rounds"],
               "exports": {task: _finish(run, task) for task in fed.tasks}}
    write_atomic(settings.run_dir / "server" / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    return summary


@dataclass(frozen=True)
class _Run:
    """What every step of the run needs: the grid, the config, the aggregation and the checkpoint."""

    grid: Grid
    fed: FederationConfig
    fedavg: EncryptedFedAvg
    ckpt: Checkpoint
    run_id: str
    fingerprint: str

    def ask(self, message_type: str, task: Task, round_: int, model: Ciphertext | None,
            metrics: Ciphertext | None = None, metrics_round: int | None = None) -> tuple[Instruction, list[Message]]:
        """Send every connected site one instruction (with the ciphertexts given); return it and the replies."""
        step = {MessageType.TRAIN: "train", MessageType.EVALUATE: "evaluate", MessageType.QUERY: "finish"}
        ins = Instruction(run_id=self.run_id, task=task, round=round_, step=step[message_type],  # type: ignore[arg-type]
                          has_model=model is not None, start=self.fed.model_start(task), min_sites=self.fed.min_sites,
                          he_fingerprint=self.fingerprint, metrics_round=metrics_round)
        records: dict[str, Any] = {INSTRUCTION: instruction_record(ins)}
        if model is not None:
            records[MODEL] = ct_record(*model)
        if metrics is not None:
            records[METRICS] = ct_record(*metrics)
        messages = [Message(RecordDict(records), dst_node_id=node, message_type=message_type)
                    for node in self.grid.get_node_ids()]
        return ins, list(self.grid.send_and_receive(messages, timeout=self.fed.reply_timeout_s))


def _round(run: _Run, task: Task, round_: int) -> None:
    """One round of one task (docs/design.md 2): train, add the updates, evaluate if due, checkpoint as one unit."""
    current = run.ckpt.model(task)
    ins, replies = run.ask(MessageType.TRAIN, task, round_, model=current)
    trained = run.fedavg.aggregate(replies, ins, "model")
    record = trained.summary()
    if trained.aggregate is None:
        # Refused: the global model stays as it was; sites' spend is on their ledgers (over-counted, never under).
        run.ckpt.commit(task, round_, record, model=carried_forward(current, round_) if current else None)
        return
    metrics = None
    if run.fed.evaluation.every_round or round_ == run.fed.rounds:
        # Each evaluation costs the sites privacy budget: by default only the final models are scored.
        ins, replies = run.ask(MessageType.EVALUATE, task, round_, model=trained.aggregate)
        evaluated = run.fedavg.aggregate(replies, ins, "metrics")
        record["evaluated_by"] = evaluated.contributors
        metrics = evaluated.aggregate
    run.ckpt.commit(task, round_, record, model=trained.aggregate, metrics=metrics)
    log.info("%s round %d: aggregated %d updates, checkpointed", task, round_, len(trained.contributors))


def _finish(run: _Run, task: Task) -> dict[str, str] | str:
    """Send the final encrypted model and metric sums of ``task`` to every site, which decrypts and exports them."""
    model = run.ckpt.model(task)
    if model is None:
        return "no global model (every round refused)"
    metrics = run.ckpt.metrics(task)
    metrics_round = json.loads(metrics[0])["round"] if metrics else None
    _, replies = run.ask(MessageType.QUERY, task, run.ckpt.last_round(task), model=model, metrics=metrics,
                         metrics_round=metrics_round)
    out: dict[str, str] = {}
    for r in replies:
        if r.has_error():
            out[str(r.metadata.src_node_id)] = f"error: {r.error.reason}"
        else:
            status = read_status(r.content)
            out[status.site_id] = status.status
    return out


def make_server_app(settings: ServerSettings | None = None) -> ServerApp:
    """A ServerApp; settings from the argument (simulation) or Flower's run config (deployment)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, settings or ServerSettings.from_run_config(dict(context.run_config)))

    return app


app = make_server_app()
