"""``peftbench`` subcommands. Imports are lazy: ``report`` never loads torch, and every
``--help`` answers in well under a second."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from peftbench.report import build_report

    res = build_report([Path(d) for d in args.dirs], Path(args.out) if args.out else None,
                       formats=tuple(args.formats.split(",")), plots=not args.no_plots, reference=args.reference)
    print(res.markdown)
    print(f"\n{res.n_ok} ok run(s), {res.n_failed} not ok, {len(res.skipped)} file(s) skipped", file=sys.stderr)
    for f in res.files:
        print(f"wrote {f}", file=sys.stderr)
    return 0


def _params(args: argparse.Namespace) -> int:
    from peftbench.cli.params import params_table

    table = params_table(args.overrides)
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True))
    else:
        from peftbench.measure.params import param_table

        print(f"{table['model']['family']} {table['model']['size']} + {table['method']['name']} "
              f"({table['method']['family']}) on {table['task']}")
        for label, value in param_table(table["params"]):
            print(f"  {label:<24} {value}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from peftbench.cli.listing import listing

    whats = [args.what] if args.what else ["methods", "models", "datasets", "experiments"]
    for what in whats:
        if len(whats) > 1:
            print(f"{what}:" if what == whats[0] else f"\n{what}:")
        for line in listing(what):
            print(line)
    return 0


def _export(args: argparse.Namespace) -> int:
    from peftbench.cli.export import export_run

    res = export_run(args.run_dir, args.out, merge=args.merge, overwrite=args.overwrite,
                     trust_remote_code=args.trust_remote_code)
    how = {"peft": "peft adapter (PeftModel.from_pretrained / AutoPeftModelFor*.from_pretrained)",
           "merged": "merged Hugging Face model (AutoModelFor*.from_pretrained)",
           "peftbench": "peftbench adapter (safetensors + method.json; peft has no such method)"}[res.kind]
    print(f"wrote {how} to {res.out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from peftbench.cli.bench import run_bench

    methods = [m for m in args.methods.split(",") if m]
    res = run_bench(methods, steps=args.steps, rounds=args.rounds, out=Path(args.out), extras=not args.no_extras,
                    command="peftbench bench " + " ".join(sys.argv[2:]), log=lambda s: print(s, file=sys.stderr),
                    threads=args.threads, memory_rounds=args.memory_rounds, allocator=args.allocator)
    print(res["markdown"])
    print(f"wrote {Path(args.out) / 'overhead.md'}", file=sys.stderr)
    return 0


def _gpu_check(args: argparse.Namespace) -> int:
    from peftbench.cli.gpu_check import main_args

    return main_args(args)


def _add_gpu_check(sub: argparse._SubParsersAction) -> None:
    from peftbench.cli.gpu_check import add_arguments  # stdlib only at import: --help stays fast

    gc = sub.add_parser("gpu-check", help="LoRA/QLoRA/full/(IA)3/prefix, checkpointing, SDPA, compile, FSDP and "
                        "framework overhead measured on one CUDA GPU in <= 8 min (--dry-run: on CPU)",
                        description="Measures peftbench on a CUDA GPU (Llama-3.2-1B shape, bf16-mixed) and writes "
                        "reports/gpu-<device>/gpu.md + gpu.json; see docs/gpu.md. `bash scripts/gpu-check.sh` "
                        "installs carried wheels (.whl/) first.")
    add_arguments(gc)
    gc.set_defaults(fn=_gpu_check)


def _new_method(args: argparse.Namespace) -> int:
    from peftbench.cli.scaffold import scaffold

    files = scaffold(args.name, args.out)
    root = files[0].parent
    pkg = f"peftbench_{args.name}"
    print(f"wrote a plugin package for method '{args.name}' into {root}/ ({len(files)} files). Edit two:\n"
          f"  {root}/src/{pkg}/method.py\n  {root}/src/{pkg}/conf/method/{args.name}.yaml\n"
          f"then: pip install -e {root}  →  peftbench-train method={args.name} …  ·  pytest {root}/tests")
    return 0


def _add_new_method(sub) -> None:
    nm = sub.add_parser("new-method", help="scaffold a plugin package for a new method (two files to edit)",
                        description="Write a complete, installable plugin package: the method module and its yaml "
                        "(the two files you edit), the entry point, the Hydra search-path plugin, and a test that "
                        "runs peftbench's conformance suite on it.")
    nm.add_argument("name", help="the method's name, as in method=NAME (lower case, digits, _)")
    nm.add_argument("--out", help="folder to write (default: ./peftbench-NAME)")
    nm.set_defaults(fn=_new_method)


def _add_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="a run's adapter in peft's format, or (--merge) a merged plain HF model",
                        description="Export a finished run. Without --merge: the adapter in peft's format "
                        "(loadable with PeftModel.from_pretrained) plus tokenizer; our own methods are copied "
                        "as safetensors + method.json. With --merge: the update folded into the base weights, "
                        "saved with save_pretrained (+ tokenizer): full, BitFit and head-only runs are saved as they are "
                        "(nothing to fold), LoRA-family and (IA)³ runs merged; methods that add what cannot be folded "
                        "are refused. Exported adapters name the base by its hub id (the local copy: peftbench_export.json).")
    ex.add_argument("run_dir", help="a run's output folder (holds results.json and adapter/)")
    ex.add_argument("--out", help="output folder (default: <run_dir>/export or <run_dir>/merged)")
    ex.add_argument("--merge", action="store_true", help="save a plain HF model (the update folded into the base weights)")
    ex.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    ex.add_argument("--trust-remote-code", action="store_true",
                    help="let the model's own code run (never taken from results.json, which anyone could have written)")
    ex.set_defaults(fn=_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftbench", description="Compare parameter-efficient fine-tuning methods fairly. "
                                "Train with `peftbench-train` (Hydra); inspect and report with these subcommands.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="tables (md/csv/tex/html) and plots from results.json files under DIRs")
    r.add_argument("dirs", nargs="+", help="run or sweep output folders (searched recursively)")
    r.add_argument("--out", help="output folder (default: <first dir>/report)")
    r.add_argument("--formats", default="md,csv,tex,html,svg",
                   help="comma list of md,csv,tex,html,svg (svg: vector copies of the plots; PNGs are always written)")
    r.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    r.add_argument("--reference", default=None, metavar="METHOD[,METHOD]",
                   help="method every row is paired-tested against, per model and dataset (default: full); "
                        "more after a comma (full,lora) are tested in a note under each table")
    r.set_defaults(fn=_report)
    pa = sub.add_parser("params", help="typed parameter counts for a composed model + method, without loading weights")
    pa.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=roberta model_size=large method=lora method.r=8")
    pa.add_argument("--json", action="store_true", help="machine-readable output")
    pa.set_defaults(fn=_params)
    li = sub.add_parser("list", help="methods, model families and sizes, datasets or experiments, one line each")
    li.add_argument("what", nargs="?", choices=["methods", "models", "datasets", "experiments"],
                    help="what to list (default: all four); use a name with peftbench-train, e.g. method=lora")
    li.set_defaults(fn=_list)
    _add_export(sub)

    _add_new_method(sub)

    from peftbench.run.allocator import MODES  # ctypes + platform only: --help stays fast

    be = sub.add_parser("bench", help="framework overhead: peftbench vs a hand-written loop vs HF Trainer (ratios)",
                        description="Runs (a) a hand-written PyTorch loop, (b) peftbench's Lightning path, (c) HF "
                        "Trainer on the same model, tensors and steps: throughput from short segments interleaved "
                        "in one process per method (a b c, b c a, …), peak memory from one fresh process per "
                        "runner; writes a Markdown table of throughput b/a, b/c and peak memory b/a.")
    be.add_argument("--methods", default="full,lora,qlora,ia3,prefix_tuning,houlsby", help="comma list of methods")
    be.add_argument("--steps", type=int, default=20, help="optimizer steps per segment (2 warm-up excluded)")
    be.add_argument("--rounds", type=int, default=8,
                    help="a b c rounds per method (throughput ratios: median over rounds, with quartiles)")
    be.add_argument("--memory-rounds", type=int, default=1, help="fresh processes per runner for peak memory")
    be.add_argument("--allocator", choices=MODES, default="keep",
                    help="keep: peftbench's perf.keep_freed_memory for all runners in the throughput process "
                    "(the frameworks' own cost); default: glibc's dynamic thresholds for all (what page faults "
                    "cost each path)")
    be.add_argument("--threads", type=int, default=1,
                    help="intra-op threads per process (0 = torch's default); 1 keeps the rounds comparable "
                    "on a small shared machine")
    be.add_argument("--out", default="reports/bench-overhead", help="folder for overhead.md / overhead.json")
    be.add_argument("--no-extras", action="store_true", help="skip data-cache, --help start-up and first-step timings")
    be.set_defaults(fn=_bench)
    _add_gpu_check(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    from peftbench.run.console import quiet

    args = build_parser().parse_args(argv)
    quiet(weight_bars=True)  # known-benign warnings only; nothing heavy is imported (report stays torch-free)
    try:
        code = args.fn(args)
    except BrokenPipeError:  # `peftbench list | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as e:  # noqa: BLE001
        from peftbench.errors import PeftbenchError

        if isinstance(e, PeftbenchError):
            print(f"peftbench: error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(code)


if __name__ == "__main__":
    main()
