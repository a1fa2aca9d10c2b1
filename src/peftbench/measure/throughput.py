"""Training throughput, eval latency and inference overhead.

Timing must not change what it times: no per-step ``.item()`` (a device sync) — token counts are
accumulated as tensors on the device and read once at the end; the only sync is one
``torch.cuda.synchronize`` per boundary on CUDA, without which GPU step times are meaningless.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn

__all__ = ["ThroughputCallback", "inference_latency", "inference_overhead"]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def batch_size(batch: Any) -> int:
    """Examples in a batch: rows of input_ids, else of its first tensor (features, pixels)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 1
    if isinstance(batch, Mapping):
        if "input_ids" in batch:
            return batch_size(batch["input_ids"])
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return batch_size(v)
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size(batch[0])
    return 0


class ThroughputCallback(L.Callback):
    """Samples/s and tokens/s of training, step-time distribution, eval latency per batch.

    A measured step spans ``on_train_batch_start`` to the ``on_train_batch_end`` after which the
    optimizer stepped (several batches under gradient accumulation); data loading and validation
    fall outside, so figures are compute throughput. The first ``warmup_steps`` optimizer steps
    (allocator growth, cudnn autotune, lazy init) are left out. Under DDP, samples and tokens are
    summed over ranks and time is the max over ranks: the global rate.
    """

    def __init__(self, warmup_steps: int = 2) -> None:
        self.warmup_steps = warmup_steps
        self.step_times: list[float] = []
        self.step_cpu_times: list[float] = []  # process CPU seconds: less sensitive than wall time to other jobs
        self._device: torch.device | None = None
        self._steps_seen = 0
        self._step_start: float | None = None
        self._cpu_start = 0.0
        self._last_global_step = 0
        self._pending_samples = 0
        self._pending_tokens = 0
        self._pending_useful: torch.Tensor | None = None
        self._pending_pairs = 0
        self._samples = 0
        self._tokens = 0
        self._pairs = 0  # Σ rows × padded length²: what dense attention's QKᵀ and AV scale with
        self._has_tokens = False
        self._useful: torch.Tensor | None = None
        self._has_mask = False
        self._eval_times: dict[str, list[float]] = {"val": [], "test": []}
        self._eval_start: float | None = None
        self._global: dict[str, float] | None = None

    # -- training -----------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._device = trainer.strategy.root_device
        self._last_global_step = trainer.global_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._step_start is None:
            _sync(self._device)
            self._step_start = time.perf_counter()
            self._cpu_start = time.process_time()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._pending_samples += batch_size(batch)
        if isinstance(batch, Mapping):
            ids = batch.get("input_ids")
            if isinstance(ids, torch.Tensor):
                self._pending_tokens += ids.numel()
                self._pending_pairs += ids.numel() * (ids.shape[-1] if ids.ndim > 1 else 1)
                self._has_tokens = True
            mask = batch.get("attention_mask")
            if isinstance(mask, torch.Tensor):
                s = mask.detach().sum()  # stays on device: no sync
                self._pending_useful = s if self._pending_useful is None else self._pending_useful + s
                self._has_mask = True
        if trainer.global_step == self._last_global_step:
            return  # accumulating: the optimizer step is not done yet
        self._last_global_step = trainer.global_step
        _sync(self._device)
        elapsed = time.perf_counter() - (self._step_start or time.perf_counter())
        cpu = time.process_time() - self._cpu_start
        self._step_start = None
        self._steps_seen += 1
        if self._steps_seen > self.warmup_steps:
            self.step_times.append(elapsed)
            self.step_cpu_times.append(cpu)
            self._samples += self._pending_samples
            self._tokens += self._pending_tokens
            self._pairs += self._pending_pairs
            if self._pending_useful is not None:
                prev = self._useful
                self._useful = self._pending_useful if prev is None else prev + self._pending_useful
        self._pending_samples = self._pending_tokens = self._pending_pairs = 0
        self._pending_useful = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Reduce over ranks here, where every rank runs the hook (a collective needs all)."""
        local = self._local_totals()
        if trainer.world_size <= 1:
            self._global = local
            return
        device = trainer.strategy.root_device
        sums = torch.tensor(
            [local["samples"], local["tokens"], local["useful"], local["pairs"]], dtype=torch.float64, device=device
        )
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        t = torch.tensor([local["time"]], dtype=torch.float64, device=device)
        t = trainer.strategy.reduce(t, reduce_op="max")
        self._global = {
            "samples": float(sums[0]),
            "tokens": float(sums[1]),
            "useful": float(sums[2]),
            "pairs": float(sums[3]),
            "time": float(t[0]),
        }

    def _local_totals(self) -> dict[str, float]:
        useful = float(self._useful.item()) if self._useful is not None else 0.0
        return {
            "samples": float(self._samples),
            "tokens": float(self._tokens),
            "useful": useful,
            "pairs": float(self._pairs),
            "time": float(sum(self.step_times)),
        }

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_begin(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking:
            return
        _sync(trainer.strategy.root_device)
        self._eval_start = time.perf_counter()

    def _eval_finish(self, trainer: L.Trainer, stage: str) -> None:
        if trainer.sanity_checking or self._eval_start is None:
            return
        _sync(trainer.strategy.root_device)
        self._eval_times[stage].append(time.perf_counter() - self._eval_start)
        self._eval_start = None

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_begin(trainer)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_finish(trainer, "val")

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_begin(trainer)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_finish(trainer, "test")

    # -- results ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Flat dict of speed figures; None where not measurable (no steps past warm-up, no tokens)."""
        g = self._global or self._local_totals()
        t = g["time"]
        has_time = bool(self.step_times) and t > 0
        out: dict[str, Any] = {
            "train_samples_per_s": g["samples"] / t if has_time else None,
            "train_tokens_per_s": g["tokens"] / t if has_time and self._has_tokens else None,
            "useful_tokens_per_s": g["useful"] / t if has_time and self._has_mask else None,
            "padding_fraction": (
                1.0 - g["useful"] / g["tokens"]
                if self._has_mask and self._has_tokens and g["tokens"] > 0
                else None
            ),
            "step_time_median_s": statistics.median(self.step_times) if self.step_times else None,
            "step_time_p90_s": _percentile(self.step_times, 0.9) if self.step_times else None,
            "steps_measured": len(self.step_times),
            # the timed steps' totals, so a FLOP count per run can be made from the record alone
            "train_time_s": t if has_time else None,
            "train_cpu_s": sum(self.step_cpu_times) if has_time else None,  # this process (rank), all threads
            "train_tokens": g["tokens"] if self._has_tokens else None,
            "train_useful_tokens": g["useful"] if self._has_mask else None,
            "train_attn_pairs": g["pairs"] if self._has_tokens else None,
            "warmup_steps": self.warmup_steps,
        }
        all_eval: list[float] = []
        for stage, times in self._eval_times.items():
            out[f"{stage}_latency_s_per_batch"] = statistics.fmean(times) if times else None
            all_eval += times
        out["eval_latency_s_per_batch"] = statistics.fmean(all_eval) if all_eval else None
        return out


