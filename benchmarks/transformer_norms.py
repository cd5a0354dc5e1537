"""The capacity stage's transformer norms: every layer against the rows the terms read, and a
repeated estimate on the same weights (the in-process cache).

Usage (from the repository root)::

    python benchmarks/transformer_norms.py [--vocab 30522] [--hidden 384] [--layers 2]
        [--repeats 2] [--threads N]
    python benchmarks/transformer_norms.py --layers 6   # MiniLM-L6's sizes

A random BERT encoder (``tfbound.models.bert``; MiniLM's widths by default: 30522 x 384
embeddings, 12 heads, intermediate 1536). Routes, timed alternately in one process:

- before: ``inspect_module`` on every layer (the embedding tables and the attention projections
  included, which no term reads) and the LayerNorm bounds, as the capacity stage did (copied);
- after: ``tfbound.pipeline.capacity._transformer_norms`` with its cache cleared (only the rows
  ``tfbound.bounds.transformer.rows_read`` accepts);
- cached: the same call again on the same weights (the digest of the state dict, then a hit).

Printed: the three times, ``before / after`` (goal >= 1.5), ``before / cached`` (goal >= 10) and
whether the transformer terms of before and after are identical (they must be).
"""

from __future__ import annotations

import argparse

import torch
from _common import Result, add_thread_option, interleaved, setup_threads

from tfbound.adapters.chain import ln_tensors, transformer_feature_norm
from tfbound.bounds.transformer import TransformerNorms, transformer_terms
from tfbound.inspect import inspect_module
from tfbound.measures.network import layernorm_output_bound
from tfbound.models.bert import BertEncoder, BertSizes
from tfbound.pipeline import capacity

TOKENS = 128


def before(encoder: torch.nn.Module) -> TransformerNorms:
    bound, where = transformer_feature_norm(encoder)
    result = inspect_module(encoder)
    ln = tuple(
        layernorm_output_bound(*ln_tensors(encoder, r.name))
        for r in result.layers
        if r.kind == "layernorm"
    )
    return TransformerNorms(bound, where, tuple(result.heads), tuple(result.layers), ln, TOKENS)


def after(encoder: torch.nn.Module) -> TransformerNorms:
    capacity.clear_norms_cache()
    return capacity._transformer_norms(encoder, (1, 2, TOKENS))


def run(vocab: int, hidden: int, layers: int, repeats: int, threads: int | None) -> list[Result]:
    print(f"transformer norms: BERT vocab={vocab}, hidden={hidden}, layers={layers}; "
          f"{setup_threads(threads)}")  # fmt: skip
    torch.manual_seed(0)
    sizes = BertSizes(
        vocab=vocab,
        hidden=hidden,
        layers=layers,
        heads=12 if hidden % 12 == 0 else 4,
        intermediate=4 * hidden,
        max_positions=512,
        type_vocab=2,
    )
    encoder = BertEncoder(sizes).eval()
    capacity._transformer_norms(encoder, (1, 2, TOKENS))  # warm the cache for "cached"
    times, outs = interleaved(
        {
            "before": lambda: before(encoder),
            "after": lambda: after(encoder),
            "cached": lambda: capacity._transformer_norms(encoder, (1, 2, TOKENS)),
        },
        repeats,
    )
    for name, t in times.items():
        print(f"  {name:<7} {t.line()}")
    terms = {
        name: [t.to_dict() for t in transformer_terms(n, observed_max_train=1.0, warnings=[])]
        for name, n in outs.items()
        if isinstance(n, TransformerNorms)
    }
    same = terms["before"] == terms["after"] == terms["cached"]
    rows = {name: len(n.layers) for name, n in outs.items() if isinstance(n, TransformerNorms)}
    print(f"  layer rows computed: before {rows['before']}, after {rows['after']}; "
          f"terms identical: {same}")  # fmt: skip
    if not same:
        raise SystemExit("the selected rows changed the transformer terms")
    size = f"vocab={vocab}, hidden={hidden}, layers={layers}"
    return [
        Result("norms: before / after", times["before"].wall / times["after"].wall, ">= 1.5", size),
        Result(
            "norms: before / cached", times["before"].wall / times["cached"].wall, ">= 10", size
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    add_thread_option(parser)
    args = parser.parse_args()
    for r in run(args.vocab, args.hidden, args.layers, args.repeats, args.threads):
        print(r.line())


if __name__ == "__main__":
    main()
