"""How tight each certificate is: its ratio to the true error of the head it certifies.

A Gaussian-mixture feature model with a closed-form error for any linear head: ``y`` is +1 with
probability ``pi``, ``z | y ~ N(y mu, I_d)``; the head ``f(z) = w . z + b`` errs with probability
``pi Phi(-(w.mu + b)/||w||) + (1 - pi) Phi((b - w.mu)/||w||)``. For every ``n`` the head is the
L2 logistic fit the sample models use (``tfbound.training.loops.fit_linear_head``), certified by
``tfbound.certify`` with and without an unlabeled pool (``m_pool = n / 2``). Prints, per setting,
the median over ``--seeds`` draws of each certificate divided by the true error, and the number of
draws where a certificate fell below the true error (a violation; expected rarely, at most about
``delta`` of the draws).

    python benchmarks/tightness.py                 # n = 200, 1000, 5000; 5 seeds; 1 thread
    python benchmarks/tightness.py --seeds 20 --n 1000

Each setting is printed twice, in one run: "after" is the current pipeline (the delta rule of
docs/bound.md, n1 = 0.5 n, the pool certificate); "before" reproduces the earlier one through
the configuration: delta 0.0375 (what the headline used to hold at, of delta 0.05) split as the
old shares (finetune 0.3, monte_carlo 0.05, pac_bayes 0.2, disagreement 0.1 + 0.1 of 0.05) and
n1 = 0.8 n; no pool certificate (no share for it), no hold-out route.

The column ``stochastic`` is tfbound's stochastic head (``tfbound fit-head --stochastic``, after
only): a Gaussian posterior in the metric of ``S1`` whose mean is trained on its own PAC-Bayes
certificate on ``S2``, certified at ``bound.delta_stochastic = 0.05`` (a separate statement); its
ratio is to its own true Gibbs error ``E_theta err(theta)`` (the closed form per head, averaged
over 20,000 heads drawn from it), a different predictor's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tfbound  # noqa: E402
from tfbound.bounds.pbb_head import pbb_head_bound, prior_geometry  # noqa: E402
from tfbound.bounds.split import augment_features, split_indices  # noqa: E402
from tfbound.measures.binomial import clopper_pearson_upper  # noqa: E402
from tfbound.training.loops import fit_linear_head  # noqa: E402
from tfbound.training.pbb import fit_pbb_mean  # noqa: E402

D = 20
PI = 0.5
#: the class-mean norm: a Bayes error of Phi(-|mu|) = 0.1 at the head's direction
MU_NORM = 1.2816
CERTIFICATES = (
    "best_certified_test_error_bound",
    "certified_test_error_bound",
    "pac_bayes_deterministic_bound",
    "pac_bayes_pool_bound",
    "disagreement_bound",
    "holdout_bound",
    "stochastic_head_gibbs_bound",
)
#: each certificate of another predictor than the user's head, and the key of its true error
OWN_TRUTH = {
    "holdout_bound": "holdout_true_error",
    "stochastic_head_gibbs_bound": "stochastic_true_gibbs",
}
GIBBS_HEADS = 20_000


def true_error(w: np.ndarray, b: float, mu: np.ndarray, pi: float = PI) -> float:
    norm = float(np.linalg.norm(w))
    return float(pi * ndtr(-(w @ mu + b) / norm) + (1 - pi) * ndtr((b - w @ mu) / norm))


def draw(n: int, mu: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = np.where(rng.random(n) < PI, 1.0, -1.0)
    z = rng.normal(size=(n, mu.shape[0])) + y[:, None] * mu
    return z.astype(np.float32), y


#: the pipeline before the delta rule, the split rule and the new certificates, as options
BEFORE: dict[str, Any] = {
    "delta": 0.0375,
    "n1_fraction": 0.8,
    "delta_shares": {
        "finetune": 0.3 / 0.75,
        "monte_carlo": 0.05 / 0.75,
        "pac_bayes": 0.2 / 0.75,
        "disagreement_prior": 0.1 / 0.75,
        "disagreement_pool": 0.1 / 0.75,
    },
}


def one(n: int, pool: bool, seed: int, n_draws: int, **options: Any) -> dict[str, float | None]:
    rng = np.random.default_rng(seed)
    mu = np.zeros(D)
    mu[0] = MU_NORM
    z, y = draw(n, mu, rng)
    head = fit_linear_head(torch.from_numpy(z), torch.from_numpy((y > 0).astype(np.float32)))
    w = head.linear.weight.detach().double().numpy().reshape(-1)
    b = float(head.linear.bias.detach().double())
    z_pool = draw(n // 2, mu, rng)[0] if pool else None
    report = tfbound.certify(z, y, w, b, z_pool=z_pool, n_draws=n_draws, seed=seed, **options)
    err = true_error(w, b, mu)
    out: dict[str, float | None] = {"true_error": err}
    for key in CERTIFICATES:
        term = report.get(key)
        out[key] = None if term is None or term.value is None else term.value
    # the hold-out route (tfbound fit-head --holdout): a head fitted on S1 only, certified on S2
    # at half of delta (the rule); its ratio is to its own true error, a different head's
    idx1, idx2 = split_indices(n, 0, options.get("n1_fraction", 0.5))
    h1 = fit_linear_head(
        torch.from_numpy(z[idx1]), torch.from_numpy((y[idx1] > 0).astype(np.float32))
    )
    w1 = h1.linear.weight.detach().double().numpy().reshape(-1)
    b1 = float(h1.linear.bias.detach().double())
    errors = int(np.sum(y[idx2] * (z[idx2].astype(np.float64) @ w1 + b1) <= 0))
    if options.get("delta_shares") is None:  # the hold-out route exists after only
        out["holdout_bound"] = clopper_pearson_upper(errors, len(idx2), 0.025)
        out["holdout_true_error"] = true_error(w1, b1, mu)
    else:
        out["holdout_bound"] = None
    out["stochastic_head_gibbs_bound"] = None
    if options.get("delta_shares") is None:  # after only
        bound, truth = stochastic(z.astype(np.float64), y, mu, options.get("n1_fraction", 0.5))
        out["stochastic_head_gibbs_bound"] = bound
        out["stochastic_true_gibbs"] = truth
    return out


def stochastic(
    z: np.ndarray, y: np.ndarray, mu: np.ndarray, n1_fraction: float
) -> tuple[float, float]:
    """tfbound's stochastic head on ``(z, y)``: its certificate and its true Gibbs error."""
    idx1, idx2 = split_indices(z.shape[0], 0, n1_fraction)
    geo = prior_geometry(z[idx1], y[idx1], bias_const=1.0, eps=0.1, lam=1e-3)
    x2 = geo.metric.whiten_features(augment_features(z[idx2], 1.0))
    fit = fit_pbb_mean(x2, y[idx2], geo.prior_directions, lam_grid=geo.lam_grid, delta_q=0.05)
    mean = geo.metric.inv_sqrt @ fit.mean_whitened  # (w, b) with c = 1
    res = pbb_head_bound(
        z, y, mean, bias_const=1.0, split_seed=0, delta_q=0.05, n1_fraction=n1_fraction,
        geometry=geo,
    )  # fmt: skip
    rng = np.random.default_rng(12345)
    heads = mean[None, :] + rng.normal(size=(GIBBS_HEADS, mean.shape[0])) @ geo.metric.inv_sqrt
    w, b = heads[:, :-1], heads[:, -1]
    norm = np.linalg.norm(w, axis=1)
    errs = PI * ndtr(-(w @ mu + b) / norm) + (1 - PI) * ndtr((b - w @ mu) / norm)
    return res.certificate.bound, float(np.mean(errs))


