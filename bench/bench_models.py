#!/usr/bin/env python
"""The cost of each model of clipapp's catalog (clipapp/model/catalog.py) on this machine, with random weights.

Per model, each figure in a fresh process (`--worker`), CPU, HF_HUB_OFFLINE=1:
- load: seconds of `ClipService.load(NAME:random)` (after importing torch and open_clip, ~3 s for any model) and
  the process's RSS right after it (random initialisation stands in for reading the weights: same tensors);
- images/s: `encode_images` of the example photos (decoded in memory; preprocessing included), batches of 16,
  after a 2-image warm-up, for at least --seconds; texts/s: `encode_texts` of distinct prompts, batches of 16;
  both in fp32 and with `--precision int8`;
- fine-tune: seconds of the whole `python -m clipapp finetune DIR --mode head` process on 16 shots x 10 classes of
  scikit-learn's digits (224 px), as a user runs it, and of `python -m clipapp finetune DIR` (the default: the
  planner's choice within the CPU's 60 s budget), with the plan it chose.

Models with a Hugging Face tokenizer or text tower (SigLIP2, the multilingual XLM-RoBERTa model) would download
them even with random weights, and this machine is offline: they run a stand-in config (same towers, same
vocabulary size) whose tokenizer, and text tower config, are written here from scratch (tokenizers + transformers).

    flock /tmp/bench.lock .venv/bin/python bench/bench_models.py --models ViT-B-32 --runs 3 --write
    flock /tmp/bench.lock .venv/bin/python bench/bench_models.py --models ViT-L-14 --seconds 10 --write

--write merges the figures into clipapp/model/catalog_figures.json (the table of `clipapp models`); without it
they are only printed. One model per locked run keeps each run short.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from clipapp.model.catalog import FIGURES_FILE, MODELS  # noqa: E402

EXAMPLES = REPO / "assets" / "examples" / "photos"
WORDS = ["a", "photo", "of", "the", "cat", "dog", "car", "rocket", "cup", "coffee", "page", "text", "horse"]


# -- the worker: one model, one precision, one fresh process ---------------------------------------------------
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def throughput(encode, items: list, seconds: float) -> float:
    """Items per second over batches of 16 (`items` cycled), for at least `seconds` and one batch."""
    encode(items[:2])  # warm-up: first-call allocations, lazy imports
    done, spent, offset = 0, 0.0, 0
    while spent < seconds or done == 0:
        batch = [items[(offset + i) % len(items)] for i in range(16)]
        offset += 16
        start = time.perf_counter()
        encode(batch)
        spent += time.perf_counter() - start
        done += len(batch)
    return done / spent


def worker(spec: str, precision: str, seconds: float) -> dict:
    import open_clip  # noqa: F401 - imported before the clock: ~3 s that every model pays alike
    from PIL import Image

    from clipapp.model.service import ClipService

    start = time.perf_counter()
    service = ClipService.load(spec, device="cpu", precision=precision)
    load_s = time.perf_counter() - start
    rss = rss_mb()
    params = sum(p.numel() for p in service.loaded.model.parameters())
    photos = [Image.open(f).convert("RGB") for f in sorted(EXAMPLES.glob("*.jpg"))]
    images_per_s = throughput(lambda batch: service.encode_images(batch, batch_size=16), photos, seconds)
    # distinct prompts: encode_texts answers a repeated text from its cache
    prompts = [f"a photo of a {WORDS[i % len(WORDS)]} number {i}." for i in range(100_000)]
    texts_per_s = throughput(lambda batch: service.encode_texts(batch, batch_size=16), prompts, seconds)
    return {"load_s": load_s, "rss_mb": rss, "params_m": params / 1e6, "images_per_s": images_per_s,
            "texts_per_s": texts_per_s}


# -- stand-ins for models that would download a Hugging Face tokenizer or text tower ---------------------------
def word_level_tokenizer(folder: Path, vocab_size: int, special: list[str]) -> None:
    """A WordLevel tokenizer of `vocab_size` entries (the real one's size; its speed is not what is measured)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(special + WORDS)}
    vocab.update({f"w{i}": i for i in range(len(vocab), vocab_size)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=special[-1]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=special[-1], pad_token=special[1]).save_pretrained(
        folder
    )


def xlm_roberta_base(folder: Path) -> None:
    """xlm-roberta-base's config (its published values) and random weights, as AutoModel.from_pretrained reads."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
                              layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    word_level_tokenizer(folder, config.vocab_size, ["<s>", "<pad>", "</s>", "<unk>"])


def stand_in(name: str, root: Path) -> tuple[str, str]:
    """(the spec to run, a note) for catalog model `name`: NAME:random, or a local stand-in config."""
    import open_clip

    config = json.loads(json.dumps(open_clip.get_model_config(name)))
    text = config.get("text_cfg", {})
    if not (text.get("hf_tokenizer_name") or text.get("hf_model_name")):
        return f"{name}:random", ""
    local = root / name
    if text.get("hf_model_name"):
        xlm_roberta_base(local)
        text["hf_model_name"] = text["hf_tokenizer_name"] = str(local)
        note = "stand-in: xlm-roberta-base config + random weights and a WordLevel tokenizer, 250,002 entries"
    else:
        word_level_tokenizer(local, text["vocab_size"], ["<s>", "<pad>", "</s>", "<unk>"])
        text["hf_tokenizer_name"] = str(local)
        note = f"stand-in: a WordLevel tokenizer of the same vocabulary size ({text['vocab_size']:,})"
    (root / "configs").mkdir(exist_ok=True)
    (root / "configs" / f"bench-{name}.json").write_text(json.dumps(config))
    return f"bench-{name}:random", note


# -- the parent: fresh processes, the fine-tune through the CLI, the table --------------------------------------
def child_env(root: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "CLIPAPP_MODEL_CONFIGS": str(root / "configs"),
            "PYTHONPATH": str(REPO)}


def run_worker(spec: str, precision: str, seconds: float, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", spec, "--precision", precision, "--seconds",
                          str(seconds)], cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{spec} {precision} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_digits(folder: Path, shots: int) -> Path:
    import numpy as np
    from bench_fewshot import digits, draw_shots

    data = digits(224)
    for i in draw_shots(data.pool_labels, shots, np.random.default_rng(0)):
        target = folder / data.class_names[data.pool_labels[i]]
        target.mkdir(parents=True, exist_ok=True)
        data.pool_images[i].save(target / f"{i:04d}.png")
    return folder


def finetune_seconds(spec: str, train: Path, out: Path, env: dict, *flags: str) -> tuple[float, str]:
    """(seconds of the whole process, the plan that ran) of `clipapp finetune DIR [flags]`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clipapp", "finetune", str(train), *flags, "--model", spec,
                           "--out", str(out), "--json", "--quiet"], cwd=REPO, env=env, capture_output=True,
                          check=True, text=True)
    return time.perf_counter() - start, json.loads(done.stdout)["plan"]["plan"]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch

    return (f"{os.cpu_count()}-core CPU ({cpu}), shared with other work; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def measure(model, args, root: Path, train: Path) -> dict:
    spec, note = stand_in(model.name, root)
    env = child_env(root)
    figures: dict = {"bench_spec": spec, "note": note, "runs": args.runs}
    for precision in () if args.only_finetune else ("fp32", "int8"):
        runs = [run_worker(spec, precision, args.seconds, env) for _ in range(args.runs)]
        figures[precision] = {key: [run[key] for run in runs] for key in runs[0] if key != "params_m"}
        figures["params_m"] = runs[0]["params_m"] if precision == "fp32" else figures["params_m"]
        print(f"{model.spec} {precision}: " + ", ".join(f"{k} {spread(v)}" for k, v in figures[precision].items()),
              flush=True)
    if args.only_finetune:
        del figures["runs"]  # the throughput figures stored stay, with their run count
    if not args.no_finetune:
        try:
            figures.update(finetune_figures(model, spec, train, root, env, range(args.finetune_runs or args.runs)))
        except subprocess.CalledProcessError as exc:  # one model's failure must not lose the others' figures
            print(f"{model.spec} finetune failed:\n{exc.stderr[-2000:]}", flush=True)
    return figures


def finetune_figures(model, spec: str, train: Path, root: Path, env: dict, runs: range) -> dict:
    """`--mode head` and the default (the planner at the CPU's 60 s budget), each `runs` times."""
    head = [finetune_seconds(spec, train, root / f"h{run}", env, "--mode", "head")[0] for run in runs]
    print(f"{model.spec} finetune --mode head: {spread(head)} s", flush=True)
    default = [finetune_seconds(spec, train, root / f"d{run}", env) for run in runs]
    figures = {"finetune_head_s": head, "finetune_default_s": [seconds for seconds, _ in default],
               "finetune_default_plan": sorted({plan for _, plan in default})}
    print(f"{model.spec} finetune (default budget): {spread(figures['finetune_default_s'])} s, "
          f"{' / '.join(figures['finetune_default_plan'])}", flush=True)
    return figures


def write(results: dict, args) -> None:
    stored = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.is_file() else {"models": {}}
    stored.update(
        date=datetime.date.today().isoformat(),
        machine=machine(),
        method=" ".join(__doc__.split("\n\n")[1].split()),
    )
    for spec, figures in results.items():
        stored["models"][spec] = {**stored["models"].get(spec, {}), **figures}
    FIGURES_FILE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIGURES_FILE.relative_to(REPO)}")


