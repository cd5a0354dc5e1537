"""The RadReg experiment of docs/radreg.md: both sample pipelines, several seeds and lambdas.

Usage (from the repository root; about 15 minutes of CPU with the defaults, two processes)::

    python benchmarks/radreg_experiment.py                        # runs, JSON, table, plot
    python benchmarks/radreg_experiment.py --from-json docs/radreg_results.json   # table + plot

Per run (pipeline, seed, lambda): pre-train with the sample recipe (``ce_mlp``: 600 epochs;
``mae_vit``: 200 epochs instead of 600, to fit the budget) and RadReg of weight lambda on the
fixed ``radreg_x`` (m = 75, K = 256 signs, features l2-normalised, or ``--normalize rms``, radius 1;
lambda = 0 is plain pre-training), fit the linear head on ``downstream_train_x`` as the sample
models do, and run ``tfbound.estimate`` on the result (the sample configs' constants,
``encoder_candidates: 20``).
Also measured, on ``downstream_pool_x`` (75 unlabeled inputs no encoder saw): the scale-free RIRC
ratio ``E||sum sigma z~_i|| / sqrt(sum ||z~_i||^2)`` of the normalised features with fresh signs
(K = 10,000; between ``1/sqrt(2)`` and 1), the entropy effective rank of the raw features and the
number of inputs whose features are all zero; the RadReg value on ``radreg_x`` with the training
signs and with fresh ones (their gap: how far the encoder fitted the fixed draws); and, at
log-spaced epochs, the held-out pretext loss and the linear-probe test accuracy (convergence).

Nothing here is selected: every lambda is reported, and the lambda grid (0.1, 1, 10) was fixed
before any run, by the scale of the terms (RadReg about 0.1, pretext loss about 0.03).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tfbound  # noqa: E402
from tfbound.measures.rirc import rirc_linear  # noqa: E402
from tfbound.training.folder import write_pipeline_folder  # noqa: E402
from tfbound.training.loops import (  # noqa: E402
    RadRegOptions,
    accuracy,
    features,
    fit_linear_head,
    log_spaced_epochs,
    mean_pretext_loss,
    pretrain_ce,
    pretrain_mae,
)
from tfbound.training.radreg import RadReg, effective_rank, normalize_features  # noqa: E402
from tfbound.training.recipes import DATA_KEYS, RECIPES, pipeline_config  # noqa: E402

SPLITS = ROOT / "sample_models" / "data" / "digits_splits.npz"

PIPELINES = {"ce_mlp": ("ce", 600), "mae_vit": ("mae", 200)}
LAMBDAS = (0.0, 0.1, 1.0, 10.0)
RADREG_DRAWS = 256
HEAD_LAMBDA = 1e-3
MEASURE_DRAWS = 10_000
MEASURE_SEED = 12345  # signs apart from the training signs (seed 0)
METRICS = (
    ("pool_rirc_ratio", "normalised RIRC ratio on the pool", "{:.4f}"),
    ("pool_effective_rank", "effective rank (pool)", "{:.2f}"),
    ("pool_zero_rows", "inputs with all-zero features (pool)", "{:.1f}"),
    ("radreg_value", "RadReg on radreg_x, training signs", "{:.4f}"),
    ("radreg_fresh", "RadReg on radreg_x, fresh signs", "{:.4f}"),
    ("rirc", "`rirc`", "{:.3g}"),
    ("rirc_head", "`rirc_head`", "{:.3f}"),
    ("capacity_ratio", "`capacity_ratio`", "{:.2f}"),
    ("certified_test_error_bound", "certified bound (sec. 2)", "{:.3f}"),
    ("best_certified_test_error_bound", "best certified bound", "{:.3f}"),
    ("test_accuracy", "test accuracy", "{:.4f}"),
    ("pretext_empirical_risk", "pretext loss (train)", "{:.4f}"),
    ("pretext_heldout_risk", "pretext loss (held out)", "{:.4f}"),
)


def _splits() -> dict[str, torch.Tensor]:
    with np.load(SPLITS) as raw:
        return {k: torch.from_numpy(raw[k]) for k in raw.files}


def run_one(job: tuple[str, int, float, int, str]) -> dict[str, Any]:
    """One pre-training run and its measurements (in a worker process, one thread)."""
    name, seed, lam, epochs, normalize = job
    torch.set_num_threads(1)
    kind = PIPELINES[name][0]
    arch, task, _, lr = RECIPES[kind]
    s = _splits()
    y_train, y_test = s["downstream_train_y"], s["downstream_test_y"]
    curve: list[dict[str, float]] = []

    def probe(epoch: int, encoder: torch.nn.Module, decoder: torch.nn.Module) -> None:
        head = fit_linear_head(features(encoder, s["downstream_train_x"]), y_train, HEAD_LAMBDA)
        acc = accuracy(head, features(encoder, s["downstream_test_x"]), y_test)
        val = mean_pretext_loss(task, encoder, decoder, s["pretrain_val_x"], 1)
        curve.append({"epoch": epoch, "test_accuracy": acc, "pretext_heldout": val})

    opts = RadRegOptions(
        lam=lam,
        unlabeled_x=s["radreg_x"],
        n_draws=RADREG_DRAWS,
        seed=0,
        normalize=normalize,  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    fn = pretrain_ce if kind == "ce" else pretrain_mae
    res = fn(
        arch,  # type: ignore[arg-type]
        task,  # type: ignore[arg-type]
        s["pretrain_train_x"],
        epochs=epochs,
        lr=lr,
        seed=seed,
        radreg=opts,
        checkpoint_epochs=log_spaced_epochs(epochs, include_zero=False),
        on_checkpoint=probe,
    )
    seconds = time.perf_counter() - t0
    encoder = res.encoder
    head = fit_linear_head(features(encoder, s["downstream_train_x"]), y_train, HEAD_LAMBDA)
    z_pool = features(encoder, s["downstream_pool_x"]).to(torch.float64)
    z_rad = features(encoder, s["radreg_x"]).to(torch.float64)
    pool = rirc_linear(
        normalize_features(z_pool, normalize), 1.0, n_draws=MEASURE_DRAWS, seed=MEASURE_SEED
    )
    m = z_rad.shape[0]
    radreg_value = float(RadReg(RADREG_DRAWS, 1.0, m, 0, normalize)(z_rad))  # type: ignore[arg-type]
    fresh = rirc_linear(
        normalize_features(z_rad, normalize), 1.0, n_draws=MEASURE_DRAWS, seed=MEASURE_SEED
    )
    row: dict[str, Any] = {
        "pipeline": name,
        "seed": seed,
        "lambda": lam,
        "normalize": normalize,
        "epochs": epochs,
        "pretrain_seconds": seconds,
        "pool_rirc_ratio": pool.norm_mean / pool.norm_jensen,
        "pool_effective_rank": effective_rank(z_pool),
        "pool_zero_rows": int((z_pool.abs().sum(dim=1) == 0).sum()),
        "radreg_value": radreg_value,
        "radreg_fresh": fresh.value,
        "curve": curve,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        present = {n for n, (key, _) in DATA_KEYS.items() if key in s}
        config = pipeline_config(arch, task, SPLITS, present, encoder_candidates=20)
        modules = {"encoder": encoder, "decoder": res.decoder, "head": head}
        write_pipeline_folder(folder, modules, config)
        report = tfbound.estimate(folder)
    for key in (
        "rirc",
        "rirc_head",
        "capacity_ratio",
        "pretext_empirical_risk",
        "pretext_heldout_risk",
        "observed_test_error",
    ):
        term = report.get(key)
        row[key] = None if term is None else term.value
    for bound in report.bounds:
        if bound.key in ("certified_test_error_bound", "best_certified_test_error_bound"):
            row[bound.key] = bound.value
    row.setdefault("best_certified_test_error_bound", row.get("certified_test_error_bound"))
    err = row["observed_test_error"]
    row["test_accuracy"] = None if err is None else 1.0 - err
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and sample standard deviation per (pipeline, lambda) and metric."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in PIPELINES:
        for lam in sorted({r["lambda"] for r in rows}):
            group = [r for r in rows if r["pipeline"] == name and r["lambda"] == lam]
            if not group:
                continue
            stats: dict[str, dict[str, float]] = {}
            for key, _, _ in (*METRICS, ("pretrain_seconds", "", "")):
                vals = [float(r[key]) for r in group if r.get(key) is not None]
                if vals:
                    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                    stats[key] = {"mean": statistics.fmean(vals), "std": sd, "n": len(vals)}
            out[f"{name} lambda={lam:g}"] = stats
    return out


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown, one table per pipeline: a row per metric, a column per lambda; mean ± std."""
    out = []
    for name in PIPELINES:
        cols = [c for c in summary if c.startswith(f"{name} ")]
        if not cols:
            continue
        lines = [
            f"**{name}**",
            "",
            "| metric | " + " | ".join("lambda " + c.split("=")[1] for c in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for key, label, fmt in METRICS:
            cells = []
            for c in cols:
                st = summary[c].get(key)
                if st is None:
                    cells.append("n/a")
                    continue
                cell = f"{fmt.format(st['mean'])} ± {fmt.format(st['std'])}"
                total = max(int(v.get("n", 0)) for v in summary[c].values())
                cells.append(cell if st["n"] == total else f"{cell} (n={st['n']})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("pool_rirc_ratio", "normalised RIRC ratio (pool)"),
        ("pool_effective_rank", "effective rank (pool)"),
        ("best_certified_test_error_bound", "best certified bound"),
        ("test_accuracy", "test accuracy"),
        ("pretext_heldout_risk", "pretext loss (held out)"),
    )
    lambdas = sorted({r["lambda"] for r in rows})
    fig, axes = plt.subplots(len(PIPELINES), len(panels) + 1, figsize=(21, 7), squeeze=False)
    for i, name in enumerate(PIPELINES):
        for j, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for k, lam in enumerate(lambdas):
                vals = [
                    r[key]
                    for r in rows
                    if r["pipeline"] == name and r["lambda"] == lam and r.get(key) is not None
                ]
                ax.scatter([k] * len(vals), vals, s=14, alpha=0.6)
                if vals:
                    ax.errorbar(
                        k + 0.15,
                        statistics.fmean(vals),
                        yerr=statistics.stdev(vals) if len(vals) > 1 else 0,
                        fmt="ks",
                        ms=4,
                    )
            ax.set_xticks(range(len(lambdas)), [f"{lam:g}" for lam in lambdas])
            ax.set_xlabel("RadReg lambda")
            ax.set_title(f"{name}: {label}", fontsize=9)
        ax = axes[i][len(panels)]
        for lam in lambdas:
            runs = [r for r in rows if r["pipeline"] == name and r["lambda"] == lam]
            if not runs:
                continue
            epochs = [p["epoch"] for p in runs[0]["curve"]]
            acc = [
                statistics.fmean(r["curve"][t]["test_accuracy"] for r in runs)
                for t in range(len(epochs))
            ]
            ax.plot(epochs, acc, marker="o", ms=3, label=f"lambda {lam:g}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("epoch")
        ax.set_title(f"{name}: probe test accuracy (mean over seeds)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--ce-epochs", type=int, default=PIPELINES["ce_mlp"][1])
    parser.add_argument("--mae-epochs", type=int, default=PIPELINES["mae_vit"][1])
    parser.add_argument("--normalize", choices=("l2", "rms"), default="l2")
    parser.add_argument("--json", type=Path, default=None, help="default docs/radreg_results.json")
    parser.add_argument("--plot", type=Path, default=None, help="default docs/radreg.png")
    parser.add_argument("--from-json", type=Path, default=None, help="only table and plot")
    args = parser.parse_args(argv)
    suffix = "" if args.normalize == "l2" else f"_{args.normalize}"
    if args.json is None:
        args.json = ROOT / "docs" / f"radreg_results{suffix}.json"
    if args.plot is None:
        args.plot = ROOT / "docs" / f"radreg{suffix}.png"

    if args.from_json is not None:
        rows = json.loads(args.from_json.read_text())["runs"]
    else:
        epochs = {"ce_mlp": args.ce_epochs, "mae_vit": args.mae_epochs}
        jobs = [
            (name, seed, lam, epochs[name], args.normalize)
            for name in sorted(PIPELINES, key=lambda n: n != "mae_vit")  # longest first
            for lam in args.lambdas
            for seed in range(args.seeds)
        ]
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            rows = []
            for row in pool.map(run_one, jobs):
                rows.append(row)
                print(
                    f"{row['pipeline']} seed {row['seed']} lambda {row['lambda']:g}: "
                    f"ratio {row['pool_rirc_ratio']:.4f}, rank {row['pool_effective_rank']:.2f}, "
                    f"acc {row['test_accuracy']:.4f}, bound {row['certified_test_error_bound']:.3f}"
                    f" ({row['pretrain_seconds']:.0f} s)",
                    flush=True,
                )
        wall = time.perf_counter() - t0
        meta = {
            "torch": torch.__version__,
            "wall_seconds": wall,
            "jobs": args.jobs,
            "radreg": {
                "m": 75,
                "n_draws": RADREG_DRAWS,
                "normalize": args.normalize,
                "radius": 1.0,
            },
            "epochs": epochs,
        }
        args.json.write_text(
            json.dumps({"meta": meta, "runs": rows, "summary": summarise(rows)}, indent=1) + "\n"
        )
        print(f"wrote {args.json} ({wall:.0f} s wall)")
    print(table(summarise(rows)))
    try:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    except ImportError:
        print("matplotlib is not installed: no plot")
    if any(math.isnan(r["pool_rirc_ratio"]) for r in rows):
        print("warning: NaN ratios")


if __name__ == "__main__":
    main()
