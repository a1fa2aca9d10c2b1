"""Catastrophic forgetting: the base model's general ability, measured before and after fine-tuning.

Task accuracy alone hides what fine-tuning costs; this module measures the other half.

- causal LMs: perplexity on the *held-out* slice (the validation split) of a general text corpus
  (c4_demo by default). When the same corpus is mixed into training as replay data, only its
  train split is replayed, so the measured text is never trained on.
- encoders / classifiers: accuracy on a second, untouched task through a frozen probe. A logistic
  regression is trained on the base model's mean-pooled last hidden states (AG News by default)
  and applied, unchanged, to the fine-tuned model's features: if fine-tuning moved the body's
  representation away from what the probe learnt, accuracy drops.

``delta`` is always ``after - before``; ``higher_is_better`` says how to read it, and
``forgot`` is the loss of ability with the sign fixed (positive = the model got worse).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftbench.config.forgetting import ForgettingPlan

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ causal LM: held-out perplexity

def _blocks(tok, texts: list[str], block: int, max_examples: int, max_tokens: int | None) -> list[list[int]]:
    """Documents joined by EOS and cut into fixed blocks, as in LM pre-training (no padding)."""
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    limit = max_examples * block if max_tokens is None else min(max_examples * block, max_tokens)
    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + eos
        if len(stream) >= limit:
            break
    stream = stream[:limit]
    return [stream[i: i + block] for i in range(0, len(stream) - block + 1, block)] or [stream]


def perplexity(model, tok, plan: ForgettingPlan) -> tuple[float, int, int]:
    """exp(mean next-token NLL) over the held-out blocks; returns (ppl, n_blocks, n_scored_tokens)."""
    import torch

    blocks = _blocks(tok, plan.eval_texts, int(plan.dataset["block_size"]), plan.max_examples, plan.max_tokens)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), plan.batch_size):
            ids = torch.tensor(blocks[i: i + plan.batch_size], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            nll -= lp.gather(-1, ids[:, 1:, None]).sum().item()
            n += ids[:, 1:].numel()
    model.train(was_training)
    return math.exp(nll / max(n, 1)), len(blocks), n


# ------------------------------------------------------------------ encoders: frozen probe accuracy

def features(model, tok, texts: list[str], max_length: int, batch_size: int):
    """Mean-pooled last hidden states (over real tokens), no grad."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i: i + batch_size], truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt").to(device)
            h = model(**enc, output_hidden_states=True).hidden_states[-1].float()
            mask = enc["attention_mask"]
            h = h[:, -mask.shape[1]:]  # prompt-style methods prepend virtual tokens: drop them
            m = mask[..., None].float()
            out.append((h * m).sum(1) / m.sum(1).clamp(min=1))
    model.train(was_training)
    return torch.cat(out).cpu()


class Probe:
    """Multinomial logistic regression on standardised features (L-BFGS, L2), fit once on the base."""

    def __init__(self, x, y, num_classes: int, l2: float = 1e-3, seed: int = 0):
        import torch

        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-6)
        z = (x - self.mean) / self.std
        g = torch.Generator().manual_seed(seed)
        self.w = (0.01 * torch.randn(z.shape[1], num_classes, generator=g)).requires_grad_()
        self.b = torch.zeros(num_classes, requires_grad=True)
        y = torch.as_tensor(y)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ self.w + self.b, y) + l2 * (self.w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)

    def accuracy(self, x, y) -> float:
        import torch

        with torch.no_grad():
            pred = (((x - self.mean) / self.std) @ self.w + self.b).argmax(-1)
        return float((pred == torch.as_tensor(y)).float().mean())


# ------------------------------------------------------------------ before / after

class ForgettingMeter:
    """``before(base_model)`` then ``after(tuned_model)`` → the results.json ``forgetting`` block."""

    def __init__(self, plan: ForgettingPlan, tok):
        self.plan, self.tok = plan, tok
        self.block: dict[str, Any] = {"measure": plan.measure, "set": plan.dataset["name"],
                                      "source": plan.source, "higher_is_better": plan.measure != "perplexity"}
        self._probe: Probe | None = None

    def _eval(self, model) -> float:
        p = self.plan
        if p.measure == "perplexity":
            ppl, n_blocks, n_tok = perplexity(model, self.tok, p)
            self.block.update(n_examples=n_blocks, n_tokens=n_tok, block_size=int(p.dataset["block_size"]))
            return ppl
        max_len = int(p.dataset.get("max_length") or 128)
        x = features(model, self.tok, p.eval_texts, max_len, p.batch_size)
        if self._probe is None:  # the probe is trained on the base model's features, once
            xt = features(model, self.tok, p.train_texts, max_len, p.batch_size)
            self._probe = Probe(xt, p.train_labels, len(p.dataset.get("label_names") or []) or max(p.train_labels) + 1)
            self.block.update(probe_train_examples=len(p.train_texts), probe="logistic regression, mean-pooled "
                              "last hidden state, trained on the base model")
        self.block["n_examples"] = len(p.eval_texts)
        return self._probe.accuracy(x, p.eval_labels)

    def before(self, model) -> None:
        t = time.perf_counter()
        self.block["before"] = self._eval(model)
        self.block["seconds"] = time.perf_counter() - t

    def after(self, model) -> dict[str, Any]:
        t = time.perf_counter()
        b = self.block
        b["after"] = self._eval(model)
        b["seconds"] = b.get("seconds", 0.0) + time.perf_counter() - t
        b["delta"] = b["after"] - b["before"]
        b["forgot"] = -b["delta"] if b["higher_is_better"] else b["delta"]
        b["rel_delta"] = b["delta"] / b["before"] if b["before"] else None
        log.info("forgetting (%s on %s): before %.4g, after %.4g", b["measure"], b["set"], b["before"], b["after"])
        return b
