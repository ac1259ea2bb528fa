"""Gradient inversion: can whoever sees one site's update rebuild a patient's MRI from it?

Inverting Gradients (Geiping et al. 2020): start from noise and move a candidate
input until the gradient it would produce points the same way as the observed
one (cosine loss), with a total-variation prior, Adam on signed gradients, and
several restarts of which the attacker keeps the best match (judged only by the
matching loss: the attacker never sees the truth).  The label comes first, from
the sign of the last bias's gradient (iDLG, batch size 1); the clinical
condition (treatment and covariates) falls out exactly from any Linear layer
that reads it (dL/dW_i / dL/db_i), which FiLM layers are.

Target: a 2-D slice variant of the response model (the same conv-GroupNorm-FiLM
blocks and condition, a dense head over the feature map).  It is the setting
where inversion works best, so the positive control is strong: on the 3-D
network with global pooling the same attack recovered almost nothing in our
measurements even without DP, which is not a protection we count on.  The
attacker sees the gradient of one local step (FedSGD), the most a single
update can reveal; a real site sends weights after several Adam steps, which
reveals less.

Arms: the plaintext gradient (positive control), the site's DP-SGD gradient
(Opacus: per-patient clipping and Gaussian noise, the demo's sigma and clip),
and the CKKS ciphertext of the update, which is all the server receives.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from scipy.optimize import linear_sum_assignment
from torch import nn

from flame_private.attacks.cohort import ResponseTensors, attack_data
from flame_private.attacks.result import AttackArm, AttackResult, Metric
from flame_private.config import DPConfig, HEConfig
from flame_private.models.blocks import FiLM, model_inputs
from flame_private.models.response import COND_DIM
from flame_private.privacy.dp import make_private, plan_dp, unwrap
from flame_private.training import gradient, make_loss

log = logging.getLogger(__name__)

MRI_CHANNELS = 4
SSIM_MARGIN = 0.10
PSNR_MARGIN_DB = 2.0
"""The attack 'succeeds' when it beats the prior-only guess by both margins.  Measured (seed 0,
batch 1, 32^2): plaintext +0.3 SSIM and +4.7 dB; DP-SGD at sigma 1.5 below the prior."""


@dataclass(frozen=True)
class InversionSettings:
    n_patients: int = 24
    """Simulated patients: the first ``batch_size`` are the victims, the rest give the attacker's prior."""
    grid: int = 32
    batch_size: int = 1
    channels: tuple[int, ...] = (16, 32, 64)
    iterations: int = 400
    restarts: int = 2
    learning_rate: float = 0.1
    tv_weight: float = 0.01
    noise_multiplier: float = 1.5
    """The site's DP-SGD noise (the demo federation's sigma)."""
    max_grad_norm: float = 1.0


SIZES: dict[str, InversionSettings] = {
    "ci": InversionSettings(),
    "full": InversionSettings(n_patients=48, iterations=2000, restarts=4),
}


