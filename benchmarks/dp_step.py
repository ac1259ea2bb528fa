"""DP-SGD step time and peak memory: non-private vs each Opacus grad-sample mode, both models; noise sources.

Each configuration runs in a fresh process (peak RSS is per process; CUDA peak
memory from torch.cuda.max_memory_allocated). Prints a table and saves
benchmarks/results/dp_step[_cuda].json.

Noise sources (``--noises``), all keyed or seeded from the OS's CSPRNG, fresh per process:
  chacha20        what sites run: ChaCha20 keystream, Box-Muller in float64 (privacy.randomness)
  torch           Opacus's default sampler, torch.normal on a Mersenne Twister seeded from the OS
  torch-hardened  Opacus's secure-mode sampler (4 draws summed, against floating-point attacks) on that
                  generator; Opacus's secure_mode itself needs torchcsprng (recorded as available or not)

Usage: python benchmarks/dp_step.py [--grids 32 48] [--batch 4] [--steps 6] [--device cpu|cuda]
                                    [--modes none ew hooks functorch] [--noises chacha20 torch torch-hardened]
                                    [--out NAME]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

from _common import save

MODES = ("none", "ew", "hooks", "functorch")
NOISES = ("chacha20", "torch", "torch-hardened")


def secure_mode_available() -> str:
    """Whether Opacus's own secure_mode can run here (it needs the torchcsprng package)."""
    try:
        import torchcsprng  # noqa: F401
    except ImportError as exc:
        return f"no: {exc}"
    return "yes"


def noise_cost(repeats: int = 9) -> list[dict]:
    """Milliseconds to draw one step's noise for each model, per source (no training around it)."""
    import secrets

    import torch
    from opacus.optimizers.optimizer import _generate_noise

    from flame_private.config import ModelConfig
    from flame_private.models import build_model
    from flame_private.privacy.randomness import DPRandomness

    rows = []
    for task in ("response", "evolution"):
        params = [p.detach() for p in build_model(task, ModelConfig()).parameters()]  # type: ignore[arg-type]
        gen = torch.Generator().manual_seed(secrets.randbits(63))
        stream = DPRandomness.secret()
        sources = {
            "chacha20": lambda: stream.normal_like(params, 1.0),  # noqa: B023
            "torch": lambda: [_generate_noise(1.0, p, gen, secure_mode=False) for p in params],  # noqa: B023
            "torch-hardened": lambda: [_generate_noise(1.0, p, gen, secure_mode=True) for p in params],  # noqa: B023
        }
        for name, draw in sources.items():
            draw()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                draw()
                times.append(time.perf_counter() - t0)
            rows.append({"task": task, "noise": name, "parameters": sum(p.numel() for p in params),
                         "ms_per_step": round(1000 * statistics.median(times), 1)})
            print(f"noise {task:9s} {name:15s} {rows[-1]['ms_per_step']:7.1f} ms per step", flush=True)
    return rows


def measure(task: str, mode: str, noise: str, grid: int, batch: int, steps: int, device: str,
            queue: mp.Queue) -> None:
    import secrets

    import torch
    from opacus import GradSampleModule
    from opacus.grad_sample import GradSampleModuleExpandedWeights
    from opacus.optimizers import DPOptimizer

    from flame_private.config import ModelConfig
    from flame_private.models import build_model
    from flame_private.privacy.dp import SecretNoiseDPOptimizer
    from flame_private.privacy.randomness import DPRandomness
    from flame_private.training import make_loss

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(task, ModelConfig()).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    net = model
    if mode == "ew":
        net = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
    elif mode in ("hooks", "functorch"):
        net = GradSampleModule(model, batch_first=True, loss_reduction="mean", force_functorch=mode == "functorch")
    if mode != "none" and noise == "chacha20":
        opt = SecretNoiseDPOptimizer(opt, randomness=DPRandomness.secret(), noise_multiplier=1.0,
                                     max_grad_norm=1.0, expected_batch_size=batch)
    elif mode != "none":
        generator = torch.Generator(device=dev).manual_seed(secrets.randbits(63))
        opt = DPOptimizer(opt, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=batch,
                          generator=generator, secure_mode=noise == "torch-hardened")
    g = grid
    image = torch.randn(batch, 4, g, g, g, device=dev)
    seg = torch.randint(0, 4, (batch, 1, g, g, g), device=dev)
    treatment = torch.eye(3, device=dev)[torch.arange(batch) % 3]
    if task == "response":
        inputs, target = (image, seg, treatment, torch.randn(batch, 6, device=dev)), torch.ones(batch, device=dev)
    else:
        inputs, target = (image, seg, treatment, torch.rand(batch, 1, device=dev)), seg
    loss_fn = make_loss(task)  # type: ignore[arg-type]
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(*inputs), target).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({"task": task, "mode": mode, "noise": noise if mode != "none" else None, "grid": grid, "batch": batch,
               "step_s": statistics.median(times), "peak_mb": round(peak, 1)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 48])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--noises", nargs="+", default=list(NOISES), help="noise sources, measured in mode 'ew'")
    ap.add_argument("--out", default=None, help="result name (default dp_step, or dp_step_<device>)")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for grid in args.grids:
        for task in ("response", "evolution"):
            configs = [(m, "chacha20") for m in args.modes]
            configs += [("ew", n) for n in args.noises if n != "chacha20" and "ew" in args.modes]
            for mode, noise in configs:
                q: mp.Queue = ctx.Queue()
                p = ctx.Process(target=measure, args=(task, mode, noise, grid, args.batch, args.steps, args.device, q))
                p.start()
                p.join()
                label = mode if mode == "none" else f"{mode}/{noise}"
                if p.exitcode != 0 or q.empty():
                    rows.append({"task": task, "mode": mode, "noise": noise, "grid": grid, "batch": args.batch,
                                 "error": p.exitcode})
                    print(f"{task:9s} {grid:3d}^3 {label:18s} FAILED (exit {p.exitcode})", flush=True)
                    continue
                row = q.get()
                base = next((r for r in rows if r["task"] == task and r["grid"] == grid and r["mode"] == "none"
                             and "step_s" in r), None)
                row["ratio_to_non_private"] = round(row["step_s"] / base["step_s"], 2) if base else 1.0
                rows.append(row)
                ratio = row["ratio_to_non_private"]
                print(f"{task:9s} {grid:3d}^3 {label:18s} step {row['step_s']:.3f} s  x{ratio:.2f}"
                      f"  peak {row['peak_mb']:.0f} MB", flush=True)
    name = args.out or ("dp_step" if args.device == "cpu" else f"dp_step_{args.device}")
    figures = {"device": args.device, "opacus_secure_mode_available": secure_mode_available(), "rows": rows,
               "noise_per_step": noise_cost() if args.device == "cpu" else []}
    print(f"saved {save(name, figures)}")


if __name__ == "__main__":
    main()
