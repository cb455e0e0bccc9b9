"""Experiment logging: TensorBoard event files, optional offline wandb, and an in-memory history.

Named `experiment_log` so it does not shadow the standard library's `logging`.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

from clipapp.extras import import_extra

log = logging.getLogger(__name__)


def _as_float(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class ExperimentLogger:
    """Log scalars to TensorBoard (`SummaryWriter`) and keep them in `history` for live curves.

    Helps comparing runs and spotting over-fitting while training: `tensorboard --logdir <log_dir>/..`.
    wandb is used only when `use_wandb=True` and the package is installed, always in offline mode (no account
    or network needed; `wandb sync` uploads later). Usable as a context manager.
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        use_wandb: bool = False,
        project: str = "clipapp",
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        # imported here: tensorboard is the optional `logging` extra, and slow to import
        SummaryWriter = import_extra(
            "torch.utils.tensorboard", extra="logging", feature="ExperimentLogger (TensorBoard event files)"
        ).SummaryWriter

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._lock = threading.Lock()  # the UI reads history from another thread
        self.wandb_run = None
        if use_wandb:
            try:
                import wandb
            except ImportError:
                log.warning("wandb logging asked for, but wandb is not installed; logging to TensorBoard only.")
            else:
                self.wandb_run = wandb.init(
                    project=project, name=run_name, config=config, dir=str(self.log_dir), mode="offline"
                )

    def log_scalars(self, step: int, **values: Any) -> None:
        """Log named scalars at `step`; tags with slashes via `**{"train/loss": x}` group in TensorBoard."""
        clean = {name: _as_float(value) for name, value in values.items()}
        for name, value in clean.items():
            self.writer.add_scalar(name, value, global_step=step)
        with self._lock:
            for name, value in clean.items():
                self.history.setdefault(name, []).append((int(step), value))
        if self.wandb_run is not None:
            self.wandb_run.log(clean, step=step)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
        """Record the run's settings and final metrics (TensorBoard HPARAMS tab), in this run's own event file."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # TensorBoard accepts only bool/int/float/str settings
        clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        metrics = {k: _as_float(v) for k, v in (metrics or {}).items()}
        # SummaryWriter.add_hparams would write to a new sub-directory; write to this run's file instead
        file_writer = self.writer._get_file_writer()
        for summary in hparams_summary(clean, metrics):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(name, value)
        if self.wandb_run is not None:
            self.wandb_run.config.update(clean, allow_val_change=True)
            self.wandb_run.summary.update(metrics)

    def snapshot(self) -> dict[str, list[tuple[int, float]]]:
        """A copy of the history, safe to read while training keeps logging."""
        with self._lock:
            return {name: list(points) for name, points in self.history.items()}

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None

    def __enter__(self) -> ExperimentLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
