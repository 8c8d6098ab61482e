"""The SynCD release layout: ``*metadata.json`` lists of items, view images, one JPEG mask per view.

Layout (as the SynCD loader reads it): every ``DIR/*metadata.json`` is a JSON list of items; the
image of view i is ``DIR/<filenames[i]>`` and its mask ``<same folder>/masks/<stem>.jpg``. An item's
id is its ``id`` field when present, else its 0-based position in its metadata file, the origin of
NearID's sparse ids.

Structural problems (not JSON, not a list, a required field missing or of the wrong type) stop the
run with a :class:`MetadataError` naming the file, the item and the field; problems with the files an
item points to are the caller's to record as rejects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any


METADATA_GLOB = "*metadata.json"
SCORES_GLOB = "*metadata_with_scores.json"
MAX_SOURCE_VIEWS = 3


class MetadataError(ValueError):
    """A metadata file is malformed; the message names the file and the field."""


class UnsafePathError(ValueError):
    """A file name in the metadata points outside the input folder."""


@dataclass(frozen=True)
class SyncdItem:
    """One metadata entry: an object (rigid) or a subject (deformable) with its views."""

    id: int
    source: str
    position: int
    filenames: tuple[str, ...]
    prompts: tuple[str, ...]
    category: str
    objaverse_id: str
    category_description: str
    dino_scores: tuple[tuple[float, ...], ...] | None = None
    aesthetics_scores: dict[str, float] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}[{self.position}]"


def _require(item: dict, key: str, kind: type | tuple[type, ...], where: str, optional: bool = False) -> Any:
    if key not in item:
        if optional:
            return None
        raise MetadataError(f"{where}: required field {key!r} is missing")
    value = item[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MetadataError(f"{where}: field {key!r} must be {expected}, got {type(value).__name__}")
    return value


def _string_list(item: dict, key: str, where: str) -> tuple[str, ...]:
    values = _require(item, key, list, where)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise MetadataError(f"{where}: field {key!r}[{i}] must be str, got {type(value).__name__}")
    return tuple(values)


def parse_item(item: Any, source: str, position: int) -> SyncdItem:
    """Validate one metadata entry's structure and turn it into a :class:`SyncdItem`."""
    where = f"{source} item {position}"
    if not isinstance(item, dict):
        raise MetadataError(f"{where}: expected an object, got {type(item).__name__}")
    filenames = _string_list(item, "filenames", where)
    prompts = _string_list(item, "prompts", where)
    if not filenames:
        raise MetadataError(f"{where}: field 'filenames' is empty")
    if len(prompts) != len(filenames):
        raise MetadataError(f"{where}: field 'prompts' has {len(prompts)} entries for {len(filenames)} filenames")
    category = _require(item, "category", str, where)
    item_id = _require(item, "id", int, where, optional=True)
    dino = _require(item, "dino_scores", list, where, optional=True)
    if dino is not None:
        if not all(isinstance(r, list) and all(isinstance(v, int | float) for v in r) for r in dino):
            raise MetadataError(f"{where}: field 'dino_scores' must be a list of lists of numbers")
        dino = tuple(tuple(float(v) for v in r) for r in dino)
    aesthetics = _require(item, "aesthetics_scores", dict, where, optional=True) or {}
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in aesthetics.values()):
        raise MetadataError(f"{where}: field 'aesthetics_scores' must map image stems to numbers")
    return SyncdItem(
        id=position if item_id is None else item_id,
        source=source,
        position=position,
        filenames=filenames,
        prompts=prompts,
        category=category,
        objaverse_id=_require(item, "objaverse_id", str, where, optional=True) or "",
        category_description=_require(item, "category_description", str, where, optional=True) or "",
        dino_scores=dino,
        aesthetics_scores={str(k): float(v) for k, v in aesthetics.items()},
    )


def metadata_files(input_dir: str | Path, with_scores: bool = False) -> list[Path]:
    """The metadata files of a SynCD folder, sorted by name."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"SynCD input folder {root} does not exist")
    files = sorted(root.glob(SCORES_GLOB if with_scores else METADATA_GLOB))
    if not with_scores:
        files = [f for f in files if not f.name.endswith("metadata_with_scores.json")]
    if not files:
        pattern = SCORES_GLOB if with_scores else METADATA_GLOB
        raise FileNotFoundError(f"no {pattern} in {root}: not a SynCD release folder")
    return files


def read_metadata(input_dir: str | Path, with_scores: bool = False) -> list[SyncdItem]:
    """Parse every metadata file of the folder; raises :class:`MetadataError` on the first malformed one."""
    items: list[SyncdItem] = []
    for path in metadata_files(input_dir, with_scores):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MetadataError(f"{path.name}: not valid JSON ({exc})") from exc
        except RecursionError as exc:
            raise MetadataError(f"{path.name}: nested too deeply to be a metadata list") from exc
        if not isinstance(data, list):
            raise MetadataError(f"{path.name}: expected a JSON list of items, got {type(data).__name__}")
        items.extend(parse_item(entry, path.name, i) for i, entry in enumerate(data))
    return items


def view_paths(input_dir: str | Path, filename: str) -> tuple[Path, Path]:
    """Image and mask paths of one view; refuses names that leave the input folder, directly or through a
    symbolic link (of the image, of its folder or of its ``masks/`` folder)."""
    if "\x00" in filename:
        raise UnsafePathError(f"file name {filename!r} contains a NUL character")
    root = Path(input_dir).resolve()
    relative = PurePosixPath(filename)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise UnsafePathError(f"file name {filename!r} leaves the input folder")
    image = (root / relative).resolve()
    if not image.is_relative_to(root):
        raise UnsafePathError(f"file name {filename!r} resolves outside the input folder")
    mask = (image.parent / "masks" / f"{image.stem}.jpg").resolve()
    if not mask.is_relative_to(root):
        raise UnsafePathError(f"the mask of {filename!r} resolves outside the input folder")
    return image, mask
