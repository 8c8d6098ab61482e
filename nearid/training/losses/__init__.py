"""The NearID loss and the Table 3 ablations: ``inputs`` (the batch every loss takes), ``terms`` (what the
losses are built from) and ``objectives`` (the losses and their registry)."""

from nearid.training.losses.inputs import LossInputs
from nearid.training.losses.objectives import (
    LOSSES,
    circle_ranking_loss,
    get_loss,
    infonce_distractor_loss,
    infonce_distractor_oracle_loss,
    infonce_loss,
    infonce_oracle_loss,
    loss_parameters,
    nearid_cohesion_loss,
    nearid_loss,
)


__all__ = [
    "LOSSES",
    "LossInputs",
    "circle_ranking_loss",
    "get_loss",
    "infonce_distractor_loss",
    "infonce_distractor_oracle_loss",
    "infonce_loss",
    "infonce_oracle_loss",
    "loss_parameters",
    "nearid_cohesion_loss",
    "nearid_loss",
]
