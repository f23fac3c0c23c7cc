"""Per-pixel uncertainty maps from softmax probabilities or from T stochastic samples.

Every map is implemented once, in torch float32, as a ``*_t`` function (torch in, torch out,
any leading batch dimensions, no validation -- the hot path of tiled inference). The plain
functions are thin wrappers for users: they accept numpy arrays or torch tensors, validate the
input, and return an ``(H, W)`` float32 numpy array.

Convention: **higher = more uncertain** for every map, so a query strategy can always rank by
descending score. That is why :func:`margin` is ``1 - (p_top1 - p_top2)`` (uniform -> 1,
confident -> 0); the raw margin ``p_top1 - p_top2`` (uniform -> 0), where *low* means
uncertain, is available as :func:`raw_margin`.

One-pass maps, from ``probs : (C, H, W)``:

- :func:`entropy` -- predictive entropy ``-sum_c p_c log p_c`` (natural log; uniform -> log C).
- :func:`margin` -- ``1 - (p_top1 - p_top2)``; :func:`raw_margin` -- ``p_top1 - p_top2``.
- :func:`least_confidence` -- ``1 - max_c p_c``.

Maps from ``samples : (T, C, H, W)`` (T MC-dropout passes, TTA views or ensemble members):

- :func:`bald` -- mutual information ``H(mean_t p_t) - mean_t H(p_t)`` (Houlsby et al. 2011).
- :func:`variance` -- mean over classes of the variance over T (CEAL, Gorriz et al. 2017).
- :func:`expected_entropy` -- ``mean_t H(p_t)`` (the aleatoric part).
- :func:`ensemble_disagreement` / :func:`tta_disagreement` -- ``mean_m KL(p_m || mean p)``,
  mathematically equal to BALD.

:func:`compute_maps` computes several maps from one ``(T, B, C, H, W)`` tensor, sharing the
sample mean and the per-sample entropies.

Probabilities are clamped to ``EPS = 1e-8`` before every log.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = [
    "EPS",
    "MAPS_FROM_SAMPLES",
    "MAPS_ONE_PASS",
    "MAP_NAMES",
    "bald",
    "bald_t",
    "compute_maps",
    "ensemble_disagreement",
    "ensemble_disagreement_t",
    "entropy",
    "entropy_t",
    "expected_entropy",
    "expected_entropy_t",
    "least_confidence",
    "least_confidence_t",
    "margin",
    "margin_t",
    "raw_margin",
    "raw_margin_t",
    "tta_disagreement",
    "tta_disagreement_t",
    "variance",
    "variance_t",
]

EPS = 1e-8
"""Lower clamp applied to probabilities before taking a log."""

MAPS_ONE_PASS = ("entropy", "margin", "least_confidence")
"""Maps computed from one probability map (in :func:`compute_maps`: from the sample mean)."""

MAPS_FROM_SAMPLES = ("bald", "variance", "expected_entropy")
"""Maps that need T > 1 stochastic samples to be informative."""

MAP_NAMES = MAPS_ONE_PASS + ("raw_margin",) + MAPS_FROM_SAMPLES + (
    "ensemble_disagreement",
    "tta_disagreement",
)
"""Every name :func:`compute_maps` accepts."""

_SUM_TOL = 1e-3
_CLASS_DIM = -3  # probs are (..., C, H, W)


# --------------------------------------------------------------------------------------------
# torch implementations (no validation; any leading dims)
# --------------------------------------------------------------------------------------------


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _plogp_sum(p: torch.Tensor) -> torch.Tensor:
    """``sum_c p_c log max(p_c, EPS)`` over the class axis (-3): the negative entropy."""
    return (p * p.clamp_min(EPS).log()).sum(_CLASS_DIM)


def entropy_t(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy, natural log.

    Parameters
    ----------
    probs : (..., C, H, W) tensor
        Softmax probabilities over axis -3.

    Returns
    -------
    (..., H, W) float32 tensor
        ``-sum_c p_c log p_c``; 0 for one-hot, ``log C`` for uniform.
    """
    return -_plogp_sum(_f32(probs))


