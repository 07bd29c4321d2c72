"""The cross-validation split of a training set: folds by patient, never by case."""

from __future__ import annotations

import numpy as np

from ..errors import TrainingError


def kfold_split(patients: dict[str, str], folds: int, seed: int) -> list[list[str]]:
    """Cases per fold, split by patient: every case of a patient is in the same fold.

    Patients (sorted, then shuffled with ``seed``) are dealt to the folds in turn, so fold
    sizes differ by at most one patient. Raises ``TrainingError`` with fewer patients than
    folds.
    """
    keys = sorted(set(patients.values()))
    if len(keys) < folds:
        raise TrainingError(f"{folds}-fold cross-validation needs at least {folds} patients, the data has "
                            f"{len(keys)}; lower --folds or add patients.")
    order = np.random.default_rng([seed, 0x5B1]).permutation(len(keys))
    fold_of = {keys[i]: n % folds for n, i in enumerate(order)}
    out: list[list[str]] = [[] for _ in range(folds)]
    for case in sorted(patients):
        out[fold_of[patients[case]]].append(case)
    return out
