"""The response model federated under DP at a fixed epsilon per site: what makes private training work?

Six study sites (configs/cohort/study.yaml) each train the global response
model for one local epoch per round under DP-SGD, with the noise chosen so that
the whole run spends ``--epsilon`` (default 8) at each site, delta 1e-5 (the
site's own patients are the unit of privacy); the global model is the
patient-weighted average of the sites' updates, which is what the CKKS sum
decrypts to (within 1e-5; docs/encryption.md).  Arms, each from the same seed:

- ``scratch``: the randomly initialised model;
- ``public_pretrained``: first trained without DP on the public cohort
  (configs/cohort/public.yaml: free of privacy cost), then privately;
- ``public_pretrained_frozen_encoder``: the same, with the encoder's
  convolutions frozen: only the FiLM conditioning, the head and the linear
  clinical part are trained under DP (fewer parameters share the noise);
- ``wide_only``: the randomly initialised model with only its linear part
  trained (27 parameters: the clinical features and the first-order
  intensities); the image path's output layer stays at zero, so the global model
  is a logistic regression learnt under DP-SGD;
- ``public_regression_wide``: as ``wide_only``, with the linear part starting at
  the logistic regression of the wide features on the public cohort
  (training.start_from_regression: no privacy cost).  The public cohort is
  photon-only, so the treatment terms start at zero and only the private
  rounds can learn them.

Each arm's global model is scored after every round on the pooled test
patients, beside the baselines (prevalence, logistic regression on the
observables and on the observables with the first-order intensities, fitted on
the pooled training patients) and the centralised non-private model of
benchmarks/results/<central>.json (default model_quality) when it was measured
on the same cohort (its cohort.json fingerprint).  When the
cohort has its counterfactual truth, each arm's final global model is also
scored on the treatment comparison, beside the logistic baseline and the fixed
rules on the same patients (experiments.treatment_comparison_with_baselines).

``--server-opt fedavgm|fedadam`` applies that server optimiser step to each
round's average, as every site does after decryption (docs/training.md); the
figures then go to benchmarks/results/dp_arms_<server-opt>.json, beside the
FedAvg arms of dp_arms.json.

Saves benchmarks/results/dp_arms.json (FedAvg) or dp_arms_<server-opt>.json.

Usage: python benchmarks/dp_arms.py [--cohort runs/study/cohort] [--central model_quality] [--out NAME]
                                    [--rounds 5] [--epsilon 8] [--batch 16] [--clip 1.0] [--lr 3e-3]
                                    [--arms scratch public_pretrained public_pretrained_frozen_encoder wide_only
                                            public_regression_wide]
                                    [--server-opt fedavg|fedavgm|fedadam] [--server-lr L]
                                    [--server-momentum 0.9] [--beta1 0.9] [--beta2 0.99] [--tau 1e-3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path

from _common import RESULTS, ROOT, add_study_args, cohort_identity, save, study_splits
from _public import pretrain_on_public, public_dataset

ARMS = ("scratch", "public_pretrained", "public_pretrained_frozen_encoder", "wide_only", "public_regression_wide")
WIDE_ARMS = ("wide_only", "public_regression_wide")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_args(ap)
    ap.add_argument("--public", type=Path, default=ROOT / "runs" / "public" / "cohort")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--batch", type=int, default=16, help="expected batch size (Poisson sampling)")
    ap.add_argument("--clip", type=float, default=1.0, help="per-patient gradient clipping norm (max_grad_norm)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--positive-weight", type=float, default=0.4)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--server-opt", default="fedavg", choices=("fedavg", "fedavgm", "fedadam"))
    ap.add_argument("--server-lr", type=float, default=None, help="default: 1 (fedavg, fedavgm), 0.01 (fedadam)")
    ap.add_argument("--server-momentum", type=float, default=0.9)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--tau", type=float, default=1e-3)
    ap.add_argument("--out", default=None, help="result name (default dp_arms, or dp_arms_<server-opt>)")
    ap.add_argument("--central", default="model_quality",
                    help="results of benchmarks/model_quality.py to compare with (same cohort only)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")

    import torch
    from torch.utils.data import ConcatDataset

    from flame_private.baselines import logistic_first_order, logistic_observables, prevalence
    from flame_private.config import (
        CohortConfig,
        DataConfig,
        DPConfig,
        FederationConfig,
        ServerOptimizerConfig,
        load_config,
    )
    from flame_private.evaluation import score_response
    from flame_private.experiments import initial_model, load_truth, make_dataset, treatment_comparison_with_baselines
    from flame_private.server_optimizer import server_step, settings_of
    from flame_private.training import TrainSettings, plan_training, set_trainable, start_from_regression, train

    torch.set_num_threads(2)
    study = load_config(args.config, CohortConfig)
    server_opt = ServerOptimizerConfig(name=args.server_opt, lr=args.server_lr, momentum=args.server_momentum,
                                       beta1=args.beta1, beta2=args.beta2, tau=args.tau)
    fed = FederationConfig(seed=study.seed, batch_size=args.batch, learning_rate=args.lr,
                           response_positive_weight=args.positive_weight, data=DataConfig(grid=study.grid),
                           server_optimizer=server_opt)
    voxel_ml = fed.data.voxel_mm**3 / 1000.0
    splits = study_splits(args.cohort, study, fed.data)
    site_train = {sid: make_dataset("response", sp.train, fed) for sid, sp in splits.items()}
    pooled_train = ConcatDataset(list(site_train.values()))
    site_test = [make_dataset("response", sp.test, fed) for sp in splits.values()]
    test = ConcatDataset(site_test)
    truth_path = args.cohort / "truth" / "counterfactuals.json"
    truth = load_truth(truth_path) if truth_path.is_file() else None
    n_total = sum(len(d) for d in site_train.values())  # type: ignore[arg-type]
    settings = TrainSettings(epochs=1, batch_size=args.batch, learning_rate=args.lr, seed=fed.seed,
                             positive_weight=args.positive_weight)

    figures: dict[str, object] = {
        **cohort_identity(args),
        "epsilon_per_site": args.epsilon, "delta": fed.dp.delta, "rounds": args.rounds, "local_epochs": 1,
        "batch": args.batch, "clip": args.clip, "learning_rate": args.lr, "positive_weight": args.positive_weight,
        "sites": {sid: len(d) for sid, d in site_train.items()},  # type: ignore[arg-type]
        "test_patients": len(test),
        "baselines": {"prevalence": prevalence(pooled_train, test).metrics(),
                      "logistic_observables": logistic_observables(pooled_train, test, voxel_ml).metrics(),
                      "logistic_first_order": logistic_first_order(pooled_train, test, voxel_ml).metrics()},
        "server_optimizer": settings_of(server_opt),
        "command": (f"python benchmarks/dp_arms.py --cohort {cohort_identity(args)['cohort_dir']} "
                    f"--central {args.central} --rounds {args.rounds} --epsilon {args.epsilon} "
                    f"--batch {args.batch} --clip {args.clip} --lr {args.lr} --arms {' '.join(args.arms)}"
                    + ("" if args.server_opt == "fedavg" else
                       f" --server-opt {args.server_opt} --server-lr {server_opt.server_lr}"
                       + (f" --server-momentum {args.server_momentum}" if args.server_opt == "fedavgm" else "")
                       + (f" --beta1 {args.beta1} --beta2 {args.beta2} --tau {args.tau}"
                          if args.server_opt == "fedadam" else ""))
                    + (f" --out {args.out}" if args.out else "")),
        "arms": {},
    }
    quality = RESULTS / f"{args.central}.json"
    if quality.is_file():
        central = json.loads(quality.read_text(encoding="utf-8"))["figures"]
        if central.get("cohort_sha256") == figures["cohort_sha256"]:
            figures["central_no_dp"] = central.get("response", {}).get("test")
        else:
            print(f"{quality.name} was measured on another cohort: no central reference", flush=True)

    pretrained = None
    if any(a.startswith("public_pretrained") for a in args.arms):
        pretrained, info = pretrain_on_public("response", fed, args.public, args.pretrain_epochs, args.lr,
                                              args.positive_weight)
        m = score_response(pretrained, test).metrics()
        figures["public_pretraining"] = {**info, "test": m}
        print(f"public pretraining on {info['patients']} patients: test AUC {m['auc']:.3f}", flush=True)

    for arm in args.arms:
        model = copy.deepcopy(pretrained) if arm.startswith("public_pretrained") else initial_model("response", fed)
        assert model is not None
        if arm.endswith("frozen_encoder"):
            for name, p in model.named_parameters():
                if name.startswith("stages.") and ".film." not in name:
                    p.requires_grad_(False)
        arm_settings = dataclasses.replace(settings, trainable="wide" if arm in WIDE_ARMS else "all")
        if arm in WIDE_ARMS:
            set_trainable(model, "response", "wide")
        curve = []
        if arm == "public_regression_wide":
            start_from_regression(model, public_dataset("response", fed, args.public))
            m = score_response(model, test).metrics()
            curve.append({"round": 0, "seconds": 0.0, **m})  # round 0: the public regression, before any site
            print(f"{arm} round 0 (public regression): test AUC {m['auc']:.3f} {m['auc_ci95']}, balanced accuracy "
                  f"{m['balanced_accuracy']:.3f}", flush=True)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # Each site's noise is chosen once so that the whole run (every round) spends the epsilon; a round
        # runs one epoch of that mechanism.
        per_round = {}
        for sid, ds in site_train.items():
            plan = plan_training(model, "response", ds, dataclasses.replace(arm_settings, epochs=args.rounds),
                                 DPConfig(target_epsilon=args.epsilon, max_grad_norm=args.clip))
            assert plan is not None
            per_round[sid] = dataclasses.replace(plan, steps=plan.steps // args.rounds)
        moments: dict = {}
        global64 = None  # the global model as every site keeps it (float64) under a server optimiser
        t0 = time.perf_counter()
        for rnd in range(1, args.rounds + 1):
            state = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in model.state_dict().items()}
            for sid, ds in site_train.items():
                local = train(copy.deepcopy(model), "response", ds,
                              dataclasses.replace(arm_settings, seed=fed.seed + rnd), per_round[sid]).model
                weight = len(ds) / n_total  # type: ignore[arg-type]
                for k, v in local.state_dict().items():
                    state[k] += weight * v.to(torch.float64)
            if server_opt.name != "fedavg":  # every site's step after decryption (fedavg: the average itself)
                state, moments = server_step(server_opt, global64 or model.state_dict(), state, moments)
                global64 = state
            model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
            m = score_response(model, test).metrics()
            curve.append({"round": rnd, "seconds": round(time.perf_counter() - t0, 1), **m})
            print(f"{arm} round {rnd}: test AUC {m['auc']:.3f} {m['auc_ci95']}, balanced accuracy "
                  f"{m['balanced_accuracy']:.3f}, {curve[-1]['seconds']:.0f} s", flush=True)
        sigma = {sid: round(p.noise_multiplier, 3) for sid, p in per_round.items()}
        comparison = None if truth is None else {k: v.metrics() for k, v in treatment_comparison_with_baselines(
            list(site_train.values()), site_test, truth, voxel_ml, model).items()}
        figures["arms"][arm] = {"trainable_parameters": trainable, "noise_multiplier": sigma,  # type: ignore[index]
                                "curve": curve, "test": curve[-1], "treatment_comparison": comparison}
        name = args.out or ("dp_arms" if server_opt.name == "fedavg" else f"dp_arms_{server_opt.name}")
        print(f"saved {save(name, figures)}")


if __name__ == "__main__":
    main()
