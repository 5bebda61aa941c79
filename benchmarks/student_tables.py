"""The student benchmarks' tables: per-run JSON files aggregated over seeds, the gap closed, the targets and
the accuracy-against-agreement figure (attribution_preservation.py writes them; inc_attribution.py reuses
the table)."""

import json
from pathlib import Path
from typing import Optional

import numpy as np
from records import settings_record

from nncf_wcam.evaluation.figures import save_png
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING_DEFAULTS
from nncf_wcam.zoo.models import SmallCNN

LAYER = SmallCNN.LAST_CONV_BLOCK
METHODS = ("grad_cam", "saliency", "integrated_gradients")
SHORT = {"grad_cam": "Grad-CAM", "saliency": "Saliency", "integrated_gradients": "IG"}


def load_runs(runs_dir: Path, seed: Optional[int] = None) -> dict:
    """{algorithm: {variant: [result, ...]}} from the per-run JSON files (of one seed, given `seed`)."""
    runs = {}
    for path in sorted(runs_dir.glob("*.json")):
        record = json.loads(path.read_text())
        if seed is not None and record["seed"] != seed:
            continue
        runs.setdefault(record["algorithm"], {}).setdefault(record["variant"], []).append(record["result"])
    return runs


def mean_std(values) -> dict:
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not len(values):
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def aggregate(results: list) -> dict:
    stats = {"accuracy": mean_std([r["accuracy"] for r in results])}
    for method in METHODS:
        stats[method] = mean_std([r[method]["pearson"] for r in results])
    return stats


def gap_closed(variant: dict, naive: dict, method: str) -> float:
    """Share of the naive gap to perfect agreement (r = 1) that a variant closes."""
    gap = 1.0 - naive[method]["mean"]
    return float("nan") if gap <= 0 else (variant[method]["mean"] - naive[method]["mean"]) / gap


def summarize_runs(runs: dict) -> dict:
    summary = {}
    for algorithm, per_variant in runs.items():
        summary[algorithm] = {variant: aggregate(results) for variant, results in per_variant.items()}
        naive = summary[algorithm].get("naive")
        for variant, stats in summary[algorithm].items():
            if naive is None:
                continue
            stats["gap_closed"] = {m: gap_closed(stats, naive, m) for m in METHODS}
            stats["accuracy_vs_naive_pt"] = 100 * (stats["accuracy"]["mean"] - naive["accuracy"]["mean"])
    return summary


def _pct(value: float) -> str:
    return "-" if value is None or np.isnan(value) else f"{value * 100:.0f} %"


