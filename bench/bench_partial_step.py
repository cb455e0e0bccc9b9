#!/usr/bin/env python
"""What one partial fine-tuning step costs on a CPU, and what each speed-up the issue names buys, in one run:
the step as `finetune` makes it (clipapp/finetune/loop.py's `_Stepper`: mixup, loss, backward, fused AdamW, EMA;
batch 16 of cached activations) against the same step

- at 1 thread and at every thread (the planner times both and keeps the faster: `fastest_threads`),
- with the tuned blocks under bf16 autocast (`--train-precision bf16`, what `auto` picks where the CPU has native
  bf16: AVX512-BF16 / AMX),
- with the tuned blocks compiled (`torch.compile`, inductor; its first steps pay the compile, reported apart),
- conv towers (the demo ModifiedResNet): in NCHW memory, as before channels-last became the tower copy's layout,
- ViT towers: on half the patch tokens (a random half per step, FLIP-style; validation would see all).

    flock /tmp/bench.lock .venv/bin/python bench/bench_partial_step.py [--models demo,ViT-B-32:random] [--blocks 1,2]

Prints ms per step, min / median / max of --repeats timings of --steps steps each, and the ratio of the median to
the baseline's (the planner's choice of threads, fp32; conv towers channels-last, the tuned copy's layout). Random
weights give the real cost; whether a variant costs accuracy is another question (docs/benchmarks.md, "Speeding the
partial step").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clipapp.finetune.config import FinetuneConfig  # noqa: E402
from clipapp.finetune.features import Inputs, TokenGrid, prefix_tokens  # noqa: E402
from clipapp.finetune.loop import _Stepper, fastest_threads, torch_threads  # noqa: E402
from clipapp.finetune.towers import tuned_visual_copy, visual_kind  # noqa: E402
from clipapp.finetune.trainable import PartialTower, TrainableHead  # noqa: E402
from clipapp.model.service import ClipService  # noqa: E402

N_CLASSES = 10


def cached_inputs(service: ClipService, visual, first_tuned: int, n: int) -> torch.Tensor:
    """The frozen part's output for `n` images of noise (the cost does not depend on what the pixels show)."""
    side = service.input_side
    pixels = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))
    return prefix_tokens(visual, first_tuned, pixels.split(16))


class HalfTokens:
    """Keeps the class token(s) and a random half of the patch tokens of a ViT batch, per step."""

    def __init__(self, prefix: int):
        self.prefix = prefix

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens.shape[1] - self.prefix
        keep = torch.randperm(patches)[: patches // 2] + self.prefix
        return torch.cat([tokens[:, : self.prefix], tokens[:, keep]], dim=1)


def stepper(model, tokens: torch.Tensor, config: FinetuneConfig, grid) -> _Stepper:
    from clipapp.tricks import WeightEma

    y = torch.arange(len(tokens)) % N_CLASSES
    counts = np.bincount(y.numpy(), minlength=N_CLASSES)
    ema = WeightEma(model, decay=config.ema)
    return _Stepper(
        model, Inputs(views=tokens[None]), y, N_CLASSES, config, counts, np.random.default_rng(0), grid, ema
    )


def time_variant(service, blocks: int, variant: str, threads: int, args) -> tuple[list[float], float]:
    """(seconds per step of each repeat, seconds of the warm-up steps) for one variant."""
    config = FinetuneConfig(mode="partial", blocks=blocks, batch_size=args.batch)
    visual, first, _ = tuned_visual_copy(service.trainable_model(), blocks)
    tokens = cached_inputs(service, visual, first, args.batch)
    grid = TokenGrid.of(visual, tokens.shape[1])
    head = TrainableHead(torch.nn.functional.normalize(torch.randn(N_CLASSES, service.embed_dim), dim=-1), 100.0)
    model = PartialTower(visual, first, head, torch.bfloat16 if variant == "bf16" else torch.float32)
    if variant == "NCHW":
        visual.to(memory_format=torch.contiguous_format)
        tokens = tokens.contiguous()
        model._conv = False  # its input stays NCHW
    if variant == "compile":
        for block in model.blocks:
            block.compile()
    step = stepper(model, tokens, config, grid)
    if variant == "half tokens":
        assert grid is not None
        drop, mix = HalfTokens(grid.prefix), step.mix
        step.grid = None  # the kept tokens are no grid any more: mixup only
        step.mix = lambda x, y: mix(drop(x), y)  # type: ignore[method-assign]
    batch = np.arange(args.batch)
    model.train()
    with torch_threads(threads):
        started = time.perf_counter()
        for _ in range(args.warmup):
            step(batch, 1.0)
        warmup = time.perf_counter() - started
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for _ in range(args.steps):
                step(batch, 1.0)
            timings.append((time.perf_counter() - started) / args.steps)
    return timings, warmup


def variants(service) -> list[str]:
    kind = visual_kind(service.trainable_model().get_submodule("visual"))
    return ["1 thread", "all threads", "bf16", "compile"] + (["half tokens"] if kind == "vit" else ["NCHW"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,ViT-B-32:random")
    parser.add_argument("--blocks", default="1,2")
    parser.add_argument("--batch", type=int, default=16, help="images per step (FinetuneConfig's default)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variants to run (default: all)")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print("| model | blocks | variant | threads | ms/step min / med / max | x baseline | warm-up s |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        service = ClipService.load(spec, device="cpu", allow_fallback=False)
        for blocks in (int(b) for b in args.blocks.split(",")):
            visual, first, _ = tuned_visual_copy(service.trainable_model(), blocks)
            tokens = cached_inputs(service, visual, first, args.batch)
            chosen = fastest_threads(
                PartialTower(visual, first, TrainableHead(torch.zeros(N_CLASSES, service.embed_dim) + 1, 100.0)),
                Inputs(views=tokens[None]),
                service.device,
                batch_size=args.batch,
            )
            baseline = None
            for variant in variants(service):
                if args.only and variant not in args.only.split(",") and variant != "all threads":
                    continue
                threads = {"1 thread": 1, "all threads": torch.get_num_threads()}.get(variant, chosen)
                timings, warmup = time_variant(service, blocks, variant, threads, args)
                median = float(np.median(timings))
                if variant == ("1 thread" if chosen == 1 else "all threads"):
                    baseline = median
                ratio = f"{baseline / median:.2f}x faster" if baseline else "-"
                ms = " / ".join(f"{1000 * t:.0f}" for t in (min(timings), median, max(timings)))
                print(f"| {spec} | {blocks} | {variant} | {threads} | {ms} | {ratio} | {warmup:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
