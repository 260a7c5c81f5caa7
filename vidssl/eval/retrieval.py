"""Video retrieval (docs/evaluation.md): test videos query the train set by cosine similarity."""

from __future__ import annotations

from vidssl.errors import DataError
from vidssl.eval.features import FeatureSet
from vidssl.eval.metrics import recall_at_k


def check_groups_disjoint(queries: FeatureSet, gallery: FeatureSet) -> None:
    """Refuse a gallery that shares recording groups (UCF101 ``gNN``) with the queries: clips of
    one group are near-duplicates and would make retrieval trivially easy."""
    shared = (set(queries.groups) & set(gallery.groups)) - {""}
    if shared:
        raise DataError(f"the retrieval gallery shares {len(shared)} recording group(s) with the queries "
                        f"(e.g. {sorted(shared)[:3]}): use a split whose train and test groups are disjoint")


def retrieve(queries: FeatureSet, gallery: FeatureSet, ks: tuple[int, ...] = (1, 5, 10, 20, 50),
             grid_queries: int = 6, grid_k: int = 5) -> dict:
    """R@k and a few queries with their nearest neighbours (for the report's grid)."""
    check_groups_disjoint(queries, gallery)
    metrics, top = recall_at_k(queries.features, queries.labels, gallery.features, gallery.labels, ks)
    picks = sorted({round(i * (len(queries.paths) - 1) / max(grid_queries - 1, 1)) for i in range(grid_queries)})
    grid = [{"query": queries.paths[q], "query_label": int(queries.labels[q]),
             "neighbours": [{"path": gallery.paths[j], "label": int(gallery.labels[j])}
                            for j in top[q, :grid_k].tolist()]}
            for q in picks]
    return {"metrics": metrics, "grid": grid}
