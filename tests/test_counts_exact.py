"""Exact typed counts for EVERY registered method on an encoder and a decoder (issue 25, item 1).

For each (method, family) the test applies the method to the tiny models of tests/methods_cases.py
(BERT for classification, GPT-2 for causal LM: hidden h = 32, L = 2 blocks, FFN I = 64 / 4h, vocab
200) and checks ``trainable``, ``added``, the scalars ``stored`` (→ ``stored_bytes``) and, where the
method merges, ``changed`` and the ΔW ranks against the method's formula written from the shapes
below. A registered method without a formula here fails: a new method cannot escape the table.

Conventions the formulas share:
- the classification head (BERT ``classifier``, h·2 + 2) trains and is saved by every method that
  trains a head; it is a base tensor, so never ``added``;
- before counting ``changed`` the base's float tensors get noise (no zero biases, whose scaling by
  IA³ would change nothing) and every trainable tensor moves away from its initialisation;
- ``stored_bytes`` = the safetensors payload (stored scalars × 4 bytes, all float32) + each
  safetensors header (8 bytes + its JSON) + the small config files written beside it.
"""

from __future__ import annotations

import json
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

try:  # tests/ is a package (tests/__init__.py); fall back to rootdir-relative import
    from tests import methods_cases as C
except ImportError:  # pragma: no cover
    import methods_cases as C
from peftbench.measure import params as pm
from peftbench.methods.registry import available_methods, get_method

h, L, I, V = C.H, C.LAYERS, C.INTER, C.VOCAB
HEAD = h * C.LABELS + C.LABELS  # BERT classifier: 66


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- the shapes methods target: (in, out) of each matrix ---------------------------------------
def attn_qv(task: str) -> list[tuple[int, int]]:
    """The family's default LoRA targets: BERT query + value; GPT-2's fused c_attn (h → 3h)."""
    return [(h, h), (h, h)] * L if task == "classification" else [(h, 3 * h)] * L


def all_linear(task: str) -> list[tuple[int, int]]:
    """peft's "all-linear": every Linear/Conv1D but the output head (BERT's pooler included)."""
    if task == "classification":
        return [(h, h)] * 4 * L + [(h, I), (I, h)] * L + [(h, h)]
    return [(h, 3 * h), (h, h), (h, 4 * h), (4 * h, h)] * L


def lora_params(shapes, r: int) -> int:
    return sum(r * (i + o) for i, o in shapes)


def dense(shapes) -> int:
    return sum(i * o for i, o in shapes)


def head(task: str) -> int:
    return HEAD if task == "classification" else 0


def bottleneck(b: int) -> int:
    """One adapter h → b → h with biases."""
    return h * b + b + b * h + h


def prefix_kv(n: int) -> int:
    """n virtual tokens of key and value for every layer: n · 2 · L · h."""
    return n * 2 * L * h


def lokr(shapes, r: int) -> tuple[int, list[int]]:
    """peft LoKr: ΔW = w1 ⊗ w2 with (out, in) factorised by peft's ``factorization``; w2 is kept
    full unless r < max(its dims)/2 (then w2_a w2_b of rank r). rank(w1 ⊗ w2) = rank w1 · rank w2."""
    from peft.tuners.lokr.layer import factorization

    n, ranks = 0, []
    for i, o in shapes:
        (out_l, out_k), (in_m, in_n) = factorization(o, -1), factorization(i, -1)
        full_w2 = not r < max(out_k, in_n) / 2
        n += out_l * in_m + (out_k * in_n if full_w2 else r * (out_k + in_n))
        ranks.append(min(out_l, in_m) * (min(out_k, in_n) if full_w2 else min(r, out_k, in_n)))
    return n, ranks


@dataclass
class Expected:
    trainable: int
    added: int
    stored: int  # scalars in the saved safetensors
    changed: int | None = None  # after merge (mergeable methods only)
    ranks: list[int] | None = None  # ΔW rank of each merged matrix (sorted)
    rank_le: list[int] = field(default_factory=list)  # only bounds (e.g. a random sparse ΔW)


