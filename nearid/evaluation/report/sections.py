"""The report's tables: Table-1-style summary, Table-5-style per-source breakdown per condition, foreground-minus-full
deltas (appendix E.7), MTG and DreamBench++ tables, judge answer counts and the work each scorer did."""

from __future__ import annotations

from typing import Any

from nearid.evaluation.metrics import SOURCE_GROUPS, Discrimination, pool
from nearid.evaluation.report.blocks import MISSING, Section, Table, corr, delta, dig, pct
from storage.dreambench import CATEGORIES


GROUP_ROWS = (
    ("training", "Avg. (training)"),
    ("unseen_fill", "Avg. (unseen fill)"),
    ("unseen_canny", "Avg. (unseen Canny)"),
    ("primary", "Avg. (primary 7, Table 1)"),
    ("all", "Avg. (all 9)"),
    ("evaluated", "Avg. (every evaluated source)"),
)
SOURCE_KIND = (
    ("training", "training"),
    ("unseen_fill", "unseen fill"),
    ("unseen_canny", "unseen Canny"),
)
COUNT_KEYS = ("n_samples", "sample_wins", "n_trials", "trial_wins")
CATEGORY_NAMES = {
    "object": "object",
    "live_subject_animal": "animal",
    "live_subject_human": "human",
    "style": "style",
}


def _pooled_group(scorer: dict[str, Any], condition: str) -> str | None:
    groups = dig(scorer, "nearid", condition, "groups") or {}
    return "primary" if "primary" in groups else ("evaluated" if "evaluated" in groups else None)


def summary_section(results: dict[str, Any]) -> Section:
    rows = []
    group_used = set()
    for scorer in results["scorers"]:
        group = _pooled_group(scorer, "full")
        if group:
            group_used.add(group)
        pooled = dig(scorer, "nearid", "full", "groups", group) if group else None
        mtg = dig(scorer, "mtg", "full") or {}
        rows.append(
            (
                scorer["label"],
                pct(dig(pooled, "ssr")),
                pct(dig(pooled, "pa")),
                str(dig(pooled, "n_samples") or MISSING),
                pct(mtg.get("ssr")),
                pct(mtg.get("pa")),
                corr(mtg.get("mo")),
                corr(mtg.get("mo_pair")),
                corr(dig(scorer, "dreambench", "mh", "categories", "object", "mh")),
            )
        )
    header = ("Scorer", "NearID SSR", "NearID PA", "n", "MTG SSR", "MTG PA", "M–O", "M–O pair", "DB++ M–H")
    which = " / ".join(sorted(group_used)) or "none"
    caption = (
        f"Full images. NearID SSR and PA (%) pooled over the {which} sources (support-weighted); M–O and M–H are "
        "Fisher-z means of Pearson correlations; DB++ M–H is the object category."
    )
    return Section("Summary", (Table(header, tuple(rows), caption),))


def trained_sources(results: dict[str, Any]) -> tuple[str, ...]:
    """The distractor sources the evaluated trained models saw (recorded in their releases); empty when none did."""
    return tuple(sorted({source for s in results["scorers"] for source in s.get("training_sources") or ()}))


