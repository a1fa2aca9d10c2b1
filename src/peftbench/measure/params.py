"""Parameter counts, each with its type (see DESIGN.md, "Parameter counts: always say which").

Pure functions on ``nn.Module``s and state dicts; no training code is imported, so the CLI and
tests can use them on any model. Names are compared after :func:`normalize_name`, which undoes
peft's renaming so that a wrapped model's parameters line up with the base model's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "base_param_names",
    "changed_params",
    "count_params",
    "delta_rank",
    "is_quantized_4bit",
    "keyed_params",
    "merged_delta_rank",
    "trainable_names",
    "normalize_name",
    "numel",
    "param_table",
    "snapshot",
    "stored_bytes",
]

# peft wraps the model as ``base_model.model.<orig>`` (LoRA-like tuners) or ``base_model.<orig>``
# (prompt learning); torch.compile adds ``_orig_mod.``.
_PREFIXES = ("base_model.model.", "base_model.", "_orig_mod.")
# peft moves the original weight of an adapted layer to ``<layer>.base_layer.weight`` and keeps
# ``modules_to_save`` layers twice: ``<layer>.original_module.*`` (frozen) and
# ``<layer>.modules_to_save.<adapter>.*`` (the trained copy used in forward).
_BASE_LAYER = re.compile(r"\.base_layer(?=\.)")
_MODULES_TO_SAVE = re.compile(r"\.modules_to_save\.[^.]+(?=\.)")
_ORIGINAL_MODULE = re.compile(r"\.original_module(?=\.)")


_PARAMETRIZED = re.compile(r"\.parametrizations(\.\w+)\.original$")


def _unwrapped(name: str) -> list[str]:
    """The base names ``name`` may stand for, most-wrapped reading first.

    ``base_model.model.x`` is ambiguous: a LoRA-like tuner's ``base_model.model.<orig>`` (orig
    ``x``) or prompt learning's ``base_model.<orig>`` (orig ``model.x``, e.g. Llama's
    ``model.layers``). Only the base model's names can tell them apart (:func:`normalize_name`).
    """
    forms: list[str] = []
    stack = [name]
    while stack:
        n = stack.pop(0)
        if n not in forms:
            forms.append(n)
        stack += [n[len(p):] for p in _PREFIXES if n.startswith(p)]
    forms.sort(key=len)  # most stripped first: the LoRA-like reading wins where nothing else decides
    out: list[str] = []
    for n in forms:
        n = _ORIGINAL_MODULE.sub("", _MODULES_TO_SAVE.sub("", _BASE_LAYER.sub("", n)))
        # torch.nn.utils.parametrize keeps the base tensor as `<module>.parametrizations.<p>.original`
        n = _PARAMETRIZED.sub(r"\1", n)
        if n not in out:
            out.append(n)
    return out


def normalize_name(name: str, known: Iterable[str] | None = None) -> str:
    """Map a (possibly peft-wrapped) parameter name back to the base model's name.

    With ``known`` (the base model's normalised names) the reading that names a base tensor wins,
    so prompt learning's ``base_model.model.layers.0…`` maps to Llama's ``model.layers.0…``, not to
    ``layers.0…`` (which would make every base tensor look added).
    """
    forms = _unwrapped(name)
    if known is not None:
        for form in forms:
            if form in known:
                return form
    return forms[0]


def is_quantized_4bit(p: torch.Tensor) -> bool:
    """True for a bitsandbytes ``Params4bit`` whose data is already packed."""
    return getattr(p, "quant_state", None) is not None and getattr(p, "bnb_quantized", True)


def numel(p: torch.Tensor) -> int:
    """Scalars a parameter stands for, not the bytes it is stored in.

    bitsandbytes packs two 4-bit values per uint8 (``Params4bit`` of shape ``[ceil(n/2), 1]``), so
    ``p.numel()`` halves the count; the logical shape lives in ``p.quant_state.shape``.
    """
    if is_quantized_4bit(p):
        shape = getattr(p.quant_state, "shape", None)
        if shape is not None:
            return int(torch.Size(shape).numel())
        return 2 * p.numel()
    return p.numel()


def _dequantize(p: torch.Tensor) -> torch.Tensor | None:
    """The weight as the model computes with it. On AVX512-BF16 CPUs bitsandbytes repacks a 4-bit
    weight in place at its first no-grad forward; that layout is undone on copies first."""
    try:
        import copy

        import bitsandbytes.functional as bnbf

        data, state = p.data, p.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            data, state = bnbf._convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
        return bnbf.dequantize_4bit(data, state)
    except Exception:  # noqa: BLE001 - no bnb, or a layout it cannot undo: caller skips
        return None


def keyed_params(model: nn.Module) -> Iterator[tuple[str, str, nn.Parameter]]:
    """``(name, base name, parameter)`` for every parameter of a (possibly peft-wrapped) model.

    The wrapped model's own base (``get_base_model()``) says which reading of an ambiguous name is
    right (see :func:`normalize_name`).
    """
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    known = None if inner is model else {normalize_name(n) for n, _ in inner.named_parameters()}
    for name, p in model.named_parameters():
        yield name, normalize_name(name, known), p


def snapshot(model: nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """CPU clones of all parameters, keyed by normalised name (for :func:`changed_params`).

    4-bit parameters are dequantized (their values as the model computes with them); ones that
    cannot be dequantized are left out. For ``modules_to_save`` layers the trained copy wins over
    ``original_module``, because it is the one the forward pass uses. ``copy=False`` returns
    detached views where it can (the final model's state, read once after training).
    """
    out: dict[str, torch.Tensor] = {}
    from_original: set[str] = set()
    with torch.no_grad():
        for name, key, p in keyed_params(model):
            is_original = _ORIGINAL_MODULE.search(name) is not None
            if key in out and (is_original or key not in from_original):
                continue  # keep the copy the forward pass uses
            if is_quantized_4bit(p):
                t = _dequantize(p)
                if t is None:
                    continue
            else:
                t = p.detach()
            out[key] = t.to("cpu", copy=True) if copy else t
            if is_original:
                from_original.add(key)
            else:
                from_original.discard(key)
    return out


def base_param_names(model: nn.Module) -> set[str]:
    """Normalised names of the base model's parameters, taken before a method is applied."""
    return {key for _, key, _ in keyed_params(model)}


def count_params(model: nn.Module, base_names: set[str] | None = None) -> dict[str, int | None]:
    """``total``, ``trainable`` and ``added`` scalars of the model as run (4-bit aware).

    ``total`` counts every parameter tensor the model holds, so peft's frozen ``original_module``
    and trained ``modules_to_save`` copy of e.g. a classifier are both in it (memory is spent on
    both), as peft's own ``get_nb_trainable_parameters`` does. The ``modules_to_save`` copy is
    *not* ``added``: it replaces a base tensor rather than adding a new one. ``added`` is None
    when ``base_names`` is not given, since only the base model can say what is new.
    Tied parameters are counted once.
    """
    total = trainable = added = 0
    for name, p in model.named_parameters():
        n = numel(p)
        total += n
        if p.requires_grad:
            trainable += n
        if base_names is not None and normalize_name(name, base_names) not in base_names:
            added += n
    return {"total": total, "trainable": trainable, "added": added if base_names is not None else None}


def changed_params(
    final_state: Mapping[str, torch.Tensor] | nn.Module,
    base: Mapping[str, torch.Tensor],
    atol: float = 0.0,
) -> int:
    """Scalars of the final model that differ from the base by more than ``atol``.

    Pass the merged model (or its :func:`snapshot`) where merging applies, so a merged LoRA
    counts its adapted matrices in full; tensors absent from the base, or reshaped, count fully.
    ``original_module`` copies are ignored (the forward pass uses the ``modules_to_save`` copy).
    A 4-bit tensor is compared dequantized; a packed one stripped of its ``quant_state`` (e.g. by
    ``p.detach()``) is refused rather than counted as half its scalars.
    """
    if isinstance(final_state, nn.Module):
        final_state = snapshot(final_state)
    base_n = {normalize_name(k): v for k, v in base.items()}
    seen: set[str] = set()
    changed = 0
    with torch.no_grad():
        for name, t in final_state.items():
            if _ORIGINAL_MODULE.search(name):
                continue
            key = normalize_name(name, base_n)
            if key in seen:
                continue
            seen.add(key)
            if is_quantized_4bit(t):
                deq = _dequantize(t)
                if deq is None:
                    changed += numel(t)
                    continue
                t = deq
            ref = base_n.get(key)
            if ref is not None and _packed_without_state(t, ref):
                raise ValueError(f"{name}: packed 4-bit bytes without their quant_state cannot be compared "
                                 "with the base; pass the model or snapshot(model) (which dequantizes)")
            if ref is None or tuple(ref.shape) != tuple(t.shape):
                changed += t.numel()
                continue
            diff = (t.detach().to("cpu", torch.float32) - ref.to(torch.float32)).abs()
            changed += int((diff > atol).sum().item())
    return changed


def _packed_without_state(t: torch.Tensor, ref: torch.Tensor) -> bool:
    """A bitsandbytes Params4bit's storage ([ceil(n/2), 1] uint8) that lost its quant_state."""
    return (t.dtype == torch.uint8 and ref.dtype.is_floating_point and t.ndim == 2 and t.shape[1] == 1
            and t.shape[0] == (ref.numel() + 1) // 2)


def stored_bytes(paths: Iterable[Path | str] | Path | str) -> int:
    """Bytes on disk of the given files, directories counted recursively."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    total = 0
    for path in map(Path, paths):
        if path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        elif path.is_file():
            total += path.stat().st_size
    return total


def delta_rank(delta: Mapping[str, torch.Tensor], tol: float | None = None) -> dict[str, int]:
    """Numerical rank of each ΔW (conv kernels flattened to ``[out, -1]``).

    ``tol`` is an absolute singular-value threshold; None uses torch's default
    (``eps · max(m, n) · σ_max``), which suits float32 products like ``B @ A``.
    """
    out: dict[str, int] = {}
    for name, d in delta.items():
        m = d.detach().to("cpu", torch.float32)
        if m.ndim == 1:
            m = m.unsqueeze(0)
        elif m.ndim > 2:
            m = m.reshape(m.shape[0], -1)
        out[name] = int(torch.linalg.matrix_rank(m, atol=tol).item())
    return out


def trainable_names(model: nn.Module) -> set[str]:
    """Normalised names of the parameters the optimizer updated directly (e.g. a head in
    ``modules_to_save``): their change is training, not a low-rank update, so ΔW leaves them out."""
    return {key for _, key, p in keyed_params(model) if p.requires_grad}


def merged_delta_rank(final: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                      exclude: set[str] = frozenset()) -> dict[str, int]:
    """Rank of ΔW = merged − base for every matrix the merge changed (any mergeable method).

    The merge rounded ``W + ΔW`` to the weights' dtype, so the difference carries rounding noise
    of up to half an ulp of the larger weight per entry; singular values under that noise's
    spectral bound (``eps · max|W| · sqrt(m·n)``) are not counted. Computed in float64.
    """
    base_n = {normalize_name(k): v for k, v in base.items()}
    out: dict[str, int] = {}
    with torch.no_grad():
        for name, t in final.items():
            key = normalize_name(name, base_n)
            b = base_n.get(key)
            if key in exclude or b is None or is_quantized_4bit(t) or t.ndim < 2 or t.shape != b.shape:
                continue
            f64, b64 = t.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
            d = (f64 - b64).reshape(t.shape[0], -1)
            if not d.any():
                continue
            eps = torch.finfo(t.dtype).eps if t.dtype.is_floating_point else 0.0
            noise = eps * max(f64.abs().max().item(), b64.abs().max().item()) * (d.shape[0] * d.shape[1]) ** 0.5
            out[key] = int(torch.linalg.matrix_rank(d, atol=noise).item())
    return out


_LABELS = {
    "total": "total params (scalars in the model as run)",
    "trainable": "trainable params (updated by the optimizer)",
    "added": "added params (not in the base model)",
    "changed": "changed params (differ from the base after merge)",
    "stored_bytes": "stored bytes (to rebuild from the base)",
    "delta_rank": "delta rank (rank of ΔW per adapted matrix)",
}


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:,} B ({value:.1f} {unit})"
        value /= 1024
    return f"{n:,} B"


def param_table(counts: Mapping[str, object]) -> list[tuple[str, str]]:
    """(label, value) rows in which every number names its type, for the CLI and reports.

    Known keys come first in DESIGN.md's order; unknown keys are kept under their own name.
    ``trainable``/``added``/``changed`` also show their share of ``total``.
    """
    rows: list[tuple[str, str]] = []
    total = counts.get("total")
    keys = [k for k in _LABELS if k in counts] + [k for k in counts if k not in _LABELS]
    for key in keys:
        value = counts[key]
        label = _LABELS.get(key, key)
        if value is None:
            text = "n/a"
        elif key == "stored_bytes" and isinstance(value, int):
            text = _human_bytes(value)
        elif key == "delta_rank" and isinstance(value, Mapping):
            ranks = sorted(set(value.values()))
            text = "n/a" if not ranks else (str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]}")
        elif isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
            if key in ("trainable", "added", "changed") and isinstance(total, int) and total > 0:
                text += f" ({100.0 * value / total:.3f}% of total)"
        else:
            text = str(value)
        rows.append((label, text))
    return rows
