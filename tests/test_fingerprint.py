"""Base-weight digests: what a record's ``model.weights`` says, and the report's flags on it."""

from __future__ import annotations

from pathlib import Path

from peftbench.models import fingerprint
from peftbench.models.spec import ModelSpec


def _spec(local: Path | None = None, gguf: str | None = None, from_config: bool = False,
          checkpoint: str | None = "org/model") -> ModelSpec:
    return ModelSpec(family="f", size="s", model_type="bert", arch={}, checkpoint=checkpoint, local_dir=local,
                     from_config=from_config, tokenizer=None, gguf_file=gguf)


def test_a_rebuilt_folder_keeps_its_path_and_changes_its_digest(tmp_path: Path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert fingerprint.folder_digest(d) is None  # no weights: nothing to name
    (d / "model.safetensors").write_bytes(b"\x00" * 1000)
    first = fingerprint.folder_digest(d)
    assert first is not None and first.startswith("sha256:")
    (d / "config.json").write_text('{"note": 1}')  # not weights
    (d / "pytorch_model.bin").write_bytes(b"other copy")  # a second format: the safetensors load
    assert fingerprint.folder_digest(d) == first
    (d / "model.safetensors").write_bytes(b"\x00" * 999 + b"\x01")  # one byte of a rebuilt model
    assert fingerprint.folder_digest(d) not in (None, first)
    (d / "model.safetensors").unlink()
    assert fingerprint.folder_digest(d) == fingerprint.folder_digest(d / "pytorch_model.bin") is not None


def test_the_spec_decides_what_is_hashed(tmp_path: Path):
    (tmp_path / "q.gguf").write_bytes(b"gguf weights")
    (tmp_path / "unused.safetensors").write_bytes(b"not the gguf")
    assert fingerprint.weights_digest(_spec(tmp_path, gguf="q.gguf")) == fingerprint.folder_digest(tmp_path / "q.gguf")
    assert fingerprint.weights_digest(_spec(tmp_path)) == fingerprint.folder_digest(tmp_path)
    assert fingerprint.weights_digest(_spec(from_config=True)) is None  # its config and seed name it

    class Loaded:  # transformers sets the commit it resolved on a hub model's config
        config = type("C", (), {"_commit_hash": "abc123"})()

    assert fingerprint.weights_digest(_spec(), Loaded()) == "hub:org/model@abc123"
    assert fingerprint.weights_digest(_spec(), object()) is None


def _record(root: Path, i: int, method: str, seed: int, weights: str | None, lr: float = 1e-3) -> None:
    from peftbench import results

    model = {"family": "m", "size": "s", "total": 1000, **({"weights": weights} if weights else {})}
    rec = results.empty_record(
        run_id=f"r{i}", seed=seed, config={"method": {"name": method}, "seed": seed, "optim": {"lr": lr}},
        model=model, method={"name": method, "family": "additive"}, dataset={"name": "toy", "task": "classification"},
        params={"trainable": 10, "total": 1000}, metrics={"test/acc": 0.8 + lr, "val/acc": 0.8 + lr})
    results.write(root / f"run{i}", rec)


def _flags(root: Path) -> dict[str, list[str]]:
    from peftbench.report import collect
    from peftbench.report.tables import build_tables

    (t,) = build_tables(collect([root]))
    return {g.method: [f.label for f in t.referee.of(g).flags if f.code == "weights"] for g in t.groups}


def test_rows_on_different_base_weights_are_flagged_and_unknown_weights_are_not(tmp_path: Path):
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    _record(tmp_path / "same", 0, "full", 1, a)
    _record(tmp_path / "same", 1, "lora", 1, a)
    _record(tmp_path / "same", 2, "lora", 2, None)  # an older record: not judged
    assert _flags(tmp_path / "same") == {"full": [], "lora": []}

    _record(tmp_path / "mixed", 0, "full", 1, a)
    _record(tmp_path / "mixed", 1, "lora", 1, a)
    _record(tmp_path / "mixed", 2, "lora", 2, b)  # a seed on a rebuilt model
    _record(tmp_path / "mixed", 3, "bitfit", 1, b)  # a row on other weights than the reference's
    assert _flags(tmp_path / "mixed") == {"full": [], "lora": ["mixed base weights"],
                                          "bitfit": ["other base weights"]}

    _record(tmp_path / "grid", 0, "full", 1, a)
    _record(tmp_path / "grid", 1, "ia3", 1, a, lr=1e-2)  # selected (best val) …
    _record(tmp_path / "grid", 2, "ia3", 1, b, lr=1e-3)  # … over a grid point on other weights
    assert _flags(tmp_path / "grid") == {"full": [], "ia3 [lr=0.01]": ["grid on other weights"]}


def test_a_record_carries_its_weights_key_through_the_schema(tmp_path: Path):
    from peftbench import results

    _record(tmp_path, 0, "full", 1, "sha256:" + "c" * 64)
    rec = results.read(tmp_path / "run0" / "results.json")
    assert rec["model"]["weights"] == "sha256:" + "c" * 64


def test_a_ladder_rebuild_is_judged_by_its_digest_before_its_perplexity():
    from peftbench.cli.suite import _same_weights

    def rec(ppl: float, digest: str | None = None) -> dict:
        return {"metrics": {"val/ppl": ppl}, "artifacts": {"model_weights": digest} if digest else {}}

    assert _same_weights(rec(120.29, "sha256:a"), rec(120.29, "sha256:a"))
    assert not _same_weights(rec(120.29, "sha256:a"), rec(120.29, "sha256:b"))  # same ppl, other model
    assert _same_weights(rec(120.2912), rec(120.2913, "sha256:b"))  # an older record: ppl to four decimals
    assert not _same_weights(rec(120.29), rec(120.19, "sha256:b"))  # the l rebuild 0.1 % passed
    assert not _same_weights({"metrics": {}}, rec(120.19))