def source_groups(seen: tuple[str, ...], sources: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, label, members) of the averages to show: the run's own trained-on / unseen split when a trained
    model (trained on ``seen``) is evaluated, the paper's groups only where they describe this run (or no model
    was trained)."""
    paper = [(key, label, SOURCE_GROUPS.get(key, tuple(sources))) for key, label in GROUP_ROWS]
    if not seen:
        return paper
    run = [
        ("run_trained", "Avg. (sources this model trained on)", tuple(s for s in sources if s in seen)),
        ("run_unseen", "Avg. (sources unseen in training)", tuple(s for s in sources if s not in seen)),
    ]
    if set(seen) == set(SOURCE_GROUPS["training"]):
        return run + paper
    return run + [(key, label, members) for key, label, members in paper if key not in dict(SOURCE_KIND)]


def source_kind(seen: tuple[str, ...], source: str) -> str:
    """A source against the evaluated model: trained on / unseen, or its paper group when no model was trained."""
    if seen:
        return "trained on" if source in seen else "unseen"
    return next((name for group, name in SOURCE_KIND if source in SOURCE_GROUPS[group]), "other")


def _pooled(per_source: dict[str, Any], members: tuple[str, ...]) -> dict[str, Any] | None:
    if not members or any(m not in per_source for m in members):
        return None
    counts = {m: Discrimination(*(per_source[m][k] for k in COUNT_KEYS)) for m in members}
    return pool(counts, members).to_dict()


def per_source_section(results: dict[str, Any], condition: str) -> Section | None:
    scorers = [s for s in results["scorers"] if dig(s, "nearid", condition)]
    if not scorers:
        return None
    sources = list(scorers[0]["nearid"][condition]["sources"])
    seen = trained_sources(results)
    header = ["Source", "Kind", "n"] + [f"{s['label']} {m}" for s in scorers for m in ("SSR", "PA")]
    rows = []
    for source in sources:
        kind = source_kind(seen, source)
        n = scorers[0]["nearid"][condition]["sources"][source]["n_samples"]
        cells = [source, kind, str(n)]
        for scorer in scorers:
            values = scorer["nearid"][condition]["sources"][source]
            cells += [pct(values["ssr"]), pct(values["pa"])]
        rows.append(tuple(cells))
    for group, label, members in source_groups(seen, sources):
        pooled = [dig(s, "nearid", condition, "groups", group) for s in scorers]
        if group.startswith("run_"):
            pooled = [_pooled(s["nearid"][condition]["sources"], members) for s in scorers]
        if pooled[0] is None:
            continue
        cells = [label, "pooled", str(pooled[0]["n_samples"])]
        for values in pooled:
            cells += [pct(dig(values, "ssr")), pct(dig(values, "pa"))]
        rows.append(tuple(cells))
    name = "full image" if condition == "full" else "foreground only"
    caption = (
        f"SSR and PA (%) per distractor source, {name}; n = identities with at least one trial. Averages pool "
        "wins and supports over their sources (a group is shown when all its sources were evaluated)."
    )
    if seen:
        caption += f" Trained on: {', '.join(seen)} (recorded in the trained model's release)."
    return Section(f"Per-source discrimination, {name}", (Table(tuple(header), tuple(rows), caption),))


def foreground_section(results: dict[str, Any]) -> Section | None:
    rows = []
    for scorer in results["scorers"]:
        if not (dig(scorer, "nearid", "foreground") or dig(scorer, "mtg", "foreground")):
            continue
        group = _pooled_group(scorer, "full")
        full = dig(scorer, "nearid", "full", "groups", group) if group else None
        fg = dig(scorer, "nearid", "foreground", "groups", group) if group else None
        mo_full, mo_fg = dig(scorer, "mtg", "full", "mo"), dig(scorer, "mtg", "foreground", "mo")
        rows.append(
            (
                scorer["label"],
                pct(dig(full, "ssr")),
                pct(dig(fg, "ssr")),
                delta(dig(full, "ssr"), dig(fg, "ssr"), "+.2f"),
                pct(dig(full, "pa")),
                pct(dig(fg, "pa")),
                delta(dig(full, "pa"), dig(fg, "pa"), "+.2f"),
                corr(mo_full),
                corr(mo_fg),
                delta(mo_full, mo_fg, "+.3f"),
            )
        )
    if not rows:
        return None
    header = ("Scorer", "SSR full", "SSR FG", "Δ SSR", "PA full", "PA FG", "Δ PA", "M–O full", "M–O FG", "Δ M–O")
    caption = (
        "Foreground only (background blacked out with the view's cleaned mask, also on its distractor) minus full."
    )
    return Section("Foreground-only condition", (Table(header, tuple(rows), caption),))


def mtg_section(results: dict[str, Any]) -> Section | None:
    rows = []
    for scorer in results["scorers"]:
        for condition, values in (scorer.get("mtg") or {}).items():
            rows.append(
                (
                    scorer["label"],
                    condition,
                    str(values["n_samples"]),
                    pct(values["ssr"]),
                    pct(values["pa"]),
                    corr(values.get("mo")),
                    corr(values.get("mo_pair")),
                    str(values.get("failed_trials", 0)),
                )
            )
    if not rows:
        return None
    header = ("Scorer", "Condition", "n", "SSR", "PA", "M–O", "M–O pair", "Failed trials")
    caption = (
        "Mind-the-Glitch: margins s(1,2) − s(1,1′) and s(1,2) − s(2,2′); oracle 1 − |part|/|object|. Failed trials "
        "are judge trials without a usable answer, counted as lost."
    )
    return Section("Mind-the-Glitch", (Table(header, tuple(rows), caption),))


def dreambench_section(results: dict[str, Any]) -> Section | None:
    scorers = [s for s in results["scorers"] if dig(s, "dreambench", "mh")]
    if not scorers:
        return None
    header = ("Scorer", *(CATEGORY_NAMES[c] for c in CATEGORIES))
    rows = [
        (s["label"], *(corr(dig(s, "dreambench", "mh", "categories", c, "mh")) for c in CATEGORIES)) for s in scorers
    ]
    ceiling = [corr(dig(scorers[0], "dreambench", "mh", "categories", c, "human_human")) for c in CATEGORIES]
    rows.append(("human 1 vs human 2", *ceiling))
    blocks: list[str | Table] = [
        Table(
            header,
            tuple(rows),
            "M–H: Pearson r with each human group, averaged over the groups, Fisher-z mean over the seven methods.",
        )
    ]
    methods = dig(scorers[0], "dreambench", "mh", "methods") or []
    if methods and dig(scorers[0], "dreambench", "mh", "categories", "object"):
        method_rows = [
            (m, *(corr(dig(s, "dreambench", "mh", "categories", "object", "methods", m, "r")) for s in scorers))
            for m in methods
        ]
        blocks.append(
            Table(("Method", *(s["label"] for s in scorers)), tuple(method_rows), "Object category, per method.")
        )
    return Section("DreamBench++ human alignment", tuple(blocks))


def judge_section(results: dict[str, Any]) -> Section | None:
    rows = []
    for scorer in results["scorers"]:
        judge = scorer.get("judge")
        if judge is None:
            continue
        share = 100.0 * judge["unparseable"] / judge["answers"] if judge["answers"] else None
        problems = ", ".join(f"{k}: {v}" for k, v in judge["problems"].items()) or "none"
        rows.append((scorer["label"], str(judge["answers"]), str(judge["unparseable"]), pct(share), problems))
    if not rows:
        return None
    header = ("Scorer", "Answers", "Unparseable", "Unparseable %", "Problems")
    caption = "Unique judged pairs; an unusable answer loses every trial it takes part in and leaves the correlations."
    return Section("VLM judge answers", (Table(header, tuple(rows), caption),))


def work_section(results: dict[str, Any]) -> Section:
    rows = []
    for scorer in results["scorers"]:
        for benchmark, stats in scorer.get("work", {}).items():
            rate = stats.get("per_second")
            rows.append(
                (
                    scorer["label"],
                    benchmark,
                    stats["unit"],
                    str(stats["naive"]),
                    str(stats["unique"]),
                    str(stats["cache_hits"]),
                    str(stats["shared"]),
                    str(stats["computed"]),
                    MISSING if rate is None else f"{rate:.1f}",
                )
            )
    header = ("Scorer", "Benchmark", "Unit", "Naive", "Unique", "Cache hits", "Shared", "Computed", "Per second")
    caption = (
        "Naive: what a per-source evaluation computes; unique: distinct inputs; cache hits: found in the score cache; "
        "shared: computed earlier in this run for another benchmark; computed: model work done now."
    )
    return Section("Work done", (Table(header, tuple(rows), caption),))
