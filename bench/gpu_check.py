#!/usr/bin/env python
"""One command for a GPU machine: encode, classify, fine-tune and serving figures on the real architecture
(ViT-B-32 with random weights: the architecture's cost), printed as one table. Run by bench/gpu_check.sh.

    bench/gpu_check.sh                       # CUDA, ViT-B-32:random, under 5 minutes on one GPU
    bench/gpu_check.sh --device cpu --small  # the same steps, tiny, on the CPU: a smoke test of this script

Sections (each a fresh process where a user would run one):
- encode: ClipService in this process, images/s of the example photos (batch 64) and texts/s (batch 256);
- classify: `python -m clipapp classify FOLDER --labels ... --csv` on 800x600 JPEG files, the whole process;
- fine-tune: `python -m clipapp finetune` on 16 shots x 10 classes of scikit-learn digits, --mode head and the
  default, seconds of the whole process;
- serving: `python app.py`, then 16 users POSTing one image to /v1/classify for --seconds: requests/s, p50, p99.
Without CUDA (and --device cuda) it stops at once with one line on stderr and exit status 3.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

NO_CUDA_EXIT = 3
LABELS = "cat, dog, rocket, cup of coffee, horse, astronaut, camera, motorcycle, page of text, car"


def cuda_problem(device: str) -> str | None:
    """Why `device` cannot be used, or None (a CPU always can)."""
    try:
        import torch
    except ImportError:
        return f"torch is not installed for {sys.executable} (make install, or set PYTHON=.../bin/python)"
    if not device.startswith("cuda"):
        return None

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False): run it on a GPU machine, or pass --device cpu"
    return None


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({os.cpu_count()} cores)"


def sizes(small: bool) -> dict:
    if small:
        return {"images": 16, "prompts": 32, "files": 24, "users": 2, "shots": 2}
    return {"images": 1024, "prompts": 2048, "files": 2000, "users": 16, "shots": 16}


def cli(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipapp", *args], cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def encode(model: str, device: str, n: dict) -> list[tuple[str, str]]:
    from PIL import Image

    from clipapp.model.service import ClipService

    start = time.perf_counter()
    service = ClipService.load(model, device=device, micro_batch_window_s=0)
    loaded = time.perf_counter() - start
    photos = [Image.open(p).convert("RGB") for p in sorted((REPO / "assets/examples/photos").glob("*.jpg"))]
    images = [photos[i % len(photos)] for i in range(n["images"])]
    service.encode_images(images[:64], batch_size=64)  # warm-up: kernels, allocator
    start = time.perf_counter()
    service.encode_images(images, batch_size=64)
    per_image = (time.perf_counter() - start) / len(images)
    prompts = [f"a photo of a thing number {i}." for i in range(n["prompts"])]
    service.encode_texts(prompts[:8])
    start = time.perf_counter()
    service.encode_texts(prompts[8:], batch_size=256)
    per_text = (time.perf_counter() - start) / (len(prompts) - 8)
    return [
        ("model", f"{service.description}, loaded in {loaded:.1f} s"),
        ("encode: images/s (batch 64, preprocessing included)", f"{1 / per_image:.0f}"),
        ("encode: texts/s (batch 256)", f"{1 / per_text:.0f}"),
    ]


def classify(model: str, device: str, n: dict, tmp: Path, env: dict) -> list[tuple[str, str]]:
    from bench_classify import write_photo_jpegs

    folder = tmp / "photos"
    write_photo_jpegs(folder, n["files"])
    seconds = cli(["classify", str(folder), "--labels", LABELS, "--csv", str(tmp / "out.csv"), "--model", model,
                   "--device", device, "--json"], env)
    return [(f"classify: {n['files']} JPEG files 800x600, whole CLI process", f"{seconds:.1f} s, "
             f"{n['files'] / seconds:.0f} files/s")]


def finetune(model: str, device: str, n: dict, tmp: Path, env: dict, modes: list[str]) -> list[tuple[str, str]]:
    import numpy as np
    from bench_fewshot import digits, draw_shots

    data = digits(224)
    train = tmp / "digits"
    for i in draw_shots(data.pool_labels, n["shots"], np.random.default_rng(0)):
        folder = train / data.class_names[data.pool_labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        data.pool_images[i].save(folder / f"{i:04d}.png")
    rows = []
    for mode in modes:
        flags = [] if mode == "default" else ["--mode", mode]
        seconds = cli(["finetune", str(train), "--out", str(tmp / f"adapter-{mode}"), "--model", model, "--device",
                       device, "--json", "--quiet", *flags], env)
        rows.append((f"fine-tune {mode}: {n['shots']} shots x 10 digits, whole CLI process", f"{seconds:.1f} s"))
    return rows


def serving(model: str, device: str, n: dict, seconds: float) -> list[tuple[str, str]]:
    from load import hammer, http_call

    from tests.support.apprunner import running_app

    with tempfile.TemporaryDirectory() as state, running_app(
        ["--model", model, "--device", device, "--state-dir", state]
    ) as (_proc, url):
        http_call(url, 0)()  # warm-up
        found = hammer(lambda i: http_call(url, i), n["users"], seconds)
    return [(f"serving: {n['users']} users POST /v1/classify, 1 image, {seconds:.0f} s",
             f"{found['rps']:.1f} req/s, p50 {found['p50']:.0f} ms, p99 {found['p99']:.0f} ms, "
             f"{len(found['errors'])} errors")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--seconds", type=float, default=20, help="serving: seconds of load")
    parser.add_argument("--finetune-modes", default="head,default")
    parser.add_argument("--sections", default="encode,classify,finetune,serving")
    args = parser.parse_args(argv)
    problem = cuda_problem(args.device)
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return NO_CUDA_EXIT
    n = sizes(args.small)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    sections = args.sections.split(",")
    rows: list[tuple[str, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if "encode" in sections:
            rows += encode(args.model, args.device, n)
        if "classify" in sections:
            rows += classify(args.model, args.device, n, Path(tmp), env)
        if "finetune" in sections:
            rows += finetune(args.model, args.device, n, Path(tmp), env, args.finetune_modes.split(","))
        if "serving" in sections:
            rows += serving(args.model, args.device, n, args.seconds)
    print(f"\n## gpu_check: {args.model} on {device_name(args.device)}{' (--small)' if args.small else ''}, "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
