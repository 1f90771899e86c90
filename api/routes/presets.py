"""/presets: the named starting points of a job spec, with their full configs."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.schemas import PresetList, PresetOut
from gan.config import PRESETS

router = APIRouter(prefix="/presets", tags=["presets"])


def preset_out(name: str) -> PresetOut:
    preset = PRESETS[name]
    return PresetOut(name=name, description=preset.description, config=preset.config.to_dict())


@router.get("", response_model=PresetList)
def list_presets() -> PresetList:
    """Every preset with its full config. A job spec names one and overrides any field."""
    return PresetList(presets=[preset_out(name) for name in PRESETS])


@router.get(
    "/{name}", response_model=PresetOut, responses={404: {"description": "No such preset."}}
)
def get_preset(name: str) -> PresetOut:
    """One preset with its full config."""
    if name not in PRESETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no preset {name!r}; see GET /presets")
    return preset_out(name)