def _lora_like(task: str, hp: dict, shapes, extra_per_target: Callable[[int, int], int] = lambda i, o: 0,
               rank: Callable[[int, int, int], int] = lambda i, o, r: min(r, i, o)) -> Expected:
    r = hp["r"]
    added = lora_params(shapes, r) + sum(extra_per_target(i, o) for i, o in shapes)
    return Expected(added + head(task), added, added + head(task), dense(shapes) + head(task),
                    sorted(rank(i, o, r) for i, o in shapes))


def _bitfit(task: str) -> int:
    """Every bias (LayerNorm biases included) + the head. BERT: embeddings LN h, per block q,k,v,
    attn-out, LN, FFN-out, LN (7h) + FFN-in I, pooler h; GPT-2: 11h per block + ln_f h."""
    if task == "classification":
        return h + L * (7 * h + I) + h + HEAD
    return L * 11 * h + h


def _block(task: str) -> int:
    """Every tensor of one transformer block."""
    if task == "classification":  # q,k,v,attn-out (h²+h each), 2 LNs (2h each), FFN in/out
        return 4 * (h * h + h) + 2 * 2 * h + (h * I + I) + (I * h + h)
    return 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h)


def _ia3(task: str) -> Expected:
    """(IA)³ vectors: output-scaled keys/values (BERT key, value; GPT-2 c_attn) and input-scaled
    attention-out / FFN-out. Merged: every entry of each scaled matrix (and the biases of
    output-scaled ones) changes; ΔW = (diag(l) − 1)·W has full rank."""
    if task == "classification":  # key h + value h + attention.output.dense in h + output.dense in I
        n, changed = L * (3 * h + I), L * (2 * (h * h + h) + h * h + I * h)
        ranks = [h] * 4 * L
    else:  # c_attn out 3h + mlp.c_proj in 4h
        n, changed = L * (3 * h + 4 * h), L * ((h * 3 * h + 3 * h) + 4 * h * h)
        ranks = [h] * 2 * L
    return Expected(n + head(task), n, n + head(task), changed + head(task), sorted(ranks))


def _prompt(task: str, trainable_added: int, stored: int) -> Expected:
    return Expected(trainable_added + head(task), trainable_added, stored + head(task))


def _adapters(task: str, hp: dict, per_layer: int, trained_base: int = 0) -> Expected:
    added = L * per_layer
    return Expected(added + trained_base + head(task), added, added + trained_base + head(task))


def _diff_pruning(task: str, hp: dict) -> Expected:
    shapes = all_linear(task)
    n = dense(shapes)
    changed = sum(max(1, int(round(hp["density"] * i * o))) for i, o in shapes)
    return Expected(n + head(task), n, n + head(task), changed + head(task), None, [min(i, o) for i, o in shapes])


def _adapter_fusion(task: str, hp: dict) -> Expected:
    """Fusion (query h²+h, key h²+h, value h²) trains; the two stage-one Pfeiffer adapters
    (bottleneck 4, methods_cases.stage_one_adapters) are added but frozen."""
    fusion = 3 * h * h + 2 * h
    return Expected(L * fusion + head(task), L * (fusion + 2 * bottleneck(4)), L * fusion + head(task))


def _unipelt(task: str, hp: dict) -> Expected:
    """Prefix (no projection) + gated LoRA (A, B, gate h→1) on the q/v targets + a gated
    bottleneck (adapter + gate h→1) after each FFN."""
    gate = h + 1
    n = prefix_kv(hp["num_virtual_tokens"]) + lora_params(attn_qv(task), hp["r"]) + len(attn_qv(task)) * gate
    n += L * (bottleneck(hp["bottleneck"]) + gate)
    return Expected(n + head(task), n, n + head(task))


def _scaled_bias(task: str) -> Expected:
    """The plugin example: a δ per bias of its default targets (dense, c_proj, c_fc, c_attn)."""
    n = (L * (h + I + h) + h) if task == "classification" else L * (3 * h + h + 4 * h + h)
    return Expected(n + head(task), n, n + head(task), n + head(task), [])


def _lokr(task: str, hp: dict) -> Expected:
    n, ranks = lokr(attn_qv(task), hp["r"])
    return Expected(n + head(task), n, n + head(task), dense(attn_qv(task)) + head(task), sorted(ranks))