def plan_words(plans: list[str]) -> str:
    """" (head)", " (cache)", " (1 block)": what the default fine-tune ran, short."""
    short = [p.split(",")[0].replace("head + last ", "").replace("cache adapter (no training)", "cache") for p in plans]
    return f" ({' / '.join(short)})" if short else ""


def markdown_table() -> str:
    """The docs' table (README, docs/models.md) from catalog_figures.json: medians, with min-max where several runs."""
    stored = json.loads(FIGURES_FILE.read_text())
    cell = lambda values, fmt="{:.1f}": "–" if not values else (  # noqa: E731
        fmt.format(values[0]) if len(values) == 1 else
        f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})")
    lines = ["| model | ImageNet 0-shot | weights' license | params M | load s | RSS MB | images/s fp32 | "
             "images/s int8 | texts/s fp32 | texts/s int8 | fine-tune head s | fine-tune default s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        m = stored["models"].get(model.spec, {})
        fp32, int8 = m.get("fp32", {}), m.get("int8", {})
        name = f"`{model.spec}`" + (" ¹" if m.get("note") else "")
        lines.append(" | ".join([
            f"| {name}", f"{model.imagenet_top1}%" if model.imagenet_top1 else "–", model.license,
            f"{m['params_m']:.0f}" if "params_m" in m else "–", cell(fp32.get("load_s")),
            cell(fp32.get("rss_mb"), "{:.0f}"), cell(fp32.get("images_per_s")), cell(int8.get("images_per_s")),
            cell(fp32.get("texts_per_s"), "{:.0f}"), cell(int8.get("texts_per_s"), "{:.0f}"),
            cell(m.get("finetune_head_s"), "{:.0f}"),
            cell(m.get("finetune_default_s"), "{:.0f}") + plan_words(m.get("finetune_default_plan", [])) + " |"]))
    notes = sorted({m["note"] for m in stored["models"].values() if m.get("note")})
    lines += ["", f"Measured {stored['date']} on {stored['machine']}.", *(f"¹ {note}." for note in notes)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names or specs of catalog models (default: all)")
    parser.add_argument("--runs", type=int, default=1, help="fresh processes per model and precision")
    parser.add_argument("--finetune-runs", type=int, help="fine-tunes per model (default: --runs)")
    parser.add_argument("--seconds", type=float, default=4.0, help="least encoding time per throughput figure")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--only-finetune", action="store_true", help="only the fine-tunes; stored figures stay")
    parser.add_argument("--write", action="store_true", help=f"merge the figures into {FIGURES_FILE.name}")
    parser.add_argument("--table", action="store_true", help=f"print the docs' table from {FIGURES_FILE.name}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table())
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.precision, args.seconds)))
        return 0
    wanted = [w.strip() for w in (args.models or "").split(",") if w.strip()]
    chosen = [m for m in MODELS if not wanted or m.spec in wanted or m.name in wanted]
    if not chosen:
        raise SystemExit(f"no catalog model matches {args.models!r}: {', '.join(m.spec for m in MODELS)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = write_digits(root / "digits", args.shots)
        for model in chosen:
            started = time.perf_counter()
            results[model.spec] = measure(model, args, root, train)
            print(f"{model.spec}: {time.perf_counter() - started:.0f} s of bench", flush=True)
            if args.write:  # after each model: a later one that fails loses nothing
                write({model.spec: results[model.spec]}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
