from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nearid.common.procedural import (
    SHAPES,
    ObjectSpec,
    ProceduralConfig,
    ViewPose,
    perturb,
    plan_identities,
    random_spec,
    render_background,
    render_identity,
    render_object,
)


def test_plans_are_deterministic_unique_and_sparse() -> None:
    config = ProceduralConfig(identities=400, image_size=64, seed=5)
    plans = plan_identities(config)
    assert plans == plan_identities(config)
    assert plans != plan_identities(ProceduralConfig(identities=400, image_size=64, seed=6))
    descriptions = [p.spec.describe() for p in plans]
    assert len(set(descriptions)) == 400  # strict uniqueness of the text description
    ids = [p.id for p in plans]
    assert len(set(ids)) == 400 and ids == sorted(ids)
    assert any(b - a > 1 for a, b in zip(ids, ids[1:], strict=False))  # sparse: id is not a row number
    views = Counter(p.n_views for p in plans)
    assert set(views) == {2, 3} and views[2] > views[3]


def test_families_hold_near_identical_objects() -> None:
    plans = plan_identities(ProceduralConfig(identities=300, image_size=64))
    by_family: dict[int, list] = {}
    for plan in plans:
        by_family.setdefault(plan.family, []).append(plan.spec)
    siblings = [members for members in by_family.values() if len(members) > 1]
    assert len(siblings) > 30
    for members in siblings:
        base = members[0]
        for other in members[1:]:
            assert other.shape == base.shape  # same kind of object, a different instance
            assert other != base


def test_perturb_changes_exactly_one_thing_visible_in_the_description() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = random_spec(rng)
        other = perturb(spec, rng)
        assert other.shape == spec.shape and other.aspect == spec.aspect
        assert other.describe() != spec.describe() or other.pattern_colour != spec.pattern_colour


def test_mask_is_exactly_the_painted_pixels() -> None:
    rng = np.random.default_rng(1)
    background, _ = render_background(96, rng)
    for shape in SHAPES:
        spec = ObjectSpec(shape=shape, colour="crimson", pattern="stripes", pattern_colour="white")
        image, mask = render_object(background, spec, ViewPose(center=(48, 50), radius=20, angle=15))
        assert mask.any() and not mask.all()
        assert np.array_equal(image[~mask], background[~mask])  # nothing outside the mask changed
        changed = np.any(image != background, axis=-1)
        assert changed[mask].mean() > 0.95  # (a painted pixel may equal the background by chance)


def test_render_identity_row(tmp_path) -> None:
    config = ProceduralConfig(identities=10, image_size=80, seed=2)
    plan = plan_identities(config)[3]
    row = render_identity(plan, config)
    assert row == {**row}  # plain dict
    assert row["n_images"] == plan.n_views and row["category"] == "rigid"
    assert row["category_description"] == plan.spec.describe()
    assert len(row["objaverse_id"]) == 32
    views = [row[f"images{k}"] for k in range(1, plan.n_views + 1)]
    assert all(v.shape == (80, 80, 3) and v.dtype == np.uint8 for v in views)
    assert not np.array_equal(views[0], views[1])  # another background and pose
    assert all(row[f"prompts{k}"].startswith(row["category_description"]) for k in range(1, plan.n_views + 1))
    again = render_identity(plan, config)
    assert all(np.array_equal(row[f"images{k}"], again[f"images{k}"]) for k in range(1, plan.n_views + 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"identities": 2}, "identities must be >= 3"),
        ({"image_size": 8}, "image_size"),
        ({"three_view_fraction": 1.5}, "three_view_fraction"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProceduralConfig(**kwargs)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        ObjectSpec(shape="teapot", colour="red")
    with pytest.raises(ValueError, match="pattern colour must differ"):
        ObjectSpec(shape="disc", colour="crimson", pattern="dots", pattern_colour="crimson")
