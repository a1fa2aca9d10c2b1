"""measure/: counts pinned to hand-computed numbers on a tiny from-config BERT, plus callbacks.

Tiny BERT (vocab 100, hidden h=32, 2 layers, intermediate 64, 512 positions, 2 token types,
2 labels), scalars by hand:
  embeddings  100·32 + 512·32 + 2·32 + 2·32 (LayerNorm)                    = 19,712
  per layer   4·(32·32+32) (q,k,v,o) + 64 + (32·64+64) + (64·32+32) + 64   =  8,544  (×2 = 17,088)
  pooler      32·32 + 32                                                   =  1,056
  classifier  32·2 + 2                                                     =     66
  total                                                                    = 37,922
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from peftbench.measure import (
    MemoryCallback,
    ThroughputCallback,
    analytic_memory,
    base_param_names,
    changed_params,
    count_params,
    inference_latency,
    inference_overhead,
    merged_delta_rank,
    normalize_name,
    numel,
    param_table,
    peak_rss_mb,
    snapshot,
    stored_bytes,
    trainable_names,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

H, LAYERS, R = 32, 2, 4
BASE_TOTAL = 37_922
CLASSIFIER = H * 2 + 2  # 66
# LoRA on query and value: each adds A (r×h) and B (h×r) = r·(h+h) scalars.
LORA_ADDED = LAYERS * 2 * R * (H + H)  # 1,024


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=100, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64
    )
    return transformers.BertForSequenceClassification(cfg)


def lora(model: nn.Module, task_type: str | None = "SEQ_CLS") -> nn.Module:
    cfg = peft.LoraConfig(task_type=task_type, r=R, lora_alpha=8, target_modules=["query", "value"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(model, cfg)


def test_base_total_matches_hand_count() -> None:
    assert count_params(tiny_bert()) == {"total": BASE_TOTAL, "trainable": BASE_TOTAL, "added": None}


def test_normalize_name_undoes_peft_renaming() -> None:
    q = "bert.encoder.layer.0.attention.self.query.weight"
    assert normalize_name("base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.weight") == q
    assert normalize_name("base_model.model.classifier.modules_to_save.default.weight") == "classifier.weight"
    assert normalize_name("base_model.model.classifier.original_module.bias") == "classifier.bias"
    assert normalize_name(q) == q


def test_lora_counts() -> None:
    base = tiny_bert()
    names = base_param_names(base)
    model = lora(base)
    counts = count_params(model, names)
    # added    = 2 layers × 2 modules × r·(h+h)                          = 1,024
    # trainable = added + classifier copy (peft SEQ_CLS modules_to_save)  = 1,090 (pooler stays frozen)
    # total    = base + added + the classifier held twice (original_module + trained copy) = 39,012
    assert counts == {
        "added": LORA_ADDED,
        "trainable": LORA_ADDED + CLASSIFIER,
        "total": BASE_TOTAL + LORA_ADDED + CLASSIFIER,
    }
    # Same convention as peft's own counter.
    assert model.get_nb_trainable_parameters() == (counts["trainable"], counts["total"])


def _save_tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(path)
    return path


def _load_4bit(path: Path) -> nn.Module:
    pytest.importorskip("bitsandbytes")
    qcfg = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True
    )
    return transformers.BertForSequenceClassification.from_pretrained(
        path, quantization_config=qcfg, device_map="cpu"
    )


def test_4bit_total_equals_unquantized(tmp_path: Path) -> None:
    path = _save_tiny(tmp_path)
    model = _load_4bit(path)
    naive = sum(p.numel() for p in model.parameters())
    assert naive < BASE_TOTAL  # the pitfall: packed uint8 holds two scalars per element
    assert count_params(model)["total"] == BASE_TOTAL
    q = model.bert.encoder.layer[0].attention.self.query.weight
    assert q.numel() == H * H // 2 and numel(q) == H * H

    # QLoRA (no task type, so no classifier copy): total = base + added, added = LoRA only.
    names = base_param_names(model)
    assert names == base_param_names(tiny_bert())
    counts = count_params(lora(model, task_type=None), names)
    assert counts == {"total": BASE_TOTAL + LORA_ADDED, "trainable": LORA_ADDED, "added": LORA_ADDED}


def test_4bit_snapshot_dequantizes(tmp_path: Path) -> None:
    path = _save_tiny(tmp_path)
    ref = tiny_bert()
    snap = snapshot(_load_4bit(path))
    w = snap["bert.encoder.layer.0.attention.self.query.weight"]
    assert w.shape == (H, H)
    # nf4 is lossy but close to the original weights.
    assert (w.float() - ref.bert.encoder.layer[0].attention.self.query.weight).abs().max() < 0.05


def test_sparse_update_trainable_much_larger_than_changed() -> None:
    model = tiny_bert()
    base = snapshot(model)
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.bert.embeddings.word_embeddings.weight
    emb.requires_grad_(True)
    with torch.no_grad():
        emb[3, 0] += 1.0
        emb[7, 5] -= 1.0
        emb[42, 31] += 0.5
    assert count_params(model, set(base))["trainable"] == 100 * H  # 3,200
    assert changed_params(snapshot(model), base) == 3
    assert changed_params(model, base) == 3  # a module is snapshotted for the caller
    assert changed_params(model, base, atol=0.75) == 2


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_merged_lora_changes_adapted_matrices_and_has_rank_r(scale) -> None:
    """ΔW = merged − base for any mergeable method: rank r per adapted matrix, also when the update
    is four orders of magnitude below the weights (float32 rounding of W + ΔW must not add rank)."""
    base_model = tiny_bert()
    base = snapshot(base_model)
    model = lora(base_model, task_type=None)
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:  # peft inits B = 0, which would make ΔW = 0
                p.normal_().mul_(scale)
    # Unmerged: only the LoRA factors are new; base tensors untouched.
    assert changed_params(model, base) == LORA_ADDED
    trained = trainable_names(model)

    merged = model.merge_and_unload()
    adapted = {
        f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in range(LAYERS) for m in ("query", "value")
    }
    assert merged_delta_rank(snapshot(merged), base, exclude=trained) == {k: R for k in adapted}
    assert merged_delta_rank(base, base) == {}  # nothing merged, nothing counted
    if scale == 1.0:  # changed = 2 layers × 2 matrices × h·h = 4,096 (a dense rank-r ΔW has no zero entry)
        assert changed_params(snapshot(merged), base) == LAYERS * 2 * H * H


def test_new_head_counts_fully_as_changed() -> None:
    model = tiny_bert()
    base = {k: v for k, v in snapshot(model).items() if not k.startswith("classifier.")}
    assert changed_params(snapshot(model), base) == CLASSIFIER


def test_stored_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 23)
    assert stored_bytes(tmp_path / "a.bin") == 100
    assert stored_bytes(tmp_path) == 123
    assert stored_bytes([tmp_path / "a.bin", tmp_path / "sub"]) == 123


def test_param_table_labels_every_count() -> None:
    rows = dict(param_table({"total": 1000, "trainable": 10, "added": 5, "changed": 3, "stored_bytes": 2048}))
    assert rows["total params (scalars in the model as run)"] == "1,000"
    assert rows["trainable params (updated by the optimizer)"].startswith("10 (1.000% of total)")
    assert any(label.startswith("added params") for label in rows)
    assert any(label.startswith("changed params") for label in rows)
    assert "2.0 KiB" in rows["stored bytes (to rebuild from the base)"]


def test_analytic_memory_lora() -> None:
    model = lora(tiny_bert())
    mem = analytic_memory(model, "adamw", bytes_per_param=4)
    mib = 2**20
    trainable = LORA_ADDED + CLASSIFIER
    # weights = total·4 B, gradients = trainable·4 B, AdamW state = 2·gradients
    assert mem["weights_mb"] == pytest.approx((BASE_TOTAL + trainable) * 4 / mib)
    assert mem["gradients_mb"] == pytest.approx(trainable * 4 / mib)
    assert mem["optimizer_state_mb"] == pytest.approx(2 * trainable * 4 / mib)
    assert mem["total_mb"] == pytest.approx(mem["weights_mb"] + 3 * mem["gradients_mb"])
    with pytest.raises(ValueError, match="optimizer_name"):
        analytic_memory(model, "nope")


# -- callbacks on a tiny Lightning fit -------------------------------------------------------

SEQ, USEFUL, BATCH, N = 8, 6, 4, 32  # 6 of 8 tokens are real → padding fraction 0.25


class ToyData(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = torch.zeros(SEQ, dtype=torch.long)
        mask[:USEFUL] = 1
        ids = torch.randint(0, 100, (SEQ,))
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(i % 2)}


class ToyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).float()
        return self.head((self.emb(input_ids) * m).sum(1) / m.sum(1))

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(self(**batch), batch["labels"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._loss(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callbacks: list[L.Callback], accumulate: int = 1) -> None:
    loader = torch.utils.data.DataLoader(ToyData(), batch_size=BATCH)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2, limit_test_batches=3,
        accumulate_grad_batches=accumulate, callbacks=callbacks,
    )
    module = ToyModule()
    trainer.fit(module, loader, loader)
    trainer.test(module, loader, verbose=False)


def test_callbacks_on_tiny_fit() -> None:
    mem, thr = MemoryCallback(), ThroughputCallback(warmup_steps=2)
    _fit([mem, thr])

    m = mem.summary()
    assert m["peak_rss_mb"] > 0 and m["fit_peak_rss_mb"] > 0 and m["test_peak_rss_mb"] > 0
    assert m["peak_rss_mb"] <= peak_rss_mb() + 1  # a stage peak cannot exceed the lifetime peak
    assert m["peak_gpu_allocated_mb"] is None  # CPU run: keys present, values None

    s = thr.summary()
    steps = N // BATCH - 2  # 8 optimizer steps, 2 of them warm-up
    assert s["steps_measured"] == steps
    assert s["train_samples_per_s"] > 0
    # tokens/s = samples/s · seq; useful = tokens · (1 − padding fraction)
    assert s["train_tokens_per_s"] == pytest.approx(s["train_samples_per_s"] * SEQ)
    assert s["useful_tokens_per_s"] == pytest.approx(s["train_tokens_per_s"] * USEFUL / SEQ)
    assert s["padding_fraction"] == pytest.approx(1 - USEFUL / SEQ)
    assert 0 < s["step_time_median_s"] <= s["step_time_p90_s"]
    assert s["val_latency_s_per_batch"] > 0 and s["test_latency_s_per_batch"] > 0
    assert s["eval_latency_s_per_batch"] > 0


def test_throughput_counts_optimizer_steps_under_accumulation() -> None:
    thr = ThroughputCallback(warmup_steps=1)
    _fit([thr], accumulate=2)
    s = thr.summary()
    # 8 batches / 2 per optimizer step = 4 steps, 1 warm-up → 3 measured, 2 batches each
    assert s["steps_measured"] == 3
    assert s["train_samples_per_s"] > 0


def test_inference_latency_and_overhead() -> None:
    model = tiny_bert()
    batch = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    model.train()
    lat = inference_latency(model, batch, n=3, warmup=1)
    assert lat > 0
    assert model.training  # mode restored
    assert inference_overhead(1.2, 1.0) == pytest.approx(0.2)
    assert inference_overhead(1.0, 1.0) == 0.0


DDP_SCRIPT = """
import json, sys
import lightning as L
sys.path.insert(0, {tests!r})
from test_measure import ToyData, ToyModule, N, BATCH
import torch
from peftbench.measure import MemoryCallback, ThroughputCallback

