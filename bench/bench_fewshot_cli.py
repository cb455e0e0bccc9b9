#!/usr/bin/env python
"""Few-shot through the CLI, as a user runs it: `finetune` on digits folders, then `eval` on 500 other images.

Writes scikit-learn's digits (upscaled like bench_fewshot.py) as DATA/<digit name>/<n>.png, 16 (or --shots) per
class for training and 500 others for evaluation, then times `python -m clipapp finetune` (the whole process:
start-up, model load, encoding, training, saving) for the previous default (`--mode head`) and the new default,
--runs times each, and prints top-1 of `eval` with each adapter, min / median / max seconds and the time ratio.

    flock /tmp/bench.lock .venv/bin/python bench/bench_fewshot_cli.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR / "bench"))

from bench_fewshot import digits, draw_shots  # noqa: E402

MODES = {"previous default: --mode head": ["--mode", "head"], "new default": []}


def write_split(root: Path, images, labels, names, index) -> Path:
    for i in index:
        folder = root / names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        images[i].save(folder / f"{i:04d}.png")
    return root


def cli(*args: str) -> tuple[dict, float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "clipapp", *args, "--model", "demo", "--json"], cwd=REPO_DIR,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return json.loads(out.stdout), time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eval", type=int, default=500)
    args = parser.parse_args(argv)
    data = digits(32)  # the demo model's input side
    rng = np.random.default_rng(0)
    support = draw_shots(data.pool_labels, args.shots, rng)
    rest = rng.permutation(np.setdiff1d(np.arange(len(data.pool_labels)), support))[:args.eval]
    with tempfile.TemporaryDirectory() as tmp:
        train = write_split(Path(tmp) / "train", data.pool_images, data.pool_labels, data.class_names, support)
        test = write_split(Path(tmp) / "test", data.pool_images, data.pool_labels, data.class_names, rest)
        medians = {}
        print(f"digits, {args.shots} shots x 10 classes, eval on {len(rest)} other images, {args.runs} runs each")
        for name, flags in MODES.items():
            seconds, top1 = [], []
            for run in range(args.runs):
                out = Path(tmp) / f"adapter-{run}"
                _, took = cli("finetune", str(train), "--out", str(out), "--seed", str(run), *flags)
                result, _ = cli("eval", str(test), "--adapter", str(out))
                seconds.append(took)
                top1.append(100 * result["top1"])
            medians[name] = float(np.median(seconds))
            print(f"| {name} | top-1 {np.mean(top1):.1f} ± {np.std(top1):.1f} | finetune s min / median / max "
                  f"{min(seconds):.1f} / {np.median(seconds):.1f} / {max(seconds):.1f} |", flush=True)
        new, old = medians["new default"], medians["previous default: --mode head"]
        print(f"median time ratio new / previous default: {new / old:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
