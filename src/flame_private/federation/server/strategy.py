"""The keyless aggregation: collect the sites' ciphertexts, add them, never decrypt.

``EncryptedFedAvg`` holds a params-only context: it can check a ciphertext's
header, size and parameters and add ciphertexts, and nothing else.  One step
of a round is ``collect`` then ``add`` (docs/design.md 2):

- ``collect`` reads every reply once: a failed or malformed reply, a second
  reply from a site id already counted (one site on two nodes must not make up
  the minimum), and an update that is not one site's own are rejected with a
  logged reason; a site that declined is recorded as such, never why.
- ``add`` sums the valid contributions, or refuses the step when there are
  fewer than ``min_sites`` or more than ``max_sites`` (the number the overflow
  headroom is sized for).

Both return plain values; nothing is kept between calls, so the round and task
are always the instruction's, never a leftover of an earlier step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message

from flame_private.federation.protocol import UPDATE, Instruction, read_ct_record, read_status
from flame_private.secure.public.aggregate import aggregate_updates
from flame_private.secure.public.envelope import (
    CiphertextEnvelope,
    Content,
    check_contributors,
    envelope_model,
    parse_envelope,
    validate_envelope,
)
from flame_private.secure.public.errors import HEError
from flame_private.secure.public.params import ParamsContext

log = logging.getLogger(__name__)

Ciphertext = tuple[str, bytes]
"""Header JSON and payload bytes, as checkpointed and sent."""


@dataclass(frozen=True)
class Contribution:
    """One site's valid ciphertext, with the SEAL objects it was parsed into (so it is parsed once)."""

    site_id: str
    envelope: CiphertextEnvelope
    payload: bytes
    parsed: list[Any]


@dataclass
class Collected:
    """The replies to one step, sorted: valid contributions, sites that declined, replies rejected and why."""

    contributions: list[Contribution] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    """Sites that declined.  Never why: a site keeps its reasons."""
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def contributors(self) -> list[str]:
        return [c.site_id for c in self.contributions]

    def replied(self, site_id: str) -> bool:
        return site_id in self.declined or any(c.site_id == site_id for c in self.contributions)


@dataclass(frozen=True)
class StepResult:
    """Who contributed, declined or was rejected, and the encrypted sum, or why there is none."""

    contributors: list[str]
    declined: list[str]
    rejected: dict[str, str]
    aggregate: Ciphertext | None = None
    refusal: str | None = None

    def summary(self) -> dict[str, Any]:
        """What the server records of the step (ciphertext-free)."""
        out: dict[str, Any] = {"contributors": self.contributors, "declined": self.declined,
                               "rejected": self.rejected}
        if self.refusal is not None:
            out["refused"] = self.refusal
        return out


class EncryptedFedAvg:
    """FedAvg over CKKS ciphertexts of n_k * w_k with the count in a slot (docs/design.md 2, 4)."""

    def __init__(self, ctx: ParamsContext, run_id: str, min_sites: int = 3, max_sites: int | None = None,
                 max_bytes: int = 2**31 - 1) -> None:
        if min_sites < 3:
            raise ValueError("min_sites must be at least 3: with two sites each learns the other's update")
        self.max_sites = ctx.he.max_sites if max_sites is None else max_sites
        if self.max_sites < min_sites:
            raise ValueError(f"max_sites ({self.max_sites}) is below min_sites ({min_sites}): no round could run")
        self.ctx, self.run_id, self.min_sites, self.max_bytes = ctx, run_id, min_sites, max_bytes

    def summary(self) -> None:
        log.info("EncryptedFedAvg: run %s, CKKS N=%d, at least %d sites per round, holds no key", self.run_id,
                 self.ctx.he.poly_modulus_degree, self.min_sites)

    def aggregate(self, replies: Iterable[Message], ins: Instruction, content: Content = "model") -> StepResult:
        """``collect`` then ``add``: the whole server side of one step (``content``: model updates or metric sums)."""
        return self.add(self.collect(replies, ins, content), ins, content)

    def collect(self, replies: Iterable[Message], ins: Instruction, content: Content = "model") -> Collected:
        """Sort the replies to ``ins``; each ciphertext, which must hold ``content``, is checked and parsed once."""
        out = Collected()
        for reply in replies:
            source = f"node {reply.metadata.src_node_id}"
            if reply.has_error():
                out.rejected[source] = f"error reply: {reply.error.reason}"
                log.warning("%s: error reply (%s); dropped", source, reply.error.reason)
                continue
            try:
                status = read_status(reply.content)
            except Exception as exc:  # noqa: BLE001 - any malformed status is a rejected reply, never a crash
                out.rejected[source] = f"malformed status ({type(exc).__name__})"
                log.warning("%s: malformed status; dropped", source)
                continue
            source = f"{status.site_id} ({source})"
            if out.replied(status.site_id):
                out.rejected[source] = f"site id {status.site_id} already replied this round; only its first reply " \
                                       "counts"
                log.warning("%s: a second reply from site %s in %s round %d; dropped", source, status.site_id,
                            ins.task, ins.round)
                continue
            if status.status == "declined":
                out.declined.append(status.site_id)
                log.info("%s declined %s round %d", source, ins.task, ins.round)
                continue
            try:
                out.contributions.append(self._contribution(reply, status.site_id, ins, content, source))
            except (HEError, KeyError, ValueError, UnicodeDecodeError) as exc:
                out.rejected[source] = str(exc) or type(exc).__name__
                log.warning("%s: %s round %d reply rejected: %s", source, ins.task, ins.round, exc)
        return out

    def add(self, collected: Collected, ins: Instruction, content: Content = "model") -> StepResult:
        """The encrypted sum of the contributions, or a refusal when their number is out of bounds."""
        who = (collected.contributors, collected.declined, collected.rejected)
        n = len(collected.contributions)
        if not self.min_sites <= n <= self.max_sites:
            refusal = (f"{envelope_model(ins.task, content)} round {ins.round}: {n} valid contribution(s), between "
                       f"{self.min_sites} and {self.max_sites} (max_sites) required; not aggregated")
            log.error("%s (declined: %s; rejected: %s)", refusal, collected.declined or "-",
                      collected.rejected or "-")
            return StepResult(*who, refusal=refusal)
        env, payload = aggregate_updates([(c.envelope, c.payload) for c in collected.contributions], self.ctx,
                                         min_contributors=self.min_sites, max_contributors=self.max_sites,
                                         parsed=[c.parsed for c in collected.contributions])
        return StepResult(*who, aggregate=(env.model_dump_json(), payload))

    def _contribution(self, reply: Message, site_id: str, ins: Instruction, content: Content,
                      source: str) -> Contribution:
        """A reply's ciphertext checked against the instruction and the replying site, parsed once."""
        header, payload = read_ct_record(reply.content[UPDATE])  # type: ignore[arg-type]
        env = parse_envelope(header)
        parsed = validate_envelope(env, payload, self.ctx, run_id=self.run_id, task=ins.task, round=ins.round,
                                   kind="update", model=envelope_model(ins.task, content), content=content,
                                   max_bytes=self.max_bytes, source=source)
        if env.contributor_ids != [site_id]:
            raise HEError(f"the update's header names {env.contributor_ids}, not the replying site")
        check_contributors(env, 1, 1)  # one site's own update counts one site, never more
        return Contribution(site_id, env, payload, parsed)
