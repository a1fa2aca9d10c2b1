"""Plots for the report: score vs trainable params (Pareto), memory vs size, throughput.

matplotlib is imported inside ``make_plots`` only, so ``import peftbench.report`` stays
instant and works where matplotlib is absent. Figures are written as PNG and SVG with
fixed metadata and a fixed SVG hash salt so reruns give identical files.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftbench.report.captions import CAPTIONS, caption
from peftbench.report.collect import (
    Collection,
    Group,
    family_rank,
    headline_metric,
    lower_is_better,
    size_rank,
)

_SVG_META = {"Date": None, "Creator": "peftbench"}
_PNG_META = {"Software": None}
__all__ = ["caption", "headline_metric", "make_plots", "pareto_front"]


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s.lower()).strip("_") or "x"


def pareto_front(points: Sequence[tuple[float, float]], lower_better: bool) -> list[tuple[float, float]]:
    """Points not dominated by one with fewer-or-equal params and a better-or-equal score."""
    front: list[tuple[float, float]] = []
    best = math.inf if lower_better else -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], p[1] if lower_better else -p[1])):
        if (y < best) if lower_better else (y > best):
            front.append((x, y))
            best = y
    return front


def _save(fig: Any, out_dir: Path, name: str, written: list[Path], exts: Sequence[str] = ("png", "svg")) -> None:
    for ext, meta in (("png", _PNG_META), ("svg", _SVG_META)):
        if ext not in exts:
            continue
        path = out_dir / f"{name}.{ext}"
        if ext == "png":
            _save_png(fig, path)
        else:
            fig.savefig(path, format=ext, metadata=meta, dpi=110, bbox_inches="tight")
        written.append(path)


def _save_png(fig: Any, path: Path) -> None:
    """A 256-colour palette PNG: a third of matplotlib's RGBA size, which matters because reports are
    committed and report.html embeds every image (the tree travels to the GPU check, ≤ 64 MiB)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=_PNG_META, dpi=110, bbox_inches="tight")
    buf.seek(0)
    with Image.open(buf) as im:
        pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(path, format="PNG", optimize=True)


def _label(g: Group, many_sizes: bool) -> str:
    return f"{g.method} ({g.model_family}/{g.model_size})" if many_sizes else g.method


def _verdicts(tables: Sequence[Any]) -> dict[tuple[str, str, str, str], Any]:
    return {g.key: t.referee.of(g) for t in tables if t.referee is not None for g in t.groups}


def _yerr(st: Any, iv: Any) -> tuple[float, float]:
    """Error bar half-widths: the 95% interval where there is one, else ± std, else none."""
    if iv is not None:
        return (max(st.mean - iv.lo, 0.0), max(iv.hi - st.mean, 0.0))
    return (st.std or 0.0, st.std or 0.0)


def _baseline_lines(ax: Any, tables: Sequence[Any], ds: str, metric: str) -> None:
    """The majority-class rate and each model's untuned score as horizontal lines."""
    drawn: set[tuple[str, float]] = set()
    for t in tables:
        if t.dataset != ds or t.referee is None:
            continue
        lines = []
        if metric in t.referee.majority:
            lines.append(("majority class", t.referee.majority[metric][0], "--"))
        if metric in t.referee.before:
            lines.append((f"untuned {t.model_family}/{t.model_size}", t.referee.before[metric].mean, ":"))
        for label, y, style in lines:
            if (label, y) not in drawn:
                drawn.add((label, y))
                ax.axhline(y, color="0.5", linestyle=style, linewidth=1, label=f"{label} ({y:.3f})")


def _pareto_points(groups: Sequence[Group], metric: str, verdicts: dict) -> list[tuple[Group, float, Any, Any]]:
    pts = []
    for g in groups:
        tr, st = g.params.get("trainable"), g.metrics.get(metric)
        if tr is not None and st is not None and tr.mean > 0:
            v = verdicts.get(g.key)
            pts.append((g, tr.mean, st, v))
    return pts


def _draw_fronts(ax: Any, pts: Sequence[tuple[Group, float, Any, Any]], metric: str) -> None:
    """One Pareto front per model (family/size): fronts across model families compare unlike things."""
    models = sorted({(g.model_family, g.model_size) for g, _, _, _ in pts})
    for fam, size in models:
        front = pareto_front([(x, st.mean) for g, x, st, _ in pts if (g.model_family, g.model_size) == (fam, size)],
                             lower_is_better(metric))
        label = f"Pareto front {fam}/{size}" if len(models) > 1 else "Pareto front"
        if len(front) > 1:
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="0.4", linestyle="--",
                    linewidth=1, label=label)
        elif front:
            ax.plot([front[0][0]], [front[0][1]], marker="*", markersize=14, color="0.4", linestyle="none",
                    label=label)


