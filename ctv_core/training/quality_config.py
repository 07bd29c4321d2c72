"""The ``quality`` section of the training configuration (kept apart from :mod:`.config` to keep both small).

Imports no torch: configurations are read and checked without loading the network code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..strict_config import is_int, is_number


@dataclass(frozen=True)
class QualityConfig:
    """Learned sample weights for noisy labels: the Quality Awareness and Overfitting Control modules.

    The QAM, a VGG-style network on the image concatenated with its label, gives each sample a
    raw score; the OCM bounds it to ``ocm_lambda * tanh(score)``; the softmax of the scores over
    the batch weighs each sample's loss, and one loss trains both networks
    (:mod:`ctv_core.training.quality` has the maths). The QAM is checkpointed under the name
    ``"qam"`` and is not part of the exported model package.

    Attributes
    ----------
    enabled
        False: every sample weighs ``1 / batch`` (the plain batch mean).
    overfitting_control
        True: the OCM bounds the scores, so no two samples' weights differ by more than a
        factor ``exp(2 * ocm_lambda)``. False: the QAM's raw scores go straight into the
        softmax (the method's "QAM" alone; weights may collapse onto a few samples).
    ocm_lambda
        The OCM's bound lambda (the method: 2, a weight ratio of at most e^4 ~ 55).
    learning_rate
        Adam's learning rate of the QAM, constant (the method: 1e-4).
    widths
        Channels of the QAM's levels, finest first; each level but the last ends with a 2x
        max-pooling.
    convs_per_level
        3x3(x3) convolutions with ReLU per level (VGG: 2 or 3).
    input_stride
        Image and label are average-pooled by this factor along every axis before the QAM (1:
        full resolution); 2 makes the QAM of a full-size 3D patch 8 times cheaper.
    """

    enabled: bool = False
    overfitting_control: bool = True
    ocm_lambda: float = 2.0
    learning_rate: float = 1e-4
    widths: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_level: int = 2
    input_stride: int = 1

    def __post_init__(self) -> None:
        for name in ("enabled", "overfitting_control"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"quality.{name} must be true or false, not {getattr(self, name)!r}")
        if not is_number(self.ocm_lambda) or not 0 < self.ocm_lambda <= 20:
            raise ValueError(f"quality.ocm_lambda must be within (0, 20], not {self.ocm_lambda!r}")
        if not is_number(self.learning_rate) or not 0 < self.learning_rate < 1:
            raise ValueError(f"quality.learning_rate must be within (0, 1), not {self.learning_rate!r}")
        if (not isinstance(self.widths, tuple) or not 1 <= len(self.widths) <= 6
                or any(not is_int(w) or w < 1 for w in self.widths)):
            raise ValueError(f"quality.widths must be 1 to 6 positive integers, not {self.widths!r}")
        for name in ("convs_per_level", "input_stride"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"quality.{name} must be an integer >= 1, not {value!r}")