def raw_margin_t(probs: torch.Tensor) -> torch.Tensor:
    """Raw margin ``p_top1 - p_top2``: **low = uncertain** (uniform -> 0, one-hot -> 1).

    Parameters
    ----------
    probs : (..., C, H, W) tensor, C >= 2

    Returns
    -------
    (..., H, W) float32 tensor
    """
    top2 = _f32(probs).topk(2, dim=_CLASS_DIM).values
    return top2.select(_CLASS_DIM, 0) - top2.select(_CLASS_DIM, 1)


def margin_t(probs: torch.Tensor) -> torch.Tensor:
    """Margin uncertainty ``1 - (p_top1 - p_top2)``: **high = uncertain** (uniform -> 1).

    Parameters
    ----------
    probs : (..., C, H, W) tensor, C >= 2

    Returns
    -------
    (..., H, W) float32 tensor
    """
    return 1.0 - raw_margin_t(probs)


def least_confidence_t(probs: torch.Tensor) -> torch.Tensor:
    """Least confidence ``1 - max_c p_c`` (uniform -> 1 - 1/C, one-hot -> 0).

    Parameters
    ----------
    probs : (..., C, H, W) tensor

    Returns
    -------
    (..., H, W) float32 tensor
    """
    return 1.0 - _f32(probs).amax(dim=_CLASS_DIM)


