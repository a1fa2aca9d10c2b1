"""Tokenization per task, cached by ``datasets`` (a repeated run re-uses the arrow cache file)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any, Mapping

from peftbench.data.examples import SplitExamples

log = logging.getLogger(__name__)
IGNORE = -100
TRUNCATED = "_truncated"  # per-example flag column, counted and dropped after tokenization
# Used when the tokenizer has no chat template (documented in the README).
DEFAULT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def tokenizer_fingerprint(tok) -> str:
    """What the cache key knows of the tokenizer: its class, size, chat template, lower-casing, and
    the tokens at ~2,000 ids spread over the whole vocabulary. Memoized on the tokenizer (a cached
    run's whole data set-up is ~0.1 s; sorting a 30k vocabulary per split cost 0.07 s each)."""
    n = len(tok)
    memo = getattr(tok, "_peftbench_fingerprint", None)
    if memo and memo[0] == (n, str(getattr(tok, "chat_template", ""))):  # added tokens/template: recompute
        return memo[1]
    ids = sorted({*range(0, n, max(1, n // 2000)), n - 1}) if n else []
    h = hashlib.sha1(json.dumps([n, tok.convert_ids_to_tokens(ids), getattr(tok, "do_lower_case", None)],
                                default=str).encode())
    h.update(str(getattr(tok, "chat_template", "")).encode())
    fp = f"{type(tok).__name__}-{h.hexdigest()[:10]}"
    try:
        tok._peftbench_fingerprint = ((n, str(getattr(tok, "chat_template", ""))), fp)
    except AttributeError:  # a tokenizer that refuses new attributes: recompute next time
        pass
    return fp


def _cache_key(ex: SplitExamples, tok, ds: Mapping[str, Any]) -> str:
    knobs = {k: ds.get(k) for k in ("task", "format", "max_length", "block_size", "padding", "use_chat_template")}
    # "v2": cached files carry the truncation flags (older ones lack them).
    blob = json.dumps([ex.source, ex.split, len(ex), knobs, tokenizer_fingerprint(tok), "v2"], sort_keys=True, default=str)
    h = hashlib.sha1(blob.encode())
    for col in sorted(ex.columns):  # content hash: a changed file invalidates the cache
        h.update(json.dumps(ex.columns[col][:50] + ex.columns[col][-50:], default=str).encode())
    return h.hexdigest()[:16]


def render_prompt(tok, prompt: str, use_chat_template: bool = True) -> str:
    if use_chat_template and getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return DEFAULT_TEMPLATE.format(prompt=prompt)


def sft_example(tok, prompt: str, response: str, max_length: int, use_chat_template: bool = True) -> dict[str, list[int]]:
    """Prompt tokens are masked (label -100): the loss is on the response (+ EOS) only."""
    p_ids = tok(render_prompt(tok, prompt, use_chat_template), add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
    ids = (p_ids + r_ids)[:max_length]
    labels = ([IGNORE] * len(p_ids) + r_ids)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
            TRUNCATED: len(p_ids) + len(r_ids) > max_length}


def _render_default(tok, messages: list[dict[str, str]]) -> str:
    """The documented default for tokenizers without a chat template: system text as is, user turns
    in DEFAULT_TEMPLATE, assistant turns as ``content + EOS + "\n\n"``."""
    parts = []
    for t in messages:
        if t["role"] == "assistant":
            parts.append(t["content"] + (tok.eos_token or "") + "\n\n")
        elif t["role"] == "system":
            parts.append(t["content"] + "\n\n")
        else:
            parts.append(DEFAULT_TEMPLATE.format(prompt=t["content"]))
    return "".join(parts)


def messages_example(tok, messages: list[dict[str, str]], max_length: int, use_chat_template: bool = True) -> dict[str, list[int]]:
    """Multi-turn: loss on assistant turns only. The conversation is rendered prefix by prefix (so
    any chat template works); each turn's new text is tokenized on its own, so the mask follows
    turn boundaries exactly. A user turn followed by an assistant turn includes the template's
    generation prompt (e.g. ``<|im_start|>assistant\n``), which stays masked."""
    from peftbench.errors import DataError

    chat = use_chat_template and getattr(tok, "chat_template", None)
    ids: list[int] = []
    labels: list[int] = []
    prev = ""
    for i, turn in enumerate(messages):
        if chat:
            gen = turn["role"] != "assistant" and i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
            text = tok.apply_chat_template(messages[: i + 1], tokenize=False, add_generation_prompt=gen)
        else:
            text = _render_default(tok, messages[: i + 1])
        if not text.startswith(prev):
            raise DataError("the chat template renders earlier turns differently once later turns are added; "
                            "cannot mask per turn (set dataset.use_chat_template=false for the default template)",
                            option="dataset.use_chat_template")
        new = tok(text[len(prev):], add_special_tokens=False)["input_ids"]
        prev = text
        ids += new
        labels += new if turn["role"] == "assistant" else [IGNORE] * len(new)
    cut = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, TRUNCATED: cut}


def tokenize_split(ex: SplitExamples, tok, ds: Mapping[str, Any], cache_dir) -> Any:
    """Returns a ``datasets.Dataset`` with input_ids/attention_mask(/labels), cached on disk."""
    import datasets

    datasets.disable_progress_bars()
    task, max_len = ds["task"], int(ds.get("max_length", 128))
    key = _cache_key(ex, tok, ds)
    safe = re.sub(r"[^\w.-]", "_", str(ds["name"])).lstrip(".")  # a name is never a path ("../x")
    cache_file = str(cache_dir / f"{safe}-{ex.split}-{key}.arrow")
    if os.path.exists(cache_file):  # a repeated run: open the cached arrow file, build nothing
        return _count_truncated(datasets.Dataset.from_file(cache_file), ex, ds, max_len)
    base = datasets.Dataset.from_dict({k: v for k, v in ex.columns.items()})
    use_tpl = bool(ds.get("use_chat_template", True))
    padding = "max_length" if ds.get("padding") == "max_length" else False

    if task == "classification":
        pair = "text_pair" in ex.columns

        def fn(b):
            enc = tok(b["text"], b["text_pair"] if pair else None, truncation=True, max_length=max_len, padding=padding)
            enc["labels"] = b["label"]
            # Only rows that hit max_length can have been cut: re-tokenize those without truncation.
            at = [i for i, x in enumerate(enc["input_ids"]) if sum(enc["attention_mask"][i]) >= max_len]
            full = tok([b["text"][i] for i in at], [b["text_pair"][i] for i in at] if pair else None)["input_ids"] if at else []
            cut = {i for i, f in zip(at, full) if len(f) > max_len}
            enc[TRUNCATED] = [i in cut for i in range(len(b["text"]))]
            return enc

        remove = list(ex.columns)
    elif ds.get("format") == "text":
        block = int(ds.get("block_size", max_len))

        def fn(b):  # pack: concatenate every document, cut into blocks (no padding at all)
            eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
            stream = [t for doc in tok(b["text"], add_special_tokens=False)["input_ids"] for t in doc + eos]
            n = (len(stream) // block) * block
            chunks = [stream[i: i + block] for i in range(0, n, block)]
            return {"input_ids": chunks, "attention_mask": [[1] * block for _ in chunks], "labels": chunks,
                    TRUNCATED: [False] * len(chunks)}  # packing cuts documents into blocks, drops nothing

        remove = list(ex.columns)
    elif ds.get("format") == "messages":
        def fn(b):
            outs = [messages_example(tok, m, max_len, use_tpl) for m in b["messages"]]
            return {k: [o[k] for o in outs] for k in ("input_ids", "attention_mask", "labels", TRUNCATED)}

        remove = list(ex.columns)
    else:
        def fn(b):
            outs = [sft_example(tok, p, r, max_len, use_tpl) for p, r in zip(b["prompt"], b["response"])]
            return {k: [o[k] for o in outs] for k in ("input_ids", "attention_mask", "labels", TRUNCATED)}

        remove = list(ex.columns)
    out = base.map(fn, batched=True, remove_columns=remove, cache_file_name=cache_file, load_from_cache_file=True,
                   new_fingerprint=key, desc=None)
    return _count_truncated(out, ex, ds, max_len)


def row_lengths(data: Any) -> list[int]:
    """Tokens per row of a tokenized split, read in Arrow (iterating ``input_ids`` in Python formats
    every row)."""
    import pyarrow.compute as pc

    return pc.list_value_length(data.with_format("arrow")["input_ids"]).to_pylist()


def _count_truncated(out: Any, ex: SplitExamples, ds: Mapping[str, Any], max_len: int) -> Any:
    """Truncation is stated, never silent: the count goes to ``ex.truncated`` (results.json
    ``dataset.truncated``) and a warning names the option that controls it. A row with no token
    at all (an empty text under a tokenizer that adds none) has nothing to classify: refused."""
    if ds.get("task") == "classification" and 0 in (lengths := row_lengths(out)):
        from peftbench.errors import DataError

        raise DataError(f"{ex.source} ({ex.split}): row {lengths.index(0)} tokenizes to no token (an empty "
                        "text?); remove such rows from the data")
    if TRUNCATED not in out.column_names:
        return out
    import pyarrow.compute as pc

    # summed in Arrow: iterating the column formats every row in Python (3 s for SST-2's 61k rows)
    n = int(pc.sum(out.with_format("arrow")[TRUNCATED]).as_py() or 0)
    ex.truncated = n
    if n:
        log.warning("%s (%s): %d of %d examples are longer than dataset.max_length=%d and were truncated",
                    ex.source, ex.split, n, len(ex), max_len)
    return out.remove_columns([TRUNCATED])
