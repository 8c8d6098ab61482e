"""Procedural SynCD-like identities: synthetic rigid objects seen in 2-3 views on different backgrounds.

Each identity is an object (shape, colour, surface pattern, proportions) rendered with a small change
of pose and scale on a new background per view, with an exact foreground mask and a text description
("a crimson disc with thin white stripes"). Identities come in families of near-identical siblings
(a neighbouring colour, another pattern colour, a finer pattern), so telling *which object* apart from
*which background* is a real task on this data, as it is on SynCD.

Everything is a pure function of ``(seed, index)``: any identity can be re-rendered on its own.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image


SHAPES = ("disc", "square", "triangle", "hexagon", "star", "cross", "diamond", "ring")
PATTERNS = ("plain", "stripes", "dots", "checks", "rings")

# A fine palette ordered by hue, so "neighbouring colour" means a near-identical object.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("crimson", (186, 22, 46)),
    ("scarlet", (226, 38, 24)),
    ("vermilion", (227, 72, 30)),
    ("orange", (240, 128, 24)),
    ("amber", (245, 170, 20)),
    ("gold", (222, 190, 40)),
    ("yellow", (246, 226, 52)),
    ("lime", (178, 222, 48)),
    ("chartreuse", (128, 206, 40)),
    ("green", (52, 168, 64)),
    ("emerald", (30, 140, 96)),
    ("jade", (40, 160, 130)),
    ("teal", (24, 128, 132)),
    ("turquoise", (44, 196, 190)),
    ("cyan", (40, 200, 230)),
    ("azure", (40, 140, 230)),
    ("cobalt", (30, 80, 190)),
    ("blue", (40, 60, 220)),
    ("indigo", (70, 40, 160)),
    ("violet", (130, 60, 210)),
    ("purple", (120, 40, 140)),
    ("plum", (142, 70, 120)),
    ("magenta", (210, 40, 170)),
    ("fuchsia", (236, 70, 150)),
    ("rose", (230, 100, 130)),
    ("pink", (244, 160, 190)),
    ("salmon", (240, 130, 110)),
    ("coral", (246, 110, 80)),
    ("brown", (130, 80, 40)),
    ("tan", (200, 160, 110)),
    ("olive", (120, 124, 40)),
    ("grey", (128, 128, 128)),
    ("white", (240, 240, 236)),
    ("black", (28, 28, 30)),
)
COLOUR_NAMES = tuple(name for name, _ in PALETTE)
_RGB = dict(PALETTE)
_CHROMATIC = COLOUR_NAMES[:-3]  # grey, white and black have no hue neighbours

BACKGROUNDS = ("meadow", "sand", "concrete", "wooden", "tiled", "cloudy", "dusky", "misty")


@dataclass(frozen=True)
class ObjectSpec:
    """What makes an object itself; pose, scale and background belong to a view, not to the object."""

    shape: str
    colour: str
    pattern: str = "plain"
    pattern_colour: str = "white"
    pattern_scale: float = 3.0
    pattern_angle: float = 0.0
    aspect: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {PATTERNS}")
        for name in (self.colour, self.pattern_colour):
            if name not in _RGB:
                raise ValueError(f"unknown colour {name!r}")
        if self.pattern != "plain" and self.pattern_colour == self.colour:
            raise ValueError("pattern colour must differ from the body colour")
        if not 1.0 <= self.pattern_scale <= 8.0:
            raise ValueError(f"pattern_scale must be in [1, 8], got {self.pattern_scale}")
        if not 0.6 <= self.aspect <= 1.6:
            raise ValueError(f"aspect must be in [0.6, 1.6], got {self.aspect}")

    def describe(self) -> str:
        """A text description in the style of SynCD's object descriptions."""
        if self.pattern == "plain":
            return f"a plain {self.colour} {self.shape}"
        fine = "thin" if self.pattern_scale >= 4.5 else "wide"
        detail = {
            "stripes": f"{fine} {self.pattern_colour} stripes",
            "dots": f"{'small' if fine == 'thin' else 'large'} {self.pattern_colour} dots",
            "checks": f"{'small' if fine == 'thin' else 'large'} {self.pattern_colour} checks",
            "rings": f"{fine} {self.pattern_colour} rings",
        }[self.pattern]
        return f"a {self.colour} {self.shape} with {detail}"


