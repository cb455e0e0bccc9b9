"""Whether an open_clip pretrained tag's weights can be had: in the local Hugging Face cache, or from a hub that
answers within a few seconds (a DNS lookup on an unplugged machine can hang for a minute); offline mode."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional

HUB_PROBE_SECONDS = 4.0
OFFLINE_ENV = ("HF_HUB_OFFLINE", "CLIPAPP_OFFLINE")


def offline() -> bool:
    """Whether the hub is switched off ($HF_HUB_OFFLINE or $CLIPAPP_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in OFFLINE_ENV)


def run_with_deadline(fn: Callable[[], Any], seconds: float) -> Any:
    """Run `fn` in a daemon thread; raise TimeoutError if it has not returned in time (DNS can hang)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def resolve_pretrained_weights(name: str, tag: str) -> tuple[Optional[str], Optional[str]]:
    """Find the weights of an open_clip pretrained tag without waiting long on a network that isn't there.

    Returns (path or tag to pass to open_clip, None) when loadable, or (None, reason) when not.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub_id = cfg.get("hf_hub", "")
    if hub_id:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

        repo_id, filename = os.path.split(hub_id.rstrip("/") if hub_id.endswith("/") else hub_id)
        filename = filename or "open_clip_pytorch_model.bin"
        for candidate in ("open_clip_model.safetensors", filename):
            cached = try_to_load_from_cache(repo_id, candidate)
            if isinstance(cached, str):
                return cached, None
        if offline():
            return (
                None,
                f"weights for {name}:{tag} are not in the local cache and the hub is switched off (offline mode)",
            )
        try:
            run_with_deadline(
                lambda: get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_PROBE_SECONDS),
                HUB_PROBE_SECONDS,
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means "not reachable"
            return (
                None,
                f"weights for {name}:{tag} are not cached and the model hub cannot be reached ({type(exc).__name__})",
            )
        return tag, None  # reachable: let open_clip download with its own progress
    if offline():
        return None, f"weights for {name}:{tag} need a download and offline mode is on"
    return tag, None
