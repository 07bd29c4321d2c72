"""The results files of the noisy-label experiments: ``results.json``, a markdown table, the plots.

Tables follow the method's layout (rows: methods; columns: noise fraction for each noise
range), each cell the mean +- sample standard deviation over seeds. Plots: mean Dice against
the noise fraction; the mean weight of the clean and of the noisy samples over training, as a
multiple of the uniform weight (weight x batch size; 1 = the plain mean), from each run's
``samples.csv``.
"""

from __future__ import annotations

import csv
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctv_core.training.run_folder import write_json

#: The method's published mean Dice on JSRT (batch 32, 256 x 256): (method, fraction, range) -> Dice.
PAPER = {("baseline", 0.0, None): 0.915, ("baseline", 0.75, "5-13"): 0.621, ("qam", 0.75, "5-13"): 0.636,
         ("qam+ocm", 0.75, "5-13"): 0.892}


def mean_sd(values: Sequence[float]) -> str:
    """``"0.912 ± 0.004"``: mean and sample standard deviation over seeds, with ``" (n=2)"`` under three
    seeds; one seed has no spread: ``"0.912 (n=1)"``."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    sd = float(np.std(values, ddof=1))
    return f"{np.mean(values):.3f} ± {sd:.3f}" + ("" if len(values) >= 3 else f" (n={len(values)})")


def _noise_label(fraction: float | None, noise_range: str | None) -> str:
    if fraction is None:
        return f"{noise_range} noise"
    return "0 %" if noise_range is None else f"{fraction * 100:.0f} % {noise_range} px"


def table(rows: list[dict[str, Any]], key: str = "mean_dice", structure: str | None = None) -> str:
    """Markdown: one row per method, one column per noise setting, mean ± sd over seeds."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    methods, settings = [], []
    for row in rows:
        setting = (row["noise_fraction"], row["noise_range"])
        methods += [row["method"]] if row["method"] not in methods else []
        settings += [setting] if setting not in settings else []
        cells[(row["method"], setting)].append(row["dice"][structure] if structure else row[key])
    settings.sort(key=lambda s: (s[1] is not None, s[1] or "", s[0]))
    head = "| method | " + " | ".join(_noise_label(*s) for s in settings) + " |"
    lines = [head, "|" + "---|" * (len(settings) + 1)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(mean_sd(cells[(method, s)]) for s in settings) + " |")
    return "\n".join(lines)


def beside_paper(rows: list[dict[str, Any]]) -> str:
    """Markdown: ours (mean ± sd) beside the method's published numbers where it gives them."""
    lines = ["| method | noise | structures (ours, mean over seeds) | mean Dice, ours | mean Dice, paper |",
             "|---|---|---|---|---|"]
    for (method, fraction, noise_range), paper in PAPER.items():
        mine = [r for r in rows if (r["method"], r["noise_fraction"], r["noise_range"]) == (method, fraction,
                                                                                             noise_range)]
        parts = ", ".join(f"{k} {np.mean([r['dice'][k] for r in mine]):.3f}" for k in (mine[0]["dice"] if mine else {}))
        lines.append(f"| {method} | {_noise_label(fraction, noise_range)} | {parts or '–'} | "
                     f"{mean_sd([r['mean_dice'] for r in mine])} | {paper:.3f} |")
    return "\n".join(lines)