def expected_entropy_t(samples: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the samples, ``mean_t H(p_t)``.

    Parameters
    ----------
    samples : (T, ..., C, H, W) tensor
        T probability maps (axis 0).

    Returns
    -------
    (..., H, W) float32 tensor
    """
    return entropy_t(samples).mean(0)


def bald_t(samples: torch.Tensor) -> torch.Tensor:
    """BALD mutual information ``H(mean_t p_t) - mean_t H(p_t)``, clamped at 0.

    Parameters
    ----------
    samples : (T, ..., C, H, W) tensor

    Returns
    -------
    (..., H, W) float32 tensor
        >= 0; 0 when all samples agree, ``log 2`` for two opposite one-hot samples.
    """
    samples = _f32(samples)
    return (entropy_t(samples.mean(0)) - expected_entropy_t(samples)).clamp_min(0.0)


def variance_t(samples: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the (population, ``1/T``) variance over samples, as in CEAL.

    Parameters
    ----------
    samples : (T, ..., C, H, W) tensor

    Returns
    -------
    (..., H, W) float32 tensor
        0 when all samples agree; for two opposite one-hot samples ``0.5 / C`` (0.25 for
        C = 2).
    """
    return _f32(samples).var(dim=0, correction=0).mean(_CLASS_DIM)


def ensemble_disagreement_t(samples: torch.Tensor) -> torch.Tensor:
    """Mean KL divergence of each member from the mean, ``mean_m KL(p_m || mean p)``.

    Equal to BALD (``H(mean) - mean H``) up to rounding; computed here in the KL form.

    Parameters
    ----------
    samples : (M, ..., C, H, W) tensor
        M ensemble members' (or views') probability maps.

    Returns
    -------
    (..., H, W) float32 tensor, >= 0
    """
    samples = _f32(samples)
    log_mean = samples.mean(0).clamp_min(EPS).log()  # (..., C, H, W)
    kl = (samples * (samples.clamp_min(EPS).log() - log_mean)).sum(_CLASS_DIM)  # (M, ..., H, W)
    return kl.mean(0).clamp_min(0.0)


def tta_disagreement_t(samples: torch.Tensor) -> torch.Tensor:
    """Test-time-augmentation disagreement: ``mean_v KL(p_v || mean p)`` over T views.

    The views must already be mapped back to the original geometry (un-flipped, un-rotated).
    Same computation as :func:`ensemble_disagreement_t`.

    Parameters
    ----------
    samples : (T, ..., C, H, W) tensor

    Returns
    -------
    (..., H, W) float32 tensor, >= 0
    """
    return ensemble_disagreement_t(samples)


_ONE_PASS_T = {
    "entropy": entropy_t,
    "margin": margin_t,
    "raw_margin": raw_margin_t,
    "least_confidence": least_confidence_t,
}


def compute_maps(samples_t: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Compute several uncertainty maps from one batch of samples, sharing intermediate results.

    The sample mean and the per-sample entropies are computed once. One-pass maps
    (:data:`MAPS_ONE_PASS`, ``"raw_margin"``) are computed from the sample mean; with T = 1 that
    is the plain prediction. ``"ensemble_disagreement"`` / ``"tta_disagreement"`` reuse the
    identity ``mean_t KL(p_t || mean) = H(mean) - mean_t H(p_t)`` (exact, including the EPS
    clamp, because the KL cross term is linear in ``p_t``), so they cost nothing extra.

    Parameters
    ----------
    samples_t : (T, B, C, H, W) tensor
        T samples of B probability maps (any float dtype, any device).
    names : iterable of str
        Map names, each one of :data:`MAP_NAMES`.

    Returns
    -------
    maps : dict[str, (B, H, W) float32 tensor]
        On the device of ``samples_t``.

    Raises
    ------
    ValueError
        An unknown name, or ``samples_t`` not 5-dimensional.
    """
    names = list(dict.fromkeys(names))  # keep order, drop duplicates
    unknown = [n for n in names if n not in MAP_NAMES]
    if unknown:
        raise ValueError(
            f"Unknown uncertainty map(s) {unknown}; valid names are {list(MAP_NAMES)}."
        )
    if samples_t.ndim != 5:
        raise ValueError(
            f"samples_t must have shape (T, B, C, H, W), got {tuple(samples_t.shape)}; "
            "add a sample axis with samples[None] for a single deterministic pass."
        )
    samples_t = _f32(samples_t)
    out: dict[str, torch.Tensor] = {}
    mean = samples_t.mean(0)  # (B, C, H, W)

    need_h_mean = any(
        n in ("entropy", "bald", "ensemble_disagreement", "tta_disagreement") for n in names
    )
    need_exp_h = any(
        n in ("expected_entropy", "bald", "ensemble_disagreement", "tta_disagreement")
        for n in names
    )
    h_mean = entropy_t(mean) if need_h_mean else None  # (B, H, W)
    exp_h = expected_entropy_t(samples_t) if need_exp_h else None  # (B, H, W)
    mi = (h_mean - exp_h).clamp_min(0.0) if (need_h_mean and need_exp_h) else None

    for n in names:
        if n == "entropy":
            out[n] = h_mean
        elif n in _ONE_PASS_T:
            out[n] = _ONE_PASS_T[n](mean)
        elif n == "expected_entropy":
            out[n] = exp_h
        elif n in ("bald", "ensemble_disagreement", "tta_disagreement"):
            out[n] = mi
        elif n == "variance":
            out[n] = variance_t(samples_t)
    return out


# --------------------------------------------------------------------------------------------
# numpy-facing API (validates; returns (H, W) float32 numpy)
# --------------------------------------------------------------------------------------------


def _as_probs(x, *, ndim: int, name: str, layout: str) -> torch.Tensor:
    """Convert ``x`` to a detached float32 torch tensor and check it holds probabilities."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}.")
        t = torch.as_tensor(arr)
    t = t.float()
    if t.ndim != ndim:
        hint = (
            "for a batch, call the *_t function or compute_maps"
            if t.ndim > ndim
            else "add the missing axis"
        )
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(t.shape)}; {hint}.")
    n_classes = t.shape[_CLASS_DIM]
    if n_classes < 2:
        raise ValueError(
            f"{name} must have at least 2 classes on axis {ndim - 3} ({layout}), got "
            f"shape {tuple(t.shape)}; for a sigmoid output p pass np.stack([1 - p, p])."
        )
    if t.numel() == 0:
        return t
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values.")
    lo = float(t.min())
    sums = t.sum(_CLASS_DIM)
    dev = float((sums - 1.0).abs().max())
    if lo < -_SUM_TOL or dev > _SUM_TOL:
        raise ValueError(
            f"{name} must hold softmax probabilities (>= 0, summing to 1 over the class axis "
            f"{ndim - 3} of {layout}); got min value {lo:.4g} and sums over classes in "
            f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}]. Apply a softmax over the "
            "class axis first (e.g. torch.softmax(logits, dim=0)), or move the class axis to "
            f"match {layout}."
        )
    return t


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _one_pass(fn, probs) -> np.ndarray:
    with torch.no_grad():
        return _to_numpy(fn(_as_probs(probs, ndim=3, name="probs", layout="(C, H, W)")))


def _from_samples(fn, samples) -> np.ndarray:
    with torch.no_grad():
        return _to_numpy(
            fn(_as_probs(samples, ndim=4, name="samples", layout="(T, C, H, W)"))
        )