def _plot_pareto(plt: Any, coll: Collection, out_dir: Path, written: list[Path], tables: Sequence[Any] = ()) -> None:
    verdicts = _verdicts(tables)
    for ds in sorted({g.dataset for g in coll.groups}):
        groups = [g for g in coll.groups if g.dataset == ds and g.status == "ok"]
        metric = headline_metric(groups)
        pts = _pareto_points(groups, metric, verdicts) if metric else []
        if not pts:
            continue
        many = len({(g.model_family, g.model_size) for g, _, _, _ in pts}) > 1
        fig, ax = plt.subplots(figsize=(7, 4.5))
        fam_of = {g.method: g.method_family for g, _, _, _ in pts}
        cmap = plt.get_cmap("tab10")
        flagged = False
        for i, m in enumerate(sorted(fam_of, key=lambda m: (family_rank(fam_of[m]), m))):
            for j, (g, x, st, v) in enumerate(p for p in pts if p[0].method == m):
                lo, hi = _yerr(st, v.intervals.get(metric) if v else None)
                near = bool(v) and any(f.code in ("baseline", "constant") for f in v.flags)
                flagged = flagged or near
                ax.errorbar([x], [st.mean], yerr=[[lo], [hi]], fmt="o", color=cmap(i % 10), capsize=3,
                            mfc="none" if near else cmap(i % 10), label=f"{m} [{g.method_family}]" if j == 0 else None)
                if many:
                    ax.annotate(g.model_size, (x, st.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
        _draw_fronts(ax, pts, metric)
        _baseline_lines(ax, tables, ds, metric)
        ax.set_xscale("log")
        ax.set_xlabel("trainable params (log scale)")
        ax.set_ylabel(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
        ax.set_title(f"{ds}: {metric} vs trainable params" + (" (hollow = ≈ baseline)" if flagged else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        name = f"metric_vs_trainable_{_slug(ds)}"
        CAPTIONS[name] = (f"{ds}: {metric} (95% intervals as error bars) against trainable parameters, one Pareto "
                          "front per model; dashed/dotted lines: majority class and untuned base model; hollow "
                          "markers: not significantly above the majority baseline")
        plt.save(fig, out_dir, name, written)
        plt.close(fig)


def _mem_key(groups: Sequence[Group]) -> str | None:
    for k in ("peak_gpu_allocated_mb", "peak_rss_mb"):
        if any(k in g.memory for g in groups):
            return k
    return None


def _without_lr(method: str) -> str:
    """A row's name without its lr, so one line follows a method whatever lr each table selected
    ("lora [lr=0.003]" at one size, "lora [lr=0.009]" at another); a study's other keys stay
    ("lora [lr=0.001, r=8]" → "lora [r=8]")."""
    name, _, rest = method.partition(" [")
    keep = [p for p in rest.removesuffix("]").split(", ") if p and not p.startswith("lr=")]
    return f"{name} [{', '.join(keep)}]" if keep else name


def _plot_memory(plt: Any, coll: Collection, out_dir: Path, written: list[Path]) -> None:
    groups = [g for g in coll.groups if g.status == "ok"]
    key = _mem_key(groups)
    if key is None:
        return
    sizes = sorted({(g.model_family, g.model_size) for g in groups},
                   key=lambda fs: (fs[0], size_rank(fs[1], min((g.model_total for g in groups
                                                                 if (g.model_family, g.model_size) == fs
                                                                 and g.model_total is not None),
                                                                default=None))))
    xi = {fs: i for i, fs in enumerate(sizes)}
    methods = sorted({_without_lr(g.method) for g in groups})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(methods):
        # Average over datasets: memory is dominated by model size and method, not the data.
        by_x: dict[int, list[float]] = {}
        for g in groups:
            if _without_lr(g.method) == m and key in g.memory:
                by_x.setdefault(xi[(g.model_family, g.model_size)], []).append(g.memory[key].mean)
        if not by_x:
            continue
        for n, fam in enumerate(dict.fromkeys(sizes[x][0] for x in sorted(by_x))):
            # A line joins the sizes of one family only: two families are not a size ladder.
            xs = [x for x in sorted(by_x) if sizes[x][0] == fam]
            ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], marker="os^D"[i // 10 % 4], color=cmap(i % 10),
                    linestyle="-" if i < 10 else "--", label=m if n == 0 else None)
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"{f}/{s}" for f, s in sizes], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(sizes) - 0.5)
    ax.set_xlabel("model / size")
    ax.set_ylabel(f"{key.replace('_', ' ')}")
    ax.set_title("peak memory vs model size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    CAPTIONS["memory_vs_size"] = f"peak memory ({key.replace('_', ' ')}) per method against model size, averaged over datasets"
    plt.save(fig, out_dir, "memory_vs_size", written)
    plt.close(fig)


def _plot_speed(plt: Any, coll: Collection, out_dir: Path, written: list[Path]) -> None:
    """One chart per dataset (``throughput_<dataset>``; ``throughput`` when there is one): speed is
    compared within a task's budget, and one chart of every row of a benchmark is unreadable."""
    groups = [g for g in coll.groups if g.status == "ok"
              and any(k in g.speed for k in ("train_tokens_per_s", "useful_tokens_per_s",
                                             "inference_overhead"))]
    datasets = sorted({g.dataset for g in groups})
    for ds in datasets:
        name = f"throughput_{_slug(ds)}" if len(datasets) > 1 else "throughput"
        _speed_chart(plt, [g for g in groups if g.dataset == ds], ds, out_dir, name, written)


def _speed_chart(plt: Any, groups: list[Group], ds: str, out_dir: Path, name: str, written: list[Path]) -> None:
    many = len({(g.model_family, g.model_size) for g in groups}) > 1
    labels = [f"{g.method}\n{g.model_family}/{g.model_size}" if many else g.method for g in groups]
    xs = list(range(len(groups)))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(groups) + 4), 4.5))
    w = 0.4
    for off, k, lab in ((-w / 2, "train_tokens_per_s", "all tokens/s"),
                        (w / 2, "useful_tokens_per_s", "useful tokens/s")):
        vals = [g.speed[k].mean if k in g.speed else 0.0 for g in groups]
        errs = [(g.speed[k].std or 0.0) if k in g.speed else 0.0 for g in groups]
        a1.bar([x + off for x in xs], vals, width=w, yerr=errs, capsize=2, label=lab)
    a1.set_ylabel("train tokens/s")
    a1.set_title(f"{ds}: training throughput")
    a1.legend(fontsize=7)
    vals = [100 * g.speed["inference_overhead"].mean if "inference_overhead" in g.speed else 0.0 for g in groups]
    errs = [100 * (g.speed["inference_overhead"].std or 0.0) if "inference_overhead" in g.speed else 0.0
            for g in groups]
    a2.bar(xs, vals, width=0.6, color="tab:orange", yerr=errs, capsize=2)
    a2.axhline(0.0, color="0.4", linewidth=1)
    a2.set_ylabel("inference overhead, % (adapted ÷ base latency − 1)")
    a2.set_title(f"{ds}: inference overhead")
    for a in (a1, a2):
        a.set_xticks(xs)
        a.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        a.set_xlim(-0.6, len(groups) - 0.4)
        a.grid(True, axis="y", alpha=0.3)
    CAPTIONS[name] = (f"{ds}: left, training throughput (all and non-padding tokens/s); right, inference latency "
                      "overhead vs the base model in % (error bars: std over seeds; timing noise on a shared "
                      "machine can exceed small overheads)")
    plt.save(fig, out_dir, name, written)
    plt.close(fig)


