"""Validation on the dev split: whole recordings, stitched, post-processed, scored.

Framework-neutral (the torchref loop calls it with torch's predict). Per recording the window
probabilities are stitched into one trace (common/eval/recordings.py); the traces of all dev
recordings are concatenated and scored sample by sample (common/eval/metrics.py):

    auroc                    of the raw probabilities
    sensitivity, specificity, precision, f1
                             of the post-processed mask (hysteresis τ_on/τ_off, opening, closing,
                             event duration and merging from `postprocess`) against the labels

    sensitivity_at_<R>_fa_per_24h   for each R of eval.fa_rates, only when it is the early-stopping
                             metric (a sweep of eval.threshold_steps post-processings, NEDC OVLP
                             events: common/eval/sensitivity_at_fa.py), as the original stopped on

The early-stopping metric (`train.early_stopping.metric`) must be one of `validation_metrics`;
`check_metric_name` is called before any compute, and a validation that lacks the metric raises
(the original read a missing key as 0.0 every epoch: original_spec.md §3.7).
"""

from __future__ import annotations

import numpy as np

from common.config import Config, ConfigError
from common.data.cache import Corpus
from common.eval.metrics import auroc, mask_metrics
from common.eval.postprocess import postprocess
from common.eval.recordings import BatchCheck, Predict, Trace, predict_recordings
from common.eval.sensitivity_at_fa import metric_name, sensitivity_at_fa, sweep

# Sample-level counts of the post-processed mask, and the AUROC of the probabilities.
VALIDATION_METRICS = ("auroc", "sensitivity", "specificity", "precision", "f1")


def _fa_metrics(config: Config) -> dict[str, float]:
    """metric name -> FA/24h target, for eval.fa_rates."""
    return {metric_name(rate): rate for rate in config.eval.fa_rates}


def validation_metrics(config: Config) -> tuple[str, ...]:
    return VALIDATION_METRICS + tuple(_fa_metrics(config))


def check_metric_name(config: Config) -> None:
    metric = config.train.early_stopping.metric
    if metric not in validation_metrics(config):
        raise ConfigError(
            f"train.early_stopping.metric = {metric!r} is not a validation metric; "
            f"choose one of {', '.join(validation_metrics(config))}"
        )


def metric_value(metrics: dict, config: Config) -> float:
    metric = config.train.early_stopping.metric
    if metric not in metrics:
        raise KeyError(f"validation produced no {metric!r} (it produced {', '.join(sorted(metrics))}): "
                       "set train.early_stopping.metric to one of those")
    return float(metrics[metric])


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Strict improvement (ties are not), as the original's EarlyStopping."""
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def score(traces: list[Trace], config: Config) -> tuple[dict, list[np.ndarray]]:
    """(metrics, post-processed mask per trace)."""
    masks = [postprocess(t.probs, t.sfreq, config.postprocess)[0] for t in traces]
    probs = np.concatenate([t.probs for t in traces])
    labels = np.concatenate([t.labels for t in traces]).astype(bool)
    metrics = {"auroc": auroc(probs, labels), **mask_metrics(np.concatenate(masks), labels)}
    targets = _fa_metrics(config)
    if config.train.early_stopping.metric in targets:
        swept = sweep(traces, config.postprocess, config.eval.threshold_steps)
        points = sensitivity_at_fa(swept, list(targets.values()))
        metrics.update({name: point.sensitivity for name, point in points.items()})
    metrics["seizure_fraction"] = float(labels.mean())
    metrics["recordings"] = len(traces)
    return metrics, masks


def validate(predict: Predict, corpus: Corpus, stems: list[str], config: Config,
             progress: bool = False, each_batch: BatchCheck | None = None) -> tuple[dict, list[Trace], list[np.ndarray]]:
    """Predict every dev recording and score it: (metrics, traces, masks); each_batch: BatchCheck."""
    if not stems:
        raise ValueError("the dev split is empty: set data.split.dev_fraction > 0 (validation needs it)")
    traces = predict_recordings(predict, corpus, stems, config, progress=progress, desc="validate",
                                each_batch=each_batch)
    metrics, masks = score(traces, config)
    return metrics, traces, masks
