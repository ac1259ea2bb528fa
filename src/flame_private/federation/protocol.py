"""Message contents of the wire protocol (docs/design.md 2), shared by server and sites.

Ciphertexts travel as opaque bytes in an ``ArrayRecord`` split into 5 MiB
arrays (what worked in real deployments), with their ``CiphertextEnvelope``
header as the record's first array; the round instruction and a site's status
travel as JSON in ``ConfigRecord``s.  Nothing here touches a key: the server
imports this module.

Server -> site: ``instruction`` [+ ``model``] [+ ``metrics``]
Site -> server: ``status`` [+ ``update``]

Whether a ciphertext holds model weights or metric sums is its header's
``content`` field (``secure.public.envelope.CiphertextEnvelope``), never read
from a name.
"""

from __future__ import annotations

from typing import Literal

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from pydantic import Field

from flame_private.config import StrictModel, Task

CHUNK_BYTES = 5 * 2**20
INSTRUCTION = "instruction"
STATUS = "status"
MODEL = "model"
"""The current encrypted global model of the instruction's task (absent in its round 1)."""
METRICS = "metrics"
"""The encrypted sum of the sites' metric sums (sent with the final instruction)."""
UPDATE = "update"
"""A site's encrypted reply: its update (train) or its metric sums (evaluate)."""

Step = Literal["train", "evaluate", "finish"]


class Instruction(StrictModel):
    """What the server asks of a site in one message."""

    run_id: str
    task: Task
    round: int = Field(ge=1)
    step: Step
    has_model: bool
    """False in round 1 of a task: every site builds the same initial model (``start``)."""
    start: str
    """Where round 1 of the task starts in the server's run config (``FederationConfig.model_start``): a site
    whose own federation config says otherwise declines to train, rather than add an update to a model nobody
    else has."""
    min_sites: int = Field(ge=3)
    he_fingerprint: str
    metrics_round: int | None = Field(default=None, ge=1)
    """With ``finish``: the round whose metric sums travel in ``metrics`` (None when none do)."""


class SiteStatus(StrictModel):
    """Plaintext part of a site's reply: whether it took part.  Never why not: a reason such as "would pass
    the epsilon cap" tells the server about the site's budget; it stays in the site's own records."""

    site_id: str
    status: Literal["ok", "declined"]


def ct_record(header_json: str, payload: bytes) -> ArrayRecord:
    """A ciphertext and its header as one ArrayRecord: ``header`` then <= 5 MiB ``ct.NNNNN`` arrays."""
    head = header_json.encode()
    arrays = {"header": Array(dtype="json", shape=(len(head),), stype="flame.envelope", data=head)}
    parts = [payload[i:i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]
    for i, part in enumerate(parts):
        arrays[f"ct.{i:05d}"] = Array(dtype="bytes", shape=(len(part),), stype="flame.ckks", data=part)
    return ArrayRecord(arrays)


def read_ct_record(record: ArrayRecord) -> tuple[str, bytes]:
    """Header JSON and payload bytes; raises ValueError if the record is not a ciphertext record."""
    if "header" not in record.keys():
        raise ValueError("record has no ciphertext header")
    header = bytes(record["header"].data).decode()
    payload = b"".join(bytes(record[k].data) for k in sorted(record.keys()) if k.startswith("ct."))
    return header, payload


def instruction_record(instruction: Instruction) -> ConfigRecord:
    return ConfigRecord({INSTRUCTION: instruction.model_dump_json()})


def read_instruction(content: RecordDict) -> Instruction:
    return Instruction.model_validate_json(str(content[INSTRUCTION][INSTRUCTION]))


def status_record(status: SiteStatus) -> ConfigRecord:
    return ConfigRecord({STATUS: status.model_dump_json()})


def read_status(content: RecordDict) -> SiteStatus:
    return SiteStatus.model_validate_json(str(content[STATUS][STATUS]))
