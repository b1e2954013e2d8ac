"""Experiment <-> plain dict (the JSON shape of the API and of storage)."""

from __future__ import annotations

from typing import Any

from experiments.model import (
    Audience,
    BanditSettings,
    DecisionSettings,
    Experiment,
    Metric,
    MetricKind,
    Mode,
    Status,
    Variant,
)


def _metric(m: Metric) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.name, "kind": m.kind.value}
    if m.harmful:
        out["harmful"] = m.harmful
    if m.within_days is not None:
        out["within_days"] = m.within_days
    return out


def to_dict(e: Experiment) -> dict[str, Any]:
    """Experiment as the JSON object the API returns (definition plus lifecycle state)."""
    return {
        "key": e.key,
        "name": e.name,
        "hypothesis": e.hypothesis,
        "mode": e.mode.value,
        "variants": [{"key": v.key, "weight": v.weight, "payload": v.payload} for v in e.variants],
        "control": e.control,
        "metric": _metric(e.metric),
        "guardrails": [_metric(g) for g in e.guardrails],
        "audience": {
            "personas": list(e.audience.personas),
            "channels": list(e.audience.channels),
            "rules": list(e.audience.rules),
        },
        "coverage": e.coverage,
        "holdout": e.holdout,
        "attribution_window_hours": e.attribution_window_hours,
        "bandit": {
            "prior": {"alpha": e.bandit.prior_alpha, "beta": e.bandit.prior_beta},
            "floor": e.bandit.floor,
            "pooling": e.bandit.pooling,
            "half_life_hours": e.bandit.half_life_hours,
        },
        "decision": {
            "chance_to_be_best": e.decision.chance_to_be_best,
            "loss_threshold": e.decision.loss_threshold,
            "rope": e.decision.rope,
            "min_exposures": e.decision.min_exposures,
            "alpha": e.decision.alpha,
            "effect_scale": e.decision.effect_scale,
        },
        "status": e.status.value,
        "winner": e.winner,
        "seed": e.seed,
        "revision": e.revision,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "started_at": e.started_at,
        "stopped_at": e.stopped_at,
    }


def _metric_from(d: dict[str, Any]) -> Metric:
    return Metric(name=d["name"], kind=MetricKind(d["kind"]), harmful=d.get("harmful", ""),
                  within_days=d.get("within_days"))


def from_dict(d: dict[str, Any]) -> Experiment:
    """Rebuild an Experiment from to_dict's output."""
    return Experiment(
        key=d["key"],
        name=d["name"],
        hypothesis=d.get("hypothesis", ""),
        mode=Mode(d["mode"]),
        variants=tuple(
            Variant(v["key"], float(v["weight"]), v.get("payload")) for v in d["variants"]
        ),
        control=d["control"],
        metric=_metric_from(d["metric"]),
        guardrails=tuple(_metric_from(g) for g in d.get("guardrails", [])),
        audience=Audience(
            personas=tuple(d["audience"].get("personas", [])),
            channels=tuple(d["audience"].get("channels", [])),
            rules=tuple(d["audience"].get("rules", [])),
        ),
        coverage=float(d["coverage"]),
        holdout=float(d["holdout"]),
        attribution_window_hours=float(d["attribution_window_hours"]),
        bandit=BanditSettings(
            prior_alpha=float(d["bandit"]["prior"]["alpha"]),
            prior_beta=float(d["bandit"]["prior"]["beta"]),
            floor=float(d["bandit"]["floor"]),
            # Definitions stored before pooling and fading existed get today's defaults.
            pooling=str(d["bandit"].get("pooling", "auto")),
            half_life_hours=_optional_float(d["bandit"].get("half_life_hours", 2160.0)),
        ),
        decision=DecisionSettings(**d.get("decision", {})),
        status=Status(d["status"]),
        winner=d.get("winner"),
        seed=d["seed"],
        revision=int(d["revision"]),
        created_at=float(d["created_at"]),
        updated_at=float(d["updated_at"]),
        started_at=d.get("started_at"),
        stopped_at=d.get("stopped_at"),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
