"""The server optimiser, run at every site after decryption: FedAvg, FedAvgM or FedAdam.

The server only adds ciphertexts and never sees a model, so the server-side step of
adaptive federated optimisation (Reddi et al. 2021, "Adaptive Federated
Optimization") runs at the sites: each site decrypts the same aggregate (the
patient-weighted average of the site models) and applies the same deterministic
step to it (float64 state, parameters in sorted order, elementwise operations
only), so every site holds the same next global model.  The step reads only the
previous global model and decrypted aggregates, which are already DP: it costs no
privacy.

With ``fedavg`` nothing is kept and the average is returned as it is.  Otherwise
the state (the global model, the moments, the round and which average it was
stepped with) is kept per run and task in the site's state folder, written whole
or not at all.  A site whose state is missing, of another round, of another
optimiser setting, or stepped with a different average of the same round refuses
(``ServerOptimizerError``, naming the file): it cannot silently diverge from the
other sites.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flame_private.config import ServerOptimizerConfig
from flame_private.errors import ExitCode, FlameError
from flame_private.records.durable import fsync_dir as _fsync_dir  # the records layer's durable-directory helper

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
STATE_DIR = "server-optimizer"
"""Folder of the site's state folder holding ``<run_id>/<task>.pt``."""
_MOMENTS = {"fedavg": (), "fedavgm": ("v",), "fedadam": ("m", "v")}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ServerOptimizerError(FlameError, RuntimeError):
    """The site cannot compute the next global model the other sites compute: missing or stale state."""

    exit_code = ExitCode.INPUT


@dataclass
class OptimizerState:
    """What a site keeps between rounds: the global model of ``round`` and the optimiser's moments."""

    round: int
    settings: dict[str, object]
    """The optimiser and its hyperparameters that produced this state."""
    average_sha256: str
    """Digest of the decrypted average this round was stepped with."""
    model: State
    moments: dict[str, State] = field(default_factory=dict)


def _floating(t: torch.Tensor) -> bool:
    return t.is_floating_point()


def settings_of(cfg: ServerOptimizerConfig) -> dict[str, object]:
    """The hyperparameters that matter for ``cfg.name``: a state from other settings must not be continued."""
    out: dict[str, object] = {"name": cfg.name, "lr": cfg.server_lr}
    if cfg.name == "fedavgm":
        out["momentum"] = cfg.momentum
    elif cfg.name == "fedadam":
        out.update(beta1=cfg.beta1, beta2=cfg.beta2, tau=cfg.tau)
    return out


def average_digest(average: State) -> str:
    """SHA-256 of the average's names, dtypes, shapes and float64 values, in sorted order."""
    h = hashlib.sha256()
    for k in sorted(average):
        v = average[k].detach().cpu()
        v = v.to(torch.float64) if _floating(v) else v
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def server_step(cfg: ServerOptimizerConfig, previous: State, average: State,
                moments: dict[str, State]) -> tuple[State, dict[str, State]]:
    """One server step: the next global model (float64) and moments from ``previous`` and the decrypted ``average``.

    The pseudo-gradient is ``g = previous - average`` (Reddi et al. 2021):

    - fedavg: ``x = previous - lr * g`` (``lr`` 1: the average);
    - fedavgm: ``v = momentum * v + g``, ``x = previous - lr * v`` (v starts at 0);
    - fedadam: ``m = beta1 * m + (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g^2``,
      ``x = previous - lr * m / (sqrt(v) + tau)`` (m starts at 0, v at tau^2; no bias correction).

    Non-floating entries (counters) take the average's value.  Pure: the inputs are not modified.
    """
    if set(previous) != set(average):
        raise ServerOptimizerError(f"the decrypted average's parameters {sorted(set(average) ^ set(previous))} "
                                   "do not match the previous global model's")
    lr = cfg.server_lr
    new: State = {}
    out: dict[str, State] = {name: {} for name in _MOMENTS[cfg.name]}
    for k in sorted(average):
        avg = average[k].detach().cpu()
        if not _floating(avg):
            new[k] = avg.clone()
            continue
        x = previous[k].detach().cpu().to(torch.float64)
        g = x - avg.to(torch.float64)
        if cfg.name == "fedavg":
            new[k] = x - lr * g
        elif cfg.name == "fedavgm":
            v = moments.get("v", {}).get(k, torch.zeros_like(g)) * cfg.momentum + g
            out["v"][k] = v
            new[k] = x - lr * v
        else:
            m = moments.get("m", {}).get(k, torch.zeros_like(g)) * cfg.beta1 + (1.0 - cfg.beta1) * g
            v = moments.get("v", {}).get(k, torch.full_like(g, cfg.tau**2)) * cfg.beta2 + (1.0 - cfg.beta2) * (g * g)
            out["m"][k], out["v"][k] = m, v
            new[k] = x - lr * m / (torch.sqrt(v) + cfg.tau)
    return new, out


