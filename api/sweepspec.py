"""A sweep's points: its grid or list expanded into one job spec per point, each validated as
POST /jobs validates a spec, every problem a 422 naming where it is in the request
(``["body", "grid", "lr_g", 2]``: the third value of the grid's ``lr_g``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from pydantic import BaseModel, ValidationError

from api.errors import field_error
from api.schemas import JobSpec, SweepIn

Loc = list[str | int]


@dataclass(frozen=True)
class Point:
    """One point of a sweep: the fields it sets over the base, and where in the request each
    came from (its loc after "body")."""

    values: dict[str, Any]
    origins: dict[str, Loc]

    def loc(self, field: str) -> Loc:
        """Where ``field`` of this point's spec was given: the point's, or else the base's."""
        return ["body", *self.origins.get(field, ["base", field])]


def _fields() -> set[str]:
    """What a point may set: a job spec's training fields (a webhook is the base's, for all)."""
    return set(JobSpec.model_fields) - {"webhook"}


def _check_field(name: str, loc: Loc) -> None:
    if name not in _fields():
        raise field_error(
            ["body", *loc], f"{name!r} is not a job spec field (see POST /jobs's JobSpec)"
        )


def _too_many(count: int, max_jobs: int, loc: Loc) -> HTTPException:
    return field_error(
        ["body", *loc],
        f"this sweep makes {count} jobs; at most {max_jobs} a sweep (GAN_MAX_SWEEP_JOBS)",
    )


def grid_points(grid: dict[str, list[Any]], max_jobs: int) -> list[Point]:
    """Every combination of the grid's values, the last field varying fastest."""
    if not grid:
        raise field_error(["body", "grid"], "is empty: give at least one field and its values")
    for name, values in grid.items():
        _check_field(name, ["grid", name])
        if not values:
            raise field_error(["body", "grid", name], "needs at least one value")
    count = math.prod(len(values) for values in grid.values())  # before making any
    if count > max_jobs:
        raise _too_many(count, max_jobs, ["grid"])
    names = list(grid)
    indexed = [list(enumerate(grid[name])) for name in names]
    return [
        Point(
            {name: value for name, (_, value) in zip(names, combo, strict=True)},
            {name: ["grid", name, i] for name, (i, _) in zip(names, combo, strict=True)},
        )
        for combo in itertools.product(*indexed)
    ]


def list_points(points: list[dict[str, Any]], max_jobs: int) -> list[Point]:
    """The list's points, in order."""
    if not points:
        raise field_error(["body", "points"], "is empty: give at least one point")
    if len(points) > max_jobs:
        raise _too_many(len(points), max_jobs, ["points"])
    for i, point in enumerate(points):
        for name in point:
            _check_field(name, ["points", i, name])
    return [
        Point(dict(point), {name: ["points", i, name] for name in point})
        for i, point in enumerate(points)
    ]


def expand(body: SweepIn, max_jobs: int) -> list[Point]:
    """The sweep's points (422 when it has none, too many, or names an unknown field)."""
    if body.grid is not None and body.points is not None:
        raise field_error(["body", "points"], "give a grid or points, not both")
    if body.grid is not None:
        return grid_points(body.grid, max_jobs)
    if body.points is not None:
        return list_points(body.points, max_jobs)
    raise field_error(
        ["body", "grid"], "a sweep needs a grid (field → values) or points (a list of overrides)"
    )


def point_specs(body: SweepIn, points: Sequence[Point]) -> list[BaseModel]:
    """Each point's job spec: the base with the point's fields over it, validated as POST /jobs
    validates one. Every bad value of every point is reported at once, each at its loc."""
    base = body.base.model_dump(exclude_none=True)
    specs: list[BaseModel] = []
    errors: dict[tuple[str | int, ...], dict[str, Any]] = {}
    for point in points:
        try:
            specs.append(JobSpec.model_validate({**base, **point.values}))
        except ValidationError as e:
            for error in e.errors(include_url=False, include_context=False, include_input=False):
                field, *rest = error["loc"]
                loc = [*point.loc(str(field)), *rest]
                errors.setdefault(
                    tuple(loc), {"loc": loc, "msg": error["msg"], "type": error["type"]}
                )
    if errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, list(errors.values()))
    return specs