def entropy(probs) -> np.ndarray:
    """Predictive entropy ``-sum_c p_c log p_c`` (natural log).

    Parameters
    ----------
    probs : (C, H, W) ndarray or tensor
        Softmax probabilities, C >= 2, summing to 1 over C (tolerance 1e-3).

    Returns
    -------
    (H, W) float32 ndarray
        0 for one-hot pixels, ``log C`` for uniform ones.

    Raises
    ------
    ValueError
        Wrong number of dimensions, C < 2, or values that are not probabilities.
    """
    return _one_pass(entropy_t, probs)


def margin(probs) -> np.ndarray:
    """Margin uncertainty ``1 - (p_top1 - p_top2)``, so that **higher = more uncertain**.

    This flips the raw margin of the literature (``p_top1 - p_top2``, where uniform
    probabilities give 0 and *low* means uncertain) so that all maps rank the same way; use
    :func:`raw_margin` for the raw value.

    Parameters
    ----------
    probs : (C, H, W) ndarray or tensor
        Softmax probabilities, C >= 2.

    Returns
    -------
    (H, W) float32 ndarray
        1 for uniform pixels (raw margin 0), 0 for one-hot pixels (raw margin 1).
    """
    return _one_pass(margin_t, probs)


def raw_margin(probs) -> np.ndarray:
    """Raw margin ``p_top1 - p_top2``: **low = uncertain** (uniform -> 0, one-hot -> 1).

    Parameters
    ----------
    probs : (C, H, W) ndarray or tensor
        Softmax probabilities, C >= 2.

    Returns
    -------
    (H, W) float32 ndarray
    """
    return _one_pass(raw_margin_t, probs)


def least_confidence(probs) -> np.ndarray:
    """Least confidence ``1 - max_c p_c``.

    Parameters
    ----------
    probs : (C, H, W) ndarray or tensor
        Softmax probabilities, C >= 2.

    Returns
    -------
    (H, W) float32 ndarray
        0 for one-hot pixels, ``1 - 1/C`` for uniform ones.
    """
    return _one_pass(least_confidence_t, probs)


def bald(samples) -> np.ndarray:
    """BALD: mutual information between prediction and model, ``H(mean) - mean_t H(p_t)``.

    High where the samples are individually confident but disagree with each other (epistemic
    uncertainty); 0 where they agree, even if each is uniform.

    Parameters
    ----------
    samples : (T, C, H, W) ndarray or tensor
        T probability maps (MC-dropout passes, TTA views or ensemble members).

    Returns
    -------
    (H, W) float32 ndarray
        >= 0 (tiny negative rounding errors are clamped); at most ``log C``.
    """
    return _from_samples(bald_t, samples)


def variance(samples) -> np.ndarray:
    """Mean over classes of the variance over samples (population variance, ``1/T``), as in CEAL.

    Parameters
    ----------
    samples : (T, C, H, W) ndarray or tensor

    Returns
    -------
    (H, W) float32 ndarray
        0 when the samples agree; 0.25 for two opposite one-hot samples with C = 2.
    """
    return _from_samples(variance_t, samples)


def expected_entropy(samples) -> np.ndarray:
    """Expected entropy ``mean_t H(p_t)``: the aleatoric part of the predictive entropy.

    Parameters
    ----------
    samples : (T, C, H, W) ndarray or tensor

    Returns
    -------
    (H, W) float32 ndarray
    """
    return _from_samples(expected_entropy_t, samples)


def ensemble_disagreement(samples) -> np.ndarray:
    """Query-by-committee disagreement ``mean_m KL(p_m || mean_m p_m)`` over M members.

    Mathematically equal to :func:`bald`; computed in the KL form.

    Parameters
    ----------
    samples : (M, C, H, W) ndarray or tensor
        Probability maps of M ensemble members.

    Returns
    -------
    (H, W) float32 ndarray, >= 0
    """
    return _from_samples(ensemble_disagreement_t, samples)


def tta_disagreement(samples) -> np.ndarray:
    """Test-time-augmentation disagreement ``mean_v KL(p_v || mean_v p_v)`` over T views.

    The views must already be mapped back to the original geometry (e.g. un-flipped). Same
    computation as :func:`ensemble_disagreement`.

    Parameters
    ----------
    samples : (T, C, H, W) ndarray or tensor
        Probability maps of T augmented views.

    Returns
    -------
    (H, W) float32 ndarray, >= 0
    """
    return _from_samples(tta_disagreement_t, samples)
