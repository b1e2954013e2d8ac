"""`centric simulate`: planning an experiment on simulated traffic, A/B split against bandit.

Small fixed-seed scenarios whose answer is known: the simulation runs the server's own
allocation (bandits.learner) and report (experiments.report) code, so these also fail when
either stops deciding as it should.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from experiments.model import Mode
from server import cli, planning
from server.planning import Plan, simulate
from tests.support import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_big_uplift_is_found_by_both_modes():
    sim = simulate(Plan(base_rate=0.05, uplift=1.0, daily_traffic=5000, days=14, runs=6,
                        seed=1))
    for mode in (Mode.AB, Mode.BANDIT):
        s = sim.summary(mode)
        assert s.decided >= 5, (mode, [r.to_dict() for r in s.runs])
        assert s.share("best") >= 5 / 6, (mode, [r.to_dict() for r in s.runs])
        assert s.share("other") == 0
        assert all(r.winner == "v2" for r in s.runs if r.outcome == "best")
    ab, bandit = sim.summary(Mode.AB), sim.summary(Mode.BANDIT)
    # The split serves v2 half the time; the bandit moves most traffic to it.
    assert abs(ab.mean("best_share") - 0.5) < 0.03
    assert bandit.mean("best_share") > 0.8


def test_the_bandit_loses_fewer_conversions_when_most_arms_are_losers():
    # Three of four arms lose 1.5 points: a split serves them 3/4 of the traffic until it
    # decides; the bandit moves away from them within days.
    sim = simulate(Plan(base_rate=0.05, uplift=0.3, daily_traffic=3000, variants=4, days=20,
                        runs=5, seed=2))
    ab, bandit = sim.summary(Mode.AB), sim.summary(Mode.BANDIT)
    assert bandit.mean("lost_total") < 0.6 * ab.mean("lost_total")
    assert bandit.mean("best_share") > 0.7 > 0.3 > ab.mean("best_share")
    # Lost conversions are the best rate minus the served one, per visitor: the split's
    # until its decision is close to 3/4 x 1.5 points x its visitors.
    for r in ab.runs:
        assert r.lost_during == pytest.approx(0.75 * 0.015 * r.visitors, rel=0.05)
        assert r.lost_total == pytest.approx(r.lost_during)  # it shipped the best variant
    assert ab.lost_by_day()[-1] == pytest.approx(ab.mean("lost_total"))


def test_with_no_uplift_the_decisions_are_not_false_picks():
    # Enough traffic that the always-valid intervals get inside the +-5% ROPE in days.
    sim = simulate(Plan(base_rate=0.05, uplift=0.0, daily_traffic=100_000, days=20, runs=10,
                        seed=3))
    for mode in (Mode.AB, Mode.BANDIT):
        s = sim.summary(mode)
        assert s.decided >= 8, mode
        assert s.share("other") <= 0.1, (mode, [r.to_dict() for r in s.runs])
        assert all(r.winner in (None, "control") for r in s.runs)
        assert s.mean("lost_total") == 0.0


def test_a_worse_treatment_is_not_shipped():
    sim = simulate(Plan(base_rate=0.05, uplift=-0.5, daily_traffic=4000, days=10, runs=4,
                        seed=4))
    for s in sim.summaries:
        assert s.share("other") == 0, s.mode
        assert all(r.winner in (None, "control") for r in s.runs)
    ab, bandit = sim.summary(Mode.AB), sim.summary(Mode.BANDIT)
    # The split keeps the control within two days; the bandit starves v2, whose interval
    # then narrows slowly, so it may take longer to say so, but it loses less meanwhile.
    assert ab.share("best") == 1 and max(ab.decision_days()) <= 2
    assert bandit.share("best") >= 0.5
    assert bandit.mean("lost_total") < 0.5 * ab.mean("lost_total")


def test_outcomes_name_what_the_verdict_picked():
    up = Plan(base_rate=0.04, uplift=0.1, daily_traffic=100, variants=3)
    assert planning._outcome(up, "ship", "v2") == "best"
    assert planning._outcome(up, "ship", "control") == "other"
    assert planning._outcome(up, "ship", "v3") == "other"
    assert planning._outcome(up, "no_difference", None) == "no_difference"
    assert planning._outcome(up, None, None) == "undecided"
    flat = Plan(base_rate=0.04, uplift=0.0, daily_traffic=100)
    # All equal: keeping the control is right, claiming that v2 beats it is not.
    assert planning._outcome(flat, "ship", "control") == "best"
    assert planning._outcome(flat, "ship", "v2") == "other"
    down = Plan(base_rate=0.04, uplift=-0.2, daily_traffic=100)
    assert list(down.rates) == pytest.approx([0.04, 0.032])
    assert planning._outcome(down, "ship", "control") == "best"


def test_the_same_seed_gives_the_same_answer_and_another_seed_another():
    plan = Plan(base_rate=0.05, uplift=0.5, daily_traffic=2000, days=4, runs=2, seed=7)
    first, again = simulate(plan).to_dict(), simulate(plan).to_dict()
    other = simulate(Plan(base_rate=0.05, uplift=0.5, daily_traffic=2000, days=4, runs=2,
                          seed=8)).to_dict()
    for d in (first, again, other):
        d.pop("seconds")
    assert first == again
    assert first != other


def test_the_cli_prints_both_modes_and_writes_a_png(tmp_path, capsys):
    chart = tmp_path / "plan.png"
    code = cli.main(["simulate", "--base-rate", "0.05", "--uplift", "0.5", "--daily-traffic",
                     "2000", "--days", "5", "--runs", "2", "--plot", str(chart)])
    out = capsys.readouterr().out
    assert code == 0
    assert "A/B split" in out and "bandit" in out
    assert "days to decision" in out and "lost conversions" in out
    data = chart.read_bytes()
    assert data.startswith(PNG_MAGIC)
    import matplotlib.image

    image = matplotlib.image.imread(chart)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_the_cli_writes_json_and_svg(tmp_path, capsys):
    chart = tmp_path / "plan.svg"
    code = cli.main(["simulate", "--base-rate", "0.04", "--uplift", "0.2", "--daily-traffic",
                     "1000", "--variants", "3", "--segments", "2", "--days", "3", "--runs",
                     "2", "--json", "--plot", str(chart)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["modes"]) == {"ab", "bandit"}
    assert result["truth"]["best"] == ["v2"]
    assert result["truth"]["rates"] == pytest.approx([0.04, 0.048, 0.04])
    for mode in result["modes"].values():
        assert mode["runs"] == 2 and len(mode["each_run"]) == 2
        assert len(mode["lost_conversions_by_day"]) == 3
        assert set(mode["outcomes"]) == set(planning.OUTCOMES)
        assert mode["undecided"] == 2 and mode["days_to_decision"]["median"] is None
    assert b"<svg" in chart.read_bytes()[:1000]


@pytest.mark.parametrize(("args", "message"), [
    (["--base-rate", "-0.1"], "--base-rate must lie strictly between 0 and 1"),
    (["--base-rate", "1.5"], "--base-rate must lie strictly between 0 and 1"),
    (["--base-rate", "nan"], "--base-rate"),
    (["--uplift", "-1"], "--uplift must be a relative uplift above -1"),
    (["--uplift", "-3"], "--uplift must be a relative uplift above -1"),
    (["--base-rate", "0.6", "--uplift", "1"], "is not a rate"),
    (["--variants", "1"], "--variants must be from 2"),
    (["--daily-traffic", "0"], "--daily-traffic must be a positive number"),
    (["--daily-traffic", "-5"], "--daily-traffic must be a positive number"),
    (["--daily-traffic", "1e30"], "--daily-traffic must be a positive number"),
    (["--days", "0"], "--days must be from 1"),
    (["--runs", "0"], "--runs must be from 1"),
    (["--segments", "0"], "--segments must be from 1"),
    (["--refresh-hours", "0"], "--refresh-hours must be from 1"),
    (["--seed", "-1"], "--seed must not be negative"),
    (["--plot", "chart.gif"], "--plot must name a .png or .svg file"),
])
def test_bad_input_is_one_clear_error(args, message, capsys):
    base = {"--base-rate": "0.04", "--uplift": "0.1", "--daily-traffic": "1000"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["simulate", *[x for k, v in {**base, **given}.items() for x in (k, v)]]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.startswith("centric simulate: error:")
    assert captured.out == ""


def test_bad_input_from_the_shell_exits_non_zero_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "simulate", "--base-rate", "0.04", "--uplift",
         "-1.5", "--daily-traffic", "0", "--variants", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for flag in ("--uplift", "--daily-traffic", "--variants"):
        assert flag in result.stderr


def test_an_unwritable_plot_is_an_error(tmp_path, capsys):
    code = cli.main(["simulate", "--base-rate", "0.05", "--uplift", "0.5", "--daily-traffic",
                     "500", "--days", "1", "--runs", "1", "--plot",
                     str(tmp_path / "missing" / "plan.png")])
    assert code == 1
    assert "cannot write" in capsys.readouterr().err


def test_bandit_cells_are_one_stratum_per_refresh(monkeypatch):
    # Capture the cells the report is given: one epoch per refresh window for the bandit,
    # one per day for the split; exposures add up to the visitors, expected exposures too.
    seen: dict[Mode, dict] = {}
    real = planning.build_report

    def spy(e, cells, rng, options):
        seen[e.mode] = {"cells": dict(cells), "epoch_seconds": options.epoch_seconds}
        return real(e, cells, rng, options)

    monkeypatch.setattr(planning, "build_report", spy)
    plan = Plan(base_rate=0.05, uplift=0.0, daily_traffic=2400, days=2, runs=1, seed=5,
                refresh_hours=6)
    sim = simulate(plan)
    for mode, epochs, seconds in ((Mode.BANDIT, 8, 6 * 3600.0), (Mode.AB, 2, 86400.0)):
        cells = seen[mode]["cells"]
        assert seen[mode]["epoch_seconds"] == seconds
        assert sorted({k[4] for k in cells}) == list(range(epochs))
        assert {k[0] for k in cells} == {"p"} and {k[3] for k in cells} == {"control", "v2"}
        exposures = sum(c.exposures for c in cells.values())
        assert exposures == sim.summary(mode).runs[0].visitors
        assert sum(c.expected for c in cells.values()) == pytest.approx(exposures)
        assert np.all([len(c.metrics[planning.METRIC]) == 8 for c in cells.values()])