_PATTERN_WORDS = {"stripes": "stripes", "dots": "dots", "checks": "checks", "rings": "rings"}
_DESCRIPTION = re.compile(
    r"a (?:plain (?P<plain_colour>[a-z]+) (?P<plain_shape>[a-z]+)"
    r"|(?P<colour>[a-z]+) (?P<shape>[a-z]+) with (?P<fine>thin|wide|small|large) (?P<pattern_colour>[a-z]+) "
    r"(?P<pattern>stripes|dots|checks|rings))"
)


def spec_from_description(text: str) -> ObjectSpec | None:
    """The object a description (as :meth:`ObjectSpec.describe` writes it) names, found anywhere in ``text``;
    None when there is none. Proportions and pattern angle are not in the text and take defaults."""
    for match in _DESCRIPTION.finditer(text.lower()):
        try:
            if match["plain_shape"]:
                return ObjectSpec(shape=match["plain_shape"], colour=match["plain_colour"])
            return ObjectSpec(
                shape=match["shape"],
                colour=match["colour"],
                pattern=_PATTERN_WORDS[match["pattern"]],
                pattern_colour=match["pattern_colour"],
                pattern_scale=6.0 if match["fine"] in ("thin", "small") else 2.5,
            )
        except ValueError:
            continue  # words that look like a description but name no known shape or colour
    return None


def _neighbour_colour(name: str, rng: np.random.Generator, avoid: str) -> str:
    if name not in _CHROMATIC:
        options = [c for c in ("grey", "white", "black", "tan") if c not in (name, avoid)]
        return str(rng.choice(options))
    i = _CHROMATIC.index(name)
    options = [_CHROMATIC[(i + d) % len(_CHROMATIC)] for d in (-2, -1, 1, 2)]
    options = [c for c in options if c != avoid]
    return str(rng.choice(options))


def perturb(spec: ObjectSpec, rng: np.random.Generator) -> ObjectSpec:
    """A different but near-identical object: one attribute moves a small step."""
    choices = ["colour", "pattern_colour", "pattern_scale", "pattern"] if spec.pattern != "plain" else ["colour"] * 2
    choices.append("pattern")
    what = str(rng.choice(choices))
    if what == "colour":
        return replace(spec, colour=_neighbour_colour(spec.colour, rng, avoid=spec.pattern_colour))
    if what == "pattern_colour":
        return replace(spec, pattern_colour=_neighbour_colour(spec.pattern_colour, rng, avoid=spec.colour))
    if what == "pattern_scale":
        return replace(spec, pattern_scale=2.5 if spec.pattern_scale >= 4.5 else 6.0)
    others = [p for p in PATTERNS if p != spec.pattern]
    pattern = str(rng.choice(others))
    pattern_colour = spec.pattern_colour
    if pattern != "plain" and pattern_colour == spec.colour:
        pattern_colour = _neighbour_colour(spec.colour, rng, avoid=spec.colour)
    return replace(spec, pattern=pattern, pattern_colour=pattern_colour)


def random_spec(rng: np.random.Generator) -> ObjectSpec:
    """A fresh object drawn uniformly over shapes, colours and patterns."""
    colour = str(rng.choice(COLOUR_NAMES))
    pattern = str(rng.choice(PATTERNS))
    pattern_colour = str(rng.choice([c for c in COLOUR_NAMES if c != colour]))
    return ObjectSpec(
        shape=str(rng.choice(SHAPES)),
        colour=colour,
        pattern=pattern,
        pattern_colour=pattern_colour,
        pattern_scale=float(rng.choice([2.5, 6.0])),
        pattern_angle=float(rng.uniform(0, 180)),
        aspect=float(rng.uniform(0.75, 1.3)),
    )


