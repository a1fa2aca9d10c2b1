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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

try:  # tests/ is a package (tests/__init__.py); fall back to rootdir-relative import
    from tests import methods_cases as C
except ImportError:  # pragma: no cover
    import methods_cases as C
from peftbench.errors import ConfigError
from peftbench.measure import params as pm
from peftbench.methods.registry import available_methods, get_method

h, L, I, V = C.H, C.LAYERS, C.INTER, C.VOCAB
HEAD = h * C.LABELS + C.LABELS  # BERT classifier: 66
KV_HEADS = 2  # the tiny llama: 4 query heads, 2 key/value heads (GQA) of h/4 = 8 → k/v width 16
KV = h // 4 * KV_HEADS


def build_llama(seed: int = 0):
    """A Llama-shaped decoder (RMSNorm, SwiGLU FFN h → I, GQA, untied lm_head, no biases): its
    parameter names (``model.layers…``) are the ones peft's prompt learning made ambiguous."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=h, num_hidden_layers=L, num_attention_heads=4,
                      num_key_value_heads=KV_HEADS, intermediate_size=I, max_position_embeddings=C.MAXPOS,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def llama_ctx():
    from peftbench.methods.base import ApplyContext

    model = build_llama()
    kw = C.family_facts("llama")
    kw.update(task="causal_lm", head_modules=["lm_head"], layers_path="model.layers", num_layers=L, hidden_size=h,
              num_heads=4, max_positions=C.MAXPOS, hf_config=model.config,
              module_names=[n for n, _ in model.named_modules()], has_bias=False)
    return ApplyContext(**kw)


# family → (task, model type); bert and gpt2 come from tests/methods_cases.py
FAMILIES = {"bert": "classification", "gpt2": "causal_lm", "llama": "causal_lm"}
REFUSED = {  # (method, family) refused by design: checked to raise, not counted
    ("loha", "gpt2"): "peft LyCORIS layers do not support GPT-2's Conv1D",
    ("lokr", "gpt2"): "peft LyCORIS layers do not support GPT-2's Conv1D",
    ("bitfit", "llama"): "Llama has no bias terms",
    ("scaled_bias", "llama"): "its default targets (dense, c_proj, c_fc, c_attn) match no Llama module",
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- the shapes methods target: (in, out) of each matrix ---------------------------------------
def attn_qv(f: str) -> list[tuple[int, int]]:
    """The family's default LoRA targets: BERT query + value; GPT-2's fused c_attn (h → 3h);
    Llama q_proj (h → h) + v_proj (h → KV)."""
    return {"bert": [(h, h), (h, h)], "gpt2": [(h, 3 * h)], "llama": [(h, h), (h, KV)]}[f] * L


def all_linear(f: str) -> list[tuple[int, int]]:
    """peft's "all-linear": every Linear/Conv1D but the output head (BERT's pooler included)."""
    if f == "bert":
        return [(h, h)] * 4 * L + [(h, I), (I, h)] * L + [(h, h)]
    if f == "gpt2":
        return [(h, 3 * h), (h, h), (h, 4 * h), (4 * h, h)] * L
    return [(h, h), (h, KV), (h, KV), (h, h), (h, I), (h, I), (I, h)] * L


def lora_params(shapes, r: int) -> int:
    return sum(r * (i + o) for i, o in shapes)


def dense(shapes) -> int:
    return sum(i * o for i, o in shapes)


def head(f: str) -> int:
    """The head every method trains on classification (the causal-LM head stays frozen)."""
    return HEAD if f == "bert" else 0


def bottleneck(b: int) -> int:
    """One adapter h → b → h with biases."""
    return h * b + b + b * h + h


def prefix_kv(f: str, n: int) -> int:
    """n virtual tokens of key and value for every layer: n · 2 · L · (key/value width)."""
    return n * 2 * L * token_dim(f)


def token_dim(f: str) -> int:
    """peft's prefix token width: the key/value width (h, or KV under Llama's GQA)."""
    return KV if f == "llama" else h


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


def simple(f: str, n: int, stored: int | None = None) -> Expected:
    """``n`` added scalars train with the head; ``stored`` (default n) are saved with the head."""
    return Expected(n + head(f), n, (n if stored is None else stored) + head(f))


def selective(n: int) -> Expected:
    """Base tensors train; nothing is added."""
    return Expected(n, 0, n)


def _lora_like(f: str, r: int, shapes, extra_per_target: Callable[[int, int], int] = lambda i, o: 0,
               rank: Callable[[int, int, int], int] = lambda i, o, r: min(r, i, o)) -> Expected:
    added = lora_params(shapes, r) + sum(extra_per_target(i, o) for i, o in shapes)
    return Expected(added + head(f), added, added + head(f), dense(shapes) + head(f),
                    sorted(rank(i, o, r) for i, o in shapes))


def _adalora(f: str, hp: dict) -> Expected:
    """P (r×in), Λ (r), Q (out×r) train; a frozen rank counter (1 scalar) per target is added."""
    r, shapes = hp["init_r"], attn_qv(f)
    e = _lora_like(f, r, shapes, lambda i, o: r)
    return Expected(e.trainable, e.added + len(shapes), e.stored, e.changed, e.ranks)


def _bitfit(f: str) -> int:
    """Every bias (LayerNorm biases included) + the head. BERT: embeddings LN h, per block q,k,v,
    attn-out, LN, FFN-out, LN (7h) + FFN-in I, pooler h; GPT-2: 11h per block + ln_f h."""
    return h + L * (7 * h + I) + h + HEAD if f == "bert" else L * 11 * h + h


def _block(f: str) -> int:
    """Every tensor of one transformer block."""
    if f == "bert":  # q,k,v,attn-out (h²+h each), 2 LNs (2h each), FFN in/out
        return 4 * (h * h + h) + 2 * 2 * h + (h * I + I) + (I * h + h)
    if f == "gpt2":
        return 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h)
    return 2 * h * h + 2 * h * KV + 3 * h * I + 2 * h  # q, o, k, v, gate/up/down, 2 RMSNorms


def _layers(f: str) -> Expected:
    """The top block + the final norm (GPT-2 ln_f 2h, Llama norm h) or the head (BERT)."""
    return selective(_block(f) + {"bert": HEAD, "gpt2": 2 * h, "llama": h}[f])


def _ia3(f: str) -> Expected:
    """(IA)³ vectors: output-scaled keys/values and input-scaled FFN-out (and BERT's attention
    out, whose name also ends in output.dense). Merged: every entry of each scaled matrix (and the
    bias of an output-scaled one) changes; ΔW = (diag(l) − 1)·W has full rank."""
    if f == "bert":  # key, value (out h, bias h), attention.output.dense (in h), output.dense (in I)
        n, changed, ranks = L * (3 * h + I), L * (2 * (h * h + h) + h * h + I * h), [h] * 4 * L
    elif f == "gpt2":  # c_attn out 3h (+ bias), mlp.c_proj in 4h
        n, changed, ranks = L * (3 * h + 4 * h), L * ((h * 3 * h + 3 * h) + 4 * h * h), [h] * 2 * L
    else:  # k_proj, v_proj out KV; down_proj in I (no biases)
        n, changed, ranks = L * (2 * KV + I), L * (2 * h * KV + I * h), [KV, KV, h] * L
    return Expected(n + head(f), n, n + head(f), changed + head(f), sorted(ranks))


def _adapters(f: str, per_layer: int, trained_base: int = 0) -> Expected:
    added = L * per_layer
    return Expected(added + trained_base + head(f), added, added + trained_base + head(f))


def _houlsby(f: str, hp: dict) -> Expected:
    """Adapters after attention and after the FFN; the block's two norms (base tensors: LayerNorm
    weight + bias, RMSNorm weight only) train too."""
    norms = L * 2 * (h if f == "llama" else 2 * h)
    return _adapters(f, 2 * bottleneck(hp["bottleneck"]), norms)


def _diff_pruning(f: str, hp: dict) -> Expected:
    """A dense δ per all-linear weight trains; the mask lets round(density · n) entries change."""
    shapes = all_linear(f)
    n = dense(shapes)
    changed = sum(max(1, round(hp["density"] * i * o)) for i, o in shapes)
    return Expected(n + head(f), n, n + head(f), changed + head(f), None, [min(i, o) for i, o in shapes])


def _adapter_fusion(f: str, hp: dict) -> Expected:
    """Fusion (query h²+h, key h²+h, value h²) trains; the two stage-one Pfeiffer adapters
    (bottleneck 4, see ``stage_one``) are added but frozen — and saved: the fused model needs them."""
    fusion = 3 * h * h + 2 * h
    added = L * (fusion + 2 * bottleneck(4))
    return Expected(L * fusion + head(f), added, added + head(f))


def _unipelt(f: str, hp: dict) -> Expected:
    """Prefix (no projection) + gated LoRA (A, B, gate h→1) on the q/v targets + a gated
    bottleneck (adapter + gate h→1) after each FFN."""
    gate = h + 1
    n = prefix_kv(f, hp["num_virtual_tokens"]) + lora_params(attn_qv(f), hp["r"]) + len(attn_qv(f)) * gate
    return simple(f, n + L * (bottleneck(hp["bottleneck"]) + gate))


def _scaled_bias(f: str) -> Expected:
    """The plugin example: a δ per bias of its default targets (dense, c_proj, c_fc, c_attn)."""
    n = (L * (h + I + h) + h) if f == "bert" else L * (3 * h + h + 4 * h + h)
    return Expected(n + head(f), n, n + head(f), n + head(f), [])


def _lokr(f: str, hp: dict) -> Expected:
    n, ranks = lokr(attn_qv(f), hp["r"])
    return Expected(n + head(f), n, n + head(f), dense(attn_qv(f)) + head(f), sorted(ranks))


def _vera(f: str, hp: dict) -> Expected:
    """Per target λ_d (r) and λ_b (out) train; the frozen shared A (r × max in) and B (max out × r)
    are saved too (peft ``save_projection``), so stored > trainable."""
    r, shapes = hp["r"], attn_qv(f)
    n = sum(r + o for _, o in shapes)
    proj = r * max(i for i, _ in shapes) + max(o for _, o in shapes) * r
    return Expected(n + head(f), n, n + proj + head(f), dense(shapes) + head(f), sorted(min(r, i, o) for i, o in shapes))


def _p_tuning(f: str, hp: dict) -> Expected:
    """Embedding n·h + peft's MLP h→e→e→h; saved: the n·h prompt it computes."""
    n, e = hp["num_virtual_tokens"], hp["encoder_hidden_size"]
    return simple(f, n * h + (h * e + e) + (e * e + e) + (e * h + h), n * h)


