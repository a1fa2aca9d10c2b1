"""Metrics that need the model to *generate* (greedy), used by the tasks in lit/tasks.py:

- generated-label accuracy (a classification set read as SFT, ``dataset.as_sft``): the prompt of
  each evaluation row is continued, the first line of the answer matched to a label name. Outputs
  naming no label count as wrong and lower ``valid_label_rate``.
- corpus BLEU of generated captions (``image_text``), sacrebleu's ``corpus_bleu`` / 100 (exp
  smoothing, 13a tokens), accumulated as sufficient statistics so it sums over batches and ranks;
  per-attribute accuracy (the value a caption names, e.g. its colour, against the reference's), the
  share of captions with every attribute right, and the same numbers for the best constant caption
  chosen on the train captions: the baseline a captioner that ignores its image reaches.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torchmetrics

from peftbench.data.image_text import named_value, value_pattern
from peftbench.data.tokenize import IGNORE


def parse_label(generated: str, label_names: list[str]) -> int | None:
    """The label the answer names: exact first line, else the label it starts with (longest first)."""
    line = generated.strip().splitlines()[0].strip().strip(".:'\"").lower() if generated.strip() else ""
    names = [n.lower() for n in label_names]
    if line in names:
        return names.index(line)
    for n in sorted(names, key=len, reverse=True):
        if line.startswith(n):
            return names.index(n)
    return None


def split_sft_rows(batch: Mapping[str, torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """An SFT batch (prompt tokens masked with -100, right-padded) → the prompts left-padded for
    generation (ids, mask) and each row's response ids. Rows cut before their response are dropped."""
    prompts, responses = [], []
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        answer = (labels != IGNORE).nonzero()
        if len(answer):
            start = int(answer[0])
            prompts.append(ids[:start])
            responses.append(labels[start:][labels[start:] != IGNORE].tolist())
    width = max((len(p) for p in prompts), default=0)
    out = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=batch["input_ids"].device)
    mask = torch.zeros_like(out)
    for i, p in enumerate(prompts):  # left padding: generation continues at the right edge
        out[i, width - len(p):], mask[i, width - len(p):] = p, 1
    return out, mask, responses


def positions_ignore_padding(model: Any) -> bool:
    """True for peft's prompt-learning models that prepend virtual-token embeddings (prompt tuning,
    P-Tuning, …): their ``generate`` drops position ids, so a left-padded prompt would sit as many
    positions further from its virtual tokens as it has padding, unlike any training row. The prefix
    family (prefix tuning, P-Tuning v2) offsets the mask-derived positions and is padding-invariant."""
    cfg = getattr(model, "active_peft_config", None)
    kind = getattr(getattr(cfg, "peft_type", None), "value", None)
    return bool(getattr(cfg, "is_prompt_learning", False)) and kind not in ("PREFIX_TUNING", "CARTRIDGE")


def generate_continuations(model: Any, ids: torch.Tensor, mask: torch.Tensor, **generate: Any) -> torch.Tensor:
    """Greedy continuations (new tokens only, pad-filled) of left-padded prompts, one batch — or, for
    a model whose positions ignore padding, one batch per prompt length, so no prompt is padded and
    each row's answer is the one it gets alone (at the cost of up to one ``generate`` per row)."""
    if not positions_ignore_padding(model):
        return model.generate(input_ids=ids, attention_mask=mask, **generate)[:, ids.shape[1]:]
    lengths = mask.sum(1)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for n in lengths.unique().tolist():
        rows = (lengths == n).nonzero().flatten()
        cut = max(0, min(ids.shape[1] - int(n), ids.shape[1] - 1))  # the rows' shared left padding
        parts.append((rows, model.generate(input_ids=ids[rows, cut:], attention_mask=mask[rows, cut:],
                                           **generate)[:, ids.shape[1] - cut:]))
    pad = generate.get("pad_token_id")
    out = torch.full((len(ids), max(p.shape[1] for _, p in parts)), 0 if pad is None else int(pad),
                     dtype=ids.dtype, device=ids.device)
    for rows, new in parts:
        out[rows, :new.shape[1]] = new
    return out


