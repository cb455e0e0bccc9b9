"""The cluster plan (how many model copies and what each asks for) and the environment the workers get."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import clipapp
from clipapp.errors import ClipAppError

# Passed to the workers: they decide which model configs exist, whether to go online and which images are too big.
FORWARDED_ENV = ("CLIPAPP_MODEL_CONFIGS", "CLIPAPP_OFFLINE", "HF_HUB_OFFLINE")  # workers keep the default image limits
MAX_CPUS_PER_ACTOR = 8  # beyond this, torch's CPU scaling on one image batch flattens out


def cluster_plan(ray: Any, *, num_actors: Optional[int], precision: str) -> dict:
    """How many actors and what each one asks for: one GPU per actor where the cluster has GPUs, else CPUs.

    CPU actors get an equal share of the CPUs but never more than the smallest node has, so every actor fits on
    any node (a fixed-size actor pool with an unschedulable actor would wait forever).
    """
    if num_actors is not None and (not isinstance(num_actors, int) or num_actors < 1):
        raise ClipAppError(f"num_actors must be a positive whole number, not {num_actors!r}.")
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n.get("GPU", 0) for n in nodes))
    if gpus:
        if precision == "int8":
            raise ClipAppError("int8 runs on the CPU only, and this cluster's actors use GPUs: use fp16 or fp32.")
        actors = num_actors or gpus
        if actors > gpus:
            raise ClipAppError(f"{actors} actors asked for, but the cluster has {gpus} GPU(s): one actor per GPU.")
        per_gpu = min(int(n.get("CPU", 0) // n["GPU"]) for n in nodes if n.get("GPU"))
        return {
            "num_actors": actors,
            "num_gpus": 1,
            "num_cpus": max(1, min(per_gpu, MAX_CPUS_PER_ACTOR)),
            "device": "cuda",
        }
    if precision == "fp16":
        raise ClipAppError("fp16 needs a GPU and this Ray cluster has none: use fp32 (or bf16, int8) on CPUs.")
    cpu_nodes = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1]
    if not cpu_nodes:
        raise ClipAppError("The Ray cluster has no CPUs or GPUs available to run the model on.")
    total = sum(cpu_nodes)
    actors = num_actors or max(1, total // 4)  # ~4 threads per model copy: fewer copies in memory, good scaling
    per_actor = max(1, min(total // actors, min(cpu_nodes), MAX_CPUS_PER_ACTOR))
    return {"num_actors": actors, "num_gpus": 0, "num_cpus": per_actor, "device": "cpu"}


def worker_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    # Workers import clipapp from the same checkout path (a local cluster's workers would not find it otherwise,
    # e.g. under pytest's `pythonpath = .`); ${PYTHONPATH} keeps what the node already has.
    root = str(Path(clipapp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + "${PYTHONPATH}"
    return env