def _plot_forgetting(plt: Any, coll: Collection, out_dir: Path, written: list[Path]) -> None:
    """Task score vs forgetting per method, one figure per dataset: the fine-tuning trade-off."""
    from peftbench.report.tables import forgetting_stats

    for ds in sorted({g.dataset for g in coll.groups}):
        groups = [g for g in coll.groups if g.dataset == ds and g.status == "ok"]
        metric = headline_metric(groups)
        pts = [(g, forgetting_stats(g).get("forgot"), g.metrics.get(metric)) for g in groups] if metric else []
        pts = [(g, f, st) for g, f, st in pts if f is not None and st is not None]
        if not pts:
            continue
        f0 = next(r["forgetting"] for r in pts[0][0].runs if isinstance(r.get("forgetting"), dict))
        unit = "perplexity increase" if f0.get("measure") == "perplexity" else "probe accuracy drop"
        fig, ax = plt.subplots(figsize=(7, 4.5))
        cmap = plt.get_cmap("tab10")
        for i, (g, f, st) in enumerate(sorted(pts, key=lambda p: (family_rank(p[0].method_family), p[0].method))):
            ax.errorbar([f.mean], [st.mean], xerr=[f.std or 0.0], yerr=[st.std or 0.0], fmt="o", capsize=3,
                        color=cmap(i % 10), label=f"{g.method} ({g.model_family}/{g.model_size})")
        ax.axvline(0.0, color="0.6", linewidth=1)
        ax.set_xlabel(f"forgetting on {f0.get('set')}: {unit} (after − before; right = forgot more)")
        ax.set_ylabel(f"task {metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
        ax.set_title(f"{ds}: task score vs forgetting")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        CAPTIONS[f"task_vs_forgetting_{_slug(ds)}"] = f"{ds}: task {metric} against forgetting on {f0.get('set')}"
        plt.save(fig, out_dir, f"task_vs_forgetting_{_slug(ds)}", written)
        plt.close(fig)


def _curve_axes(plt: Any, n: int) -> tuple[Any, list[Any]]:
    ncols = min(4, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows))
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _plot_curves(plt: Any, coll: Collection, out_dir: Path, written: list[Path], tables: Sequence[Any] = ()) -> None:
    """Small multiples per dataset: each row's validation curve per seed (train loss, grey, right axis)."""
    from peftbench.report import evidence as ev

    verdicts = _verdicts(tables)
    for ds in sorted({g.dataset for g in coll.groups}):
        groups = [g for g in coll.groups if g.dataset == ds and g.status == "ok"
                  and any(ev.val_curve(r) or ev.train_curve(r) for r in g.runs)]
        if not groups:
            continue
        fig, axes = _curve_axes(plt, len(groups))
        for ax, g in zip(axes, groups):
            twin = ax.twinx()
            for r in sorted(g.runs, key=lambda r: r["seed"]):
                vc, tc = ev.val_curve(r), ev.train_curve(r)
                if vc and vc[1]:
                    ax.plot(*zip(*vc[1]), marker=".", label=f"seed {r['seed']}")
                    ax.set_ylabel(vc[0], fontsize=7)
                if tc:
                    twin.plot(*zip(*tc), color="0.7", linewidth=0.8)
            twin.tick_params(labelsize=6)
            ax.tick_params(labelsize=6)
            v = verdicts.get(g.key)
            bad = bool(v) and any(f.code == "not_converged" for f in v.flags)
            ax.set_title(f"{g.method} ({g.model_family}/{g.model_size})" + ("\nNOT CONVERGED" if bad else ""),
                         fontsize=7, color="tab:red" if bad else "black")
            ax.set_xlabel("step", fontsize=7)
        name = f"curves_{_slug(ds)}"
        CAPTIONS[name] = (f"{ds}: validation metric during training, one panel per row and a line per seed "
                          "(grey, right axis: train loss); red titles: still improving at the end (not converged)")
        fig.tight_layout()
        plt.save(fig, out_dir, name, written)
        plt.close(fig)


