"""The signal soak (issue 15, part 1) in a bounded size: 20 short runs of every service and
both layers, each interrupted at a seeded moment from 0.2 s (the lab still being built) to its
end by SIGINT, SIGTERM, SIGINT twice, or SIGKILL then ``connchaos clean``; after each, nothing
of ours is left and the exit code is the signal's. ``connchaos bench soak`` runs 100."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import soak

SEED = int(os.environ.get("CONNCHAOS_SOAK_SEED", "15"))
RUNS = 20


@pytest.mark.slow   # measured about 2 min (20 runs of 2-5 s and their teardowns)
@pytest.mark.usefixtures("no_leftovers")
def test_runs_interrupted_at_random_moments_end_as_signalled_and_leave_nothing(tmp_path: Path) -> None:
    found = soak.scenarios(docker=False)
    trials = soak.plan(SEED, RUNS, found)
    assert {s.name for _, s, _, _ in trials} == {s.name for s in found}
    assert {how for _, _, how, _ in trials} == set(soak.SIGNALS)
    before = soak.leftovers()
    for trial_seed, scenario, how, at in trials:
        trial = soak.run_trial(trial_seed, scenario, how, at, tmp_path, before)
        where = f"soak seed {SEED}, trial {trial.line()}"
        assert not trial.left, where
        assert trial.expected(), where


def test_the_plan_is_the_seeds_and_covers_every_scenario_and_signal() -> None:
    found = soak.scenarios(docker=True)
    trials = soak.plan(7, 4 * len(found), found)
    assert trials == soak.plan(7, 4 * len(found), found)
    assert trials != soak.plan(8, 4 * len(found), found)
    assert {(s.name, how) for _, s, how, _ in trials} == {(s.name, h) for s in found for h in soak.SIGNALS}
    assert all(0.2 <= at <= s.duration_s for _, s, _, at in trials)
