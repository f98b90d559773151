"""The task split, the Dirichlet partition and client sampling on small cases worked
out by hand (fed-mammoth's mechanics: _datasets/_utils.py BaseDataset._split_fcil,
utils/training.py train)."""

from __future__ import annotations

import numpy as np
import pytest

from lorm.fcil.config import Config
from lorm.fcil.partition import dirichlet_partition, participating, sample_clients, split_classes


class ScriptedRng:
    """Stands in for numpy's Generator: hands out scripted Dirichlet shares and client
    draws, and checks what the partition asks for."""

    def __init__(self, shares: list[list[float]], owners: list[list[int]]):
        self.shares, self.owners, self.asked = list(shares), list(owners), []

    def dirichlet(self, alpha):
        return np.array(self.shares.pop(0))

    def choice(self, n, size, p):
        self.asked.append((n, size, p.tolist()))
        drawn = np.array(self.owners.pop(0))
        assert len(drawn) == size
        return drawn

    def permutation(self, x):
        return np.asarray(x)


LABELS = np.array([0, 1, 0, 1, 0, 1, 2])  # class 0: 0, 2, 4; class 1: 1, 3, 5


def test_per_sample_gives_each_sample_the_client_drawn_for_it():
    rng = ScriptedRng(shares=[[0.5, 0.5], [1.0, 0.0]], owners=[[0, 1, 1], [0, 0, 0]])
    parts = dirichlet_partition(LABELS, [0, 1], 2, 0.5, min_samples=2, rng=rng)
    # class 0: sample 0 -> client 0, samples 2, 4 -> client 1; class 1: all to client 0
    assert parts == [[0, 1, 3, 5], [2, 4]]
    assert rng.asked == [(2, 3, [0.5, 0.5]), (2, 3, [1.0, 0.0])]


def test_per_sample_redraws_the_whole_task_until_every_client_has_the_minimum():
    # first draw: client 1 gets 2 samples (< 3), so both classes are drawn again
    rng = ScriptedRng(shares=[[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]],
                      owners=[[0, 1, 1], [0, 0, 0], [0, 1, 1], [1, 0, 0]])
    parts = dirichlet_partition(LABELS, [0, 1], 2, 0.5, min_samples=3, rng=rng)
    assert parts == [[0, 3, 5], [1, 2, 4]]
    assert not rng.shares and not rng.owners


def test_per_sample_zeroes_shares_below_1e_20_as_the_authors():
    rng = ScriptedRng(shares=[[1e-21, 1.0 - 1e-21]], owners=[[1, 1, 1]])
    dirichlet_partition(LABELS, [0], 2, 0.01, min_samples=0, rng=rng)
    assert rng.asked[0][2] == [0.0, 1.0]


def test_proportional_cuts_each_class_in_its_shares():
    labels = np.zeros(10, dtype=int)
    rng = ScriptedRng(shares=[[0.25, 0.75]], owners=[])
    # cut at floor(0.25 * 10) = 2
    assert dirichlet_partition(labels, [0], 2, 0.5, 0, rng, mode="proportional") == \
        [[0, 1], list(range(2, 10))]


def test_partition_of_real_draws_covers_every_sample_once_and_fails_clearly():
    labels = np.repeat(np.arange(4), 50)
    for mode in ("per-sample", "proportional"):
        parts = dirichlet_partition(labels, [1, 3], 5, 0.1, 6, np.random.default_rng(0), mode)
        assert sorted(i for p in parts for i in p) == list(range(50, 100)) + list(range(150, 200))
        assert min(len(p) for p in parts) >= 6
    with pytest.raises(ValueError, match="could not give each of 40 clients 5 samples of 50"):
        dirichlet_partition(labels, [0], 40, 0.05, 5, np.random.default_rng(0), max_tries=5)


def test_partition_gives_up_after_fed_mammoths_9999_draws(monkeypatch):
    # _split_fcil: `iterations += 1; assert iterations < 10000` ahead of each draw, so the
    # 9999th draw is the last one. One sample can never reach both of two clients.
    from lorm.fcil import partition

    draws = []
    per_sample = partition._SPLITTERS["per-sample"]
    monkeypatch.setitem(partition._SPLITTERS, "per-sample",
                        lambda *args: draws.append(1) or per_sample(*args))
    with pytest.raises(ValueError, match=r"2 clients 1 samples of 1 \(beta = 1.0, 9999 draws\)"):
        dirichlet_partition(np.array([0]), [0], 2, 1.0, 1, np.random.default_rng(0))
    assert len(draws) == 9999


def test_class_order_natural_by_default_or_seeded():
    assert split_classes(6, 3, seed=0) == [[0, 1], [2, 3], [4, 5]]
    assert split_classes(7, 3, seed=0, last_task_classes=3) == [[0, 1], [2, 3], [4, 5, 6]]
    order = np.random.default_rng(5).permutation(6).tolist()
    assert split_classes(6, 3, seed=5, order="shuffled") == [order[:2], order[2:4], order[4:]]
    with pytest.raises(ValueError, match="class_order must be one of natural, shuffled"):
        split_classes(6, 3, seed=0, order="random")


def test_participation_rounds_down_as_the_authors():
    assert participating(10, 0.35) == 3       # 3.5 -> 3 (ceil would give 4)
    assert participating(5, 0.5) == 2         # 2.5 -> 2
    assert participating(7, 1.0) == 7
    assert len(sample_clients(10, 0.35, 0, 1, 2)) == 3
    assert sample_clients(10, 0.35, 0, 1, 2) == sample_clients(10, 0.35, 0, 1, 2)
    with pytest.raises(ValueError, match=r"floor\(0.1 \* 5\) = 0"):
        Config(participation=0.1, num_clients=5).validate()


def test_defaults_are_the_authors():
    c = Config()
    assert (c.class_order, c.partition, c.min_samples_per_client) == ("natural", "per-sample", 6)