def main_table(summary: dict, variant_names: list) -> str:
    lines = [
        "| algorithm | variant | seeds | accuracy % | Δ acc vs naive (pt) | Grad-CAM r | Saliency r | IG r | gap closed Grad-CAM | gap closed Saliency | gap closed IG |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algorithm, per_variant in summary.items():
        for variant in [v for v in variant_names if v in per_variant]:
            s = per_variant[variant]
            cells = [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in METHODS]
            closed = [_pct(s.get("gap_closed", {}).get(m)) if variant != "naive" else "-" for m in METHODS]
            delta = "-" if variant == "naive" or "accuracy_vs_naive_pt" not in s else f"{s['accuracy_vs_naive_pt']:+.2f}"
            lines.append(
                f"| {algorithm} | {variant} | {s['accuracy']['n']} | {s['accuracy']['mean'] * 100:.2f} ± {s['accuracy']['std'] * 100:.2f} | {delta} | "
                + " | ".join(cells) + " | " + " | ".join(closed) + " |"
            )
    return "\n".join(lines) + "\n"


def targets(summary: dict) -> str:
    """The targets, met or missed, from the means over seeds."""
    lines = ["| algorithm | default block: Grad-CAM gap closed ≥ 80 % at acc ≥ naive − 0.3 pt | input method: Saliency / IG gap ≥ 50 % | int4 acc std ≤ 2 pt (worst variant) |", "|---|---|---|---|"]
    for algorithm, per_variant in summary.items():
        am, am_input = per_variant.get("am"), per_variant.get("am_input")
        cell_am = cell_in = "-"
        if am and "gap_closed" in am:
            ok = am["gap_closed"]["grad_cam"] >= 0.8 and am["accuracy_vs_naive_pt"] >= -0.3
            cell_am = f"{'met' if ok else 'missed'}: {_pct(am['gap_closed']['grad_cam'])}, {am['accuracy_vs_naive_pt']:+.2f} pt"
        if am_input and "gap_closed" in am_input:
            g = am_input["gap_closed"]
            ok = g["saliency"] >= 0.5 and g["integrated_gradients"] >= 0.5
            cell_in = f"{'met' if ok else 'missed'}: {_pct(g['saliency'])} / {_pct(g['integrated_gradients'])} (Grad-CAM {_pct(g['grad_cam'])})"
        std = "-"
        if algorithm == "int4":
            main = [v for v in ("naive", "kd", "am", "kd_am", "am_input") if v in per_variant]
            worst = max(per_variant[v]["accuracy"]["std"] * 100 for v in main)
            std = f"{'met' if worst <= 2 else 'missed'}: {worst:.2f} pt"
        lines.append(f"| {algorithm} | {cell_am} | {cell_in} | {std} |")
    return "\n".join(lines) + "\n"


def pareto_plot(summary: dict, default_beta: float, path: Path) -> None:
    """Accuracy against Grad-CAM r per algorithm: naive, KD and the default block at each swept beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = list(summary)
    fig, axes = plt.subplots(1, len(algorithms), figsize=(4.2 * len(algorithms), 3.8), squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        per_variant = summary[algorithm]
        points = []
        for variant, stats in per_variant.items():
            beta = default_beta if variant == "am" else float(variant[5:]) if variant.startswith("beta_") else None
            if beta is not None:
                points.append((beta, stats["grad_cam"]["mean"], stats["accuracy"]["mean"] * 100))
        points.sort()
        if points:
            ax.plot([p[1] for p in points], [p[2] for p in points], "-o", color="tab:blue", label="default block, β sweep")
            for beta, r, acc in points:
                ax.annotate(f"β={beta:g}", (r, acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for variant, marker, color in (("naive", "s", "black"), ("kd", "^", "tab:orange"), ("kd_am", "v", "tab:green"), ("am_input", "D", "tab:red")):
            if variant in per_variant:
                s = per_variant[variant]
                ax.errorbar(s["grad_cam"]["mean"], s["accuracy"]["mean"] * 100, xerr=s["grad_cam"]["std"], yerr=s["accuracy"]["std"] * 100, fmt=marker, color=color, label=variant, capsize=2)
        ax.set_title(algorithm)
        ax.set_xlabel(f"Grad-CAM r vs teacher ({LAYER})")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def write_reports(args, header: str) -> dict:
    runs = load_runs(args.output / "runs")
    summary = summarize_runs(runs)
    main_variants = ["naive", "kd", "am", "kd_am", "am_input"]
    default_beta = ATTRIBUTION_MATCHING_DEFAULTS["weight"]
    swept = sorted({(float(v[5:]), v) for per in summary.values() for v in per if v.startswith("beta_")} | {(default_beta, "am")})
    markdown = header + "\n## Variants (mean ± std over seeds)\n\n" + main_table(summary, main_variants)
    if len(swept) > 1:  # with the default β alone the sweep would repeat the table above
        markdown += f"\n## β sweep of the default block (seed {args.seeds[0]}; `am` is the default β = {default_beta:g}, mean of all seeds)\n\n"
        markdown += main_table(summary, ["naive", *[name for _, name in swept]])
    markdown += "\n## Targets\n\n" + targets(summary)
    atomic_write_text(args.output / "table.md", markdown)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": settings_record(args), "summary": summary}, indent=2))
    if summary:
        pareto_plot(summary, default_beta, args.output / "pareto.png")
    print(markdown)
    return summary
