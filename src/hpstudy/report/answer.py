"""The answer a replication leads with: the headline sentence, the counts and the forest plot.

    >>> data = replication.to_dict()              # replication.json's contract
    >>> headline_text(data), counts_text(data)    # 'Adam is not better than SGD ...', 'Of the ...'
    >>> blocks = headline_section(replication, figdir)   # both, and figures/forest.png
    >>> forest_rows(data)                         # one row per configuration, for the plot

Everything here reads the dict replication.json holds (`hpstudy.tabulate.replication`), so the
page shows exactly what the file says. Where an older file lacks a key of the contract (a cell's
`prediction95`, a claim's `comparisons`, the top-level `headline`), the page says what the file
has instead: no prediction bar, the deciding comparison only, a headline built from the claims.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from hpstudy.report.render import Block, Text

CELL_VERDICTS = ("consistent", "above", "below", "diverged")
CLAIM_VERDICTS = ("supported", "partly supported", "contradicted", "inconclusive")


def cell_verdict(cell: dict) -> str:
    """A cell's verdict as replication.json states it; from an older file, where "inside" meant
    our interval, the same words (a seed that diverged or sat at chance makes it "diverged")."""
    verdict = cell.get("verdict") or ""
    if "prediction95" in cell and verdict in CELL_VERDICTS:
        return verdict
    if any("diverged" in f or "chance" in f for f in cell.get("flags", ())):
        return "diverged"
    return {"inside": "consistent"}.get(verdict, verdict)


def _config_id(cell: dict) -> str:
    return str(cell.get("config_id") or json.dumps(cell.get("config", {}), sort_keys=True))


def counts_text(data: dict) -> str:
    """'Of the paper's 18 numbers (15 configurations): ...; of its 5 conclusions: ...'."""
    cells, claims = data.get("cells", []), data.get("claims", [])
    places = Counter(cell_verdict(c) for c in cells)
    said = Counter(c.get("verdict") for c in claims)
    n_configs = len({_config_id(c) for c in cells})
    with_pi = any("prediction95" in c for c in cells)
    yardstick = "our 95% prediction interval for one run" if with_pi else "our 95% interval"
    parts = [f"{places[k]} {k}" for k in CELL_VERDICTS if places[k] or k != "diverged"]
    text = (f"Of the paper's {len(cells)} published numbers ({n_configs} configurations, "
            f"{data.get('n_seeds', '?')} seeds each), against {yardstick}: "
            f"{', '.join(parts)}.")  # fmt: skip
    if claims:
        shown = [k for k in CLAIM_VERDICTS if said[k] or k != "partly supported"]
        said_parts = [f"{said[k]} {k}" for k in shown]
        text += f" Of its {len(claims)} conclusions: {', '.join(said_parts)}."
    return text


def headline_text(data: dict) -> str:
    """replication.json's headline; an older file gets one built from its claims."""
    if data.get("headline"):
        return str(data["headline"])
    claims = data.get("claims", [])
    held = [c for c in claims if c.get("verdict") == "supported"]
    failed = [c for c in claims if c.get("verdict") == "contradicted"]
    bits = []
    if failed:
        bits.append("contradicted: " + "; ".join(_claim_short(c) for c in failed))
    if held:
        bits.append("holds: " + "; ".join(_claim_short(c) for c in held))
    if not bits:
        return "None of the paper's conclusions is decided by our seeds either way."
    return (". ".join(b[0].upper() + b[1:] for b in bits)) + "."


def _claim_short(claim: dict) -> str:
    text = str(claim.get("text", claim.get("id", "")))
    return re.sub(r" \([^)]*\)", "", text)  # 'T4 is the best topology', without '(Table I: ...)'


def headline_section(replication, figdir) -> list[Block]:
    """The answer first: the headline sentence, the counts, and the forest plot."""
    from hpstudy.report import figures
    from hpstudy.report.render import Figure

    if replication is None or not replication.cells:
        return []
    data = replication.to_dict()
    blocks: list[Block] = [Text(headline_text(data), "headline", "headline"),
                           Text(counts_text(data), "counts", "counts")]  # fmt: skip
    rows, comparisons = forest_rows(data), forest_comparisons(data)
    path = figures.plot_forest(rows, comparisons, figdir / "forest.png")
    blocks.append(Figure(path, "Every configuration the paper measured, against our seeds: "
                               "open circles are our seeds, the dark bar the 95% t-interval of "
                               "our mean, the light bar where one run of ours would land (95% "
                               "prediction interval), the diamond the paper's number, coloured by "
                               "its verdict. Right: each claim's paired difference (claimed "
                               "winner minus the alternative) with its 95% interval.",
                         "forest"))  # fmt: skip
    return blocks


def forest_rows(data: dict) -> list[dict]:
    """One row per configuration, under the first table that published it."""
    rows: dict[str, dict] = {}
    for cell in data.get("cells", []):
        verdict = cell_verdict(cell)
        key = _config_id(cell)
        if key in rows:
            row = rows[key]
            row["papers"].append((cell["published"], verdict))
            row["label"] += f" (= {cell['table']} {cell['row']})"
            continue
        rows[key] = {
            "group": f"Table {cell['table']}",
            "label": str(cell["row"]),
            "accuracies": [a for a in cell.get("accuracies", []) if a is not None],
            "ci95": cell.get("ci95"),
            "prediction95": cell.get("prediction95"),
            "papers": [(cell["published"], verdict)],
            "verdict": verdict,
            "diverged": verdict == "diverged",
        }
    return list(rows.values())


def forest_comparisons(data: dict) -> list[dict]:
    """The claims' paired differences; an older file has one per claim (the deciding one)."""
    found = []
    for claim in data.get("claims", []):
        comparisons = claim.get("comparisons")
        if comparisons is None:
            comparisons = [{"alternative": "", "estimate": claim.get("estimate"),
                            "ci95": claim.get("ci95")}]  # fmt: skip
        for comp in comparisons:
            alt = comp.get("alternative") or ""
            label = (
                f"{claim['id']}: {claim.get('row', '')} vs {alt}".replace("  ", " ")
                if alt
                else f"claim {claim['id']}"
            )
            found.append({"label": label, "estimate": comp.get("estimate"),
                          "ci95": comp.get("ci95"), "verdict": claim.get("verdict")})  # fmt: skip
    return found


def recommended_blocks(data: dict) -> list[Block]:
    """replication.json's `recommended`, `final_model` and `paper_choice`, in one paragraph
    naming one configuration; [] when the file has no recommendation."""
    from hpstudy.config.config import Config

    rec, final, paper = data.get("recommended"), data.get("final_model"), data.get("paper_choice")
    if not rec:
        return []
    text = "Which configuration to use: " + rec["text"]
    if final:
        accuracy = _p(final.get("test_accuracy"))
        text += (f" The final model is the recommended configuration at the first seed "
                 f"({final['seed']}, fixed in advance): {accuracy}% test accuracy.")  # fmt: skip
    if paper and paper.get("mean") is not None:
        low, high = paper["ci95"]
        text += (f" The paper's choice, {_config_text(Config.from_dict(paper['config']))}, has "
                 f"our mean {_p(paper['mean'])}% [{_p(low)}, {_p(high)}].")  # fmt: skip
    return [Text(text, "note")]


def _config_text(config) -> str:
    from hpstudy.config.factors import config_text

    return config_text(config)


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"
