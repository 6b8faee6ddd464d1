"""What the two attribution-members screens (``snapshots.py``, ``short_member.py``) share:
one fit's protein ranking with a set of members, and the table line of a variant."""

import itertools

import numpy as np


def record(ex, net, rows, seed, markers) -> dict:
    """The package's protein ranking of ``net.model`` (with its ``attribution_members_``) on
    ``rows``, and its mean P@5 over the classes with markers."""
    classes = net.classes
    scored = [c for c in range(len(classes)) if classes[c] in markers]
    col = ex.model_rankings([net], rows, ["package"], 500, seed)[0]["package"]["prot"]
    p5 = ex.precision(col, net.features["prot"], markers, classes, scored, 5)
    return {"rank": col, "p5": float(np.mean([v[0] for v in p5.values()]))}


def summary(ex, by_donor: dict) -> tuple[float, float, list[float]]:
    """Spearman and J@20 over every pair of seeds of a donor (mean over both donors), and the
    mean P@5 per donor, of one variant's records ``{donor: [record, ...]}``."""
    rho, jac, p5 = [], [], []
    for recs in by_donor.values():
        p5.append(float(np.mean([r["p5"] for r in recs])))
        for a, b in itertools.combinations(recs, 2):
            r, j = ex.stability(a["rank"], b["rank"], range(a["rank"].shape[1]))
            rho.append(r)
            jac.append(j)
    return float(np.mean(rho)), float(np.mean(jac)), p5
