"""/presets: the named starting points of a job spec, with their full configs, and what each
resolves to for each kind of data (images, points): some defaults follow the data."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.schemas import PresetList, PresetOut
from gan.config import KIND_EXAMPLES, PRESETS, resolve_for_kinds

router = APIRouter(prefix="/presets", tags=["presets"])


def preset_out(name: str) -> PresetOut:
    preset = PRESETS[name]
    by_kind = {kind: config.to_dict() for kind, config in resolve_for_kinds(name).items()}
    return PresetOut(
        name=name,
        description=preset.description,
        config=preset.config.to_dict(),
        by_data_kind=by_kind,
        data_kind_examples=dict(KIND_EXAMPLES),
    )


@router.get("", response_model=PresetList)
def list_presets() -> PresetList:
    """Every preset with its full config, and what it resolves to for each kind of data. A job
    spec names one and overrides any field; fields it does not set follow its dataset's kind."""
    return PresetList(presets=[preset_out(name) for name in PRESETS])


@router.get(
    "/{name}", response_model=PresetOut, responses={404: {"description": "No such preset."}}
)
def get_preset(name: str) -> PresetOut:
    """One preset with its full config."""
    if name not in PRESETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no preset {name!r}; see GET /presets")
    return preset_out(name)
