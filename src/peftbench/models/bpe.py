"""A byte-level BPE tokenizer trained on a dataset's training text (``tokenizer: bpe:<dataset>[:<vocab>]``;
the vocabulary defaults to the architecture's ``vocab_size``),
for models pretrained here from scratch (the gpt2_local ladder). Deterministic for the same corpus;
trained once and cached.

Why not SmolLM2's 49k vocabulary for those models: its embedding table alone (49152 × 128 = 6.3M)
would dwarf the 0.4M–4.7M block parameters of the ladder's sizes, and most CPU time would go to
the output softmax — the ladder would mostly measure the vocabulary, not depth and width.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from peftbench.config.paths import cache_dir, dataset_config
from peftbench.errors import ConfigError

SPECIAL = {"eos": "<|endoftext|>", "pad": "<|pad|>"}
PREFIX = "bpe:"


def parse(ref: str, default_vocab: Any = None) -> tuple[str, int]:
    name, _, vocab = ref[len(PREFIX):].partition(":")
    vocab = vocab or str(default_vocab or "")
    if not name or not vocab.isdigit() or int(vocab) < 300:
        raise ConfigError(f"'{ref}': expected bpe:<dataset>[:<vocab size ≥ 300>] (or arch vocab_size ≥ 300)",
                          option="model.tokenizer")
    return name, int(vocab)


def corpus_texts(dataset: str) -> list[str]:
    """The training split's text, exactly what the LM will see (validation text excluded)."""
    from peftbench.data.load import load_examples

    ds = dataset_config(dataset, option="model.tokenizer")
    if ds.get("task") != "causal_lm" or ds.get("format") != "text":
        raise ConfigError(f"a BPE tokenizer is trained on a plain-text corpus; '{dataset}' is not", option="model.tokenizer")
    return list(load_examples(ds, None)["train"].columns["text"])


def load_bpe(ref: str, default_vocab: Any = None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    name, vocab = parse(ref, default_vocab)
    out = cache_dir() / "tokenizers" / f"bpe-{name}-{vocab}"
    if not (out / "tokenizer.json").exists():
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIAL.values()),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        bpe.train_from_iterator(corpus_texts(name), trainer=trainer)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=SPECIAL["eos"], bos_token=SPECIAL["eos"],
                                      unk_token=SPECIAL["eos"], pad_token=SPECIAL["pad"])
        tmp = Path(str(out) + f".tmp{os.getpid()}")
        tok.save_pretrained(str(tmp))
        if out.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    return PreTrainedTokenizerFast.from_pretrained(str(out))
