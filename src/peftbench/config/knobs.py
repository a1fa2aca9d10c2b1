"""GPU-ready speed knobs: checked before any weight loads, applied after the method.

- ``trainer.precision=bf16-mixed`` (checked by budget.check_precision)
- ``perf.tf32: true``  → TF32 matmuls/convolutions on Ampere+ GPUs (CUDA only: refused on CPU)
- ``optim.fused: true`` → one fused AdamW kernel (CUDA, and CPU since torch 2.4; AdamW only)
- ``model.attn_implementation: eager | sdpa | flash_attention_2`` → passed to ``from_pretrained``
  (flash_attention_2 needs CUDA and the flash-attn package: refused otherwise)
- ``perf.compile: true`` → ``torch.compile(model)`` after the method is applied
- ``perf.num_threads: N`` → ``torch.set_num_threads(N)`` (null: torch's default)
- ``perf.keep_freed_memory: true`` (default) → glibc keeps freed memory while fitting
  (peftbench.run.allocator; a callback of every run, CPU and GPU alike)
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from peftbench.config.checks import positive_int
from peftbench.errors import ConfigError

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bool(cfg: DictConfig, key: str) -> bool:
    from omegaconf import OmegaConf

    v = OmegaConf.select(cfg, key, default=False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}", option=key)
    return v


def check_knobs(cfg: DictConfig) -> dict[str, Any]:
    """Validate the knobs (names the option on refusal); returns the resolved values."""
    from omegaconf import OmegaConf

    attn = OmegaConf.select(cfg, "model.attn_implementation", default=None)
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation={attn!r}; choose one of {list(ATTN_IMPLEMENTATIONS)} or null",
                          option="model.attn_implementation")
    if attn == "flash_attention_2":
        if not _cuda():
            raise ConfigError("model.attn_implementation=flash_attention_2 needs a CUDA GPU; on CPU use sdpa or eager",
                              option="model.attn_implementation")
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash-attn package "
                              "(pip install flash-attn); or use sdpa", option="model.attn_implementation")
    tf32 = _bool(cfg, "perf.tf32")
    if tf32 and not _cuda():
        raise ConfigError("perf.tf32=true needs a CUDA GPU (TF32 is an Ampere+ matmul mode); set perf.tf32=false",
                          option="perf.tf32")
    compile_ = _bool(cfg, "perf.compile")
    _bool(cfg, "perf.keep_freed_memory")  # type-checked here, applied by run.trainer's KeepFreedMemory
    fused = _bool(cfg, "optim.fused")
    name = OmegaConf.select(cfg, "optim.name", default="adamw")
    if fused and name != "adamw":
        raise ConfigError(f"optim.fused=true applies to AdamW only, not optim.name={name}", option="optim.fused")
    threads = positive_int(OmegaConf.select(cfg, "perf.num_threads", default=None), "perf.num_threads")
    return {"attn_implementation": attn, "tf32": tf32, "compile": compile_, "fused": fused, "num_threads": threads}


def apply_backend_knobs(knobs: dict[str, Any]) -> None:
    """Process-wide switches (TF32, intra-op threads), set before the first matmul."""
    import torch

    if knobs.get("tf32"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if knobs.get("num_threads"):  # tiny models: one thread beats several that wait on each other
        torch.set_num_threads(int(knobs["num_threads"]))


def maybe_compile(model, knobs: dict[str, Any]):
    """``torch.compile`` the adapted model in place when ``perf.compile`` is on: ``Module.compile``
    keeps the module object and its parameter names, so the method's save/merge are unchanged."""
    if knobs.get("compile"):
        model.compile()
    return model
