"""The null generator: returns its input, so a run measures the data path alone."""

from __future__ import annotations

from PIL import Image

from generators.base import Generator, WorkItem


class NullGenerator(Generator):
    family = "null"
    needs_torch = False

    def _load(self) -> None:
        """Nothing to load."""

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        return [item.image for item in items]
