"""The ground floor, shared by every other package: config hashing, mask cleaning, split rules, the procedural
renderer and logging set-up. It imports nothing of the project above it, so ``storage`` and ``generators`` use it
without pulling in curation, training or evaluation."""
