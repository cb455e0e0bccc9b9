#!/usr/bin/env python
"""The fine-tune planner through the CLI: the estimate it prints beside the time the fine-tune took (goal: within
a factor of 2), for the demo model and the real architecture (`ViT-B-32:random`: random weights, the real cost).

Digits as bench_fewshot_cli.py writes them (16 shots x 10 classes; 500 other digits for `eval`), then
`python -m clipapp finetune` per row, whole process timed: `--mode head`, the default (the planner at the default
budget: 60 s on a CPU) and `--budget none` (the strongest candidate: the previous default, partial 2 blocks,
30 epochs x 3 folds). Top-1 of `eval` is measured for the models whose features mean something (the demo model).
Each run is one line of JSON in --jsonl too, so rows run in separate locked sessions can be tabled together.

    flock /tmp/bench.lock .venv/bin/python bench/bench_budget.py --models demo
    flock /tmp/bench.lock .venv/bin/python bench/bench_budget.py --models ViT-B-32:random --rows head,default
    flock /tmp/bench.lock .venv/bin/python bench/bench_budget.py --models ViT-B-32:random --rows none --runs 1
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
from bench_fewshot_cli import write_split  # noqa: E402

ROWS = {"head": ["--mode", "head"], "default": [], "none": ["--budget", "none"]}


def row_flags(row: str) -> list[str]:
    """A named row, or a number of seconds: `--budget` it (e.g. 180, where ViT-B-32 affords a partial schedule)."""
    return ROWS[row] if row in ROWS else ["--budget", str(float(row))]


ACCURATE = ("demo",)  # models with trained weights: their top-1 on the other digits means something


def cli(model: str, *args: str) -> tuple[dict, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "clipapp", *args, "--model", model, "--json"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    return json.loads(out.stdout), time.perf_counter() - started


def spread(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in (min(values), float(np.median(values)), max(values)))


def plans(records: list[dict]) -> str:
    """The plans the runs chose (a budget near an estimate can tip between two), with how many runs chose each."""
    chosen = [r["plan"] for r in records]
    if len(set(chosen)) == 1:
        return chosen[0]
    return "; ".join(f"{plan} ({chosen.count(plan)} of {len(chosen)})" for plan in dict.fromkeys(chosen))


def run_row(model: str, row: str, train: Path, test: Path, work: Path, runs: int, jsonl: Path | None) -> None:
    records = []
    for run in range(runs):
        out = work / f"adapter-{row}-{run}"
        report, took = cli(model, "finetune", str(train), "--out", str(out), "--seed", str(run), *row_flags(row))
        plan = report["plan"]
        record = {
            "model": model,
            "row": row,
            "run": run,
            "plan": plan["plan"],
            "estimate_s": plan["estimate_s"],
            "actual_s": plan["actual_s"],
            "planning_s": plan["estimate"]["planning"],  # measuring before the choice (and reading the prompts)
            "process_s": round(took, 1),
        }
        if model in ACCURATE:
            record["top1"] = cli(model, "eval", str(test), "--adapter", str(out))[0]["top1"]
        records.append(record)
        if jsonl is not None:
            with jsonl.open("a") as file:
                file.write(json.dumps(record) + "\n")
    estimates, actuals = [r["estimate_s"] for r in records], [r["actual_s"] for r in records]
    ratios = [a / e for a, e in zip(actuals, estimates, strict=True)]
    top1 = [100 * r["top1"] for r in records if "top1" in r]
    print(
        f"| {model} | {row} | {plans(records)} | {spread(estimates)} | {spread(actuals)} | "
        f"{spread(ratios)} | {spread([r['planning_s'] for r in records])} | "
        f"{spread([r['process_s'] for r in records])} | "
        + (f"{np.mean(top1):.1f} ± {np.std(top1):.1f}" if top1 else "-")
        + f" | {runs} |",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,ViT-B-32:random")
    parser.add_argument("--rows", default="head,default,none", help=f"of {', '.join(ROWS)}, or a budget in seconds")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eval", type=int, default=500)
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per run here")
    args = parser.parse_args(argv)
    data = digits(32)
    rng = np.random.default_rng(0)
    support = draw_shots(data.pool_labels, args.shots, rng)
    rest = rng.permutation(np.setdiff1d(np.arange(len(data.pool_labels)), support))[: args.eval]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = write_split(work / "train", data.pool_images, data.pool_labels, data.class_names, support)
        test = write_split(work / "test", data.pool_images, data.pool_labels, data.class_names, rest)
        print(f"digits, {args.shots} shots x 10 classes; eval on {len(rest)} other digits; {os.cpu_count()} CPUs")
        print(
            "| model | row | plan | estimate s min / med / max | actual s | actual / estimate | of which planning s "
            "| process s | top-1 % | runs |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for model in args.models.split(","):
            for row in args.rows.split(","):
                run_row(model, row, train, test, work, args.runs, args.jsonl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
