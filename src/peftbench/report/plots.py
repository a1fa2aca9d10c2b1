"""Plots for the report: score vs trainable params (Pareto), memory vs size, throughput.

matplotlib is imported inside ``make_plots`` only, so ``import peftbench.report`` stays
instant and works where matplotlib is absent. Figures are written as PNG and SVG with
fixed metadata and a fixed SVG hash salt so reruns give identical files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftbench.report.collect import Collection, Group, family_rank, lower_is_better, size_rank

# Preferred headline metrics, best first; otherwise the first non-loss metric, else any.
PREFERRED = ("acc", "accuracy", "f1", "macro_f1", "mcc", "matthews", "pearson", "spearman", "rouge",
             "bleu", "em", "exact_match", "ppl", "loss")
_SVG_META = {"Date": None, "Creator": "peftbench"}
_PNG_META = {"Software": None}


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s.lower()).strip("_") or "x"


def headline_metric(groups: Sequence[Group]) -> str | None:
    """The metric to plot for a dataset: test over val, task metrics over losses."""
    names = sorted({m for g in groups for m in g.metrics})
    if not names:
        return None

    def rank(m: str) -> tuple[int, int, str]:
        split, _, base = m.rpartition("/")
        split_r = {"test": 0, "val": 1, "validation": 1, "eval": 1}.get(split, 2)
        base_r = PREFERRED.index(base) if base in PREFERRED else (len(PREFERRED) - 2)
        return (base_r, split_r, m)

    return min(names, key=rank)


def pareto_front(points: Sequence[tuple[float, float]], lower_better: bool) -> list[tuple[float, float]]:
    """Points not dominated by one with fewer-or-equal params and a better-or-equal score."""
    front: list[tuple[float, float]] = []
    best = math.inf if lower_better else -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], p[1] if lower_better else -p[1])):
        if (y < best) if lower_better else (y > best):
            front.append((x, y))
            best = y
    return front


def _save(fig: Any, out_dir: Path, name: str, written: list[Path]) -> None:
    for ext, meta in (("png", _PNG_META), ("svg", _SVG_META)):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, format=ext, metadata=meta, dpi=110, bbox_inches="tight")
        written.append(path)


def _label(g: Group, many_sizes: bool) -> str:
    return f"{g.method} ({g.model_family}/{g.model_size})" if many_sizes else g.method


def _plot_pareto(plt: Any, coll: Collection, out_dir: Path, written: list[Path]) -> None:
    datasets = sorted({g.dataset for g in coll.groups})
    for ds in datasets:
        groups = [g for g in coll.groups if g.dataset == ds and g.status == "ok"]
        metric = headline_metric(groups)
        if metric is None:
            continue
        pts = []
        for g in groups:
            tr = g.params.get("trainable")
            st = g.metrics.get(metric)
            if tr is None or st is None or tr.mean <= 0:
                continue
            pts.append((g, tr.mean, st))
        if not pts:
            continue
        many = len({(g.model_family, g.model_size) for g, _, _ in pts}) > 1
        fig, ax = plt.subplots(figsize=(7, 4.5))
        fam_of = {g.method: g.method_family for g, _, _ in pts}
        methods = sorted(fam_of, key=lambda m: (family_rank(fam_of[m]), m))
        cmap = plt.get_cmap("tab10")
        for i, m in enumerate(methods):
            mp = [(g, x, st) for g, x, st in pts if g.method == m]
            ax.errorbar([x for _, x, _ in mp], [st.mean for _, _, st in mp],
                        yerr=[st.std or 0.0 for _, _, st in mp], fmt="o", color=cmap(i % 10),
                        label=f"{m} [{mp[0][0].method_family}]", capsize=3)
            if many:
                for g, x, st in mp:
                    ax.annotate(g.model_size, (x, st.mean), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
        front = pareto_front([(x, st.mean) for _, x, st in pts], lower_is_better(metric))
        if len(front) > 1:
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="0.4",
                    linestyle="--", linewidth=1, label="Pareto front")
        elif front:
            ax.plot([front[0][0]], [front[0][1]], marker="*", markersize=14, color="0.4",
                    linestyle="none", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("trainable params (log scale)")
        ax.set_ylabel(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
        ax.set_title(f"{ds}: {metric} vs trainable params")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        _save(fig, out_dir, f"metric_vs_trainable_{_slug(ds)}", written)
        plt.close(fig)


def _mem_key(groups: Sequence[Group]) -> str | None:
    for k in ("peak_gpu_allocated_mb", "peak_rss_mb"):
        if any(k in g.memory for g in groups):
            return k
    return None


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
    methods = sorted({g.method for g in groups})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(methods):
        # Average over datasets: memory is dominated by model size and method, not the data.
        by_x: dict[int, list[float]] = {}
        for g in groups:
            if g.method == m and key in g.memory:
                by_x.setdefault(xi[(g.model_family, g.model_size)], []).append(g.memory[key].mean)
        if not by_x:
            continue
        xs = sorted(by_x)
        ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], marker="o", color=cmap(i % 10), label=m)
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"{f}/{s}" for f, s in sizes], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(sizes) - 0.5)
    ax.set_xlabel("model / size")
    ax.set_ylabel(f"{key.replace('_', ' ')}")
    ax.set_title("peak memory vs model size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, out_dir, "memory_vs_size", written)
    plt.close(fig)


def _plot_speed(plt: Any, coll: Collection, out_dir: Path, written: list[Path]) -> None:
    groups = [g for g in coll.groups if g.status == "ok"
              and any(k in g.speed for k in ("train_tokens_per_s", "useful_tokens_per_s",
                                             "inference_overhead"))]
    if not groups:
        return
    many = len({(g.model_family, g.model_size, g.dataset) for g in groups}) > 1
    labels = [f"{g.method}\n{g.model_family}/{g.model_size}/{g.dataset}" if many else g.method
              for g in groups]
    xs = list(range(len(groups)))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(groups) + 4), 4.5))
    w = 0.4
    for off, k, lab in ((-w / 2, "train_tokens_per_s", "all tokens/s"),
                        (w / 2, "useful_tokens_per_s", "useful tokens/s")):
        vals = [g.speed[k].mean if k in g.speed else 0.0 for g in groups]
        errs = [(g.speed[k].std or 0.0) if k in g.speed else 0.0 for g in groups]
        a1.bar([x + off for x in xs], vals, width=w, yerr=errs, capsize=2, label=lab)
    a1.set_xticks(xs)
    a1.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    a1.set_ylabel("train tokens/s")
    a1.set_title("training throughput")
    a1.legend(fontsize=7)
    vals = [g.speed["inference_overhead"].mean if "inference_overhead" in g.speed else 0.0 for g in groups]
    a2.bar(xs, vals, width=0.6, color="tab:orange")
    a2.set_xticks(xs)
    a2.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    a2.set_ylabel("inference overhead vs base")
    a2.set_title("inference overhead")
    for a in (a1, a2):
        a.set_xlim(-0.6, len(groups) - 0.4)
        a.grid(True, axis="y", alpha=0.3)
    _save(fig, out_dir, "throughput", written)
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
        _save(fig, out_dir, f"task_vs_forgetting_{_slug(ds)}", written)
        plt.close(fig)


def make_plots(coll: Collection, out_dir: Path) -> list[Path]:
    """Write every plot the data supports (PNG + SVG); returns paths, never raises on thin data."""
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

    plt = _Plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rc = {"svg.hashsalt": "peftbench", "svg.fonttype": "path", "path.simplify": True,
          "font.family": "DejaVu Sans"}
    with matplotlib.rc_context(rc):
        for fn in (_plot_pareto, _plot_memory, _plot_speed, _plot_forgetting):
            fn(plt, coll, out_dir, written)
    return written
