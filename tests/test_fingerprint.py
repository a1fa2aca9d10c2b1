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


def _record(root: Path, i: int, method: str, seed: int, weights: str | None, lr: float = 1e-3,
            r: int | None = None, staged: bool = False) -> None:
    from peftbench import results

    model = {"family": "m", "size": "s", "total": 1000, **({"weights": weights} if weights else {})}
    config = {"method": {"name": method, **({"r": r} if r else {})}, "seed": seed, "optim": {"lr": lr}}
    rec = results.empty_record(
        run_id=f"r{i}", seed=seed, config=config,
        model=model, method={"name": method, "family": "additive"}, dataset={"name": "toy", "task": "classification"},
        params={"trainable": 10, "total": 1000}, metrics={"test/acc": 0.8 + lr + (r or 0) / 100,
                                                          "val/acc": 0.8 + lr + (r or 0) / 100},
        **({"stages": {"base": {"run_id": f"base{seed}"}}} if staged else {}))
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


def test_seeds_on_their_own_base_stage_a_mixed_reference_and_a_study_are_not_flagged(tmp_path: Path):
    a, b, c = ("sha256:" + x * 64 for x in "abc")
    # a two-stage run trains its base from its seed: its seeds differ by design
    _record(tmp_path / "staged", 0, "full", 1, a, staged=True)
    _record(tmp_path / "staged", 1, "full", 2, b, staged=True)
    assert _flags(tmp_path / "staged") == {"full": []}
    # a mixed reference is flagged itself; a row on one of its weights is not "other"
    _record(tmp_path / "ref", 0, "full", 1, a)
    _record(tmp_path / "ref", 1, "full", 2, b)
    _record(tmp_path / "ref", 2, "lora", 1, a)
    assert _flags(tmp_path / "ref") == {"full": ["mixed base weights"], "lora": []}
    # a sweep over a rank is a study, not a tuning grid: its rows stay rows, none "selected over" another
    _record(tmp_path / "study", 0, "lora", 1, a, r=4)
    _record(tmp_path / "study", 1, "lora", 1, c, r=8)
    flags = _flags(tmp_path / "study")
    assert "grid on other weights" not in [f for v in flags.values() for f in v], flags


def test_hub_digests_are_told_apart_by_their_commit():
    from peftbench.report.referee import _short

    two = {"hub:sentence-transformers/all-mpnet-base-v2@" + "1" * 40, "hub:sentence-transformers/all-mpnet-base-v2@" + "2" * 40}
    assert _short(two) == "sentence-transformers/all-mpnet-base-v2@1111111 / sentence-transformers/all-mpnet-base-v2@2222222"
    assert _short({"sha256:" + "ab" * 32}) == "abababababab"


def test_the_files_transformers_loads_are_hashed_not_the_run_state_beside_them(tmp_path: Path):
    import json

    d = tmp_path / "trainer_out"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"weights")
    (d / "training_args.bin").write_bytes(b"paths and timestamps")
    assert fingerprint.weight_files(d) == [d / "pytorch_model.bin"]
    (d / "pytorch_model.bin").unlink()
    (d / "optimizer.pt").write_bytes(b"state")
    (d / "rng_state.pth").write_bytes(b"state")
    assert fingerprint.weight_files(d) == []  # only run state: no weights to name
    s = tmp_path / "sharded"
    s.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model-old.safetensors"):
        (s / name).write_bytes(name.encode())
    (s / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
        "c": "model-00001-of-00002.safetensors"}}))
    assert [p.name for p in fingerprint.weight_files(s)] == ["model-00001-of-00002.safetensors",
                                                             "model-00002-of-00002.safetensors"]  # not the stale one


def test_a_rewrite_with_its_old_mtime_is_hashed_again(tmp_path: Path):
    import os

    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\x00" * 100)
    st = os.stat(f)
    first = fingerprint.folder_digest(tmp_path)
    f.write_bytes(b"\x01" * 100)  # same size …
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # … and the mtime set back: the cache must not answer
    assert fingerprint.folder_digest(tmp_path) not in (None, first)


def test_a_local_checkpoint_dir_is_hashed_and_a_read_error_leaves_the_weights_unnamed(tmp_path: Path, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    assert fingerprint.weights_digest(_spec(checkpoint=str(tmp_path))) == fingerprint.folder_digest(tmp_path)

    def unreadable(_):
        raise PermissionError("denied")

    monkeypatch.setattr(fingerprint, "folder_digest", unreadable)
    assert fingerprint.weights_digest(_spec(tmp_path)) is None  # the run that trained stands
    assert fingerprint.saved_digest(tmp_path) is None


def test_a_gguf_file_is_converted_once_per_content_not_per_name(tmp_path: Path, monkeypatch):
    from peftbench.models import loading

    monkeypatch.setenv("PEFTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    converted = []

    class Model:
        hf_quantizer = None

        def save_pretrained(self, out: str, safe_serialization: bool = True) -> None:
            Path(out).mkdir(parents=True)
            (Path(out) / "config.json").write_text("{}")

    class Auto:
        @staticmethod
        def from_pretrained(path: str, gguf_file: str) -> Model:
            converted.append((Path(path) / gguf_file).read_bytes())
            return Model()

    monkeypatch.setattr(loading, "_transformers", lambda: type("T", (), {"AutoModelForCausalLM": Auto}))
    (tmp_path / "m.gguf").write_bytes(b"v1")
    first = loading._gguf_to_safetensors(_spec(tmp_path, gguf="m.gguf"))
    assert loading._gguf_to_safetensors(_spec(tmp_path, gguf="m.gguf")) == first and converted == [b"v1"]
    (tmp_path / "m.gguf").write_bytes(b"v2")  # a package upgrade ships other weights under the same name
    assert loading._gguf_to_safetensors(_spec(tmp_path, gguf="m.gguf")) != first and converted == [b"v1", b"v2"]


def test_a_ladder_rebuild_is_judged_by_its_digest_before_its_perplexity():
    from peftbench.cli.suite import _same_weights

    def rec(ppl: float, digest: str | None = None) -> dict:
        return {"metrics": {"val/ppl": ppl}, "artifacts": {"model_weights": digest} if digest else {}}

    assert _same_weights(rec(120.29, "sha256:a"), rec(120.29, "sha256:a"))
    assert not _same_weights(rec(120.29, "sha256:a"), rec(120.29, "sha256:b"))  # same ppl, other model
    assert _same_weights(rec(143.38888549804688), rec(143.38888549804688, "sha256:b"))  # an older record: its ppl
    assert not _same_weights(rec(126.2213363647461), rec(126.22139739990234, "sha256:b"))  # the m rebuild: near, not same
    assert not _same_weights(rec(120.29), rec(120.19, "sha256:b"))  # the l rebuild 0.1 % passed
    assert not _same_weights({"metrics": {}}, rec(120.19))