# -- rendering ------------------------------------------------------------------------------------


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership in the unit-sized shape, in object coordinates (u right, v down, |.| <= ~1)."""
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 1.0
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.5)
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        return ((np.abs(u) <= 0.95) & (np.abs(v) <= 0.32)) | ((np.abs(u) <= 0.32) & (np.abs(v) <= 0.95))
    theta = np.arctan2(v, u)
    if shape == "hexagon":
        sector = np.mod(theta, math.pi / 3) - math.pi / 6
        return r * np.cos(sector) <= 0.9
    if shape == "triangle":
        # equilateral, apex up: three half-planes
        return (v <= 0.7) & (np.abs(u) <= (v + 1.0) / 1.7)
    if shape == "star":
        spikes = 0.55 + 0.45 * np.abs(np.cos(2.5 * (theta + math.pi / 2)))
        return r <= spikes
    raise ValueError(f"unknown shape {shape!r}")


def _pattern_mask(spec: ObjectSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if spec.pattern == "plain":
        return np.zeros(u.shape, dtype=bool)
    a = math.radians(spec.pattern_angle)
    pu, pv = u * math.cos(a) + v * math.sin(a), -u * math.sin(a) + v * math.cos(a)
    f = spec.pattern_scale / 2.0
    if spec.pattern == "stripes":
        return np.sin(2 * math.pi * f * pu) > 0.2
    if spec.pattern == "checks":
        return (np.floor(pu * f * 2) + np.floor(pv * f * 2)) % 2 == 0
    if spec.pattern == "dots":
        cu, cv = pu * f * 2 - np.round(pu * f * 2), pv * f * 2 - np.round(pv * f * 2)
        return np.hypot(cu, cv) < 0.3
    if spec.pattern == "rings":
        return np.sin(2 * math.pi * f * np.hypot(u, v)) > 0.2
    raise ValueError(f"unknown pattern {spec.pattern!r}")


def render_background(size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A smooth random scene (ground, horizon, low-frequency colour field, grain); returns HxWx3 uint8."""
    kind = str(rng.choice(BACKGROUNDS))
    base_hue = rng.uniform(0, 1)
    coarse = np.empty((4, 4, 3))
    for i in range(4):
        for j in range(4):
            h = (base_hue + rng.normal(0, 0.06)) % 1.0
            coarse[i, j] = colorsys.hsv_to_rgb(h, rng.uniform(0.15, 0.55), rng.uniform(0.35, 0.9))
    smooth = Image.fromarray((coarse * 255).astype(np.uint8), "RGB").resize((size, size), Image.Resampling.BICUBIC)
    field = np.asarray(smooth, dtype=np.float32)
    horizon = int(size * rng.uniform(0.35, 0.65))
    ground = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.7))) * 255
    rows = np.arange(size, dtype=np.float32)[:, None, None]
    blend = np.clip((rows - horizon) / (0.08 * size), 0, 1)
    field = field * (1 - 0.6 * blend) + ground[None, None, :] * 0.6 * blend
    field += rng.normal(0, 6.0, size=(size, size, 1)).astype(np.float32)  # grain
    return np.clip(field, 0, 255).astype(np.uint8), kind


@dataclass(frozen=True)
class ViewPose:
    """Where and how an object sits in one view."""

    center: tuple[float, float]
    radius: float
    angle: float