def plot_dice_vs_noise(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """Mean Dice (± sd over seeds) against the noise fraction, one panel per noise range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranges = sorted({r["noise_range"] for r in rows if r["noise_range"] is not None})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(ranges)), figsize=(5.5 * max(1, len(ranges)), 4), squeeze=False)
    for ax, noise_range in zip(axes[0], ranges or [None]):
        for method in methods:
            xs, means, sds = [], [], []
            for fraction in sorted({r["noise_fraction"] for r in rows}):
                values = [r["mean_dice"] for r in rows if r["method"] == method and r["noise_fraction"] == fraction
                          and (r["noise_range"] == noise_range or r["noise_range"] is None)]
                if values:
                    xs.append(100 * fraction)
                    means.append(np.mean(values))
                    sds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=method)
        for (method, fraction, r), value in PAPER.items():
            if r in (noise_range, None):
                ax.plot([100 * fraction], [value], marker="*", markersize=11, linestyle="none", color="grey")
        ax.set_xlabel(f"noisy training cases, % (range {noise_range} px at 256 x 256)")
        ax.set_ylabel("mean Dice on clean test labels")
        ax.grid(alpha=0.3)
        ax.legend(title="grey stars: published", fontsize=8)
    fig.suptitle(textwrap.fill(title, width=int(12 * fig.get_figwidth())), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def weight_curves(samples_csv: Path, noisy: set[str], bins: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step bin: the mean relative weight (weight x batch) of clean and of noisy samples."""
    steps, rel, is_noisy = [], [], []
    per_step: dict[int, int] = defaultdict(int)
    with open(samples_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        per_step[int(row["step"])] += 1
    for row in rows:
        step = int(row["step"])
        steps.append(step)
        rel.append(float(row["weight"]) * per_step[step])
        is_noisy.append(row["case_id"] in noisy)
    steps_a, rel_a, noisy_a = np.asarray(steps), np.asarray(rel), np.asarray(is_noisy)
    edges = np.linspace(steps_a.min() - 0.5, steps_a.max() + 0.5, bins + 1)
    which = np.clip(np.digitize(steps_a, edges) - 1, 0, bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    clean_mean = np.array([rel_a[(which == b) & ~noisy_a].mean() if np.any((which == b) & ~noisy_a) else np.nan
                           for b in range(bins)])
    noisy_mean = np.array([rel_a[(which == b) & noisy_a].mean() if np.any((which == b) & noisy_a) else np.nan
                           for b in range(bins)])
    return centres, clean_mean, noisy_mean


def _late_weights(samples_csv: Path, last_fraction: float) -> dict[str, list[float]]:
    """Case id -> relative weights (weight x batch) of its samples in the last ``last_fraction`` of the steps."""
    with open(samples_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    last = max(int(r["step"]) for r in rows)
    per_step: dict[int, int] = defaultdict(int)
    for row in rows:
        per_step[int(row["step"])] += 1
    out: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if int(row["step"]) > (1 - last_fraction) * last:
            out[row["case_id"]].append(float(row["weight"]) * per_step[int(row["step"])])
    return out


def change_kind(changes: list[list[Any]] | None) -> str:
    """``"clean"``, ``"dilated"`` (more than half of the changed structures dilated) or
    ``"eroded"``, from one case's noise record (``[structure, operation, distance]`` per change)."""
    if not changes:
        return "clean"
    return "dilated" if sum(c[1] == "dilate" for c in changes) * 2 > len(changes) else "eroded"


def weight_separation(samples_csv: Path, noise: dict[str, list[list[Any]]],
                      checkpoints: int = 10) -> list[dict[str, Any]]:
    """How well the QAM's weights tell clean training samples from corrupted ones, over training.

    The steps are cut into ``checkpoints`` equal spans (at most one per step); in each, the relative weights (weight x batch
    size) of the samples seen are compared as a ranking: AUC = the probability that a clean sample
    outweighs a dilated (``auc_dilated``) or an eroded (``auc_eroded``) one, ties counted half (the
    Mann-Whitney U over the two sets' sizes). 0.5 = no separation, 1 = every clean sample above every
    corrupted one, below 0.5 = the corrupted samples trusted more. ``None`` where a span holds no sample
    of a kind. ``step`` is the span's last step."""
    from scipy.stats import mannwhitneyu

    with open(samples_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    per_step: dict[int, int] = defaultdict(int)
    for row in rows:
        per_step[int(row["step"])] += 1
    last = max(per_step)
    checkpoints = min(checkpoints, last)
    spans: list[dict[str, list[float]]] = [defaultdict(list) for _ in range(checkpoints)]
    for row in rows:
        step = int(row["step"])
        span = min(checkpoints - 1, (step - 1) * checkpoints // last)
        spans[span][change_kind(noise.get(row["case_id"]))].append(float(row["weight"]) * per_step[step])

    def auc(clean: list[float], corrupted: list[float]) -> float | None:
        if not clean or not corrupted:
            return None
        return float(mannwhitneyu(clean, corrupted).statistic / (len(clean) * len(corrupted)))

    return [{"step": round((k + 1) * last / checkpoints), "auc_dilated": auc(span["clean"], span["dilated"]),
             "auc_eroded": auc(span["clean"], span["eroded"])} for k, span in enumerate(spans)]


def separation_table(results: list[dict[str, Any]]) -> str:
    """Markdown: the weights' AUC clean-versus-dilated and clean-versus-eroded at each checkpoint (runs'
    ``weight_separation``), mean over seeds, per weighted method and noise setting."""
    cells: dict[tuple, list[list[dict[str, Any]]]] = defaultdict(list)
    for result in results:
        row = result["row"]
        if result.get("weight_separation"):
            cells[(row["method"], _noise_label(row["noise_fraction"], row["noise_range"]))].append(
                result["weight_separation"])
    if not cells:
        return "(no weighted run with noisy labels has finished)"

    def mean_of(curves: list[list[dict[str, Any]]], k: int, key: str) -> str:
        values = [c[k][key] for c in curves if c[k][key] is not None]
        return f"{np.mean(values):.2f}" if values else "–"

    steps = [point["step"] for point in next(iter(cells.values()))[0]]
    lines = ["| method | noise | seeds | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|---|---|" + "---|" * len(steps)]
    for (method, noise), curves in sorted(cells.items()):
        lines.append(f"| {method} | {noise} | {len(curves)} | " + " | ".join(
            f"{mean_of(curves, k, 'auc_dilated')} / {mean_of(curves, k, 'auc_eroded')}" for k in range(len(steps)))
            + " |")
    return "\n".join(lines)


def weights_by_change(results: list[dict[str, Any]], samples: list[Path], last_fraction: float = 0.25) -> str:
    """Markdown: mean relative weight in the last quarter of training of clean labels, of labels whose
    structures were mostly dilated (at least 2 of 3) and mostly eroded, per method and noise setting."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result, path in zip(results, samples):
        row = result["row"]
        if row["method"] == "baseline" or row["noise_range"] is None or "noise" not in result or not path.exists():
            continue
        for case_id, weights in _late_weights(path, last_fraction).items():
            kind = {"clean": "clean", "dilated": "mostly dilated", "eroded": "mostly eroded"}[
                change_kind(result["noise"].get(case_id))]
            cells[(row["method"], _noise_label(row["noise_fraction"], row["noise_range"]))][kind].extend(weights)
    kinds = ("clean", "mostly dilated", "mostly eroded")
    lines = ["| method | noise | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for (method, noise), by_kind in sorted(cells.items()):
        lines.append(f"| {method} | {noise} | " + " | ".join(
            f"{np.mean(by_kind[k]):.2f}" if by_kind[k] else "–" for k in kinds) + " |")
    return "\n".join(lines)


def plot_weights(results: list[dict[str, Any]], samples: list[Path], out: Path, title: str,
                 settings: list[tuple[float, str | None]]) -> None:
    """Mean relative weight of clean (solid) and noisy (dashed) samples over training, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(settings))
    rows = -(-len(settings) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(settings):]:
        ax.axis("off")
    colours = {"qam": "tab:orange", "qam+ocm": "tab:green", "baseline": "tab:blue"}
    for ax, setting in zip(axes.flat, settings):
        for method in ("qam", "qam+ocm"):
            curves = []
            for result, path in zip(results, samples):
                row = result["row"]
                if (row["method"], row.get("noise_fraction"), row.get("noise_range")) == (method, *setting) \
                        and path.exists():
                    curves.append(weight_curves(path, set(result["noisy_cases"])))
            if not curves:
                continue
            x = curves[0][0]
            with warnings.catch_warnings():  # a bin without clean (or noisy) samples in every seed stays empty
                warnings.simplefilter("ignore", RuntimeWarning)
                clean, noisy = (np.nanmean([c[k] for c in curves], axis=0) for k in (1, 2))
            ax.plot(x, clean, color=colours[method], label=f"{method}: clean")
            ax.plot(x, noisy, color=colours[method], linestyle="--", label=f"{method}: noisy")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(_noise_label(*setting))
        ax.set_xlabel("training step")
        ax.set_ylabel("mean weight x batch size")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, width=int(12 * fig.get_figwidth())), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _rows(results: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """The runs' rows, written to ``path`` (a JSON list) in any case."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r["row"] for r in results]
    write_json(path, rows)
    return rows


def write_report_2d(results: list[dict[str, Any]], work: Path, out_dir: Path, config: Any) -> None:
    """``results.json``, ``results.md``, ``dice_vs_noise.png``, ``weights_over_training.png`` in ``out_dir``."""
    rows = _rows(results, out_dir / "results.json")
    if not rows:
        return
    names = [_name(r["row"]) for r in results]
    straight = [r["seconds"] for r in results if not r.get("resumed_from")]  # a resumed run timed its last part only
    timing = (f"Wall time of a run not resumed: median {np.median(straight):.0f} s ({len(straight)} runs)"
              if straight else "Every run was resumed (no wall time per run)")
    lines = ["# JSRT noisy-label reproduction (generated by run_2d.py; see README.md)", "",
             f"{len(rows)} runs; training images {results[0]['image_size']} x {results[0]['image_size']}, batch "
             f"{results[0]['batch_size']}, {results[0]['steps']} steps; Dice at 256 x 256 on the clean labels of the "
             f"test cases; mean ± sample sd over seeds. {timing}.", "",
             "## Mean Dice (lungs, heart, clavicles)", "", table(rows), "",
             "## Beside the method's published numbers", "", beside_paper(rows), ""]
    for structure in rows[0]["dice"]:
        lines += [f"## Dice, {structure}", "", table(rows, structure=structure), ""]
    lines += ["## Which labels the QAM trusts", "",
              "Mean weight x batch size (1 = the plain mean) in the last quarter of training, mean over the "
              "samples and seeds, by what the noise did to the label:", "",
              weights_by_change(results, [work / name / "samples.csv" for name in names]), "",
              "AUC of the weights, clean against mostly dilated / clean against mostly eroded training samples "
              "(the probability that a clean sample outweighs a corrupted one; 0.5 = no separation), over "
              "training, mean over seeds:", "", separation_table(results), ""]
    (out_dir / "results.md").write_text("\n".join(lines), encoding="utf-8")
    plot_dice_vs_noise(rows, out_dir / "dice_vs_noise.png", "JSRT, 2D U-Net: mean Dice against label noise")
    noisy_settings = sorted({(r["noise_fraction"], r["noise_range"]) for r in rows if r["noise_range"]},
                            key=lambda s: (s[1], s[0]))
    plot_weights(results, [work / name / "samples.csv" for name in names], out_dir / "weights_over_training.png",
                 "JSRT: mean weight of clean and noisy training samples", noisy_settings)


def write_report_3d(results: list[dict[str, Any]], work: Path, out_dir: Path, config: Any) -> None:
    """``results_3d.json``, ``results_3d.md`` and ``weights_over_training_3d.png`` in ``out_dir``."""
    rows = _rows(results, out_dir / "results_3d.json")
    if not rows:
        return
    first, seconds = results[0], [r["seconds"] for r in results]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    clinicians: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        if result["row"]["method"] == methods[0]:
            for case in result["clinicians"].values():
                clinicians[case["clinician"]].append(case)
    lines = ["# 3D phantoms with clinic-like noisy CTVs, batch size 1 (generated by run_3d.py; see README.md)", "",
             f"{len(rows)} runs; each step one group of {first['batch_size']} patches processed "
             f"{first['micro_batch'] or first['batch_size']} at a time, {first['steps']} steps; Dice of the exported "
             f"model's prediction (CTVPredictor, CT grid) against the clean truth of {len(first['dice_per_phantom'])} "
             f"unseen phantoms; mean ± sample sd over seeds. Wall time per run: median {np.median(seconds):.0f} s.",
             "", "| method | test Dice (mean ± sd over seeds) | per seed |", "|---|---|---|"]
    for method in methods:
        values = [r["mean_dice"] for r in rows if r["method"] == method]
        per_seed = ", ".join(f"{r['seed']}: {r['mean_dice']:.3f}" for r in rows if r["method"] == method)
        lines.append(f"| {method} | {mean_sd(values)} | {per_seed} |")
    lines += ["", "Training labels as the simulated clinicians drew them (over every seed's training set):", "",
              "| clinician | cases | margin drawn, mm (mean) | skipped slices (mean per case) | label Dice vs truth |",
              "|---|---|---|---|---|"]
    for name, cases in clinicians.items():
        lines.append(f"| {name} | {len(cases)} | {np.mean([c['margin_mm'] for c in cases]):+.1f} | "
                     f"{np.mean([c['skipped_slices'] for c in cases]):.1f} | "
                     f"{np.mean([c['label_dice'] for c in cases]):.3f} |")
    names = [f"{r['row']['method']}/seed{r['row']['seed']}" for r in results]
    samples = [work / name / "run" / "samples.csv" for name in names]
    trusted: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result, path in zip(results, samples):
        if result["row"]["method"] != "baseline":
            for case_id, weights in _late_weights(path, 0.25).items():
                trusted[result["row"]["method"]][result["clinicians"][case_id]["clinician"]].extend(weights)
    if trusted:
        names_c = list(clinicians)
        lines += ["", "Mean weight x batch size (1 = the plain mean) of each clinician's cases in the last quarter of "
                  "training, over the samples and seeds:", "", "| method | " + " | ".join(names_c) + " |",
                  "|---|" + "---|" * len(names_c)]
        for method, by_clinician in trusted.items():
            lines.append(f"| {method} | " + " | ".join(
                f"{np.mean(by_clinician[c]):.2f}" if by_clinician[c] else "–" for c in names_c) + " |")
    (out_dir / "results_3d.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_weights([dict(r, row=dict(r["row"], noise_fraction=None, noise_range="clinic")) for r in results],
                 samples, out_dir / "weights_over_training_3d.png",
                 "3D phantoms, batch 1 (groups of micro-batches): mean weight of exact and noisy clinicians' cases",
                 [(None, "clinic")])


def _name(row: dict[str, Any]) -> str:
    if row["noise_range"] is None:
        noise = "clean"
    else:
        noise = f"{int(round(row['noise_fraction'] * 100))}pct_{row['noise_range']}px"
    return f"{row['method']}/{noise}/seed{row['seed']}"