def _model_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def inference_latency(model: nn.Module, batch: Any, n: int = 10, warmup: int = 2) -> float:
    """Median seconds per forward pass under ``torch.inference_mode`` in eval mode.

    Median, not mean: on shared machines a single preempted call would otherwise dominate.
    The model's train/eval mode is restored afterwards.
    """
    if n < 1:
        raise ValueError(f"inference_latency: n must be >= 1, got {n}")
    device = _model_device(model)
    was_training = model.training
    model.eval()

    def forward() -> Any:
        if isinstance(batch, Mapping):
            return model(**batch)
        if isinstance(batch, (list, tuple)):
            return model(*batch)
        return model(batch)

    times: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                forward()
            for _ in range(n):
                _sync(device)
                t0 = time.perf_counter()
                forward()
                _sync(device)
                times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times)


def inference_overhead(adapted_latency: float, base_latency: float) -> float:
    """Relative extra latency of the adapted model: 0.1 means 10 % slower than the base."""
    if base_latency <= 0:
        raise ValueError(f"inference_overhead: base_latency must be > 0, got {base_latency}")
    return adapted_latency / base_latency - 1.0


def head_rows(batch: Any, k: int) -> Any:
    """The first ``k`` rows of a batch: latency is a per-forward ratio, and timing a full eval
    batch 45 times cost more than a small run's training."""
    if isinstance(batch, Mapping):
        return {n: (v[:k] if torch.is_tensor(v) and v.dim() > 0 else v) for n, v in batch.items()}
    return batch


def batch_rows(batch: Any) -> int | None:
    t = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None) if isinstance(batch, Mapping) else None
    return int(t.shape[0]) if t is not None else None


def compare_latencies(models: Mapping[str, nn.Module], batch: Any, rounds: int = 3) -> dict[str, float]:
    """Forward latency of ``adapted`` vs ``base`` (vs ``merged``) on the same batch, interleaved
    round by round so machine noise hits all of them alike; medians over rounds."""
    lat: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            lat[k].append(inference_latency(m, batch, n=3, warmup=1))
    med = {k: statistics.median(v) for k, v in lat.items()}
    out = {"eval_latency_s": med["adapted"], "base_latency_s": med["base"],
           "inference_overhead": inference_overhead(med["adapted"], med["base"])}
    if "merged" in med:
        out.update(merged_latency_s=med["merged"], merged_inference_overhead=inference_overhead(med["merged"], med["base"]))
    return out
