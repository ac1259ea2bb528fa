"""Model quality, centralised and without DP, on the study cohort: do the models beat their baselines?

Pools every site's training patients (the upper reference a federation is
compared with), trains each model, and after every epoch scores it and its
baselines on the pooled validation patients (learning curves); at the end, on
the pooled test patients, with 95 % bootstrap intervals.  Baselines: no change
(evolution); prevalence and a logistic regression on 16 observable features
(response), fitted on the same training patients.  When the cohort has its
counterfactual truth (truth/counterfactuals.json), the final response model's
treatment comparison on the pooled test patients is saved beside the logistic
baseline's and the fixed rules' on the same patients (experiments.treatment_comparison_with_baselines).

With --score-public, the final model and its baselines (fitted on the same
study training patients) are also scored on every patient of the public cohort
(configs/cohort/public.yaml): other scanners and another referral mix than any
study site, so a model that fits the study sites' quirks shows it there.

Saves benchmarks/results/<out>.json (default model_quality) and its learning curves,
docs/img/learning-curves.png (default out) or docs/img/<out>-learning-curves.png.
Runs with the same --out are merged when they measured the same cohort (its
cohort.json fingerprint); a different cohort is refused, never mixed in.

Usage: python benchmarks/model_quality.py [--cohort runs/study/cohort] [--epochs-response 10]
                                          [--epochs-evolution 6] [--epochs-segmentation 8] [--lr 1e-3]
                                          [--tasks response evolution segmentation] [--score-public]
                                          [--out model_quality]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from _common import RESULTS, ROOT, add_study_args, cohort_identity, save, study_splits
from _public import pretrain_on_public


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_args(ap)
    ap.add_argument("--epochs-response", type=int, default=10)
    ap.add_argument("--epochs-evolution", type=int, default=6)
    ap.add_argument("--epochs-segmentation", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                    help="cosine: the rate falls to 0 over the run (results under <task>_cosine)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--positive-weight", type=float, default=0.4,
                    help="weight of responders in the response loss (~70 %% of the study cohort respond)")
    ap.add_argument("--tasks", nargs="+", default=["response", "evolution"])
    ap.add_argument("--init", choices=("random", "regression", "public"), default="random",
                    help="start from random weights; from random weights with the response network's linear part "
                         "set to the regression of its wide features on the training patients; or from the model "
                         "pretrained on the public cohort")
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--score-public", action="store_true",
                    help="also score the final model and its baselines on every patient of the public cohort")
    ap.add_argument("--public", type=Path, default=ROOT / "runs" / "public" / "cohort")
    ap.add_argument("--out", default="model_quality",
                    help="results file name (benchmarks/results/<out>.json); runs of one cohort share one")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from torch.utils.data import ConcatDataset

    from flame_private.config import CohortConfig, DataConfig, FederationConfig, load_config
    from flame_private.evaluation import evaluate_with_baselines
    from flame_private.experiments import initial_model, load_truth, make_dataset, treatment_comparison_with_baselines
    from flame_private.training import TrainSettings, start_from_regression, train

    torch.set_num_threads(2)
    cohort_cfg = load_config(args.config, CohortConfig)
    if not (args.cohort / "cohort.json").is_file():
        from flame_private.cohort.writer import synthesise_cohort

        synthesise_cohort(cohort_cfg, args.cohort, workers=2, overwrite=True)
    fed = FederationConfig(seed=cohort_cfg.seed, batch_size=args.batch, learning_rate=args.lr,
                           data=DataConfig(grid=cohort_cfg.grid))
    voxel_ml = fed.data.voxel_mm**3 / 1000.0
    splits = study_splits(args.cohort, cohort_cfg, fed.data)
    patients = {k: sum(len(getattr(sp, k)) for sp in splits.values()) for k in ("train", "val", "test")}
    print(f"cohort {args.cohort}: {len(splits)} sites, patients {patients}", flush=True)

    truth_path = args.cohort / "truth" / "counterfactuals.json"
    truth = load_truth(truth_path) if truth_path.is_file() else None
    figures: dict[str, object] = {**cohort_identity(args), "patients": patients,
                                  "grid": cohort_cfg.grid, "batch": args.batch, "learning_rate": args.lr}
    for task in args.tasks:
        epochs = {"response": args.epochs_response, "evolution": args.epochs_evolution,
                  "segmentation": args.epochs_segmentation}[task]
        parts = {k: [make_dataset(task, getattr(sp, k), fed) for sp in splits.values()]
                 for k in ("train", "val", "test")}
        pooled = {k: ConcatDataset(v) for k, v in parts.items()}
        curve: list[dict] = []
        best: dict = {}
        t0 = time.perf_counter()
        key = "auc" if task == "response" else "dice_whole_tumour"

        def on_epoch(epoch: int, model: torch.nn.Module, task: str = task, pooled: dict = pooled,
                     curve: list = curve, t0: float = t0, best: dict = best, key: str = key) -> None:
            val = evaluate_with_baselines(model, task, pooled["train"], pooled["val"], voxel_ml, args.batch)
            curve.append({"epoch": epoch, "seconds": round(time.perf_counter() - t0, 1), **val})
            if not best or val["model"][key] > best["value"]:  # model selection on validation, never on test
                best.update(epoch=epoch, value=val["model"][key],
                            state={k: v.detach().clone() for k, v in model.state_dict().items()})
            bases = ", ".join(f"{name} {b[key]:.3f}" for name, b in val["baselines"].items())
            print(f"{task} epoch {epoch}: val {key} {val['model'][key]:.3f} (baselines: {bases}), "
                  f"{curve[-1]['seconds']:.0f} s", flush=True)

        name = {"random": task, "regression": f"{task}_regression_start",
                "public": f"{task}_public_pretrained"}[args.init]
        if args.lr_schedule != "constant":
            name = f"{name}_{args.lr_schedule}"
        pretraining = None
        if args.init == "public":
            model, pretraining = pretrain_on_public(task, fed, args.public, args.pretrain_epochs, args.lr,
                                                    args.positive_weight)
            on_epoch(0, model)  # epoch 0: the pretrained model, before any study patient
        else:
            model = initial_model(task, fed)
            if args.init == "regression" and task == "response":
                start_from_regression(model, pooled["train"])
                on_epoch(0, model)  # epoch 0: the network as the regression of its wide features
        settings = TrainSettings(epochs=epochs, batch_size=args.batch, learning_rate=args.lr, seed=fed.seed,
                                 positive_weight=args.positive_weight, lr_schedule=args.lr_schedule)
        result = train(model, task, pooled["train"], settings, None, on_epoch=on_epoch)
        test = evaluate_with_baselines(result.model, task, pooled["train"], pooled["test"], voxel_ml, args.batch)
        comparison = None
        if task == "response" and truth is not None:  # the final model, as "test" (not the best-validation one)
            comparison = {k: s.metrics() for k, s in treatment_comparison_with_baselines(
                parts["train"], parts["test"], truth, voxel_ml, result.model).items()}
        public = None
        if args.score_public:  # the final model, like "test"; baselines fitted on the same study patients
            from _public import public_dataset

            public_ds = public_dataset(task, fed, args.public)
            scored = evaluate_with_baselines(result.model, task, pooled["train"], public_ds, voxel_ml, args.batch)
            public = {"test": scored["model"], "baselines": scored["baselines"]}
        result.model.load_state_dict(best["state"])
        chosen = evaluate_with_baselines(result.model, task, pooled["train"], pooled["test"], voxel_ml, args.batch)
        if public is not None:  # and the model chosen on validation, like "test_at_best_validation_epoch"
            public["test_at_best_validation_epoch"] = evaluate_with_baselines(
                result.model, task, pooled["train"], public_ds, voxel_ml, args.batch)["model"]
        figures[name] = {"epochs": epochs, "init": args.init, "lr_schedule": args.lr_schedule,
                         "public_pretraining": pretraining,
                         "train_seconds": round(result.seconds, 1), "curve": curve,
                         "test": test["model"], "baselines": test["baselines"],
                         "best_validation_epoch": best["epoch"], "test_at_best_validation_epoch": chosen["model"],
                         "train_loss_first_last": [result.losses[0], result.losses[-1]] if result.losses else [],
                         "treatment_comparison": comparison, "public_cohort": public,
                         "command": _command(args)}
        print(json.dumps({"task": name, "test": test, "public_cohort": public, "best_validation_epoch": best["epoch"],
                          "test_at_best_validation_epoch": chosen["model"],
                          "treatment_comparison": comparison}, default=str)[:4000], flush=True)
        saved = _save(figures, args)  # after each task: a stopped run keeps what it finished
    figure = "learning-curves.png" if args.out == "model_quality" else f"{args.out}-learning-curves.png"
    plot(saved, ROOT / "docs" / "img" / figure)  # every run saved so far, one panel each


def _command(args: argparse.Namespace) -> str:
    return (f"python benchmarks/model_quality.py --cohort {cohort_identity(args)['cohort_dir']} --out {args.out} "
            f"--epochs-response {args.epochs_response} --epochs-evolution {args.epochs_evolution} "
            f"--epochs-segmentation {args.epochs_segmentation} --lr {args.lr} "
            f"--batch {args.batch} --positive-weight {args.positive_weight} --tasks {' '.join(args.tasks)} "
            f"--init {args.init}" + (f" --pretrain-epochs {args.pretrain_epochs}" if args.init == "public" else "")
            + (" --score-public" if args.score_public else "")
            + (f" --lr-schedule {args.lr_schedule}" if args.lr_schedule != "constant" else ""))


def _save(figures: dict, args: argparse.Namespace) -> dict:
    """Save this run's figures over the earlier runs' (other tasks or initialisations) of the same cohort;
    returns all of them.  Earlier figures of another cohort (or of an unrecorded one) stop the run."""
    figures["command"] = _command(args)
    previous = RESULTS / f"{args.out}.json"
    if previous.is_file() and (set(args.tasks) != {"response", "evolution"} or args.init != "random"):
        earlier = json.loads(previous.read_text(encoding="utf-8"))["figures"]
        if earlier.get("cohort_sha256") != figures["cohort_sha256"]:
            raise SystemExit(f"{previous} holds figures of another cohort ({earlier.get('cohort_dir', 'unrecorded')},"
                             f" cohort.json sha256 {earlier.get('cohort_sha256', 'unrecorded')}): "
                             "choose another --out")
        figures = {**earlier, **figures}
    print(f"saved {save(args.out, figures)}")
    return figures


def plot(figures: dict, path: Path) -> None:
    """Validation metric per epoch, model against its baselines, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, f in figures.items() if isinstance(f, dict) and "curve" in f]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        key = "auc" if task.startswith("response") else "dice_whole_tumour"
        curve = figures[task]["curve"]
        epochs = [c["epoch"] for c in curve]
        start = {"public": "; epoch 0: pretrained", "regression": "; epoch 0: the wide regression"}.get(
            str(figures[task].get("init")), "")
        ax.plot(epochs, [c["model"][key] for c in curve], "o-", label=f"model (central, no DP{start})")
        lo = [c["model"][f"{key}_ci95"][0] for c in curve]
        hi = [c["model"][f"{key}_ci95"][1] for c in curve]
        ax.fill_between(epochs, lo, hi, alpha=0.2)
        for name in sorted(curve[0]["baselines"]):  # same colour for a baseline in every panel
            ax.plot(epochs, [c["baselines"][name][key] for c in curve], "--", label=f"baseline: {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {key.replace('_', ' ')}")
        ax.set_title(f"{task.replace('_', ' ')}, study cohort", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure {path}")


if __name__ == "__main__":
    main()
