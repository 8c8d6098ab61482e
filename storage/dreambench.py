"""The DreamBench++ layouts: human and metric rating files, and folders of generated samples.

* Rating keys name one prompt of one subject: ``<collection_id>-<prompt index>``, where the collection id is
  ``<category>_<NN>_<subject>`` (categories ``object``, ``live_subject_animal``, ``live_subject_human``, ``style``)
  and subjects may contain hyphens (``cotton-top_tamarin``), so keys split on their *last* hyphen.
* Human ratings (concept preservation, 0-4, two annotator groups):
  ``<ratings>/data_human_rating/merged_data/group{1,2}/<method>-cp.json``, ``{key: rating}``.
* Metric ratings: ``<dir>/<method>.json``, ``{key_<image index>: score}`` with score = 100 x cosine; the image
  index is a trailing ``_N`` and object 20 is ``rubik's_cube`` there but ``magic_cube`` in the human files.
  ``canonical_key`` removes both differences.
* Generated samples: ``<samples>/<run>/{src_image,tgt_image}/<collection_id>/<prompt>_<image>.<ext>``: the
  reference and the generated image at the same relative path; the run folder's name starts with its method's
  name, spelled ``ip_adapter_plus_vit_huge_sdxl`` / ``ip_adapter_vit_giant_sdxl`` where rating files say
  ``..._vit_h_...`` / ``..._vit_g_...``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


METHODS = (
    "textual_inversion_sd",
    "dreambooth_sd",
    "dreambooth_lora_sdxl",
    "blip_diffusion",
    "emu2",
    "ip_adapter_plus_vit_h_sdxl",
    "ip_adapter_vit_g_sdxl",
)
"""The seven personalisation methods that carry human ratings."""
CATEGORIES = ("object", "live_subject_animal", "live_subject_human", "style")
RUN_PREFIXES = {
    "textual_inversion_sd": "textual_inversion_sd",
    "dreambooth_sd": "dreambooth_sd",
    "dreambooth_lora_sdxl": "dreambooth_lora_sdxl",
    "blip_diffusion": "blip_diffusion",
    "emu2": "emu2",
    "ip_adapter_plus_vit_huge_sdxl": "ip_adapter_plus_vit_h_sdxl",
    "ip_adapter_plus_vit_h_sdxl": "ip_adapter_plus_vit_h_sdxl",
    "ip_adapter_vit_giant_sdxl": "ip_adapter_vit_g_sdxl",
    "ip_adapter_vit_g_sdxl": "ip_adapter_vit_g_sdxl",
}
"""Sample run-folder name prefix -> method name of the rating files."""
KEY_ALIASES = {"rubik's_cube": "magic_cube"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
HUMAN_GROUPS = (1, 2)

_IMAGE_INDEX = re.compile(r"_\d+$")


class DreamBenchLayoutError(ValueError):
    """A DreamBench++ file or folder does not follow the published layout."""


def canonical_key(key: str) -> str:
    """A rating key without a metric file's trailing image index, with the subject aliases applied."""
    key = _IMAGE_INDEX.sub("", key)
    for alias, name in KEY_ALIASES.items():
        key = key.replace(alias, name)
    return key


def split_key(key: str) -> tuple[str, int]:
    """``(collection id, prompt index)`` of a canonical key, splitting on the last hyphen."""
    collection, sep, prompt = key.rpartition("-")
    if not sep or not collection or not prompt.isdigit():
        raise DreamBenchLayoutError(f"rating key {key!r} is not '<collection_id>-<prompt index>'")
    return collection, int(prompt)


def category_of(key: str) -> str:
    """The category a key belongs to (its collection id's prefix)."""
    collection, _ = split_key(canonical_key(key))
    for category in sorted(CATEGORIES, key=len, reverse=True):
        if collection.startswith(category + "_"):
            return category
    raise DreamBenchLayoutError(f"rating key {key!r} belongs to no category of {list(CATEGORIES)}")