def _line(n: int, pool: bool, label: str, rows: list[dict[str, float | None]]) -> str:
    errs = [float(r["true_error"] or 0) for r in rows]
    cells = []
    for key in CERTIFICATES:
        own = [float(r.get(OWN_TRUTH.get(key, "true_error")) or 0) for r in rows]
        truth = own if key in OWN_TRUTH else errs
        pairs = [(r[key], e) for r, e in zip(rows, truth, strict=True) if r[key] is not None]
        viol = sum(1 for v, e in pairs if v is not None and v < e)
        ratios = [v / e for v, e in pairs if v is not None]
        cells.append(f"{statistics.median(ratios):8.2f} ({viol})" if ratios else f"{'-':>14}")
    return f"{n:>6} {('yes' if pool else 'no'):>5} {label:>6} {statistics.median(errs):9.4f}  " + (
        "  ".join(f"{c:>14}" for c in cells)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="*", default=[200, 1000, 5000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-draws", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n1-fraction", type=float, default=None, help="bound.n1_fraction")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"threads {torch.get_num_threads()}; d = {D}; Bayes error {ndtr(-MU_NORM):.3f}; "
        f"{args.seeds} seeds; n_draws {args.n_draws}"
    )
    print("median certificate / true error (violations: certificate < true error)")
    header = f"{'n':>6} {'pool':>5} {'':>6} {'true err':>9}  " + "  ".join(
        f"{k.replace('_bound', '').replace('_test_error', '').replace('_head_gibbs', '')[:14]:>14}"
        for k in CERTIFICATES
    )
    print(header)
    start = time.perf_counter()
    for n in args.n:
        for pool in (False, True):
            after = {} if args.n1_fraction is None else {"n1_fraction": args.n1_fraction}
            for label, options in (("before", BEFORE), ("after", after)):
                rows = [
                    one(n, pool, 1000 * n + s, args.n_draws, **options) for s in range(args.seeds)
                ]
                print(_line(n, pool, label, rows))
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
