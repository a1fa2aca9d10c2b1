"""``peftbench export <run dir>``: a finished run's result in a format other tools open.

* default: the adapter as saved by the method. For peft-based methods that is peft's own format
  (``PeftModel.from_pretrained(base, DIR)`` or ``AutoPeftModelFor….from_pretrained(DIR)``); the
  tokenizer is written beside it and ``base_model_name_or_path`` names the base by its hub id, so the
  adapter loads on any machine (the local copy the run used is recorded in ``peftbench_export.json``,
  never in peft's config: a path inside one venv breaks everywhere else). A base with no hub id (a
  random-init ``tiny`` model, a model trained here) is shipped in ``DIR/base_model``.
  Our own methods (houlsby, …) are copied as safetensors + method.json (load with peftbench).
* ``--merge``: a plain Hugging Face model (``AutoModelFor….from_pretrained(DIR)``). A method whose
  trained model *is* a plain model (full, BitFit, head-only: no parameter beyond the base's) is saved
  as is; a method that adds parameters is merged with its ``merge()`` where it declares
  ``supports_merge`` (LoRA family, (IA)³, …); anything else is refused, naming what it adds.

The base is rebuilt from the resolved config stored in results.json (same family, size and
``init_seed``), so export needs nothing but the run directory.

A classification head that pools what stock transformers does not (``mean``: MiniLM, MPNet; ``cls``
with peftbench's single linear: RoBERTa) loads with the stock classes *silently wrong* (HF reads its
[CLS] pooler / 2-layer head there). Such exports record the pooling in ``peftbench_export.json``,
say in ``README.md`` to load with ``peftbench.models.heads.load_exported(DIR)``, and warn on stderr.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench import results
from peftbench.errors import ConfigError


EXPORT_META = "peftbench_export.json"


@dataclass
class ExportResult:
    out: Path
    kind: str  # "peft" | "peftbench" | "merged"
    files: list[Path]


def _read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / results.FILENAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {results.FILENAME}: pass a run's output folder", option="run_dir")
    rec = results.read(path)
    if rec["status"] != "ok":
        raise ConfigError(f"run {run_dir} finished with status '{rec['status']}': nothing to export", option="run_dir")
    return rec


def _adapter_dir(rec: dict[str, Any], run_dir: Path) -> Path:
    # The run folder may have moved (copied off a cluster): prefer <run_dir>/adapter.
    cand = run_dir / "adapter"  # only the run's own folder: a record's path could point anywhere
    if cand.is_dir() and any(cand.iterdir()):
        return cand
    raise ConfigError(f"no saved adapter under {run_dir / 'adapter'}", option="run_dir")


def _plan(rec: dict[str, Any], trust_remote_code: bool = False):
    """The run's plan from its record. A record can come from anyone's folder: running a model's
    own code (``trust_remote_code``) is decided on the command line, never by the file."""
    from omegaconf import OmegaConf

    from peftbench.config.plan import make_plan

    cfg = OmegaConf.create(rec["config"])
    OmegaConf.set_struct(cfg, False)
    cfg.model.trust_remote_code = bool(trust_remote_code)
    base = ((rec.get("stages") or {}).get("base") or {}).get("model_dir")
    if base:  # a two-stage run adapted its base stage's model
        cfg.model.path = base
    return cfg, make_plan(cfg, load_data=False)


def _base(cfg, plan, load_kwargs: dict[str, Any] | None = None):
    from peftbench.models import load_model, load_tokenizer

    tok = load_tokenizer(plan.spec)
    model = load_model(plan.spec, plan.task, plan.num_labels, tok, load_kwargs,
                       init_seed=int(cfg.model.get("init_seed", 0) or 0))
    return model, tok


def export_run(run_dir: str | Path, out: str | Path | None = None, merge: bool = False,
               overwrite: bool = False, trust_remote_code: bool = False) -> ExportResult:
    """Export the run in ``run_dir`` into ``out`` (default ``<run_dir>/export`` or ``…/merged``)."""
    from peftbench.methods.peft_base import PeftMethod

    run_dir = Path(run_dir)
    rec = _read_run(run_dir)
    adapter = _adapter_dir(rec, run_dir)
    cfg, plan = _plan(rec, trust_remote_code)
    method = plan.method
    out = Path(out) if out else run_dir / ("merged" if merge else "export")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty; choose another --out or pass --overwrite", option="--out")
    is_peft = isinstance(method, PeftMethod) and (adapter / "adapter_config.json").is_file()
    if merge:
        return _export_merged(rec, cfg, plan, adapter, out)
    out.mkdir(parents=True, exist_ok=True)
    for f in adapter.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    if not is_peft:
        (out / "run_config.json").write_text(json.dumps(rec["config"], indent=2, sort_keys=True))
        _write_metadata(out, rec, plan, "peftbench")
        return ExportResult(out, "peftbench", _files(out))

    # the plain base (no 4-bit load kwargs): users quantize when they load, as with any checkpoint
    base, tok = _base(cfg, plan)
    _save_tokenizer(tok, out)
    hub_id = base_hub_id(plan)
    if hub_id is None:  # no name that resolves elsewhere: ship the base beside the adapter
        base.save_pretrained(str(out / "base_model"), safe_serialization=True)
        _save_tokenizer(tok, out / "base_model")
        base_ref = str((out / "base_model").resolve())
    else:
        base_ref = hub_id
    acfg_path = out / "adapter_config.json"
    acfg = json.loads(acfg_path.read_text())
    acfg["base_model_name_or_path"] = base_ref
    acfg_path.write_text(json.dumps(acfg, indent=2, sort_keys=True))
    _write_metadata(out, rec, plan, "peft")
    return ExportResult(out, "peft", _files(out))


def base_hub_id(plan) -> str | None:
    """The base model's hub id, or None where it has none: built from config, a user's ``model.path``
    (a two-stage run's base, a local checkpoint), or a size whose "checkpoint" is itself a path."""
    spec = plan.spec
    if spec.from_config or plan.cfg.model.get("path") or not spec.checkpoint:
        return None
    ckpt = str(spec.checkpoint)
    if ckpt.startswith(("/", ".", "~")) or Path(ckpt).expanduser().exists():
        return None
    return ckpt


def _export_merged(rec: dict[str, Any], cfg, plan, adapter: Path, out: Path) -> ExportResult:
    """A plain HF model: saved as is where the trained model adds nothing to the base, merged where the
    method folds what it adds into the base weights, refused (with what it adds) otherwise."""
    from peftbench.measure import params as pm

    method = plan.method
    base, tok = _base(cfg, plan, method.load_kwargs(plan.ctx))
    base_names = pm.base_param_names(base)
    model = method.load(base, adapter, plan.ctx)
    added = sorted(n for n, _ in model.named_parameters() if pm.normalize_name(n) not in base_names)
    if added and not method.supports_merge:
        n_added = sum(p.numel() for n, p in model.named_parameters() if pm.normalize_name(n) not in base_names)
        raise ConfigError(f"method '{method.name}' ({method.family}) cannot be merged into the base weights: it adds "
                          f"{n_added:,} parameters outside them (e.g. {added[0]}) and has no merge that folds them in "
                          "(supports_merge is false); export without --merge", option="--merge")
    if added or method.supports_merge:
        model = method.merge(model)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(tok, out)
    _write_metadata(out, rec, plan, "merged")
    return ExportResult(out, "merged", _files(out))


def _write_metadata(out: Path, rec: dict[str, Any], plan, kind: str) -> None:
    """``peftbench_export.json``: where the export came from, including the local base copy the run
    used (machine-specific, so kept out of peft's adapter_config.json), and the head's pooling."""
    from peftbench.models.heads import stock_reproduces

    spec = plan.spec
    meta = {"kind": kind, "run_id": rec.get("run_id"), "method": {"name": plan.method.name, "family": plan.method.family},
            "base_model": {"family": spec.family, "size": spec.size, "hub_id": base_hub_id(plan),
                           "local_path": str(spec.local_dir) if spec.local_dir else None,
                           "from_config": spec.from_config}}
    pooling = spec.pooling if plan.task == "classification" else None
    if pooling is not None:
        meta["head"] = {"pooling": pooling, "module": spec.head_modules["classification"][0],
                        "num_labels": int(plan.num_labels), "stock_loading_reproduces": stock_reproduces(pooling)}
    (out / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    _write_readme(out, kind, pooling)


_STOCK = {"peft": "PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE), DIR)\n"
                  "  (BASE: `base_model_name_or_path` in adapter_config.json)",
          "merged": "AutoModelForSequenceClassification.from_pretrained(DIR)  (AutoModelFor<task> for other tasks)"}


def _write_readme(out: Path, kind: str, pooling: str | None) -> None:
    """How to load the folder; where stock loading gives other logits than the run, a warning on stderr too."""
    from peftbench.models.heads import stock_reproduces

    lines = [f"# peftbench export ({kind})", ""]
    if kind == "peftbench":
        lines += ["peftbench's own method: load with peftbench, `Method.load(base, DIR, ctx)` (method.json names it;",
                  "run_config.json is the run's resolved config)."]
    elif pooling is not None and not stock_reproduces(pooling):
        warning = (f"the classification head reads '{pooling}' pooling: stock AutoModelForSequenceClassification"
                   f"{' / PeftModel.from_pretrained' if kind == 'peft' else ''} will NOT reproduce the run's logits "
                   "(it reads [CLS] through Hugging Face's own head). Load it with "
                   f"`from peftbench.models.heads import load_exported; model = load_exported({str(out)!r})`")
        print(f"WARNING: {warning}", file=sys.stderr)
        lines += ["WARNING: " + warning.replace(repr(str(out)), '"DIR"') + ".", "",
                  "```python", "from peftbench.models.heads import load_exported",
                  'model = load_exported("DIR")  # stock model + peftbench\'s pooling head, eval mode',
                  "# an adapter whose base hub id is not reachable: load_exported(\"DIR\", base=\"/local/copy\")",
                  "```", "", "Needs transformers, peft and peftbench."]
    else:
        lines += ["Stock transformers reproduces the run's logits:", "", "    " + _STOCK[kind], "",
                  "(`peftbench.models.heads.load_exported(DIR)` works as well.)" if pooling else ""]
        if pooling == "last_token":
            lines += ["A decoder reads its last non-pad token: keep `pad_token_id` set (the tokenizer's) for batches."]
    (out / "README.md").write_text("\n".join(lines).rstrip() + "\n")


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def _save_tokenizer(tok, out: Path) -> None:
    """Beside the weights; a family without a tokenizer (inputs are feature vectors) has none."""
    if tok is not None:
        tok.save_pretrained(str(out))