def read_ratings(path: str | Path) -> dict[str, float]:
    """A rating file keyed by canonical key; ``null`` reads as NaN. Two keys that coincide once canonical raise."""
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DreamBenchLayoutError(f"{file}: cannot read a rating file: {exc}") from exc
    if not isinstance(data, dict):
        raise DreamBenchLayoutError(f"{file}: a rating file is a JSON object of key -> score")
    ratings: dict[str, float] = {}
    for key, value in data.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DreamBenchLayoutError(f"{file}: rating of {key!r} is not a number: {value!r}")
        canonical = canonical_key(key)
        if canonical in ratings:
            raise DreamBenchLayoutError(f"{file}: keys {key!r} and another one both name item {canonical!r}")
        ratings[canonical] = math.nan if value is None else float(value)
    return ratings


def write_ratings(path: str | Path, scores: Mapping[str, float]) -> Path:
    """Write a metric rating file (keys sorted, NaN as ``null``), the layout the published metric files use."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    payload = {key: (None if math.isnan(value) else float(value)) for key, value in sorted(scores.items())}
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=4) + "\n")
    tmp.replace(file)
    return file


def human_rating_path(ratings_dir: str | Path, group: int, method: str) -> Path:
    """Where group ``group``'s concept-preservation ratings of ``method`` are."""
    return Path(ratings_dir) / "data_human_rating" / "merged_data" / f"group{group}" / f"{method}-cp.json"


def read_human_ratings(ratings_dir: str | Path) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """Both groups' ratings of every method present; the two groups must rate exactly the same items."""
    out: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for method in METHODS:
        paths = [human_rating_path(ratings_dir, group, method) for group in HUMAN_GROUPS]
        present = [p.is_file() for p in paths]
        if not any(present):
            continue
        if not all(present):
            raise DreamBenchLayoutError(f"{method}: human ratings of one group only ({[str(p) for p in paths]})")
        first, second = (read_ratings(p) for p in paths)
        if set(first) != set(second):
            diff = sorted(set(first) ^ set(second))[:5]
            raise DreamBenchLayoutError(f"{method}: the two human groups rate different items, e.g. {diff}")
        out[method] = (first, second)
    if not out:
        raise DreamBenchLayoutError(
            f"{ratings_dir} has no human ratings (data_human_rating/merged_data/group1/*-cp.json)"
        )
    return out


def method_of_run(run: str) -> str:
    """The rating-file method name of a sample run folder, by its name's prefix."""
    for prefix in sorted(RUN_PREFIXES, key=len, reverse=True):
        if run.startswith(prefix):
            return RUN_PREFIXES[prefix]
    raise DreamBenchLayoutError(f"sample run folder {run!r} matches no method; known prefixes: {sorted(RUN_PREFIXES)}")


@dataclass(frozen=True)
class SamplePair:
    """One generated image and its reference: method, metric key (``<collection>-<prompt>_<image>``), paths."""

    method: str
    key: str
    reference: Path
    generated: Path


def _images_under(folder: Path) -> dict[str, Path]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found[path.relative_to(folder).with_suffix("").as_posix()] = path
    return found


def iter_sample_pairs(samples_root: str | Path) -> Iterator[SamplePair]:
    """Every (reference, generated) pair under a samples folder; refuses unpaired images and repeated methods."""
    root = Path(samples_root)
    runs = sorted(p for p in root.iterdir() if (p / "src_image").is_dir()) if root.is_dir() else []
    if not runs:
        raise DreamBenchLayoutError(f"{root} holds no run folder with src_image/ and tgt_image/")
    seen: dict[str, str] = {}
    for run in runs:
        method = method_of_run(run.name)
        if method in seen:
            raise DreamBenchLayoutError(f"runs {seen[method]!r} and {run.name!r} are both method {method!r}")
        seen[method] = run.name
        references = _images_under(run / "src_image")
        generated = _images_under(run / "tgt_image")
        if set(references) != set(generated):
            unpaired = sorted(set(references) ^ set(generated))[:5]
            raise DreamBenchLayoutError(f"{run}: src_image/ and tgt_image/ differ, e.g. {unpaired}")
        for relative in sorted(generated):
            collection, _, stem = relative.rpartition("/")
            if not collection or "/" in collection or not re.fullmatch(r"\d+_\d+", stem):
                raise DreamBenchLayoutError(f"{run}: {relative} is not <collection_id>/<prompt>_<image>")
            yield SamplePair(method, f"{collection}-{stem}", references[relative], generated[relative])
