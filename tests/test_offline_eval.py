"""Offline policy evaluation: estimators against closed forms, a peer library, and the CLI.

The synthetic logs have a known segment mix, a known logging policy (drifting over the log,
as a learning bandit's does) and known Bernoulli rates per (segment, action), so every
policy's true value is a closed-form sum. Tolerances derive from the standard errors the
estimators report; the seeds are fixed, so each run computes the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bandits import offline
from server import export, offline_eval
from server.cli import main
from server.keys import Keyspace
from server.services.catalog import fit_posterior
from tests.support import ROOT, experiment_body

SEGMENT_MIX = np.array([0.5, 0.3, 0.2])
RATES = np.array([[0.05, 0.10, 0.20],
                  [0.15, 0.05, 0.10],
                  [0.30, 0.20, 0.10]])
# The logging policy drifts linearly from EARLY to LATE over the log; rows are
# distributions, every action keeps at least 0.1.
EARLY = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]])
LATE = np.array([[0.2, 0.2, 0.6], [0.5, 0.3, 0.2], [0.4, 0.5, 0.1]])
ROWS = 2000
SEEDS = 200
Z = 4.0  # a mean off by 4 standard errors: chance 6e-5 for an unbiased estimator
TARGETS = {
    "all:0": offline.one_hot(np.array([0, 0, 0]), 3),
    "all:2": offline.one_hot(np.array([2, 2, 2]), 3),
    "true best": offline.one_hot(np.argmax(RATES, axis=1), 3),
    "stochastic": np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]),
}


def true_value(pi: np.ndarray, offset: float = 0.0) -> float:
    """Closed form: sum over segments and actions of P(s) pi(a|s) rate(s, a)."""
    return float(np.sum(SEGMENT_MIX[:, None] * pi * RATES)) + offset


def simulate(seed: int, rows: int = ROWS, offset: float = 0.0,
             early: np.ndarray = EARLY, late: np.ndarray = LATE) -> offline.Log:
    """A log drawn from the known process: segment, drifting logging policy, Bernoulli."""
    rng = np.random.default_rng(seed)
    s = rng.choice(3, size=rows, p=SEGMENT_MIX)
    t = (np.arange(rows) / max(rows - 1, 1))[:, None]
    mu = (1 - t) * early[s] + t * late[s]  # each row's logging distribution
    u = rng.random(rows)[:, None]
    a = np.minimum((u > np.cumsum(mu, axis=1)).sum(axis=1), 2)
    p = mu[np.arange(rows), a]
    r = (rng.random(rows) < RATES[s, a]).astype(float) + offset
    return offline.Log.of(s, a, p, r, 3, 3)


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, list[offline.Estimate]]]:
    """Every estimator on every target over SEEDS logs, and the naive matched mean."""
    out: dict[str, dict[str, list]] = {name: {"ips": [], "snips": [], "dr": [], "naive": []}
                                       for name in TARGETS}
    for seed in range(SEEDS):
        log = simulate(seed)
        for name, pi in TARGETS.items():
            for key, est in offline.evaluate(log, pi).items():
                out[name][key].append(est)
            # Rows where the log served what the target would (deterministic targets): their
            # plain mean ignores the propensities, the textbook biased estimator.
            match = pi[log.segment, log.action] == 1.0
            out[name]["naive"].append(float(log.reward[match].mean()) if match.any() else 0.0)
    return out


def _mean_check(estimates: list[offline.Estimate], truth: float) -> tuple[float, float]:
    """(|mean estimate - truth|, tolerance): Z standard errors of a mean over the seeds."""
    values = np.array([e.estimate for e in estimates])
    se_of_mean = math.sqrt(np.mean([e.se ** 2 for e in estimates]) / len(estimates))
    return abs(float(values.mean()) - truth), Z * se_of_mean


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("estimator", ["ips", "dr"])
def test_ips_and_dr_are_unbiased_with_honest_errors_and_covering_intervals(
        runs, name, estimator):
    estimates = runs[name][estimator]
    truth = true_value(TARGETS[name])
    off, tolerance = _mean_check(estimates, truth)
    assert off < tolerance, (off, tolerance)
    # The reported standard error is the spread across seeds (within 20%: the sample
    # standard deviation of 200 draws is itself uncertain by about 5%).
    spread = float(np.std([e.estimate for e in estimates], ddof=1))
    rms_se = math.sqrt(np.mean([e.se ** 2 for e in estimates]))
    assert 0.8 < rms_se / spread < 1.2, (rms_se, spread)
    covered = np.mean([e.covers(truth) for e in estimates])
    assert 0.90 <= covered <= 0.99, covered


def test_the_unbiasedness_check_catches_an_estimator_that_ignores_propensities(runs):
    # The same tolerance rejects the matched-rows mean, biased here by 0.014 (the log serves
    # action 0 most where it converts least): the check has the power to fail.
    name = "all:0"
    naive = np.array(runs[name]["naive"])
    truth = true_value(TARGETS[name])
    _, tolerance = _mean_check(runs[name]["ips"], truth)
    assert abs(naive.mean() - truth) > 2 * tolerance, (naive.mean(), truth, tolerance)


def test_dr_has_lower_variance_than_ips_with_a_good_reward_model(runs):
    for name in TARGETS:
        ips = np.var([e.estimate for e in runs[name]["ips"]])
        dr = np.var([e.estimate for e in runs[name]["dr"]])
        assert dr < ips, (name, dr, ips)


def test_snips_varies_far_less_than_ips_when_rewards_carry_a_large_offset():
    # Every reward is 10 + a Bernoulli: IPS carries 10 * (mean weight - 1), noise whose
    # variance is 100 Var(w) / n; SNIPS divides by the realised weight mass and the constant
    # cancels. Were SNIPS computed like IPS, the two variances would be equal.
    offset = 10.0
    pi = TARGETS["stochastic"]
    truth = true_value(pi, offset)
    ips_est, snips_est = [], []
    for seed in range(SEEDS):
        log = simulate(10_000 + seed, rows=500, offset=offset)
        ips_est.append(offline.ips(log, pi))
        snips_est.append(offline.snips(log, pi))
    var_ips = np.var([e.estimate for e in ips_est], ddof=1)
    var_snips = np.var([e.estimate for e in snips_est], ddof=1)
    # The theory says about 100 times lower here; an F ratio of 10 at 199 degrees of
    # freedom each is beyond any chance.
    assert var_snips * 10 < var_ips, (var_snips, var_ips)
    # SNIPS is biased only by O(1/n) and its delta-method interval covers.
    off, tolerance = _mean_check(snips_est, truth)
    assert off < tolerance, (off, tolerance)
    covered = np.mean([e.covers(truth) for e in snips_est])
    assert 0.90 <= covered <= 0.99, covered
    rms_se = math.sqrt(np.mean([e.se ** 2 for e in snips_est]))
    spread = math.sqrt(var_snips)
    assert 0.8 < rms_se / spread < 1.2, (rms_se, spread)


def test_on_policy_values_are_the_plain_mean():
    log = simulate(1)
    mean = float(log.reward.mean())
    se = float(np.std(log.reward, ddof=1) / math.sqrt(len(log)))
    for est in offline.on_policy(log).values():
        assert est.estimate == mean
        assert est.se == pytest.approx(se)
        assert est.lower == pytest.approx(mean - 1.959964 * se)


def test_degenerate_logs_give_nan_not_errors():
    empty = offline.Log.of([], [], [], [], 1, 2)
    for est in offline.evaluate(empty, offline.constant(0, empty)).values():
        assert math.isnan(est.estimate) and est.n == 0
    # A target that never serves what was logged: IPS says 0, SNIPS has nothing to divide by.
    log = offline.Log.of([0, 0], [1, 1], [0.5, 0.5], [1.0, 0.0], 1, 2)
    assert offline.ips(log, offline.constant(0, log)).estimate == 0.0
    assert math.isnan(offline.snips(log, offline.constant(0, log)).estimate)
    with pytest.raises(ValueError, match="propensities"):
        offline.Log.of([0], [0], [0.0], [1.0], 1, 2)
    with pytest.raises(ValueError, match="distribution"):
        offline.ips(log, np.array([[0.5, 0.6]]))


def _brute_force_dr(log: offline.Log, pi: np.ndarray) -> float:
    """DR written out row by row, with its own two-fold cell means (rows alternate)."""
    n = len(log)
    rows = [(int(log.segment[i]), int(log.action[i]), float(log.propensity[i]),
             float(log.reward[i])) for i in range(n)]
    total = 0.0
    for i, (s, a, p, r) in enumerate(rows):
        train = [row for j, row in enumerate(rows) if j % 2 != i % 2]

        def model(seg: int, act: int, train: list = train) -> float:
            cell = [rr for ss, aa, _, rr in train if ss == seg and aa == act]
            if cell:
                return sum(cell) / len(cell)
            arm = [rr for _, aa, _, rr in train if aa == act]
            return sum(arm) / len(arm) if arm else sum(rr for *_, rr in train) / len(train)

        direct = sum(pi[s, b] * model(s, b) for b in range(log.n_actions))
        total += direct + pi[s, a] / p * (r - model(s, a))
    return total / n


def test_dr_matches_a_row_by_row_computation_for_a_stochastic_target():
    log = simulate(3, rows=300)
    pi = TARGETS["stochastic"]
    assert offline.doubly_robust(log, pi).estimate == pytest.approx(_brute_force_dr(log, pi),
                                                                    rel=1e-12)
    ips = sum(pi[s, a] / p * r for s, a, p, r in zip(log.segment, log.action, log.propensity,
                                                     log.reward, strict=True)) / len(log)
    assert offline.ips(log, pi).estimate == pytest.approx(ips, rel=1e-12)


def test_estimates_agree_with_contextualbandits_evaluation():
    from contextualbandits import evaluation

    log = simulate(11, rows=3000)
    n = len(log)
    features = np.eye(3)[log.segment]  # the segment, one-hot: the library wants a matrix
    model = offline.cross_fitted_model(log)
    rows = np.arange(n)
    deterministic = {**{k: v for k, v in TARGETS.items() if k != "stochastic"},
                     "best per segment": offline.best_per_segment(log)}
    for name, pi in deterministic.items():
        pred = np.argmax(pi, axis=1)[log.segment]  # the action the target serves each row
        # With a zero reward model the library's DR is exactly IPS.
        peer_ips = evaluation.evaluateDoublyRobust(
            pred, features, log.action, log.reward, log.propensity, np.zeros((n, 2)),
            handle_invalid=False, pmin=None)
        assert offline.ips(log, pi).estimate == pytest.approx(peer_ips, rel=1e-12), name
        # Its DR takes the model's value for the target's and the logged action per row.
        estimates = np.column_stack([model[rows, pred], model[rows, log.action]])
        peer_dr = evaluation.evaluateDoublyRobust(
            pred, features, log.action, log.reward, log.propensity, estimates,
            handle_invalid=False, pmin=None)
        assert offline.doubly_robust(log, pi).estimate == pytest.approx(peer_dr,
                                                                        rel=1e-12), name
    for name, pi in TARGETS.items():
        # NCIS with est = pi(a_i|s_i), no capping, is SNIPS.
        peer_snips = evaluation.evaluateNCIS(pi[log.segment, log.action], log.reward,
                                             log.propensity, cmin=0.0, cmax=np.inf)
        assert offline.snips(log, pi).estimate == pytest.approx(peer_snips, rel=1e-12), name


def test_snips_is_the_libraries_replay_under_uniform_logging():
    from contextualbandits import evaluation

    uniform = np.full((3, 3), 1 / 3)
    log = simulate(12, rows=3000, early=uniform, late=uniform)
    pi = TARGETS["true best"]

    class Fixed:
        def predict(self, features: np.ndarray) -> np.ndarray:
            return np.argmax(pi, axis=1)[np.argmax(features, axis=1)]

    replay, matched = evaluation.evaluateRejectionSampling(
        Fixed(), np.eye(3)[log.segment], log.action, log.reward, online=False)
    assert offline.snips(log, pi).estimate == pytest.approx(replay, rel=1e-12)
    assert matched == int(np.sum(pi[log.segment, log.action]))


# End to end: an experiment through the HTTP API on the real Redis, then `centric evaluate`.

CONVERSION = {"control": 0.05, "b": 0.15, "c": 0.08}
POLICIES = ["logged", "all:control", "all:b", "all:c", "best-per-segment", "current"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _traffic(client, sdk, clock, key: str, visitors: int, rates: dict[str, float],
             value: float | None = None) -> int:
    sim = np.random.default_rng(17)
    decided = 0
    for i in range(visitors):
        visitor = f"{key}-v{i}"
        d = client.post("/v1/decide", json={"visitor_id": visitor,
                                            "channel": ("web", "app")[i % 2],
                                            "experiments": [key]}, headers=sdk).json
        decision = d["decisions"][0]
        decided += decision["reason"] in ("assigned", "holdout")
        if sim.random() < rates[decision["variant"]]:
            events = 1 + int(value is not None and sim.random() < 0.3)
            for j in range(events):  # a few revenue decisions buy twice
                event: dict[str, object] = {"visitor_id": visitor, "metric": "purchase",
                                             "event_id": f"e{i}-{j}"}
                if value is not None:
                    event["value"] = round(float(sim.exponential(value)), 2)
                assert client.post("/v1/track", json=event, headers=sdk).status_code == 200
        if (i + 1) % (visitors // 4) == 0:
            clock.advance(3600)  # new allocation epochs: the propensities change
    return decided


def _observed(rclient, prefix, app, key: str) -> tuple[int, float, dict]:
    """Decisions, mean reward per decision and per (segment, variant), from the export."""
    services = app.extensions["centric"]
    experiment = services.experiments.get(key)
    rows = list(export.records(rclient, Keyspace(prefix), experiment))
    decisions = {r["decision_id"]: r for r in rows if r["kind"] == "decision"}
    revenue = experiment.metric.kind.value == "revenue"
    reward = dict.fromkeys(decisions, 0.0)
    for r in rows:
        if r["kind"] == "outcome" and r["metric"] == "purchase":
            reward[r["decision_id"]] = (reward[r["decision_id"]] + r["value"]) if revenue \
                else 1.0
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for did, d in decisions.items():
        segment = cells.setdefault((d["persona"], d["channel"]), {})
        segment.setdefault(d["variant"], []).append(reward[did])
    means = {segment: {v: sum(x) / len(x) for v, x in by_variant.items()}
             for segment, by_variant in cells.items()}
    return len(decisions), sum(reward.values()) / len(decisions), means


def test_cli_evaluates_a_bandit_experiment_run_through_the_api(
        cli_env, capsys, app, client, admin, sdk, clock, rclient, prefix):
    body = experiment_body(variants=[{"key": k} for k in CONVERSION], holdout=0.2)
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/hero/start", headers=admin).status_code == 200
    decided = _traffic(client, sdk, clock, "hero", 800, CONVERSION)
    count, mean, cells = _observed(rclient, prefix, app, "hero")
    assert count == decided

    status, out, err = _cli(capsys, "evaluate", "hero", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["decisions"] == decided and result["skipped"] == 0
    by_name = {p["name"]: p for p in result["policies"]}
    assert list(by_name) == POLICIES
    logged = by_name["logged"]
    assert logged["ips"]["estimate"] == pytest.approx(mean, rel=1e-12)
    assert logged["snips"]["estimate"] == pytest.approx(mean, rel=1e-12)
    for p in result["policies"]:
        for estimator in ("ips", "snips", "dr"):
            e = p[estimator]
            assert e["lower"] <= e["estimate"] <= e["upper"], (p["name"], estimator)
            assert e["n"] == decided
    # Best per segment serves each segment its variant with the highest observed mean.
    best = by_name["best-per-segment"]["probabilities"]
    assert len(best) == len(cells) == 2
    for segment in best:
        observed = cells[(segment["persona"], segment["channel"])]
        top = max(CONVERSION, key=lambda v: observed[v])  # ties: the first, as argmax
        assert segment["serving"] == {v: float(v == top) for v in CONVERSION}
    # "current" is the server's own allocation code (Monte Carlo: equal within its noise).
    # The CLI ages the learning sums to the wall clock, not to this app's fake one.
    services = app.extensions["centric"]
    experiment = services.catalog.fresh().experiments["hero"]
    learner = fit_posterior(experiment, services.counters.read(experiment),
                            time.time() * 1000.0, np.random.default_rng(3))
    for segment in by_name["current"]["probabilities"]:
        q = learner.allocation((segment["persona"], segment["channel"]),
                               experiment.bandit.floor)
        assert list(segment["serving"].values()) == pytest.approx(list(q), abs=0.05)
    assert by_name["current"]["dr"]["estimate"] > by_name["all:control"]["dr"]["estimate"]

    status, out, err = _cli(capsys, "evaluate", "hero")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1].startswith(f"{decided} logged decisions")
    table = {line.split()[0]: line for line in lines[3:3 + 1 + len(POLICIES)]}
    assert list(table) == ["POLICY", *POLICIES]
    # IPS comes first, to three significant digits.
    assert float(table["logged"].split()[1]) == pytest.approx(mean, abs=5.1e-4)
    assert table["logged"].split()[-1] == str(decided)


def test_cli_evaluates_an_ab_revenue_experiment_in_a_subprocess(
        cli_env, app, client, admin, sdk, clock, rclient, prefix):
    body = experiment_body(key="price", mode="ab", metric={"name": "purchase",
                                                          "kind": "revenue"},
                           variants=[{"key": "control", "weight": 3}, {"key": "b", "weight": 1}])
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/price/start", headers=admin).status_code == 200
    decided = _traffic(client, sdk, clock, "price", 400, {"control": 0.1, "b": 0.2}, value=40)
    count, mean, _ = _observed(rclient, prefix, app, "price")
    out = subprocess.run([sys.executable, "-m", "server.cli", "evaluate", "price", "--json"],
                         env={**os.environ, **cli_env}, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out)
    assert result["decisions"] == count == decided
    by_name = {p["name"]: p for p in result["policies"]}
    assert [p["name"] for p in result["policies"]] == ["logged", "all:control", "all:b",
                                                       "best-per-segment", "current"]
    assert by_name["logged"]["ips"]["estimate"] == pytest.approx(mean, rel=1e-12)
    # A/B propensities are the weights themselves, and so is "current": its weights are 1.
    assert by_name["current"]["ips"]["estimate"] == pytest.approx(mean, rel=1e-12)
    for segment in by_name["current"]["probabilities"]:
        assert segment["serving"] == {"control": 0.75, "b": 0.25}


def test_cli_reports_a_missing_experiment_and_fails(cli_env, capsys):
    status, out, err = _cli(capsys, "evaluate", "ghost")
    assert status == 1
    assert out == "" and err.strip() == "no experiment 'ghost'"


def test_cli_evaluates_an_experiment_without_decisions(cli_env, capsys, client, admin):
    assert client.post("/v1/experiments", json=experiment_body(), headers=admin).status_code \
        == 201
    status, out, err = _cli(capsys, "evaluate", "hero", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["decisions"] == 0
    assert all(p["ips"]["estimate"] is None for p in result["policies"])
    status, out, _ = _cli(capsys, "evaluate", "hero")
    assert status == 0 and "0 logged decisions" in out and "n/a" in out


def test_log_rows_become_arrays_with_joined_rewards():
    from experiments.model import Experiment, Metric, MetricKind, Variant

    e = Experiment("x", "x", (Variant("control", 1), Variant("b", 1)), "control",
                   Metric("buy", MetricKind.REVENUE))

    def decision(did, persona, variant, w):
        return {"kind": "decision", "decision_id": did, "persona": persona, "channel": "web",
                "variant": variant, "propensity": w}

    def outcome(did, metric, value):
        return {"kind": "outcome", "decision_id": did, "metric": metric, "value": value}

    rows = [decision("d1", "vip", "b", 0.4), decision("d2", "new", "control", 0.6),
            decision("d3", "new", "gone", 0.5), decision("d1", "vip", "b", 0.4),
            decision("d4", "new", "b", None), outcome("d1", "buy", 10.0),
            outcome("d1", "buy", 5.5), outcome("d2", "refund", 3.0), outcome("d9", "buy", 1.0)]
    data = offline_eval.logged_data(rows, e)
    assert data.segments == (("new", "web"), ("vip", "web")) and data.skipped == 3
    assert data.log.segment.tolist() == [1, 0] and data.log.action.tolist() == [1, 0]
    assert data.log.reward.tolist() == [15.5, 0.0]
    conversion = offline_eval.logged_data(rows, e.with_changes(metric=Metric("buy")))
    assert conversion.log.reward.tolist() == [1.0, 0.0]
