"""How an ROI of a structure set was made: ROIGenerationAlgorithm, its description, and the model it derives from.

DICOM's places (RT Structure Set module, Structure Set ROI Sequence item): ROIGenerationAlgorithm
(AUTOMATIC, SEMIAUTOMATIC, MANUAL, or empty when unknown), ROIGenerationDescription (64
characters), and the ROI Derivation Algorithm Identification Sequence (3006,0037), whose item
names the algorithm: its family (DCM 123110 "Artificial Intelligence", as in our SEGs), name,
version and, here, its parameters as ``model_sha256=<hex>; input_series=<uid>`` (the model's
fingerprint covers every setting that decides its output).

The rules the writers follow: a contour as the model made it is AUTOMATIC; a contour that started
as the model's and was edited by a clinician is SEMIAUTOMATIC, still naming the model; a contour
of unknown origin leaves ROIGenerationAlgorithm empty and names no algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ROIGenerationAlgorithm values (RT Structure Set module).
AUTOMATIC, SEMIAUTOMATIC, MANUAL = "AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"
#: AlgorithmFamilyCodeSequence of a model's contour: (scheme, value, meaning).
ARTIFICIAL_INTELLIGENCE = ("DCM", "123110", "Artificial Intelligence")


@dataclass(frozen=True)
class RoiGeneration:
    """How one ROI was made (see the module docstring); ``model_name`` '' when no algorithm is to be named."""

    algorithm: str
    description: str = ""
    model_name: str = ""
    model_version: str = ""
    model_sha256: str = ""
    input_series_uid: str = ""

    def __post_init__(self) -> None:
        if self.algorithm not in (AUTOMATIC, SEMIAUTOMATIC, MANUAL, ""):
            raise ValueError(f"ROIGenerationAlgorithm must be AUTOMATIC, SEMIAUTOMATIC, MANUAL or empty, not "
                             f"{self.algorithm!r}")

    @classmethod
    def of_model(cls, model_id: str | None) -> RoiGeneration:
        """A model's own contour, the model given as ``"name version"``; unknown origin when None or ''."""
        if not model_id:
            return cls("")
        name, _, version = model_id.partition(" ")
        return cls(AUTOMATIC, model_id, name, version)

    @classmethod
    def from_prediction(cls, model_name: str, model_version: str, model_sha256: str, input_series_uid: str,
                        edited: bool) -> RoiGeneration:
        """A contour that started as a model's prediction: AUTOMATIC as predicted, SEMIAUTOMATIC once edited."""
        model_id = f"{model_name} {model_version}".strip()
        if edited:
            return cls(SEMIAUTOMATIC, f"{model_id}, edited by a clinician", model_name, model_version, model_sha256,
                       input_series_uid)
        return cls(AUTOMATIC, model_id, model_name, model_version, model_sha256, input_series_uid)

    @property
    def parameters(self) -> str:
        """AlgorithmParameters: the model's fingerprint and the series it ran on, where known."""
        parts = [f"model_sha256={self.model_sha256}" if self.model_sha256 else "",
                 f"input_series={self.input_series_uid}" if self.input_series_uid else ""]
        return "; ".join(p for p in parts if p)