def _prefix_tuning(f: str, hp: dict) -> Expected:
    """With the reparameterisation MLP: n·t + (t·e + e) + (e·2Lt + 2Lt), t = token width; saved:
    the n·2Lt prefix it computes (the MLP is dropped)."""
    n, e, t = hp["num_virtual_tokens"], hp["encoder_hidden_size"], token_dim(f)
    return simple(f, n * t + (t * e + e) + (e * 2 * L * t + 2 * L * t), prefix_kv(f, n))


def _full(f: str) -> Expected:
    return selective(sum(p.numel() for p in build(f).parameters()))


def _head_only(f: str) -> Expected:
    """BERT classifier; the causal-LM head V × h (GPT-2's tied to the token embedding)."""
    return selective(HEAD if f == "bert" else V * h)


FORMULAS: dict[str, Callable[[str, dict], Expected]] = {
    "lora": lambda f, hp: _lora_like(f, hp["r"], attn_qv(f)),
    "rslora": lambda f, hp: _lora_like(f, hp["r"], attn_qv(f)),
    # peft's generic method with a LoRA config (r = 4): peft's default targets, not merged here
    "peft": lambda f, hp: simple(f, lora_params(attn_qv(f), hp["kwargs"]["r"])),
    # DoRA adds a magnitude (out) per target; its ΔW rescales whole columns: full rank
    "dora": lambda f, hp: _lora_like(f, hp["r"], attn_qv(f), lambda i, o: o, lambda i, o, r: min(i, o)),
    "adalora": _adalora,
    # QLoRA: LoRA's targets by default (the paper's every linear layer with target_modules=all_linear);
    # 4-bit weights count as scalars, and it merges into the dequantized base, so changed = LoRA's
    "qlora": lambda f, hp: _lora_like(f, hp["r"], all_linear(f) if hp.get("target_modules") == "all_linear" else attn_qv(f)),
    # LoHa: two rank-r Hadamard factors, 2·r·(in+out); rank ≤ r²
    "loha": lambda f, hp: _lora_like(f, 2 * hp["r"], attn_qv(f), rank=lambda i, o, r: min((r // 2) ** 2, i, o)),
    "lokr": _lokr,
    "vera": _vera,
    "ia3": lambda f, hp: _ia3(f),
    "diff_pruning": _diff_pruning,
    "bitfit": lambda f, hp: selective(_bitfit(f)),
    "full": lambda f, hp: _full(f),
    "head_only": lambda f, hp: _head_only(f),
    "layers": lambda f, hp: _layers(f),
    "prompt_tuning": lambda f, hp: simple(f, hp["num_virtual_tokens"] * h),
    "p_tuning": _p_tuning,
    "prefix_tuning": _prefix_tuning,
    "p_tuning_v2": lambda f, hp: simple(f, prefix_kv(f, hp["num_virtual_tokens"])),
    "houlsby": _houlsby,
    "pfeiffer": lambda f, hp: _adapters(f, bottleneck(hp["bottleneck"])),
    "adapter_drop": lambda f, hp: _adapters(f, bottleneck(hp["bottleneck"])),
    "adapter_fusion": _adapter_fusion,
    # MAM: prefix (no projection) + one parallel adapter per block
    "mam": lambda f, hp: simple(f, prefix_kv(f, hp["num_virtual_tokens"]) + L * bottleneck(hp["bottleneck"])),
    "unipelt": _unipelt,
    "scaled_bias": lambda f, hp: _scaled_bias(f),
}


# ---- building each family's tiny model and apply context ---------------------------------------
def build(f: str, seed: int = 0):
    return build_llama(seed) if f == "llama" else C.build_base(FAMILIES[f], seed)


def make_ctx(f: str):
    return llama_ctx() if f == "llama" else C.make_ctx(FAMILIES[f])


def build_for(method, f: str, tmp: Path):
    """The base as the method loads it (QLoRA: 4-bit from a saved copy)."""
    kw = method.load_kwargs(make_ctx(f))
    base = build(f)
    if not kw:
        return base
    d = tmp / f"base_{f}"
    base.save_pretrained(str(d))
    return type(base).from_pretrained(str(d), **kw).eval()


def stage_one(f: str, tmp: Path) -> list[str]:
    """Two saved Pfeiffer runs (bottleneck 4, random non-zero adapters) for adapter_fusion."""
    if f != "llama":
        return C.stage_one_adapters(FAMILIES[f], tmp)
    from peftbench.methods.pfeiffer import Pfeiffer

    dirs = []
    for i in range(2):
        m = Pfeiffer(bottleneck=4)
        model = m.apply(build_llama(), llama_ctx())
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "pb_adapter" in n:
                    p.add_(0.1 * torch.randn_like(p))
        m.save(model, tmp / f"stage1_llama_{i}")
        dirs.append(str(tmp / f"stage1_llama_{i}"))
    return dirs


def hparams(name: str, f: str, tmp: Path) -> dict:
    hp = dict(C.HPARAMS.get(name, {}))
    if name == "adapter_fusion":
        hp["adapter_dirs"] = stage_one(f, tmp)
    return hp


CASES = [(m, f) for m in available_methods() for f in FAMILIES]


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


def _apply(name: str, f: str, tmp: Path):
    cls = get_method(name)
    task = FAMILIES[f]
    if task not in cls.tasks:
        pytest.skip(f"{name} does not support {task}")
    method = cls.from_config({"name": name, **hparams(name, f, tmp)})
    if (name, f) in REFUSED:
        with pytest.raises(ConfigError):
            method.check(make_ctx(f))
        pytest.skip(f"{name} refuses {f} by design: {REFUSED[(name, f)]}")
    ctx = make_ctx(f)
    method.check(ctx)
    base = build_for(method, f, tmp)
    _perturb(base, only_trainable=False, seed=1)
    names, snap = pm.base_param_names(base), pm.snapshot(base)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = method.apply(base, ctx)
    return method, model, names, snap


@pytest.mark.parametrize("name,family", CASES)
def test_counts_exact(name: str, family: str, tmp_path: Path) -> None:
    if name == "qlora":
        pytest.importorskip("bitsandbytes")
    method, model, names, snap = _apply(name, family, tmp_path)
    want = FORMULAS[name](family, hparams(name, family, tmp_path))
    counts = pm.count_params(model, names)
    assert (counts["trainable"], counts["added"]) == (want.trainable, want.added)
    # the model as run: the base (4-bit weights as scalars) + what was added + peft's head copy
    copies = HEAD if any("modules_to_save" in n for n, _ in model.named_parameters()) else 0
    assert counts["total"] == sum(p.numel() for p in build(family).parameters()) + want.added + copies

    _perturb(model, only_trainable=True, seed=2)
    # unmerged, what changed is what was added plus the base tensors that trained
    trained_base = sum(pm.numel(p) for n, p in model.named_parameters()
                       if p.requires_grad and pm.normalize_name(n, names) in names)
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
        final = pm.snapshot(method.merge(model), copy=False)
    assert pm.changed_params(final, snap) == want.changed
    ranks = pm.merged_delta_rank(final, snap, exclude=trained)
    if want.ranks is not None:
        assert sorted(ranks.values()) == want.ranks
    else:  # a random sparse ΔW: one per target, each at most full rank
        assert len(ranks) == len(want.rank_le) and max(ranks.values()) <= max(want.rank_le)


# ---- `peftbench params` reproduces published counts (meta device: no weights, no network) ---------
def _params(*overrides: str) -> dict:
    from peftbench.cli.params import params_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return params_table(list(overrides))


def _roberta_head(d: int) -> int:
    """peftbench's one head design for every family (models/heads.py): dropout + linear d×2 + 2,
    reading the [CLS] state (RoBERTa's `pooling: cls`); it trains and is a base tensor."""
    return d * 2 + 2


@pytest.mark.parametrize("overrides, layers, d, r, published", [
    # LoRA paper (Hu et al. 2021), Table 2: LoRA r = 8 on W_q, W_v — 0.3M and 0.8M trainable
    (["model=roberta", "model_size=base"], 12, 768, 8, 0.3),
    (["model=roberta", "model_size=large"], 24, 1024, 8, 0.8),
])
def test_params_lora_paper_roberta(overrides, layers, d, r, published):
    """LoRA's count is r·(d_in + d_out) per adapted matrix, 2 matrices per layer; the paper's
    figure excludes the classification head, which trains here and is a base tensor (not added)."""
    t = _params(*overrides, "method=lora", f"method.r={r}", "method.target_modules=[query,value]")
    added = layers * 2 * r * (d + d)  # base 294,912; large 786,432
    assert t["params"]["added"] == added and round(added / 1e6, 1) == published
    assert t["params"]["trainable"] == added + _roberta_head(d)


@pytest.mark.parametrize("size, layers, d", [("medium", 24, 1024), ("large", 36, 1280)])
def test_params_lora_paper_gpt2(size, layers, d):
    """LoRA paper, Table 3: GPT-2 M/L with r = 4 on W_q, W_v. loralib's MergedLinear on c_attn
    holds A (2r × d) and B (2d × r) = 4rd per layer, as does peft's LoRA on the fused c_attn
    (A r × d, B 3d × r): 393,216 (M) and 737,280 (L). The paper prints 0.35M and 0.77M, which its
    own formula does not give (no per-layer count scales from M to L by 2.2×); we pin the formula."""
    t = _params("model=gpt2", f"model_size={size}", "dataset=wiki_demo", "method=lora", "method.r=4")
    assert t["task"] == "causal_lm"
    assert t["params"]["added"] == t["params"]["trainable"] == layers * 4 * 4 * d


def test_params_peft_llama2_7b_lora():
    """peft's documented LoRA example on Llama-2-7b (r = 8, q_proj/v_proj): "trainable params:
    4,194,304 || all params: 6,742,609,920"; total = the base from its shapes + LoRA."""
    d, inter, layers, vocab = 4096, 11008, 32, 32000
    t = _params("model=llama", "model_size=7b", "dataset=wiki_demo", "method=lora", "method.r=8")
    lora = layers * 2 * 8 * (d + d)
    base = 2 * vocab * d + layers * (4 * d * d + 3 * d * inter + 2 * d) + d
    assert t["params"]["trainable"] == t["params"]["added"] == lora == 4_194_304
    assert t["params"]["total"] == base + lora == 6_742_609_920


@pytest.mark.parametrize("dataset, head_scalars", [("wiki_demo", 0), ("sst2", 2048 * 2)])
def test_params_prompt_tuning_on_llama_adds_only_the_prompt(dataset, head_scalars):
    """Issue 25: prompt tuning on a Llama reported the whole base as added. 200 virtual tokens of
    width d are the only new scalars; a classification head (score d × 2) trains but is a base tensor."""
    t = _params("model=llama", "model_size=1b", f"dataset={dataset}", "method=prompt_tuning",
                "method.num_virtual_tokens=200")
    assert t["params"]["added"] == 200 * 2048
    assert t["params"]["trainable"] == 200 * 2048 + head_scalars


# ---- seed study 3: QLoRA vs LoRA on identical targets and rank (issue 25, item 5) ----------------
def test_gpt2_modes_lora_and_qlora_cells_adapt_the_same_matrices_at_the_same_rank():
    """Every planned qlora cell has a lora twin (same task, size, lr, seed) whose composed method
    block resolves to the same target matrices and the same r, alpha, dropout and LoRA variant."""
    from peftbench.cli.suite import cells, grids
    from peftbench.config.compose import compose
    from peftbench.methods.base import ApplyContext, resolve_targets

    g = grids()["gpt2_modes"]
    planned = {(c.task.name, c.size, c.lr, c.method): c for c in cells(g, g.methods)}
    pairs = [(planned[k[:3] + ("lora",)], c) for k, c in planned.items() if k[3] == "qlora"]
    assert len(pairs) == 2 * 3 * len(g.lr_grid("qlora"))  # two tasks (attention, all linear) × 3 sizes × the lr grid
    seen_targets = set()
    for lora_cell, qlora_cell in pairs:
        resolved = []
        for cell in (lora_cell, qlora_cell):
            cfg = compose(cell.overrides(g))
            method = get_method(cfg.method.name).from_config(cfg.method)
            # the family's declared targets (no weights needed: the ladder may not be pretrained here)
            targets = {k: list(v) for k, v in cfg.model.targets.items()}
            ctx = ApplyContext(task="causal_lm", family=cfg.model.family, targets=targets, model_type="gpt2",
                               num_layers=0, hidden_size=0, num_heads=0, max_positions=0)
            resolved.append((tuple(resolve_targets(method.target_modules, ctx)), method.r, method.alpha,
                             method.dropout, method.use_dora, method.use_rslora, method.bias))
        assert resolved[0] == resolved[1], (lora_cell.rel_dir(), resolved)
        seen_targets.add(resolved[0][0])
    assert seen_targets == {("c_attn",), ("c_attn", "c_proj", "c_fc")}
