"""Pre-training step time with and without RadReg, in one process (goal: ratio under 1.3x for the
Context Encoder; none for MAE, whose RadReg step encodes about 3x the tokens of its step).

Usage (from the repository root)::

    python benchmarks/radreg.py [--steps 200] [--repeats 5] [--threads 1] [--draws 256]

For each sample pipeline (``ce_mlp``: Context Encoder MLP; ``mae_vit``: MAE ViT), on the sample
digits data: batches of 50 pre-training inputs, RadReg on the fixed ``radreg_x`` (m = 75) with K
sign vectors. A step is forward, backward and Adam update; the RadReg step adds one encoder pass
over the m unlabeled inputs and one ``K x m`` by ``m x d`` product (and their backward). Variants:
RadReg every step; every 4th step at 4x the weight (``RadRegOptions(every=4)``); adversarial ReLU
heads (one ascent step per step). The variants alternate ``--repeats`` times and the medians are
compared, so slow phases of a shared machine hit all of them. Also timed: the term alone on fixed
features (the matrix product and its backward).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tfbound.pretext import (  # noqa: E402
    ContextEncoderTask,
    MaskedAutoencoderTask,
    PretextTask,
    pretext_batch,
)
from tfbound.training.loops import MLPArch, ViTArch  # noqa: E402
from tfbound.training.radreg import AdversarialRadReg, RadReg  # noqa: E402

SPLITS = ROOT / "sample_models" / "data" / "digits_splits.npz"
PIPELINES: dict[str, tuple[MLPArch | ViTArch, PretextTask, float]] = {
    "ce_mlp": (MLPArch(), ContextEncoderTask((1, 8, 8), (2, 2, 4, 4)), 3e-4),
    "mae_vit": (ViTArch(), MaskedAutoencoderTask(0.5), 3e-3),
}


def time_steps(
    name: str,
    x: torch.Tensor,
    u: torch.Tensor,
    reg: torch.nn.Module | None,
    steps: int,
    every: int = 1,
) -> float:
    """Seconds per pre-training step (after 10 warm-up steps)."""
    arch, task, lr = PIPELINES[name]
    torch.manual_seed(0)
    encoder, decoder = arch.build(task)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(0)
    masks = torch.Generator().manual_seed(1)
    n = x.shape[0]

    def step(i: int) -> None:
        idx = torch.randint(0, n, (50,), generator=gen)
        pred, target = pretext_batch(task, encoder, decoder, x[idx], masks)
        loss = F.mse_loss(pred, target)
        if reg is not None and i % every == 0:
            z_u = encoder(u)
            if isinstance(reg, AdversarialRadReg):
                reg.ascend(z_u)
            loss = loss + every * 0.1 * reg(z_u)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(10):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--draws", type=int, default=256, help="K, the number of sign vectors")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with np.load(SPLITS) as raw:
        x = torch.from_numpy(raw["pretrain_train_x"])
        u = torch.from_numpy(raw["radreg_x"])
    m = u.shape[0]
    print(f"torch {torch.__version__}, {args.threads} thread(s), K = {args.draws}, m = {m}")
    for name in PIPELINES:
        variants: dict[str, tuple[torch.nn.Module | None, int]] = {
            "plain": (None, 1),
            "radreg": (RadReg(args.draws, 1.0, m, 0), 1),
            "radreg every 4": (RadReg(args.draws, 1.0, m, 0), 4),
            "adversarial mlp": (
                AdversarialRadReg(args.draws, 1.0, m, 0, 32, head="mlp", hidden=16),
                1,
            ),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for key, (reg, every) in variants.items():
                times[key].append(time_steps(name, x, u, reg, args.steps, every))
        med = {k: statistics.median(v) for k, v in times.items()}
        z = torch.randn(m, 32, requires_grad=True)
        reg = RadReg(args.draws, 1.0, m, 0)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            reg(z).backward()
        term = (time.perf_counter() - t0) / args.steps
        base = med["plain"]
        print(f"{name}: plain {1e3 * base:.2f} ms/step")
        for key in variants:
            if key != "plain":
                print(f"  {key:<16} {1e3 * med[key]:6.2f} ms/step  ratio {med[key] / base:.2f}x")
        print(f"  the term alone (K x m by m x d product, its backward): {1e3 * term:.3f} ms")
        if name == "mae_vit":
            print(
                "  (no 1.3x goal for MAE: an MAE step encodes only the kept patches, a RadReg step "
                "encodes all patches of its m inputs, about 3x the tokens)"
            )
        else:
            print(f"  goal: RadReg every step <= 1.3x plain: {med['radreg'] / base <= 1.3}")


if __name__ == "__main__":
    main()