class SliceResponseNet(nn.Module):
    """2-D response model on the axial slice through the tumour: conv-GroupNorm-ReLU + FiLM, dense head."""

    def __init__(self, grid: int, channels: tuple[int, ...] = (16, 32, 64), groups: int = 4) -> None:
        super().__init__()
        self.convs, self.norms, self.films = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        prev = MRI_CHANNELS + 3
        for i, ch in enumerate(channels):
            self.convs.append(nn.Conv2d(prev, ch, 3, stride=1 if i == 0 else 2, padding=1))
            self.norms.append(nn.GroupNorm(min(groups, ch), ch))
            self.films.append(FiLM(COND_DIM, ch))
            prev = ch
        side = grid
        for _ in channels[1:]:
            side = (side + 1) // 2
        self.head = nn.Sequential(nn.Linear(prev * side * side + COND_DIM, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = x
        for conv, norm, film in zip(self.convs, self.norms, self.films, strict=True):
            h = film(torch.relu(norm(conv(h))), cond)
        return self.head(torch.cat([h.flatten(1), cond], dim=1)).squeeze(1)


def tumour_slices(data: ResponseTensors) -> torch.Tensor:
    """Each patient's 7-channel model input on the axial slice through the tumour's centre."""
    out = []
    for i in range(len(data)):
        seg = data.seg[i, 0]
        z = int((seg > 0).nonzero()[:, 2].float().mean()) if bool((seg > 0).any()) else seg.shape[2] // 2
        out.append(model_inputs(data.image[i:i + 1], data.seg[i:i + 1])[..., z])
    return torch.cat(out)


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def plaintext_gradient(model: nn.Module, x: torch.Tensor, cond: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The gradient of the mean loss over the batch: what one plain FedSGD step reveals."""
    loss = make_loss("response")(model(x, cond), y)
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]


def dp_gradient(model: nn.Module, x: torch.Tensor, cond: torch.Tensor, y: torch.Tensor,
                settings: InversionSettings, seed: int) -> list[torch.Tensor]:
    """The same step through the site's Opacus DP-SGD: per-patient clipping, then Gaussian noise.

    The batch is the victims (sampling rate 1 over them): what the attacker sees for a step in which
    they were sampled.  ``pre_step`` is Opacus's clip-accumulate-noise-scale, read before the update.
    """
    torch.manual_seed(seed)
    clone = copy.deepcopy(model)  # Opacus wraps the model it is given; the attacker's copy stays plain
    dp = DPConfig(noise_multiplier=settings.noise_multiplier, max_grad_norm=settings.max_grad_norm)
    plan = plan_dp(clone, len(y), len(y), 1, dp)
    data = torch.utils.data.TensorDataset(x, cond, y)
    private = make_private(clone, torch.optim.SGD(clone.parameters(), lr=0.0), data, plan)  # secret noise
    loss_fn = make_loss("response")
    for xb, cb, yb in private.loader:
        private.optimizer.zero_grad(set_to_none=True)
        loss_fn(private.model(xb, cb), yb).backward()
        private.optimizer.pre_step()
        break
    return [gradient(p).detach().clone() for p in unwrap(private.model).parameters()]


def recover_label(grads: list[torch.Tensor]) -> int:
    """iDLG for a single logit and BCE: dL/db_last = sigmoid(z) - y is negative exactly when y = 1."""
    return int(float(grads[-1].reshape(-1)[0]) < 0)


def recover_condition(model: SliceResponseNet, grads: list[torch.Tensor]) -> torch.Tensor:
    """The first FiLM Linear's input, dL/dW[i] / dL/db[i] for the row with the largest |dL/db[i]|."""
    names = [n for n, _ in model.named_parameters()]
    gw = grads[names.index("films.0.proj.weight")]
    gb = grads[names.index("films.0.proj.bias")]
    i = int(gb.abs().argmax())
    return gw[i] / gb[i] if float(gb[i].abs()) > 0 else torch.zeros(gw.shape[1])


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def invert(model: nn.Module, observed: list[torch.Tensor], cond: torch.Tensor, labels: torch.Tensor,
           shape: tuple[int, ...], settings: InversionSettings, seed: int) -> tuple[torch.Tensor, float]:
    """Inverting Gradients: the candidate batch whose gradient best matches ``observed`` (cosine + TV)."""
    params = list(model.parameters())
    target = _flat(observed)
    loss_fn = make_loss("response")
    best, best_loss = torch.zeros(shape), math.inf
    gen = torch.Generator().manual_seed(seed)
    n = settings.iterations
    for _restart in range(settings.restarts):
        x = (0.5 * torch.randn(shape, generator=gen)).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=settings.learning_rate)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3 * n // 8, 5 * n // 8, 7 * n // 8], gamma=0.1)
        for _ in range(n):
            opt.zero_grad()
            g = _flat(list(torch.autograd.grad(loss_fn(model(x, cond), labels), params, create_graph=True)))
            match = 1.0 - torch.dot(g, target) / (g.norm() * target.norm() + 1e-12)
            (match + settings.tv_weight * total_variation(x)).backward()
            gradient(x).sign_()
            opt.step()
            sched.step()
        g = _flat(list(torch.autograd.grad(loss_fn(model(x.detach(), cond), labels), params)))
        final = float(1.0 - torch.dot(g, target) / (g.norm() * target.norm() + 1e-12))
        if final < best_loss:
            best, best_loss = x.detach().clone(), final
    return best, best_loss


def _mean(score: torch.Tensor | Sequence) -> float:
    """A MONAI metric's value on tensors (its type also allows the lists it returns for lists)."""
    return float(torch.as_tensor(score).mean())


def image_scores(recon: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Mean SSIM and PSNR over the MRI channels, reconstructions matched to victims (order is unknown)."""
    rng = float(truth[:, :MRI_CHANNELS].max() - truth[:, :MRI_CHANNELS].min())
    ssim, psnr = SSIMMetric(spatial_dims=2, data_range=rng, win_size=7), PSNRMetric(max_val=rng)
    b = truth.shape[0]
    s = np.zeros((b, b))
    p = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            s[i, j] = _mean(ssim(recon[j:j + 1, :MRI_CHANNELS], truth[i:i + 1, :MRI_CHANNELS]))
            p[i, j] = _mean(psnr(recon[j:j + 1, :MRI_CHANNELS], truth[i:i + 1, :MRI_CHANNELS]))
    rows, cols = linear_sum_assignment(-s)
    return float(s[rows, cols].mean()), float(p[rows, cols].mean())


def _best_plaintext_cosine(payload: bytes, truth: np.ndarray) -> float:
    """Largest |cosine| between the update and the payload read as float64 or float32 at any alignment.

    What a server could get from a payload that carried the update in the clear
    (the check's own positive control: applied to the plaintext bytes it gives 1).
    """
    best = 0.0
    unit_truth = truth / np.linalg.norm(truth)
    for dtype in (np.float64, np.float32):
        size = np.dtype(dtype).itemsize
        for offset in range(size):
            if (len(payload) - offset) // size < truth.size:
                continue
            with np.errstate(invalid="ignore", over="ignore"):  # random bits read as floats: NaNs, infinities
                view = np.frombuffer(payload, dtype=dtype, count=truth.size, offset=offset).astype(np.float64)
            view = np.nan_to_num(view, nan=0.0, posinf=0.0, neginf=0.0)
            peak = float(np.abs(view).max())
            if peak == 0.0:
                continue
            view = view / peak  # values up to 1e308 would overflow the norm and hide the reading
            best = max(best, abs(float(np.dot(view / np.linalg.norm(view), unit_truth))))
    return best


def _server_view_of_ciphertext(grads: list[torch.Tensor], work: Path) -> dict[str, float | bool | str]:
    """Encrypt the update as a site does; the server, holding only the params-only context, tries to use it."""
    import tenseal.sealapi as sa

    from flame_private.secure.public.context_file import load_params_context
    from flame_private.secure.site.ceremony import key_ceremony
    from flame_private.secure.site.codec import decrypt_vector, encrypt_vector
    from flame_private.secure.site.keys import SecretContext, load_secret_context

    ceremony = key_ceremony(HEConfig(), work / f"keys-{time.time_ns()}")
    site = load_secret_context(ceremony.secret_path)
    server = load_params_context(ceremony.params_path)
    truth = _flat(grads).double().numpy()
    scale = 1.0 / max(1e-12, float(np.abs(truth).max()))  # sites encrypt bounded values (packing.py)
    payload = encrypt_vector(site, truth * scale, max_sites=1)
    # The best the server can do: read the bytes as numbers, or decrypt with a key of its own.
    own = SecretContext(params=server, secret_key=sa.KeyGenerator(server.seal).secret_key())
    guess = decrypt_vector(own, payload, truth.size)
    cosine = float(np.dot(guess, truth) / (np.linalg.norm(guess) * np.linalg.norm(truth) + 1e-300))
    site_view = decrypt_vector(site, payload, truth.size) / scale
    return {"payload_bytes": len(payload),
            "cosine_payload_as_numbers_vs_update": _best_plaintext_cosine(payload, truth),
            "cosine_plaintext_bytes_vs_update (control)": _best_plaintext_cosine(truth.tobytes(), truth),
            "cosine_own_key_decryption_vs_update": cosine,
            "site_decryption_max_error": float(np.abs(site_view - truth).max())}


def _panel(truth: torch.Tensor, prior: torch.Tensor, plain: torch.Tensor, private: torch.Tensor,
           scores: dict[str, tuple[float, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_private.cohort.figure import save_figure

    channel = 1  # T1ce: where the enhancing tumour shows
    cols = [("true MRI (T1ce)", truth), ("prior only (attacker's guess)", prior),
            ("reconstructed, no DP", plain), ("reconstructed, with DP-SGD", private)]
    b = truth.shape[0]
    fig, axes = plt.subplots(b, len(cols), figsize=(3.0 * len(cols), 3.1 * b + 0.4), squeeze=False)
    lo, hi = float(truth[:, channel].min()), float(truth[:, channel].max())
    for r in range(b):
        for c, (title, imgs) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(imgs[r, channel].T.numpy(), cmap="gray", origin="lower", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            key = ["truth", "prior", "plain", "dp"][c]
            label = title if key == "truth" else f"{title}\nSSIM {scores[key][0]:.2f}, PSNR {scores[key][1]:.1f} dB"
            ax.set_title(label if r == 0 else "", fontsize=9)
    fig.suptitle("Gradient inversion of one site's update (synthetic patient)", fontsize=11)
    return save_figure(fig, out)


def run_gradient_inversion(out_dir: Path, size: str = "ci", seed: int = 0,
                           batch_size: int | None = None) -> AttackResult:
    """All three arms on the same victims; writes the PNG panel into ``out_dir``."""
    settings = SIZES[size]
    if batch_size is not None:
        if not 1 <= batch_size <= 4:
            raise ValueError(f"batch_size must be 1-4 (got {batch_size})")
        settings = replace(settings, batch_size=batch_size)
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    data = attack_data(work, settings.n_patients, settings.grid, seed)
    slices = tumour_slices(data)
    cond_all = torch.cat([data.treatment, data.covariates], dim=1)
    b = settings.batch_size
    x, cond, y = slices[:b], cond_all[:b], data.label[:b]
    prior = slices[b:].mean(0, keepdim=True).expand(b, -1, -1, -1).clone()

    torch.manual_seed(seed)
    model = SliceResponseNet(settings.grid, settings.channels)
    observed = {"plain": plaintext_gradient(model, x, cond, y),
                "dp": dp_gradient(model, x, cond, y, settings, seed)}
    recon, scores = {}, {"truth": (1.0, math.inf), "prior": image_scores(prior, x)}
    arms_metrics: dict[str, dict[str, Metric]] = {}
    for key, grads in observed.items():
        log.info("inverting the %s gradient (%d restarts x %d iterations)", key, settings.restarts,
                 settings.iterations)
        # The attacker's label guess (iDLG at batch 1; at larger batches it is given the true labels).
        labels = torch.tensor([float(recover_label(grads))]) if b == 1 else y
        recon[key], match = invert(model, grads, cond, labels, tuple(x.shape), settings, seed + 1)
        scores[key] = image_scores(recon[key], x)
        cond_err = float((recover_condition(model, grads) - cond[0]).abs().max()) if b == 1 else None
        arms_metrics[key] = {
            "ssim": round(scores[key][0], 4), "psnr_db": round(scores[key][1], 3),
            "ssim_prior_only": round(scores["prior"][0], 4), "psnr_prior_only_db": round(scores["prior"][1], 3),
            "gradient_match_loss": round(match, 5),
            "label_recovered": bool(recover_label(grads) == int(y[0])) if b == 1 else None,
            "condition_max_abs_error": None if cond_err is None else round(cond_err, 6),
        }
    figure = _panel(x, prior, recon["plain"], recon["dp"], scores, out_dir / "gradient-inversion.png")

    def beats_prior(key: str) -> bool:
        return (scores[key][0] - scores["prior"][0] >= SSIM_MARGIN
                and scores[key][1] - scores["prior"][1] >= PSNR_MARGIN_DB)

    he = _server_view_of_ciphertext(observed["plain"], work)
    he_started = max(abs(float(he["cosine_own_key_decryption_vs_update"])),
                     float(he["cosine_payload_as_numbers_vs_update"])) > 0.1
    arms = [
        AttackArm(name="no DP, plaintext update", protection="none", is_control=True,
                  attack_succeeded=beats_prior("plain"), metrics=arms_metrics["plain"],
                  detail=f"Reconstruction SSIM {scores['plain'][0]:.2f} / PSNR {scores['plain'][1]:.1f} dB against "
                         f"{scores['prior'][0]:.2f} / {scores['prior'][1]:.1f} dB for the prior alone."),
        AttackArm(name=f"DP-SGD (sigma {settings.noise_multiplier}, clip {settings.max_grad_norm})",
                  protection="dp", is_control=False, attack_succeeded=beats_prior("dp"), metrics=arms_metrics["dp"],
                  detail=f"Reconstruction SSIM {scores['dp'][0]:.2f} / PSNR {scores['dp'][1]:.1f} dB: "
                         + ("better than the prior alone." if beats_prior("dp") else "no better than the prior.")),
        AttackArm(name="CKKS: what the server receives", protection="he", is_control=False,
                  attack_succeeded=he_started, metrics={**he},
                  detail="Read as numbers, the ciphertext bytes are uncorrelated with the update (best cosine "
                         f"{float(he['cosine_payload_as_numbers_vs_update']):.3f}; the same reading of plaintext "
                         "bytes gives 1.000), and decrypting with a key of its own gives cosine "
                         f"{float(he['cosine_own_key_decryption_vs_update']):.3f}: there is no gradient to invert."),
    ]
    plain_m = arms_metrics["plain"]
    leaks = [what for what, ok in (("the responder label", plain_m["label_recovered"] is True),
                                   ("the clinical condition exactly",
                                    plain_m["condition_max_abs_error"] is not None
                                    and float(plain_m["condition_max_abs_error"]) < 1e-4)) if ok]
    summary = (
        f"From one site's plaintext gradient for {b} synthetic patient(s), the attacker's reconstruction "
        + ("beat" if beats_prior("plain") else "did NOT beat")
        + f" a guess from other patients (SSIM {scores['plain'][0]:.2f} vs {scores['prior'][0]:.2f}, PSNR "
        f"{scores['plain'][1]:.1f} vs {scores['prior'][1]:.1f} dB)"
        + (f" and recovered {' and '.join(leaks)}. " if leaks else ". ")
        + f"With the site's DP-SGD (noise {settings.noise_multiplier} x clip) the reconstruction was "
        + ("still better than that guess: the protection did NOT hold. " if beats_prior("dp")
           else "no better than that guess. ")
        + ("Under CKKS the server holds only ciphertexts that it cannot decrypt and that read as noise, so the "
           "attack has nothing to start from." if not he_started
           else "Under CKKS the server's view was correlated with the update: the protection did NOT hold."))
    return AttackResult(attack="gradient-inversion", title="Gradient inversion (Inverting Gradients, iDLG)",
                        summary=summary, seed=seed, size=size, seconds=round(time.perf_counter() - t0, 1),
                        settings={**asdict(settings), "ssim_margin": SSIM_MARGIN, "psnr_margin_db": PSNR_MARGIN_DB,
                                  "model": "SliceResponseNet (2-D variant of the response model)",
                                  "attacker_knows": "model weights, the condition, batch size; label by iDLG"},
                        arms=arms, figures=[figure.name])
