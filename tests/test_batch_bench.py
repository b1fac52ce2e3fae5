"""The benchmark's batch phase: how many rows it times, and how each row's
answer is checked against its request."""

from __future__ import annotations

import pytest

from benchmarks.run import MAX_BATCH_ROWS, _batch_answers, batch_size


@pytest.mark.parametrize(
    ("mean_us", "requests", "rows"),
    [
        (1.0, 2_000, MAX_BATCH_ROWS),  # 5 000 000 fit: capped
        (500.0, 2_000, 10_000),  # 5 s / 500 µs
        (5_000.0, 2_000, 1_000),  # a slow engine: the rows that fit
        (10e6, 2_000, 1),  # slower than the budget: one row
        (1.0, 80_000, 80_000),  # more requests than the cap: all of them
    ],
)
def test_batch_size_is_what_the_latency_says_fits_within_bounds(
    mean_us: float, requests: int, rows: int
) -> None:
    assert batch_size(5.0, mean_us, requests) == rows


def test_batch_rows_are_checked_against_their_request() -> None:
    # Three requests cycled over seven rows; request 2 was never decided
    # singly, so its rows are held to its first row.
    rows = [True, False, True, True, True, False, True]
    first, disagrees = _batch_answers(rows, 3, {0: True, 1: False})
    assert first == {0: True, 1: False, 2: True}
    assert disagrees == 2  # row 4 (request 1) and row 5 (request 2)