mem, thr = MemoryCallback(), ThroughputCallback(warmup_steps=1)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    limit_val_batches=0, callbacks=[mem, thr])
trainer.fit(ToyModule(), torch.utils.data.DataLoader(ToyData(), batch_size=BATCH))
if trainer.global_rank == 0:
    extra = {{"local": thr._local_totals(), "global": thr._global}}
    print("RESULT" + json.dumps({{**mem.summary(), **thr.summary(), **extra}}))
"""


@pytest.mark.slow  # ~1 min: two real processes on CPU
@pytest.mark.distributed
def test_callbacks_reduce_over_ddp_ranks(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = tmp_path / "ddp_measure.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    s = json.loads(line[len("RESULT"):])
    # Each rank sees N/2 samples → N/(2·BATCH) = 4 steps, 1 warm-up → 3 measured per rank.
    assert s["steps_measured"] == 3 and s["memory_world_size"] == 2
    # Global samples/s = (sum over ranks of samples) / (max over ranks of time) ≥ one rank's rate.
    local = s["local"]
    assert local["samples"] == 3 * BATCH
    g = s["global"]
    assert g["samples"] == 2 * local["samples"] and g["tokens"] == 2 * local["tokens"]
    assert g["time"] >= local["time"]
    assert s["train_samples_per_s"] == pytest.approx(g["samples"] / g["time"])
    assert s["train_samples_per_s"] * SEQ == pytest.approx(s["train_tokens_per_s"])
    assert s["padding_fraction"] == pytest.approx(1 - USEFUL / SEQ)
    assert s["fit_peak_rss_mb"] > 0


def test_prompt_learning_names_resolve_against_the_base() -> None:
    """peft's prompt learning wraps as ``base_model.<orig>``; for a Llama (``model.layers…``) that
    reads ``base_model.model.layers…``, which the LoRA-style reading maps to ``layers…`` — a name
    the base lacks, so every base tensor looked added (issue 25). The base's names decide."""
    base = {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight"}
    name = "base_model.model.layers.0.self_attn.q_proj.weight"
    assert normalize_name(name) == "layers.0.self_attn.q_proj.weight"  # the LoRA-style reading
    assert normalize_name(name, base) == "model.layers.0.self_attn.q_proj.weight"
    lora_name = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    assert normalize_name(lora_name, base) == "model.layers.0.self_attn.q_proj.weight"
    assert normalize_name("base_model.lm_head.weight", base) == "lm_head.weight"


def test_changed_of_a_4bit_model_counts_scalars_not_packed_bytes(tmp_path: Path) -> None:
    """Unchanged 4-bit weights are unchanged (compared dequantized), however they are handed over;
    their packed bytes stripped of the quant_state (``p.detach()``) are refused, not counted as
    half their scalars (issue 25: QLoRA's changed was half the 4-bit element count + LoRA)."""
    model = _load_4bit(_save_tiny(tmp_path))
    base = snapshot(model)
    assert changed_params(model, base) == 0
    assert changed_params(snapshot(model, copy=False), base) == 0
    with pytest.raises(ValueError, match="quant_state"):
        changed_params({n: p.detach() for n, p in model.named_parameters()}, base)
