"""How far the weights have moved from their scale at init: a diverged run's fingerprint.

    growth = weight_growth(config, weights)   # Growth: each randomly initialised tensor's RMS / its RMS at init
    growth.median, growth.largest             # ~1.0x in healthy runs; 37-130x after one step at lr 30
    growth.diverged                           # median >= DIVERGED_GROWTH

A learning rate too large for the model blows the weights up, and the NaN comes steps later, at the
first stage whose values then leave float32's range: the localiser's verdict there is PRECISION
(finite in float64) at that stage, true but not the cause. The cause shows in the weights. Adam
moves every weight with a gradient by about lr on its first step (m̂/√v̂ = g/|g|; Kingma & Ba 2015,
§2.1 bound each step by lr·max(1, (1-β1)/√(1-β2))), so a tensor of RMS s at init comes out of that
step at about √(s² + lr²): every tensor at once, by a factor that lr/s sets. The median over tensors
is what moves: one tensor initialised small on purpose (the head's detect weights, RMS 0.003) grew
4.9x in the default config's whole healthy run, while the median moved by 1 %.

The scale at init is a fresh torchref model's from the same config (its RMS, not its values: the
run's own seed is not needed); tensors a zero or constant init leaves without a scale (biases,
LayerNorm gains) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import torchref.model as tmodel
from common.config import Config

# The median growth at which the weights read as diverged. Measured (BENCHMARKS.md "Weight
# growth"): healthy runs 0.99-1.01x (the smoke config after 10 steps, the default config after its
# whole 215-step training, whose largest tensor grew 4.9x); one step at lr 30, 37x on the smoke
# model and 130x on the tiny one. By the √(s² + lr²) of the module docstring, 10x is a step with
# lr ≈ 10 s: an update ten times the typical weight.
DIVERGED_GROWTH = 10.0
# One tensor grown this far reads as the weights' fault even where the median has not moved: 200x
# the largest growth measured in a healthy run (the head's 4.9x over the default config's whole
# training, above), with room for a far longer run: the tensor initialised smallest (the head's
# detect weights, RMS 0.003) would need an RMS of 3 to reach it. A checkpoint saved after one bad
# update to a few tensors looks like this.
OUTLIER_GROWTH = 1000.0
LARGEST_SHOWN = 3


@dataclass
class Growth:
    """ratio: tensor name -> its RMS over its RMS at init, largest first."""

    ratio: dict[str, float]
    rms: dict[str, float]
    rms_init: dict[str, float]

    @property
    def median(self) -> float:
        return float(np.median(list(self.ratio.values())))

    @property
    def largest(self) -> list[str]:
        return list(self.ratio)[:LARGEST_SHOWN]

    @property
    def typical_init(self) -> float:
        """The median tensor's RMS at init."""
        return float(np.median(list(self.rms_init.values())))

    @property
    def diverged(self) -> bool:
        return self.median >= DIVERGED_GROWTH

    @property
    def outliers(self) -> list[str]:
        """The tensors grown at least OUTLIER_GROWTH from their scale at init, largest first."""
        return [name for name, ratio in self.ratio.items() if ratio >= OUTLIER_GROWTH]

    def line(self) -> str:
        largest = ", ".join(f"{name} {self.ratio[name]:.3g}x ({self.rms_init[name]:.2g} -> {self.rms[name]:.2g})"
                            for name in self.largest)
        return (f"weights: RMS {self.median:.3g}x their scale at init (median over {len(self.ratio)} randomly "
                f"initialised tensors; largest: {largest})")

    def to_dict(self) -> dict:
        return {"median": self.median, "diverged": self.diverged, "threshold": DIVERGED_GROWTH,
                "tensors": {name: {"ratio": self.ratio[name], "rms": self.rms[name], "rms_init": self.rms_init[name]}
                            for name in self.ratio}}


def _rms(array) -> float:
    array = np.asarray(array, np.float64)
    return float(np.sqrt(np.mean(array**2))) if array.size else 0.0


def weight_growth(config: Config, weights: dict[str, np.ndarray]) -> Growth:
    """Growth of `weights` (torch state-dict names, finite) over a fresh init of config.model."""
    ratio, rms, at_init = {}, {}, {}
    for name, parameter in tmodel.SeizureDetector(config.model, 0).named_parameters():
        values = parameter.detach().double()
        if name not in weights or bool((values == values.flatten()[0]).all()):
            continue  # zero or constant init (biases, norm gains): no scale to grow from
        at_init[name], rms[name] = _rms(values), _rms(weights[name])
        ratio[name] = rms[name] / at_init[name]
    order = sorted(ratio, key=ratio.get, reverse=True)
    return Growth({n: ratio[n] for n in order}, rms, {n: at_init[n] for n in order})
