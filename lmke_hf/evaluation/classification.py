"""Triple classification: accuracy-maximising thresholds (global or per relation) and the classification report."""

from __future__ import annotations

from typing import Any

import numpy as np

from .ranks import ArrayLike, _as_numpy


def _check_probabilities(name: str, scores: ArrayLike) -> np.ndarray:
    arr = _as_numpy(scores, name).astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    num_nan = int(np.isnan(arr).sum())
    if num_nan:
        raise ValueError(f"`{name}` contains {num_nan} NaN value(s).")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"`{name}` must be probabilities in [0, 1], got range [{arr.min():.4g}, {arr.max():.4g}]; "
            "apply a sigmoid (or softmax over the two classes) to logits first."
        )
    return arr


def _check_labels(name: str, labels: ArrayLike, length: int, scores_name: str) -> np.ndarray:
    arr = _as_numpy(labels, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.shape[0] != length:
        raise ValueError(f"`{scores_name}` has length {length} but `{name}` has length {arr.shape[0]}.")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"`{name}` must be binary (0/1 or bool), got values {np.unique(arr)[:10].tolist()}.")
    return arr.astype(bool)


def _check_relations(name: str, relations: ArrayLike, length: int, scores_name: str) -> np.ndarray:
    arr = _as_numpy(relations, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.shape[0] != length:
        raise ValueError(f"`{scores_name}` has length {length} but `{name}` has length {arr.shape[0]}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must be integer relation ids, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def _both_or_neither(purpose: str, **pair) -> None:
    """Refuses one argument of a pair without the other, naming both."""
    (name_a, a), (name_b, b) = pair.items()
    if (a is None) != (b is None):
        given = ", ".join(f"{n}={'None' if v is None else 'given'}" for n, v in pair.items())
        raise ValueError(f"Pass both `{name_a}` and `{name_b}` {purpose}, or neither; got {given}.")


def tune_thresholds(
    scores: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, prefer: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy-maximising decision thresholds, one per group, fully vectorised.

    A triple is predicted true when ``score > threshold``. Candidates per group are the midpoints
    between consecutive sorted unique scores, plus "all true" (just below the smallest score) and
    "all false" (the largest score). Each candidate's accuracy comes from cumulative label counts, so
    the cost is one sort, not a loop over thresholds. Ties go to the candidate nearest ``prefer``.

    Args:
        scores: ``(M,)`` float scores.
        labels: ``(M,)`` bool/0-1 labels.
        groups: ``(M,)`` int group ids (e.g. relations); ``None`` = one global group.
        prefer: tie-break target (the untuned threshold).

    Returns:
        ``(group_ids (G,), thresholds (G,), accuracies (G,))``, group ids ascending.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    g = np.zeros(s.shape[0], dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if s.size == 0:
        raise ValueError("Cannot tune a threshold on zero validation triples.")
    order = np.lexsort((s, g))
    s, y, g = s[order], y[order], g[order]
    # Unique (group, score) runs.
    new_run = np.ones(s.shape[0], dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(new_run) - 1
    num_runs = int(run_id[-1]) + 1
    run_score = s[new_run]
    run_group = g[new_run]
    run_pos = np.bincount(run_id, weights=y, minlength=num_runs)
    run_neg = np.bincount(run_id, weights=~y, minlength=num_runs)

    group_ids, group_start_run, group_num_runs = np.unique(run_group, return_index=True, return_counts=True)
    group_index = np.repeat(np.arange(group_ids.shape[0]), group_num_runs)  # run -> group position
    group_pos = np.bincount(group_index, weights=run_pos)
    group_neg = np.bincount(group_index, weights=run_neg)
    group_size = group_pos + group_neg

    # Within-group cumulative counts up to and including each run.
    cum_pos = np.cumsum(run_pos)
    cum_neg = np.cumsum(run_neg)
    offset_pos = np.concatenate([[0.0], cum_pos])[group_start_run][group_index]
    offset_neg = np.concatenate([[0.0], cum_neg])[group_start_run][group_index]
    pos_le = cum_pos - offset_pos
    neg_le = cum_neg - offset_neg

    # Candidate after run k: everything <= run_score[k] predicted false, the rest true.
    correct_after = neg_le + (group_pos[group_index] - pos_le)
    is_last = np.zeros(num_runs, dtype=bool)
    is_last[group_start_run + group_num_runs - 1] = True
    next_score = np.append(run_score[1:], np.inf)
    thr_after = np.where(is_last, run_score, (run_score + next_score) / 2.0)
    # "All true" candidate per group: threshold just below its smallest score.
    first_score = run_score[group_start_run]
    thr_all_true = np.nextafter(first_score, -np.inf)

    cand_group = np.concatenate([group_index, np.arange(group_ids.shape[0])])
    cand_thr = np.concatenate([thr_after, thr_all_true])
    cand_correct = np.concatenate([correct_after, group_pos])
    # Per group: most correct first, then nearest to `prefer`, then lowest threshold.
    pick = np.lexsort((cand_thr, np.abs(cand_thr - prefer), -cand_correct, cand_group))
    first = np.ones(pick.shape[0], dtype=bool)
    first[1:] = cand_group[pick][1:] != cand_group[pick][:-1]
    best = pick[first]
    return group_ids, cand_thr[best], cand_correct[best] / group_size


def _binary_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tp = float((predictions & labels).sum())
    fp = float((predictions & ~labels).sum())
    fn = float((~predictions & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def classification_report(
    test_scores: ArrayLike,
    test_labels: ArrayLike,
    test_relations: ArrayLike | None = None,
    valid_scores: ArrayLike | None = None,
    valid_labels: ArrayLike | None = None,
    valid_relations: ArrayLike | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Triple-classification accuracy at the paper's fixed threshold and with validation-tuned ones.

    Scores must be probabilities in ``[0, 1]`` that a triple is true (sigmoid of a logit, or the
    positive-class probability of a 2-way softmax). A triple is predicted true when
    ``score > threshold``; with the default 0.5 this equals the original LMKE code's 2-way argmax
    (a tie goes to "false"). The paper tunes no threshold; the tuned numbers are extras in the style
    of KG-BERT/NTN evaluation and are labelled as such.

    Without ``valid_scores``/``valid_labels`` the ``*_tuned_*`` and ``threshold_tuned_global`` keys are
    absent. Per-relation keys additionally need both ``test_relations`` and ``valid_relations``;
    relations of the test set missing from validation use the global tuned threshold.

    Args:
        test_scores: ``(M,)`` probabilities for test triples.
        test_labels: ``(M,)`` 0/1 or bool, 1 = true triple.
        test_relations: ``(M,)`` int relation ids (for per-relation thresholds).
        valid_scores, valid_labels, valid_relations: the same for validation triples (``(V,)``).
        threshold: the fixed threshold (paper: 0.5).

    Returns:
        Always: ``"accuracy"``, ``"precision"``, ``"recall"``, ``"f1"`` (all at ``threshold``; precision
        /recall are 0 when undefined), ``"threshold"``, ``"num_test"``.
        With validation: ``"threshold_tuned_global"``, ``"valid_accuracy_tuned_global"``,
        ``"accuracy_tuned_global"``, ``"num_valid"``.
        With validation and both relation arrays: ``"thresholds_per_relation"`` (``{relation id:
        threshold}``), ``"accuracy_tuned_per_relation"``, ``"num_test_relations_fallback"`` (test
        relations absent from validation, which used the global threshold).

    Example:
        >>> classification_report([0.9, 0.4, 0.6], [1, 0, 0])["accuracy"]
        0.6666666666666666
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must lie in [0, 1] for probability scores, got {threshold}.")
    s_test = _check_probabilities("test_scores", test_scores)
    y_test = _check_labels("test_labels", test_labels, s_test.shape[0], "test_scores")
    if s_test.size == 0:
        raise ValueError("`test_scores` is empty.")
    r_test = (
        None
        if test_relations is None
        else _check_relations("test_relations", test_relations, s_test.shape[0], "test_scores")
    )
    predictions = s_test > threshold
    report: dict[str, Any] = {"accuracy": float((predictions == y_test).mean())}
    report.update(_binary_metrics(predictions, y_test))
    report["threshold"] = float(threshold)
    report["num_test"] = int(s_test.shape[0])

    _both_or_neither("to tune thresholds", valid_scores=valid_scores, valid_labels=valid_labels)
    if valid_scores is None:
        if valid_relations is not None:
            raise ValueError("`valid_relations` was given without `valid_scores`/`valid_labels`.")
        return report
    s_valid = _check_probabilities("valid_scores", valid_scores)
    y_valid = _check_labels("valid_labels", valid_labels, s_valid.shape[0], "valid_scores")
    if s_valid.size == 0:
        raise ValueError("`valid_scores` is empty; pass validation triples or leave it None.")

    _, global_thr, global_acc = tune_thresholds(s_valid, y_valid, prefer=threshold)
    report["threshold_tuned_global"] = float(global_thr[0])
    report["valid_accuracy_tuned_global"] = float(global_acc[0])
    report["accuracy_tuned_global"] = float(((s_test > global_thr[0]) == y_test).mean())
    report["num_valid"] = int(s_valid.shape[0])

    _both_or_neither("for per-relation thresholds", test_relations=test_relations, valid_relations=valid_relations)
    if valid_relations is None:
        return report
    r_valid = _check_relations("valid_relations", valid_relations, s_valid.shape[0], "valid_scores")
    rel_ids, rel_thr, _ = tune_thresholds(s_valid, y_valid, r_valid, prefer=threshold)
    position = np.clip(np.searchsorted(rel_ids, r_test), 0, rel_ids.shape[0] - 1)
    found = rel_ids[position] == r_test
    test_thr = np.where(found, rel_thr[position], global_thr[0])
    report["thresholds_per_relation"] = {int(r): float(t) for r, t in zip(rel_ids.tolist(), rel_thr.tolist())}
    report["accuracy_tuned_per_relation"] = float(((s_test > test_thr) == y_test).mean())
    report["num_test_relations_fallback"] = int(np.unique(r_test[~found]).shape[0])
    return report


__all__ = ["classification_report", "tune_thresholds"]