def make_plots(coll: Collection, out_dir: Path, tables: Sequence[Any] | None = None, svg: bool = True) -> list[Path]:
    """Write every plot the data supports (PNG, and SVG unless ``svg`` is false); returns paths, never
    raises on thin data. ``tables`` (build_tables' output) carries the intervals, baselines and flags
    the plots show."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    class _Plt:
        """The bits of pyplot we use, without pyplot's global backend and figure registry."""

        @staticmethod
        def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7, 4.5)) -> Any:
            fig = Figure(figsize=figsize)
            FigureCanvasAgg(fig)
            return fig, fig.subplots(nrows, ncols)

        @staticmethod
        def get_cmap(name: str) -> Any:
            return matplotlib.colormaps[name]

        @staticmethod
        def close(fig: Any) -> None:
            fig.clear()

        @staticmethod
        def save(fig: Any, out_dir: Path, name: str, written: list[Path]) -> None:
            _save(fig, out_dir, name, written, ("png", "svg") if svg else ("png",))

    plt = _Plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rc = {"svg.hashsalt": "peftbench", "svg.fonttype": "path", "path.simplify": True,
          "font.family": "DejaVu Sans"}
    if tables is None:
        from peftbench.report.tables import build_tables

        tables = build_tables(coll)
    # The tables' rows only: an lr grid's tuned-away cells are a selection table, not results to plot.
    coll = dataclasses.replace(coll, groups=[g for t in tables for g in t.groups])
    with matplotlib.rc_context(rc):
        _plot_pareto(plt, coll, out_dir, written, tables)
        for fn in (_plot_memory, _plot_speed, _plot_forgetting):
            fn(plt, coll, out_dir, written)
        _plot_curves(plt, coll, out_dir, written, tables)
    return written