def render_object(canvas: np.ndarray, spec: ObjectSpec, pose: ViewPose) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``spec`` onto a copy of ``canvas`` at ``pose``; return the image and its exact mask."""
    height, width = canvas.shape[:2]
    cx, cy = pose.center
    extent = pose.radius * max(spec.aspect, 1.0) * 1.5  # every shape lies within radius 1.2 of its centre
    x0, x1 = max(0, int(cx - extent)), min(width, int(math.ceil(cx + extent)) + 1)
    y0, y1 = max(0, int(cy - extent)), min(height, int(math.ceil(cy + extent)) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    a = math.radians(pose.angle)
    u = (dx * math.cos(a) + dy * math.sin(a)) / (pose.radius * spec.aspect)
    v = (-dx * math.sin(a) + dy * math.cos(a)) / pose.radius
    inside = _shape_mask(spec.shape, u, v)
    colour = np.where(_pattern_mask(spec, u, v)[..., None], _RGB[spec.pattern_colour], _RGB[spec.colour])
    shade = (1.08 - 0.16 * (v + 1) / 2)[..., None]  # lit from above, fixed to the object
    painted = np.clip(colour * shade, 0, 255).astype(np.uint8)
    image = canvas.copy()
    mask = np.zeros((height, width), dtype=bool)
    region = image[y0:y1, x0:x1]
    region[inside] = painted[inside]
    mask[y0:y1, x0:x1] = inside
    return image, mask


def random_pose(size: int, base_radius: float, base_angle: float, rng: np.random.Generator) -> ViewPose:
    """A view's pose: the object's scale and rotation move a little, its position a lot."""
    radius = base_radius * rng.uniform(0.85, 1.15)
    margin = radius * 1.7
    center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    return ViewPose(center=center, radius=radius, angle=base_angle + rng.uniform(-20, 20))


# -- identities -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralConfig:
    """How many identities to make, at what size, from which seed."""

    identities: int = 1000
    image_size: int = 512
    seed: int = 0
    three_view_fraction: float = 1 / 3
    max_family_size: int = 3

    def __post_init__(self) -> None:
        if self.identities < 3:
            raise ValueError(f"identities must be >= 3 (train/val/test), got {self.identities}")
        if not 32 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be in [32, 2048], got {self.image_size}")
        if not 0.0 <= self.three_view_fraction <= 1.0:
            raise ValueError("three_view_fraction must be in [0, 1]")
        if self.max_family_size < 1:
            raise ValueError("max_family_size must be >= 1")


@dataclass(frozen=True)
class IdentityPlan:
    """Everything needed to render one identity, decided before any pixel is drawn."""

    index: int
    id: int
    family: int
    spec: ObjectSpec
    n_views: int


def plan_identities(config: ProceduralConfig) -> list[IdentityPlan]:
    """Decide ids, object specs, families and view counts; descriptions are unique by construction."""
    rng = np.random.default_rng([config.seed, 0xC0FFEE])
    plans: list[IdentityPlan] = []
    seen: set[str] = set()
    next_id = int(rng.integers(1, 50))
    family = 0
    while len(plans) < config.identities:
        base = random_spec(rng)
        members = [base]
        for _ in range(int(rng.integers(1, config.max_family_size + 1)) - 1):
            members.append(perturb(members[-1] if rng.random() < 0.5 else base, rng))
        for spec in members:
            description = spec.describe()
            if description in seen or len(plans) >= config.identities:
                continue
            seen.add(description)
            n_views = 3 if rng.random() < config.three_view_fraction else 2
            plans.append(IdentityPlan(index=len(plans), id=next_id, family=family, spec=spec, n_views=n_views))
            next_id += int(rng.integers(1, 4))  # sparse ids, as in SynCD: never assume id == row
        family += 1
    return plans


def fake_objaverse_id(seed: int, index: int) -> str:
    """A 32-hex-digit id in the format of Objaverse uids."""
    return hashlib.md5(f"procedural:{seed}:{index}".encode()).hexdigest()


def render_identity(plan: IdentityPlan, config: ProceduralConfig) -> dict:
    """Render the views of one identity; returns a row for the ``identities`` table (split unset)."""
    rng = np.random.default_rng([config.seed, plan.index, 0x5EED])
    size = config.image_size
    base_radius = size * rng.uniform(0.14, 0.22)
    base_angle = rng.uniform(-30, 30)
    description = plan.spec.describe()
    row: dict = {
        "id": plan.id,
        "category": "rigid",
        "category_description": description,
        "objaverse_id": fake_objaverse_id(config.seed, plan.index),
        "quality": None,
        "n_images": plan.n_views,
    }
    for k in range(1, plan.n_views + 1):
        background, kind = render_background(size, rng)
        image, mask = render_object(background, plan.spec, random_pose(size, base_radius, base_angle, rng))
        row[f"images{k}"] = image
        row[f"masks{k}"] = mask
        row[f"prompts{k}"] = f"{description} on a {kind} background"
    return row
