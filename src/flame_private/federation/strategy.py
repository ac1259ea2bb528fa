"""The keyless aggregation strategy: validate ciphertexts, add them, never decrypt.

A Flower ``Strategy`` (Message API) whose aggregation is CKKS addition with a
params-only context: it can check a ciphertext's header, size and parameters
and add ciphertexts, and nothing else.  Replies that failed, were declined, or
carry a malformed ciphertext are dropped with a logged reason; so is a second
reply from a site id already counted (one site on two nodes must not make up
the minimum).  With fewer than ``min_sites`` or more than ``max_sites`` (the
number the overflow headroom is sized for) valid contributions the round is
refused, not aggregated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flame_private.federation.protocol import (
    INSTRUCTION,
    MODEL,
    UPDATE,
    Instruction,
    ct_record,
    read_ct_record,
    read_status,
)
from flame_private.secure.errors import HEError
from flame_private.secure.params import (
    CiphertextEnvelope,
    ParamsContext,
    aggregate_updates,
    parse_envelope,
    validate_envelope,
)

log = logging.getLogger(__name__)


@dataclass
class RoundOutcome:
    """Who contributed, who declined or was rejected and why, and the encrypted sum if any."""

    contributors: list[str] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    """Sites that declined.  Never why: a site keeps its reasons."""
    rejected: dict[str, str] = field(default_factory=dict)
    aggregate: tuple[str, bytes] | None = None
    refusal: str | None = None

    def metrics(self) -> MetricRecord:
        return MetricRecord({"contributors": len(self.contributors), "declined": len(self.declined),
                             "rejected": len(self.rejected), "aggregated": int(self.aggregate is not None)})


class EncryptedFedAvg(Strategy):
    """FedAvg over CKKS ciphertexts of n_k * w_k with the count in a slot (docs/design.md 2, 4).

    The instruction (run, task, round, step) travels in the ``config`` given to
    ``configure_*``; the current encrypted model in ``arrays``.
    """

    def __init__(self, ctx: ParamsContext, run_id: str, min_sites: int = 3, max_sites: int | None = None,
                 max_bytes: int = 2**31 - 1) -> None:
        if min_sites < 3:
            raise ValueError("min_sites must be at least 3: with two sites each learns the other's update")
        self.max_sites = ctx.he.max_sites if max_sites is None else max_sites
        if self.max_sites < min_sites:
            raise ValueError(f"max_sites ({self.max_sites}) is below min_sites ({min_sites}): no round could run")
        self.ctx, self.run_id, self.min_sites, self.max_bytes = ctx, run_id, min_sites, max_bytes
        self._instruction: Instruction | None = None
        self.last = RoundOutcome()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self._configure(arrays, config, grid, MessageType.TRAIN)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        outcome = self._aggregate(replies, model_name=self._task())
        return (ct_record(*outcome.aggregate) if outcome.aggregate else None), outcome.metrics()

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self._configure(arrays, config, grid, MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Sums the encrypted metric sums; the ciphertext is in ``self.last.aggregate`` (only sites decrypt it)."""
        return self._aggregate(replies, model_name=f"metrics:{self._task()}").metrics()

    def summary(self) -> None:
        log.info("EncryptedFedAvg: run %s, CKKS N=%d, at least %d sites per round, holds no key", self.run_id,
                 self.ctx.he.poly_modulus_degree, self.min_sites)

    # ----------------------------------------------------------------------------------

    def _task(self) -> str:
        if self._instruction is None:
            raise RuntimeError("aggregate called before configure")
        return self._instruction.task

    def _configure(self, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, message_type: str) -> list[Message]:
        self._instruction = Instruction.model_validate_json(str(config[INSTRUCTION]))
        out = []
        for node in grid.get_node_ids():
            content = RecordDict({INSTRUCTION: config})
            if len(arrays):
                content[MODEL] = arrays
            out.append(Message(content, dst_node_id=node, message_type=message_type))
        return out

    def _aggregate(self, replies: Iterable[Message], model_name: str) -> RoundOutcome:
        ins = self._instruction
        assert ins is not None
        outcome = RoundOutcome()
        valid: list[tuple[CiphertextEnvelope, bytes]] = []
        parsed: list[list[Any]] = []  # each payload's ciphertexts, parsed once by validate_envelope
        for reply in replies:
            source = f"node {reply.metadata.src_node_id}"
            if reply.has_error():
                outcome.rejected[source] = f"error reply: {reply.error.reason}"
                log.warning("%s: error reply (%s); dropped", source, reply.error.reason)
                continue
            try:
                status = read_status(reply.content)
            except Exception as exc:  # noqa: BLE001 - any malformed status is a rejected reply, never a crash
                outcome.rejected[source] = f"malformed status ({type(exc).__name__})"
                log.warning("%s: malformed status; dropped", source)
                continue
            source = f"{status.site_id} ({source})"
            if status.site_id in outcome.contributors or status.site_id in outcome.declined:
                outcome.rejected[source] = f"site id {status.site_id} already replied this round; only its first " \
                                           "reply counts"
                log.warning("%s: a second reply from site %s in %s round %d; dropped", source, status.site_id,
                            ins.task, ins.round)
                continue
            if status.status == "declined":
                outcome.declined.append(status.site_id)
                log.info("%s declined %s round %d", source, ins.task, ins.round)
                continue
            try:
                header, payload = read_ct_record(reply.content[UPDATE])  # type: ignore[arg-type]
                env = parse_envelope(header)
                cts = validate_envelope(env, payload, self.ctx, run_id=self.run_id, task=ins.task,
                                        round=ins.round, kind="update", model=model_name, max_bytes=self.max_bytes,
                                        source=source)
                if env.contributor_ids != [status.site_id]:
                    raise HEError(f"the update's header names {env.contributor_ids}, not the replying site")
            except (HEError, KeyError, ValueError, UnicodeDecodeError) as exc:
                outcome.rejected[source] = str(exc) or type(exc).__name__
                log.warning("%s: %s round %d reply rejected: %s", source, ins.task, ins.round, exc)
                continue
            valid.append((env, payload))
            parsed.append(cts)
            outcome.contributors.append(status.site_id)
        if not self.min_sites <= len(valid) <= self.max_sites:
            outcome.refusal = (f"{model_name} round {ins.round}: {len(valid)} valid contribution(s), between "
                               f"{self.min_sites} and {self.max_sites} (max_sites) required; not aggregated")
            log.error("%s (declined: %s; rejected: %s)", outcome.refusal, outcome.declined or "-",
                      outcome.rejected or "-")
        else:
            env, payload = aggregate_updates(valid, self.ctx, min_contributors=self.min_sites,
                                             max_contributors=self.max_sites, parsed=parsed)
            outcome.aggregate = (env.model_dump_json(), payload)
        self.last = outcome
        return outcome
