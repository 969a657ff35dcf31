"""Choices on val, test scored once: pick the best generative and the best non-generative row by their
val recall, then state the verdict on test — the chosen generative row against the chosen non-generative
row, the best dense and late-interaction rows, and the BM25 lexical control, each as a paired difference with
its 95% interval."""

from __future__ import annotations

from collections.abc import Sequence

from grace.stats import SIGNIFICANCE, compare_to, seeds_comparison

#: the order rows are ranked in on val: R@1, then R@5, then R@10 to break ties
SELECTION_KEYS = ("recall@1", "recall@5", "recall@10")
#: the non-generative families whose best row (on val) the verdict also names: a row's kind without ``_expanded``
FAMILIES = {"dense": "clip_faiss", "late_interaction": "late_interaction"}


def best_on(results: dict[str, dict], names: Sequence[str]) -> str | None:
    """The name among ``names`` with the best (R@1, R@5, R@10) in ``results``; ties keep the first named."""
    present = [n for n in names if n in results]
    return max(present, key=lambda n: tuple(results[n][key] for key in SELECTION_KEYS)) if present else None


def select_on(results: dict[str, dict], generative: Sequence[str], non_generative: Sequence[str],
              split: str = "val") -> dict:
    """``{"split", "keys", "generative", "non_generative", "families", "scores"}``: the rows chosen on ``split``
    (``families``: the best row of each of :data:`FAMILIES` present, e.g. ``{"dense": "clip_faiss_expanded"}``)."""
    scores = {name: {key: results[name][key] for key in SELECTION_KEYS}
              for name in [*generative, *non_generative] if name in results}
    families = {family: best_on(results, [n for n in non_generative if n.removesuffix("_expanded") == kind])
                for family, kind in FAMILIES.items()}
    return {"split": split, "keys": list(SELECTION_KEYS), "generative": best_on(results, generative),
            "non_generative": best_on(results, non_generative),
            "families": {family: best for family, best in families.items() if best}, "scores": scores}


def verdict(test: dict[str, dict], selection: dict, ks: Sequence[int], *, clusters: Sequence | None = None,
            seed: int = 0, controls: Sequence[str] = ("bm25", "sibling")) -> dict:
    """The chosen generative row against the chosen non-generative row, the best row of each family (dense, late
    interaction; chosen on val too) and the controls (lexical, sibling), on test."""
    chosen = selection.get("generative")
    out = {"generative": chosen, "selected_on": selection.get("split"), "against": {}}
    families = selection.get("families", {}).values()
    by_seed = (test.get(chosen, {}).get("training_seeds") or {}).get("gold_ranks") if chosen else None
    if by_seed:
        out["seeds"] = [int(s) for s in by_seed]
        out["over_seeds"] = {}
    for reference in dict.fromkeys([selection.get("non_generative"), *families, *controls]):
        if chosen and reference in test and chosen in test:
            out["against"][reference] = compare_to(test, [chosen], reference, ks, clusters=clusters, seed=seed)[chosen]
            if by_seed:
                out["over_seeds"][reference] = {
                    f"R@{k}": seeds_comparison(list(by_seed.values()), test[reference]["gold_ranks"], k,
                                               clusters=clusters, seed=seed) for k in ks}
    return out


def significance_words(p_mcnemar: float) -> str:
    """How a result file words a difference: significant only at McNemar p < 0.05."""
    return "significant" if p_mcnemar < SIGNIFICANCE else "not significant"


def verdict_markdown(result: dict, ks: Sequence[int]) -> str:
    """One line per comparison: ``structured vs clip_faiss: ΔR@1 −3.2 [−9.0, +2.5] (p 0.31)``."""
    if not result.get("generative") or not result["against"]:
        return ""
    k = min(ks)
    over_seeds = result.get("over_seeds")
    if over_seeds:
        seeds = ", ".join(map(str, result["seeds"]))
        lines = [(f"\nVerdict on test ({result['generative']}, chosen on {result['selected_on']}; over training seeds "
                  f"{seeds}: ΔR@{k} mean ± sd over seeds, [95% paired bootstrap interval of each query's mean hit "
                  f"over the seeds], then each seed's Δ and McNemar p; significant only when every seed's McNemar p "
                  f"< {SIGNIFICANCE} on the same side):\n")]
        for reference, comparison in over_seeds.items():
            c = comparison[f"R@{k}"]
            each = ", ".join(f"{100 * s['diff']:+.1f} (p {s['p_mcnemar']:.2g})" for s in c["per_seed"])
            lines.append(f"- vs {reference}: ΔR@{k} {100 * c['diff']:+.1f} ± {100 * c['sd']:.1f} "
                         f"[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}] points; per seed {each}: "
                         f"{'significant' if c['significant'] else 'not significant'}")
        return "\n".join(lines) + "\n"
    lines = [(f"\nVerdict on test ({result['generative']}, chosen on {result['selected_on']}; one training seed: an "
              "anecdote until --training-seeds adds two more):\n")]
    for reference, comparison in result["against"].items():
        c = comparison[f"R@{k}"]
        floor = 1.0 / c.get("n_boot", 10_000)  # no resample crossed 0: p is below the bootstrap's resolution
        p_boot = f"<{floor:.0e}" if c["p_bootstrap"] < floor else f"{c['p_bootstrap']:.3g}"
        lines.append(f"- vs {reference}: ΔR@{k} {100 * c['diff']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}] "
                     f"points (paired bootstrap p {p_boot}, McNemar p {c['p_mcnemar']:.3g}: "
                     f"{significance_words(c['p_mcnemar'])})")
    return "\n".join(lines) + "\n"
