"""Start-up time: this tree's clipapp against a previous commit's and against plain open_clip.

    flock /tmp/bench.lock .venv/bin/python bench/bench_startup.py [--base 8777256] [--runs 3]
        [--models demo,ViT-B-32:random]

Each figure is the wall time of a fresh interpreter (`python ...` as a user runs it), interleaved so that the
contenders share the machine's noise:
  help             `python -m clipapp --help`
  import service   `python -c "import clipapp.model.service"`
  first classify   `python -m clipapp classify PHOTO --labels ... --model demo --json`: one image on the bundled
                   demo model, from an empty interpreter to the printed answer
The previous commit's `clipapp/` is extracted with `git archive BASE clipapp` into a temporary folder and run the same
way. Plain open_clip is the reference: `python -c "import open_clip"`, and one image classified on the same demo
model by open_clip's own calls (create_model_and_transforms, get_tokenizer, encode_image/encode_text).
The first-classify rows run once per model of --models: the demo model, and ViT-B-32 with random weights (the real
architecture: building its 151 M parameters is the cost, reading pretrained weights would add their file's read).
Prints min / median / max per row and the ratios of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "examples" / "photos" / "astronaut.jpg"
LABELS = "t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot"

RAW_CLASSIFY = """
import sys
import open_clip, torch
from PIL import Image
demo = sys.argv[1]
open_clip.add_model_config(demo)
model, _, preprocess = open_clip.create_model_and_transforms(
    "clipapp-demo", pretrained=demo + "/clipapp-demo.safetensors", weights_only=True)
model.eval()
tokenizer = open_clip.get_tokenizer("clipapp-demo")
labels = sys.argv[3].split(",")
with torch.no_grad():
    image = model.encode_image(preprocess(Image.open(sys.argv[2]).convert("RGB"))[None])
    text = model.encode_text(tokenizer([f"a photo of a {label}." for label in labels]))
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    probs = (model.logit_scale.exp() * image @ text.T).softmax(dim=-1)[0]
print(labels[int(probs.argmax())], float(probs.max()))
"""
# the same calls on an architecture with random weights (`NAME:random`): argv = NAME, PHOTO, LABELS
RAW_CLASSIFY_RANDOM = RAW_CLASSIFY.replace(
    """demo = sys.argv[1]
open_clip.add_model_config(demo)
model, _, preprocess = open_clip.create_model_and_transforms(
    "clipapp-demo", pretrained=demo + "/clipapp-demo.safetensors", weights_only=True)""",
    """model, _, preprocess = open_clip.create_model_and_transforms(sys.argv[1], pretrained=None)""",
).replace('get_tokenizer("clipapp-demo")', "get_tokenizer(sys.argv[1])")


def extract(base: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", base, "clipapp"], cwd=ROOT, capture_output=True, check=True).stdout
    tar_path = into / "base.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "base", filter="data")
    return into / "base"


def seconds(argv: list[str], pythonpath: Path | None, cwd: Path) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def spread(values: list[float]) -> str:
    return f"{min(values):6.2f} / {statistics.median(values):6.2f} / {max(values):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        default="8777256",
        help="the previous commit to compare with (default 8777256: the layered package, whose "
        "clipapp.model.service the import row names)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="demo,ViT-B-32:random", help="comma-separated models to classify with")
    args = parser.parse_args()
    py = sys.executable
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base = extract(args.base, tmp_path)
        # Run from an empty folder so that neither copy of clipapp is found through the current directory.
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        rows: dict[str, list[tuple[list[str], Path | None]]] = {
            "help": [([py, "-m", "clipapp", "--help"], ROOT), ([py, "-m", "clipapp", "--help"], base)],
            "import service": [
                ([py, "-c", "import clipapp.model.service"], ROOT),
                ([py, "-c", "import clipapp.model.service"], base),
            ],
        }
        raw = {"import open_clip": ([py, "-c", "import open_clip"], None)}
        for model in models:
            classify = [py, "-m", "clipapp", "classify", str(PHOTO), "--labels", LABELS, "--model", model, "--json"]
            rows[first_classify(model)] = [(classify, ROOT), (classify, base)]
            if model == "demo":
                script = [RAW_CLASSIFY, str(ROOT / "clipapp" / "assets" / "demo")]
            else:
                script = [RAW_CLASSIFY_RANDOM, model.removesuffix(":random")]
            raw[first_classify(model)] = ([py, "-c", *script, str(PHOTO), LABELS], None)
        times: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs):
            for name, (ours, previous) in rows.items():
                for who, (argv, path) in (("ours", ours), (f"previous {args.base}", previous)):
                    times.setdefault((name, who), []).append(seconds(argv, path, cwd))
            for name, (argv, path) in raw.items():
                times.setdefault((name, "plain open_clip"), []).append(seconds(argv, path, cwd))
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)

    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"\nstart-up, wall seconds of a fresh process, {args.runs} runs interleaved: min / median / max\n")
    print(f"| {'what':<40} | {'who':<18} | {'min / median / max':>24} |")
    print(f"|{'-' * 42}|{'-' * 20}|{'-' * 26}|")
    for (name, who), values in sorted(times.items(), key=lambda item: item[0][0]):
        print(f"| {name:<40} | {who:<18} | {spread(values):>24} |")
    previous = f"previous {args.base}"
    raw_import = median[("import open_clip", "plain open_clip")]
    print()
    for name in rows:
        ours = median[(name, "ours")]
        print(
            f"{name}: previous / ours {median[(name, previous)] / ours:.1f}x; ours / plain `import open_clip` "
            f"{ours / raw_import:.2f}x"
        )
    for model in models:
        name = first_classify(model)
        print(
            f"{name}: ours / plain open_clip's own calls "
            f"{median[(name, 'ours')] / median[(name, 'plain open_clip')]:.2f}x"
        )


def first_classify(model: str) -> str:
    return "first classify" if model == "demo" else f"first classify, {model}"


if __name__ == "__main__":
    main()
