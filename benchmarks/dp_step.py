"""DP-SGD step time and peak memory: non-private vs each Opacus grad-sample mode, both models.

Each configuration runs in a fresh process (peak RSS is per process; CUDA peak
memory from torch.cuda.max_memory_allocated). Prints a table and saves
benchmarks/results/dp_step[_cuda].json.

Usage: python benchmarks/dp_step.py [--grids 32 48] [--batch 4] [--steps 6] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

from _common import save

MODES = ("none", "ew", "hooks", "functorch")


def measure(task: str, mode: str, grid: int, batch: int, steps: int, device: str, queue: mp.Queue) -> None:
    import torch
    from opacus import GradSampleModule
    from opacus.grad_sample import GradSampleModuleExpandedWeights
    from opacus.optimizers import DPOptimizer

    from flame_private.config import ModelConfig
    from flame_private.models import build_model
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
    if mode != "none":
        opt = DPOptimizer(opt, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=batch)
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
    queue.put({"task": task, "mode": mode, "grid": grid, "batch": batch, "step_s": statistics.median(times),
               "peak_mb": round(peak, 1)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 48])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for grid in args.grids:
        for task in ("response", "evolution"):
            for mode in args.modes:
                q: mp.Queue = ctx.Queue()
                p = ctx.Process(target=measure, args=(task, mode, grid, args.batch, args.steps, args.device, q))
                p.start()
                p.join()
                if p.exitcode != 0 or q.empty():
                    rows.append({"task": task, "mode": mode, "grid": grid, "batch": args.batch, "error": p.exitcode})
                    print(f"{task:9s} {grid:3d}^3 {mode:9s} FAILED (exit {p.exitcode})", flush=True)
                    continue
                row = q.get()
                base = next((r for r in rows if r["task"] == task and r["grid"] == grid and r["mode"] == "none"
                             and "step_s" in r), None)
                row["ratio_to_non_private"] = round(row["step_s"] / base["step_s"], 2) if base else 1.0
                rows.append(row)
                print(f"{task:9s} {grid:3d}^3 {mode:9s} step {row['step_s']:.3f} s  x{row['ratio_to_non_private']:.2f}"
                      f"  peak {row['peak_mb']:.0f} MB", flush=True)
    name = "dp_step" if args.device == "cpu" else f"dp_step_{args.device}"
    print(f"saved {save(name, {'device': args.device, 'rows': rows})}")
    print(json.dumps(rows[:1]))


if __name__ == "__main__":
    main()