def state_path(state_dir: Path, run_id: str, task: str) -> Path:
    """``<state_dir>/server-optimizer/<run_id>/<task>.pt``; refuses a run id or task that is not a plain name."""
    for what, name in (("run id", run_id), ("task", task)):
        if not _SAFE_ID.match(name):
            raise ServerOptimizerError(f"{what} {name!r} is not a plain name; the server optimiser state cannot "
                                       "be kept under it")
    return Path(state_dir) / STATE_DIR / run_id / f"{task}.pt"


def load_state(path: Path) -> OptimizerState | None:
    """The state at ``path``, or None when there is none; raises ServerOptimizerError for an unreadable file."""
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return OptimizerState(round=int(raw["round"]), settings=dict(raw["settings"]),
                              average_sha256=str(raw["average_sha256"]), model=dict(raw["model"]),
                              moments={k: dict(v) for k, v in raw["moments"].items()})
    except Exception as exc:  # noqa: BLE001 - any unreadable state is refused the same way
        raise ServerOptimizerError(f"{path}: unreadable server optimiser state ({exc})") from None


def save_state(path: Path, state: OptimizerState) -> None:
    """Whole file or nothing, durable: temp file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"round": state.round, "settings": state.settings, "average_sha256": state.average_sha256,
                "model": state.model, "moments": state.moments}, buf)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def next_global(cfg: ServerOptimizerConfig, state_dir: Path, run_id: str, task: str, round_: int,
                average: State, initial: State) -> State:
    """The global model of ``round_`` from the decrypted ``average`` of that round; the same at every site.

    fedavg: ``average`` itself, nothing kept.  Otherwise the step from the kept global model of
    round ``round_ - 1`` (for round 1: ``initial``, the seeded initial model every site builds)
    is taken once and kept; the same round's average seen again (evaluation, then the next
    round's training, then the export) gives the kept model.  Raises ServerOptimizerError,
    naming the state file, when the kept state cannot give the model the other sites compute.
    """
    if cfg.name == "fedavg":
        return average
    path = state_path(state_dir, run_id, task)
    kept = load_state(path)
    settings, digest = settings_of(cfg), average_digest(average)
    if kept is not None and kept.settings != settings:
        raise ServerOptimizerError(f"{path}: kept by server optimiser {kept.settings}, but the run config says "
                                   f"{settings}; this site cannot continue another optimiser's state")
    if kept is not None and kept.round == round_:
        if kept.average_sha256 != digest:
            raise ServerOptimizerError(f"{path}: round {round_} was stepped with another decrypted average "
                                       "than the one received now; the sites' global models would diverge")
        return kept.model
    if kept is None and round_ != 1:
        raise ServerOptimizerError(f"{path}: no server optimiser state, but the aggregate is of round {round_}; "
                                   "the step needs the global model and moments of round "
                                   f"{round_ - 1} (a site that missed a round cannot rejoin this run)")
    if kept is not None and kept.round != round_ - 1:
        raise ServerOptimizerError(f"{path}: server optimiser state of round {kept.round}, but the aggregate is "
                                   f"of round {round_}; the step needs the state of round {round_ - 1}")
    previous, moments = (initial, {}) if kept is None else (kept.model, kept.moments)
    model, moments = server_step(cfg, previous, average, moments)
    save_state(path, OptimizerState(round=round_, settings=settings, average_sha256=digest, model=model,
                                    moments=moments))
    log.info("%s step of %s round %d kept in %s", cfg.name, task, round_, path)
    return model
