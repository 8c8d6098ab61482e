"""Training the MAP head with the NearID loss: configuration, tuple data, losses, the loop, checkpoints, launch and
export. The loop is ``nearid.training.train`` (``accelerate launch -m nearid.training.train --config FILE``)."""