def _vera(task: str, hp: dict) -> Expected:
    """Per target λ_d (r) and λ_b (out) train; the frozen shared A (r × max in) and B (max out × r)
    are saved too (peft ``save_projection``), so stored > trainable."""
    r, shapes = hp["r"], attn_qv(task)
    n = sum(r + o for _, o in shapes)
    proj = r * max(i for i, _ in shapes) + max(o for _, o in shapes) * r
    return Expected(n + head(task), n, n + proj + head(task), dense(shapes) + head(task),
                    sorted(min(r, i, o) for i, o in shapes))


FORMULAS: dict[str, Callable[[str, dict], Expected]] = {
    "lora": lambda t, hp: _lora_like(t, hp, attn_qv(t)),
    "rslora": lambda t, hp: _lora_like(t, hp, attn_qv(t)),
    # peft's generic method with a LoRA config: same targets (peft's defaults: query/value, c_attn), not merged here
    "peft": lambda t, hp: Expected(*(lambda e: (e.trainable, e.added, e.stored))(_lora_like(t, {"r": 4}, attn_qv(t)))),
    # DoRA adds a magnitude vector (out) per target; its ΔW rescales whole columns: full rank
    "dora": lambda t, hp: _lora_like(t, hp, attn_qv(t), lambda i, o: o, lambda i, o, r: min(i, o)),
    # AdaLoRA: P (r×in), Λ (r), Q (out×r) train; a frozen rank counter (1) per target is added
    "adalora": lambda t, hp: (lambda e: Expected(e.trainable, e.added + len(attn_qv(t)), e.stored, e.changed, e.ranks))(
        _lora_like(t, {"r": hp["init_r"]}, attn_qv(t), lambda i, o: hp["init_r"])),
    # QLoRA: LoRA on every linear layer (the paper's targets, the yaml default)
    "qlora": lambda t, hp: _lora_like(t, hp, all_linear(t)),
    # LoHa: two rank-r Hadamard factors, 2·r·(in+out); rank ≤ r²
    "loha": lambda t, hp: _lora_like(t, {"r": 2 * hp["r"]}, attn_qv(t), rank=lambda i, o, r: min((r // 2) ** 2, i, o)),
    "lokr": _lokr,
    "vera": _vera,
    "ia3": lambda t, hp: _ia3(t),
    "diff_pruning": _diff_pruning,
    "bitfit": lambda t, hp: Expected(_bitfit(t), 0, _bitfit(t)),
    "full": lambda t, hp: (lambda n: Expected(n, 0, n))(sum(p.numel() for p in C.build_base(t).parameters())),
    # BERT classifier; GPT-2's lm_head, tied to the token embedding (V × h)
    "head_only": lambda t, hp: (lambda n: Expected(n, 0, n))(HEAD if t == "classification" else V * h),
    # the top block (+ GPT-2's final LN, 2h)
    "layers": lambda t, hp: (lambda n: Expected(n, 0, n))(_block(t) + (HEAD if t == "classification" else 2 * h)),
    "prompt_tuning": lambda t, hp: _prompt(t, hp["num_virtual_tokens"] * h, hp["num_virtual_tokens"] * h),
    # P-Tuning: embedding n·h + peft's MLP h→e→e→h; saved: the n·h prompt it computes
    "p_tuning": lambda t, hp: _prompt(t, hp["num_virtual_tokens"] * h + (h * hp["encoder_hidden_size"] + hp["encoder_hidden_size"])
                                      + (hp["encoder_hidden_size"] ** 2 + hp["encoder_hidden_size"])
                                      + (hp["encoder_hidden_size"] * h + h), hp["num_virtual_tokens"] * h),
    # prefix tuning with the reparameterisation MLP: n·h + (h·e + e) + (e·2Lh + 2Lh); saved: the n·2Lh prefix
    "prefix_tuning": lambda t, hp: _prompt(t, hp["num_virtual_tokens"] * h + h * hp["encoder_hidden_size"] + hp["encoder_hidden_size"]
                                           + hp["encoder_hidden_size"] * 2 * L * h + 2 * L * h, prefix_kv(hp["num_virtual_tokens"])),
    "p_tuning_v2": lambda t, hp: _prompt(t, prefix_kv(hp["num_virtual_tokens"]), prefix_kv(hp["num_virtual_tokens"])),
    # Houlsby: adapters after attention and FFN, and the block's two LayerNorms (base tensors) train
    "houlsby": lambda t, hp: _adapters(t, hp, 2 * bottleneck(hp["bottleneck"]), L * 2 * 2 * h),
    "pfeiffer": lambda t, hp: _adapters(t, hp, bottleneck(hp["bottleneck"])),
    "adapter_drop": lambda t, hp: _adapters(t, hp, bottleneck(hp["bottleneck"])),
    "adapter_fusion": _adapter_fusion,
    # MAM: prefix (no projection) + one parallel adapter per block
    "mam": lambda t, hp: _prompt(t, prefix_kv(hp["num_virtual_tokens"]) + L * bottleneck(hp["bottleneck"]),
                                 prefix_kv(hp["num_virtual_tokens"]) + L * bottleneck(hp["bottleneck"])),
    "unipelt": _unipelt,
    "scaled_bias": lambda t, hp: _scaled_bias(t),
}

CASES = [(m, t) for m in available_methods() for t in ("classification", "causal_lm")]


def test_every_registered_method_has_a_formula():
    missing = sorted(set(available_methods()) - set(FORMULAS))
    assert not missing, f"add the count formula of {missing} to FORMULAS in {__file__}"


def _stored_scalars_and_bytes(files: list[Path]) -> tuple[int, int, int]:
    """(scalars in the safetensors, their bytes, bytes of everything else: headers + configs)."""
    scalars = payload = 0
    other = 0
    for f in files:
        if f.suffix != ".safetensors":
            other += f.stat().st_size
            continue
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        other += 8 + n
        for k, v in header.items():
            if k == "__metadata__":
                continue
            count = 1
            for d in v["shape"]:
                count *= d
            scalars += count
            payload += v["data_offsets"][1] - v["data_offsets"][0]
    return scalars, payload, other


def _perturb(model: torch.nn.Module, only_trainable: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if pm.is_quantized_4bit(p) or not p.dtype.is_floating_point or (only_trainable and not p.requires_grad):
                continue
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.mark.parametrize("name,task", CASES)
def test_counts_exact(name: str, task: str, tmp_path: Path) -> None:
    cls = get_method(name)
    if task not in cls.tasks or (name, task) in C.UNSUPPORTED:
        pytest.skip(f"{name} does not run on {task} (tests/test_methods.py checks the refusal)")
    if name == "qlora":
        pytest.importorskip("bitsandbytes")
    hp = C.hparams_for(name, task, tmp_path)
    method = cls.from_config({"name": name, **hp})
    ctx = C.make_ctx(task)
    method.check(ctx)
    want = FORMULAS[name](task, hp)
    base = C.build_for(method, task, tmp_path)
    _perturb(base, only_trainable=False, seed=1)
    names, snap = pm.base_param_names(base), pm.snapshot(base)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = method.apply(base, ctx)
    counts = pm.count_params(model, names)
    assert (counts["trainable"], counts["added"]) == (want.trainable, want.added)
    # the model as run holds the base (4-bit weights as scalars) + what was added + peft's head copy
    copies = HEAD if task == "classification" and any("modules_to_save" in n for n, _ in model.named_parameters()) else 0
    assert counts["total"] == sum(p.numel() for p in C.build_base(task).parameters()) + want.added + copies

    _perturb(model, only_trainable=True, seed=2)
    # not merged: what changed is what was added plus the base tensors that trained
    trained_base = counts["trainable"] - sum(pm.numel(p) for n, p in model.named_parameters()
                                             if p.requires_grad and pm.normalize_name(n, names) not in names)
    assert pm.changed_params(pm.snapshot(model, copy=False), snap) == want.added + trained_base

    files = method.save(model, tmp_path / "saved")
    scalars, payload, other = _stored_scalars_and_bytes(files)
    assert scalars == want.stored and payload == 4 * want.stored
    assert pm.stored_bytes(files) == payload + other

    if not method.supports_merge:
        assert want.changed is None, f"{name} does not merge: drop changed/ranks from its formula"
        return
    trained = pm.trainable_names(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = method.merge(model)
    final = pm.snapshot(merged, copy=False)
    assert pm.changed_params(final, snap) == want.changed
    ranks = pm.merged_delta_rank(final, snap, exclude=trained)
    if want.ranks is not None:
        assert sorted(ranks.values()) == want.ranks
    else:  # a random sparse ΔW: one per target, each at most full rank
        assert len(ranks) == len(want.rank_le) and max(ranks.values()) <= max(want.rank_le)
