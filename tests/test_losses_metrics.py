"""Losses and metrics against numbers worked out by hand, and CS@k state reduction across processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from agebench.errors import UserError
from agebench.metrics import CumulativeScore, regression_metrics
from agebench.models.losses import AdaptiveRegressionLoss, build_loss, list_losses

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (0.0, 0.0),
        (1.0, 1.0),  # 3 * 1 / (1 + 2)
        (-1.0, 1.0),  # symmetric
        (4.0, 8.0),  # 3 * 16 / (4 + 2)
        (10.0, 25.0),  # 3 * 100 / 12
    ],
)
def test_adaptive_loss_matches_hand_computed_values(err: float, expected: float) -> None:
    loss = AdaptiveRegressionLoss(s=2.0)
    assert loss(torch.tensor([30.0]), torch.tensor([30.0 + err])).item() == pytest.approx(expected)


def test_adaptive_loss_averages_over_the_batch_and_honours_s() -> None:
    pred, target = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 4.0])
    assert build_loss("adaptive")(pred, target).item() == pytest.approx((1.0 + 8.0) / 2)
    # s = 1: error 1 -> 2 * 1 / 2 = 1, error 4 -> 2 * 16 / 5 = 6.4
    assert build_loss("adaptive", s=1.0)(pred, target).item() == pytest.approx((1.0 + 6.4) / 2)


def test_adaptive_loss_is_quadratic_near_zero_and_linear_far_away() -> None:
    loss = AdaptiveRegressionLoss(s=2.0)
    small = loss(torch.tensor([0.0]), torch.tensor([0.01])).item()
    assert small == pytest.approx(1.5 * 0.01**2, rel=1e-2)  # ((1+s)/s) e^2
    big = loss(torch.tensor([0.0]), torch.tensor([1000.0])).item()
    assert big == pytest.approx(3.0 * 1000.0, rel=1e-2)  # (1+s) |e|


def test_standard_losses_match_hand_computed_values() -> None:
    pred, target = torch.tensor([20.0, 30.0]), torch.tensor([21.0, 33.0])  # errors 1 and 3
    assert build_loss("l1")(pred, target).item() == pytest.approx(2.0)
    assert build_loss("mse")(pred, target).item() == pytest.approx((1 + 9) / 2)
    # smooth L1 (beta 1): 0.5 e^2 / beta below beta, |e| - 0.5 beta above: 0.5 and 2.5
    assert build_loss("smooth_l1")(pred, target).item() == pytest.approx((0.5 + 2.5) / 2)
    # beta 2: error 1 -> 0.5 * 1 / 2 = 0.25, error 3 -> 3 - 1 = 2
    assert build_loss("smooth_l1", beta=2.0)(pred, target).item() == pytest.approx((0.25 + 2.0) / 2)


def test_unknown_loss_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown loss 'huber'") as info:
        build_loss("huber")
    for name in list_losses():
        assert name in str(info.value)


def test_bad_loss_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="loss 'l1'"):
        build_loss("l1", s=2.0)
    with pytest.raises(UserError, match="s must be > 0"):
        build_loss("adaptive", s=0.0)


# ---------------------------------------------------------------- CS@k


# Absolute errors 0, 1, 1.5, 3, 5, 10.5 (one over, one under, the rest exact).
PRED = torch.tensor([30.0, 31.0, 28.5, 33.0, 25.0, 40.5])
TARGET = torch.tensor([30.0, 30.0, 30.0, 30.0, 30.0, 30.0])
# k: number of errors <= k, out of 6
HAND_CS = {1: 2, 2: 3, 3: 4, 4: 4, 5: 5, 6: 5, 10: 5, 11: 6}


def test_cumulative_score_matches_hand_computed_shares() -> None:
    ks = tuple(HAND_CS)
    metric = CumulativeScore(ks)
    metric.update(PRED, TARGET)
    expected = torch.tensor([HAND_CS[k] / 6 for k in ks])
    torch.testing.assert_close(metric.compute(), expected)


def test_cumulative_score_is_the_same_when_fed_in_batches() -> None:
    whole, batched = CumulativeScore(), CumulativeScore()
    whole.update(PRED, TARGET)
    for i in range(0, 6, 4):
        batched.update(PRED[i : i + 4], TARGET[i : i + 4])
    torch.testing.assert_close(whole.compute(), batched.compute())
    assert whole.ks == tuple(range(1, 11))


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_cumulative_score_refuses_misuse() -> None:
    with pytest.raises(ValueError, match="before any update"):
        CumulativeScore().compute()
    with pytest.raises(ValueError, match="shape"):
        CumulativeScore().update(PRED, TARGET[:3])
    with pytest.raises(ValueError, match="distinct"):
        CumulativeScore((1, 1))


def test_regression_metrics_match_hand_computed_values() -> None:
    m = regression_metrics(TARGET.numpy(), PRED.numpy(), ks=(1, 5, 11))
    errors = np.array([0, 1, 1.5, 3, 5, 10.5])
    assert m["n"] == 6
    assert m["mae"] == pytest.approx(21.0 / 6)
    assert m["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))
    assert m["cs"] == {1: pytest.approx(2 / 6), 5: pytest.approx(5 / 6), 11: pytest.approx(1.0)}
    assert m["cs5"] == pytest.approx(5 / 6)
    assert set(regression_metrics([30.0], [31.0])["cs"]) == set(range(1, 11))


def test_regression_metrics_agree_with_the_torchmetrics_used_in_training() -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(1, 90, 257)
    pred = age + rng.normal(0, 6, 257)
    m = regression_metrics(age, pred)
    p, t = torch.tensor(pred, dtype=torch.float32), torch.tensor(age, dtype=torch.float32)
    cs = CumulativeScore()
    cs.update(p, t)
    mae, rmse = MeanAbsoluteError(), MeanSquaredError(squared=False)
    assert m["mae"] == pytest.approx(mae(p, t).item(), rel=1e-5)
    assert m["rmse"] == pytest.approx(rmse(p, t).item(), rel=1e-5)
    np.testing.assert_allclose([m["cs"][k] for k in range(1, 11)], cs.compute().numpy(), atol=1e-6)


def test_regression_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="3 values"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no values"):
        regression_metrics([], [])
    with pytest.raises(ValueError, match="NaN"):
        regression_metrics([1.0], [float("nan")])


# ---------------------------------------------------------------- CS@k under torch.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cs_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        metric = CumulativeScore((1, 2, 5, 11))
        # Rank 0 gets the first two images, rank 1 the other four: unequal shares, so a mean of
        # per-rank shares (instead of summed counts) would give a different answer.
        part = slice(0, 2) if rank == 0 else slice(2, 6)
        metric.update(PRED[part], TARGET[part])
        torch.save(metric.compute(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_cumulative_score_sums_counts_across_processes(tmp_path: Path) -> None:
    # fork where there is one: spawn re-imports torch in each child, which costs seconds per process.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_cs_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method=method)
    expected = torch.tensor([HAND_CS[k] / 6 for k in (1, 2, 5, 11)])
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), expected)
    # The mean of per-rank shares would differ: rank 0 alone has CS@1 = 2/2, rank 1 alone 0/4.
    assert expected[0] != (1.0 + 0.0) / 2
