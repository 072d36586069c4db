"""The few-shot ridge probe against direct numpy solutions, and the statistics over shot counts and seeds."""

import numpy as np
import pytest
import torch

from vitlab import VitlabError
from vitlab.evaluation.fewshot import check_shots, fewshot, parse_shots, ridge_fit, ridge_predict, ridge_scores

L2 = 2.0**10


def direct_design(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """big_vision's recipe written out: standardise with the training mean/std (+1e-5), append a bias of 100."""
    standardised = (x - train.mean(0)) / (train.std(0) + 1e-5)
    return np.hstack([standardised, np.full((len(x), 1), 100.0)])


def problem(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    return rng.normal(size=(n, d)) + 2.0 * np.eye(k, d)[labels], labels


@pytest.mark.parametrize("n, d", [(200, 12), (12, 200)], ids=["N>D primal", "N<D dual"])
def test_ridge_matches_numpy_solve_and_lstsq(n: int, d: int) -> None:
    x, y = problem(n, d, k=4)
    probe = ridge_fit(x, y, 4)
    assert probe.form == ("primal" if d < n else "dual")
    design, targets = direct_design(x, x), np.where(np.eye(4)[y] > 0, 1.0, -1.0)
    solved = np.linalg.solve(design.T @ design + L2 * np.eye(d + 1), design.T @ targets)
    np.testing.assert_allclose(probe.weights, solved, rtol=1e-8, atol=1e-10)
    # ridge as ordinary least squares on the system stacked with sqrt(l2)·I: an independent route
    stacked = np.vstack([design, np.sqrt(L2) * np.eye(d + 1)])
    lstsq = np.linalg.lstsq(stacked, np.vstack([targets, np.zeros((d + 1, 4))]), rcond=None)[0]
    np.testing.assert_allclose(probe.weights, lstsq, rtol=1e-6, atol=1e-9)
    test_x, _ = problem(30, d, k=4, seed=1)
    np.testing.assert_allclose(ridge_scores(probe, test_x), direct_design(test_x, x) @ solved, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("n, d", [(50, 8), (8, 50), (20, 20)])
def test_primal_and_dual_agree(n: int, d: int) -> None:
    x, y = problem(n, d, k=3, seed=2)
    primal, dual = ridge_fit(x, y, 3, form="primal"), ridge_fit(x, y, 3, form="dual")
    np.testing.assert_allclose(primal.weights, dual.weights, rtol=1e-7, atol=1e-10)


def test_torch_float32_input_and_prediction() -> None:
    x, y = problem(60, 5, k=3)
    probe = ridge_fit(torch.from_numpy(x).float(), torch.from_numpy(y), 3, l2=1.0)
    assert probe.weights.dtype == np.float64
    assert (ridge_predict(probe, torch.from_numpy(x).float()) == y).mean() > 0.9  # well-separated classes


def test_bad_labels_are_refused() -> None:
    with pytest.raises(VitlabError, match=r"labels must lie in \[0, 2\)"):
        ridge_fit(np.zeros((3, 2)), np.array([0, 1, 2]), 2)


def test_fewshot_statistics_over_seeds() -> None:
    train_x, train_y = problem(300, 16, k=5)
    test_x, test_y = problem(100, 16, k=5, seed=3)
    result = fewshot(train_x, train_y, test_x, test_y, 5, shots=[1, 10], seeds=4)
    assert [r.shots for r in result.results] == [1, 10]
    for shot in result.results:
        assert len(shot.per_seed) == 4 and all(0.0 <= a <= 1.0 for a in shot.per_seed)
        assert shot.mean == pytest.approx(np.mean(shot.per_seed))
        assert shot.std == pytest.approx(np.std(shot.per_seed, ddof=1))
        assert (shot.min, shot.max) == (min(shot.per_seed), max(shot.per_seed))
    assert result.results[1].mean > 0.6  # ten shots of well-separated classes
    assert (result.feature_dim, result.num_train_images, result.num_eval_images) == (16, 300, 100)
    again = fewshot(train_x, train_y, test_x, test_y, 5, shots=[1, 10], seeds=4)
    assert again.results == result.results  # seeded: the same samples every time
    single = fewshot(train_x, train_y, test_x, test_y, 5, shots=[1], seeds=1).results[0]
    assert single.std == 0.0 and single.per_seed == result.results[0].per_seed[:1]


def test_fewshot_seeds_must_be_positive() -> None:
    x, y = problem(10, 2, k=2)
    with pytest.raises(VitlabError, match="--seeds must be a positive integer"):
        fewshot(x, y, x, y, 2, shots=[1], seeds=0)


def test_parse_shots() -> None:
    assert parse_shots("25,1, 5,10,5") == [1, 5, 10, 25]
    for bad in ("", "a", "0,1", "1,-5"):
        with pytest.raises(VitlabError, match="--shots"):
            parse_shots(bad)


def test_check_shots_names_the_smallest_class() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    check_shots([1, 2], labels, ["a", "b", "c"], "toy train")
    with pytest.raises(VitlabError, match="--shots 3 is more than the 2 images of class 'b', the smallest class in toy train"):
        check_shots([1, 3], labels, ["a", "b", "c"], "toy train")
    with pytest.raises(VitlabError, match="0 images of class 'd'"):
        check_shots([1], labels, ["a", "b", "c", "d"], "toy train")
