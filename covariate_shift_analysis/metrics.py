"""Distances between two samples of embeddings (rows are instances, columns are dimensions).

- Fréchet distance (squared 2-Wasserstein between the fitted Gaussians, as in FID).
- Gaussian KL, KL(N_x ‖ N_y): how unlikely the compared set's states are under a Gaussian fitted
  to the reference set (x = compared set, y = reference).
- MMD² with an RBF kernel (unbiased estimate; can dip slightly below 0 when there is no difference).
- Classifier two-sample AUC: cross-validated logistic regression telling the two sets apart;
  0.5 = indistinguishable, 1.0 = perfectly separable.

Covariance regularization: the fitted covariances get `eps·I` added. With fewer instances than
embedding dimensions (the usual case: tens to hundreds of instances, 384 dimensions) the sample
covariance is singular, so its inverse (KL) and log-determinant (KL) do not exist and its square
root (Fréchet) is numerically unstable; the ridge makes both finite. It also inflates KL in the
directions where one set has no spread, so compare values computed with the same eps (or use PCA).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist, pdist

DEFAULT_EPS = 1e-4  # ~4% of a unit-norm 384-d embedding's per-dimension variance (1/384 ≈ 2.6e-3)


def gaussian_fit(x: np.ndarray, eps: float = DEFAULT_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (ridge-regularized) sample covariance of the rows of `x`."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("need at least 2 samples (rows) to fit a Gaussian")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (len(x) - 1)  # np.cov, without its overhead (called in every replicate)
    cov[np.diag_indices_from(cov)] += eps
    return mean, cov


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_gaussians(mu1: np.ndarray, c1: np.ndarray, mu2: np.ndarray, c2: np.ndarray) -> float:
    """||mu1-mu2||² + tr(C1 + C2 - 2 (C1^½ C2 C1^½)^½)."""
    s1 = _sqrt_psd(c1)
    # tr((C1 C2)^½) through the symmetric PSD form C1^½ C2 C1^½, which eigvalsh handles stably.
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ c2 @ s1), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2 * tr_cross)


def kl_gaussians(mu0: np.ndarray, c0: np.ndarray, mu1: np.ndarray, c1: np.ndarray) -> float:
    """KL(N(mu0, C0) ‖ N(mu1, C1)) = ½ [tr(C1⁻¹C0) + Δᵀ C1⁻¹ Δ - d + ln det C1 - ln det C0]."""
    f1 = linalg.cho_factor(c1)
    f0 = linalg.cho_factor(c0)
    diff = mu1 - mu0
    logdet1 = 2 * np.log(np.diag(f1[0])).sum()
    logdet0 = 2 * np.log(np.diag(f0[0])).sum()
    trace_term = np.trace(linalg.cho_solve(f1, c0))
    return float(0.5 * (trace_term + diff @ linalg.cho_solve(f1, diff) - len(mu0) + logdet1 - logdet0))


def _common_span(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x, y in coordinates of the subspace spanned by both sets' centred rows and their mean
    difference, when that is smaller than the embedding (fewer instances than dimensions).

    Exact, not an approximation: outside that subspace both fitted Gaussians are eps·I with equal
    means, which adds 0 to the Fréchet distance and to KL; inside, the matrices are (nx+ny+1)-square
    instead of d-square.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    spanning = np.vstack([x - mx, y - my, (mx - my)[None]]).T
    if spanning.shape[1] >= spanning.shape[0]:
        return x, y
    q, _ = np.linalg.qr(spanning)
    return (x - my) @ q, (y - my) @ q


def fitted_pair(x: np.ndarray, y: np.ndarray, eps: float = DEFAULT_EPS):
    """The Gaussians fitted to x and y in their common span ((mean, cov) each): fit once, then
    `frechet_gaussians(*fx, *fy)` and `kl_gaussians(*fx, *fy)` give both metrics."""
    x, y = _common_span(x, y)
    return gaussian_fit(x, eps), gaussian_fit(y, eps)


def frechet_distance(x: np.ndarray, y: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    x, y = _common_span(x, y)
    return frechet_gaussians(*gaussian_fit(x, eps), *gaussian_fit(y, eps))


def gaussian_kl(x: np.ndarray, y: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """KL(N_x ‖ N_y) of Gaussians fitted to x (the compared set) and y (the reference)."""
    x, y = _common_span(x, y)
    return kl_gaussians(*gaussian_fit(x, eps), *gaussian_fit(y, eps))


def median_bandwidth(z: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
    """Median heuristic: the median pairwise Euclidean distance (on a subsample of large inputs)."""
    z = np.asarray(z, dtype=np.float64)
    if len(z) > max_points:
        z = z[np.random.default_rng(seed).choice(len(z), max_points, replace=False)]
    d = pdist(z)
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0


def mmd2_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None, ids: np.ndarray | None = None,
             ids_y: np.ndarray | None = None) -> float:
    """Unbiased MMD² with k(a, b) = exp(-||a-b||² / (2 σ²)); σ by the median heuristic on x ∪ y if not given.

    `ids` (the instance of each row of x; of y too unless `ids_y` is given) leaves pairs of rows
    from one instance out of the within-set terms, as the diagonal is: a bootstrap resample repeats
    instances, and those copies (k = 1), like several rollouts of one instance, would otherwise
    bias MMD² upwards.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("need at least 2 samples per set for MMD")
    sigma = bandwidth if bandwidth is not None else median_bandwidth(np.vstack([x, y]))
    gamma = 1.0 / (2.0 * sigma**2)
    ix = np.arange(len(x)) if ids is None else np.asarray(ids)
    iy = np.asarray(ids_y) if ids_y is not None else (np.arange(len(y)) if ids is None else np.asarray(ids))
    if len(ix) != len(x) or len(iy) != len(y):
        raise ValueError("ids must give one instance id per row of x and of y")

    def within(a: np.ndarray, a_ids: np.ndarray) -> float:
        distinct = a_ids[:, None] != a_ids[None, :]
        if not distinct.any():
            raise ValueError("need at least 2 distinct instances per set for MMD")
        return float(np.exp(-gamma * cdist(a, a, "sqeuclidean"))[distinct].mean())

    cross = np.exp(-gamma * cdist(x, y, "sqeuclidean")).mean()
    return float(within(x, ix) + within(y, iy) - 2 * cross)


def classifier_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, folds: int = 5, seed: int = 0) -> float:
    """Mean held-out ROC AUC of logistic regression separating x (label 1) from y (label 0).

    `groups` (one id per row of x, then of y) keeps rows of one instance in the same fold:
    both sets' rows of a paired instance, and the copies a bootstrap resample makes, which would
    otherwise leak from training to test and inflate the AUC. Without groups, folds are stratified.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = np.vstack([x, y])
    labels = np.r_[np.ones(len(x), int), np.zeros(len(y), int)]
    if groups is None:
        cv = StratifiedKFold(n_splits=min(folds, len(x), len(y)), shuffle=True, random_state=seed)
    else:
        cv = GroupKFold(n_splits=min(folds, len(np.unique(groups))), shuffle=True, random_state=seed)
    if cv.get_n_splits() < 2:
        raise ValueError("need at least 2 samples (instances) per set for a cross-validated AUC")
    # A plain loop over folds: cross_val_score's machinery costs more than the fits at these sizes.
    aucs = []
    for train, test in cv.split(data, labels, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data[train], labels[train])
        aucs.append(roc_auc_score(labels[test], model.decision_function(data[test])))
    return float(np.mean(aucs))
