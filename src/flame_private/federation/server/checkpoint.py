"""The server's checkpoint: encrypted global models and metric sums, and which rounds are done.

Server side: holds ciphertexts and their headers only, never a key.  A restarted
server resumes after the last round ``state.json`` names; a crash at any moment
(tested by killing a writer at random points) leaves the previous round or the
new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from flame_private.errors import ExitCode, FlameError
from flame_private.records.durable import fsync_dir as _fsync_dir  # the records layer's durable-directory helper
from flame_private.secure.public.envelope import CiphertextEnvelope

SUFFIX = ".ckpt"
CKPT_MAGIC = b"FLAMECKPT1\n"


def checkpoint_bytes(ct: tuple[str, bytes]) -> bytes:
    """One ciphertext as one file: magic, header length (8 bytes, big-endian), header JSON, payload."""
    head = ct[0].encode()
    return CKPT_MAGIC + len(head).to_bytes(8, "big") + head + ct[1]


def read_checkpoint_file(path: Path) -> tuple[str, bytes]:
    """Header JSON and payload of a checkpoint file; ValueError unless the header describes the payload."""
    data = path.read_bytes()
    if not data.startswith(CKPT_MAGIC):
        raise ValueError("not a checkpoint file")
    start = len(CKPT_MAGIC) + 8
    n = int.from_bytes(data[len(CKPT_MAGIC):start], "big")
    try:
        header = data[start:start + n].decode()
        env = json.loads(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"unreadable header ({exc})") from None
    payload = data[start + n:]
    if (not isinstance(env, dict) or env.get("n_bytes") != len(payload)
            or env.get("payload_sha256") != hashlib.sha256(payload).hexdigest()):
        raise ValueError("the payload does not match its header")
    return header, payload


class CheckpointError(FlameError, RuntimeError):
    """The server's checkpoint cannot be trusted as it is: resuming would silently start over or mix rounds."""

    exit_code = ExitCode.INPUT


def write_atomic(path: Path, data: bytes) -> None:
    """Whole file or nothing, durable: temp file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Checkpoint:
    """Encrypted global models and metric sums on the server's disk, and which rounds are done.

    Each ciphertext is one file holding its header and payload together
    (``<task>-model.r<round>.ckpt``), written whole or not at all; ``state.json``
    names the files of the last completed round of each task and is replaced
    atomically after they are on disk.  ``state.json`` alone decides what is
    done: a crash at any moment leaves either the previous round or the new one,
    never a header of one round beside the payload of another.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state_path = root / "state.json"
        self.state: dict[str, Any] = {"format": 2, "done": {}, "rounds": [], "files": {}}
        if self.state_path.is_file():
            try:
                self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{self.state_path}: unreadable ({exc}); restore it from a backup or start "
                                      "a new run id") from None
            if self.state.get("format") != 2:
                raise CheckpointError(f"{self.state_path}: written by an older flame-private (split .ct/.json "
                                      "checkpoints, which sites no longer accept); start a new run id")
        self._tidy()

    def _tidy(self) -> None:
        """Remove what a crash left: files of a round never committed, or superseded but not yet deleted."""
        named = set(self.state["files"].values())
        for path in self.root.iterdir():
            if path.is_file() and (path.suffix == SUFFIX and path.name not in named or path.name.endswith(".tmp")):
                path.unlink(missing_ok=True)

    def last_round(self, task: str) -> int:
        return int(self.state["done"].get(task, 0))

    def model(self, task: str) -> tuple[str, bytes] | None:
        return self._read(f"{task}-model")

    def metrics(self, task: str) -> tuple[str, bytes] | None:
        return self._read(f"{task}-metrics")

    def _read(self, stem: str) -> tuple[str, bytes] | None:
        name = self.state["files"].get(stem)
        if name is None:
            return None
        path = self.root / name
        try:
            return read_checkpoint_file(path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: named by {self.state_path.name} but unusable ({exc})") from None

    def commit(self, task: str, round_: int, summary: dict[str, Any], *, model: tuple[str, bytes] | None = None,
               metrics: tuple[str, bytes] | None = None) -> None:
        """Mark ``task`` round ``round_`` done, with its global model and metric sums if any, as one unit."""
        files = dict(self.state["files"])
        for stem, ct in ((f"{task}-model", model), (f"{task}-metrics", metrics)):
            if ct is None:
                continue
            name = f"{stem}.r{round_:05d}{SUFFIX}"
            write_atomic(self.root / name, checkpoint_bytes(ct))
            files[stem] = name
        state = {**self.state, "done": {**self.state["done"], task: round_},
                 "rounds": [*self.state["rounds"], {"task": task, "round": round_, **summary}], "files": files}
        write_atomic(self.state_path, json.dumps(state, indent=1).encode())  # the moment the round is done
        superseded = set(self.state["files"].values()) - set(files.values())
        self.state = state
        for name in superseded:
            (self.root / name).unlink(missing_ok=True)


def carried_forward(ct: tuple[str, bytes], round_: int) -> tuple[str, bytes]:
    """The global model unchanged by a refused round, labelled as the model after ``round_``.

    Sites expect the aggregate of round r-1 with round r; when round r-1 was
    refused the model after it is the one before, under its new round number.
    """
    env = CiphertextEnvelope.model_validate_json(ct[0])
    return env.model_copy(update={"round": round_}).model_dump_json(), ct[1]