class GeneratedLabels:
    """Greedy answers to an SFT batch's prompts, parsed into labels: (correct, valid) per row."""

    def __init__(self, tokenizer: Any, label_names: list[str], max_new_tokens: int = 8):
        self.tok, self.names, self.max_new_tokens = tokenizer, list(label_names), int(max_new_tokens)

    def answers(self, model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[list[int | None], list[int | None]]:
        """(gold, predicted) label per row that has a response (None: no label named)."""
        tok = self.tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids, mask, responses = split_sft_rows(batch, pad)
        if not responses:
            return [], []
        new = generate_continuations(model, ids, mask, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(new, skip_special_tokens=True)
        gold = [parse_label(tok.decode(r, skip_special_tokens=True), self.names) for r in responses]
        return gold, [parse_label(t, self.names) for t in texts]

    def __call__(self, model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(correct, valid) per row that has a response."""
        gold, pred = self.answers(model, batch)
        return (torch.tensor([p is not None and p == g for p, g in zip(pred, gold)], dtype=torch.float),
                torch.tensor([p is not None for p in pred], dtype=torch.float))


def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU()  # corpus_bleu's defaults


class CorpusBLEU(torchmetrics.Metric):
    """sacrebleu corpus BLEU / 100 over every update (and rank): n-gram statistics are summed, then
    scored once — equal to ``sacrebleu.corpus_bleu(all_preds, [all_refs]).score / 100``."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("stats", default=torch.zeros(10, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: list[str], refs: list[str]) -> None:
        if preds:
            stats = _bleu()._extract_corpus_statistics(list(preds), [list(refs)])
            self.stats += torch.tensor(stats, dtype=torch.float64, device=self.stats.device).sum(0)

    def compute(self) -> torch.Tensor:
        return torch.tensor(_bleu()._compute_score_from_stats([int(x) for x in self.stats.tolist()]).score / 100.0)


def attribute_hits(preds: list[str], refs: list[str], values: list[str]) -> torch.Tensor:
    """1/0 per caption whose reference names a value: does the generated caption name the same one?"""
    hits = [named_value(p, values) == gold for p, r in zip(preds, refs) if (gold := named_value(r, values)) is not None]
    return torch.tensor(hits, dtype=torch.float)


def all_attribute_hits(preds: list[str], refs: list[str], attributes: Mapping[str, list[str]]) -> torch.Tensor:
    """1/0 per caption whose reference names a value of every attribute: are all of them right?"""
    hits = []
    for p, r in zip(preds, refs):
        gold = {k: named_value(r, v) for k, v in attributes.items()}
        if attributes and None not in gold.values():
            hits.append(all(named_value(p, v) == gold[k] for k, v in attributes.items()))
    return torch.tensor(hits, dtype=torch.float)


def _mean(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else 0.0


def constant_score(caption: str, refs: list[str], attributes: Mapping[str, list[str]]) -> tuple[float, float]:
    """(mean attribute accuracy, corpus BLEU / 100) of answering ``caption`` to every reference."""
    preds = [caption] * len(refs)
    acc = [_mean(attribute_hits(preds, refs, v)) for v in attributes.values()]
    bleu = _bleu().corpus_score(preds, [list(refs)]).score / 100.0
    return (sum(acc) / len(acc) if acc else 0.0), bleu


def mode_caption(template: str, captions: list[str], attributes: Mapping[str, list[str]]) -> str:
    """``template`` with each attribute's value replaced by that attribute's most frequent value in
    ``captions`` (ties: the value listed first)."""
    from collections import Counter

    out = template
    for values in attributes.values():
        named = Counter(v for c in captions if (v := named_value(c, values)) is not None)
        have = named_value(out, values)
        if named and have is not None:
            best = max(values, key=lambda v: named[v])  # max keeps the first of equal counts
            out = value_pattern(have).sub(best, out, count=1)
    return out


def constant_caption(captions: list[str], attributes: Mapping[str, list[str]] | None = None, top_k: int = 50) -> str:
    """The best single caption to answer every image with, chosen on ``captions`` (the train split):
    among the ``top_k`` most frequent captions and the caption built from each attribute's most frequent
    value, the one with the highest mean attribute accuracy, then the highest BLEU (ties: more
    frequent), scored on at most ~5,000 of the captions. It is the baseline a captioner that ignores its
    image reaches."""
    from collections import Counter

    attributes = attributes or {}
    caps = [c.strip() for c in captions if c.strip()]
    if not caps:
        raise ValueError("constant_caption: no non-empty caption to choose from")
    ranked = [c for c, _ in Counter(caps).most_common(top_k)]
    built = mode_caption(ranked[0], caps, attributes)
    candidates = ranked + ([built] if built not in ranked else [])
    scored = caps[:: max(1, len(caps) // 5000)]  # an even sample bounds the cost on large caption sets
    scores = [constant_score(c, scored, attributes) for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]


def captions(model: Any, tokenizer: Any, pixel_values: torch.Tensor, max_new_tokens: int) -> list[str]:
    """Greedy captions of a batch of images."""
    cfg = model.config
    out = model.generate(pixel_values=pixel_values, max_new_tokens=max_new_tokens, do_sample=False,
                         decoder_start_token_id=cfg.decoder_start_token_id, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return [s.strip() for s in tokenizer.batch_decode(out, skip_special_tokens=True)]
