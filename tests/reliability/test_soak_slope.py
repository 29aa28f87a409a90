"""The soak's memory verdict: a least-squares slope of RSS against files delivered."""

from __future__ import annotations

import pytest

from tests.reliability.soak import Sample, after_warmup, rss_slopes, slope


def test_slope_of_known_series() -> None:
    # By hand: mean x 1.5, mean y 6.5, Sxy = 13, Sxx = 5, so the fitted slope is 2.6.
    assert slope([(0.0, 3.0), (1.0, 4.0), (2.0, 9.0), (3.0, 10.0)]) == pytest.approx(2.6)
    assert slope([(x, 3 * x + 2) for x in (0.0, 1.0, 2.0, 5.0)]) == pytest.approx(3.0)


def test_slope_is_zero_without_spread() -> None:
    assert slope([]) == 0.0
    assert slope([(1.0, 5.0)]) == 0.0
    assert slope([(2.0, 5.0), (2.0, 9.0)]) == 0.0


def series(per_10k_mib: float, warmup_jump_mib: float) -> list[Sample]:
    """100 samples, 5 s apart, 10 files/s delivered; RSS jumps early, then grows linearly."""
    out = []
    for i in range(1, 101):
        seconds = 5.0 * i
        delivered = 50 * i
        mib = 60.0 + (warmup_jump_mib if i > 10 else 0.0) + per_10k_mib * delivered / 10_000
        out.append(Sample(seconds, int(mib * 1024), 20, delivered, delivered))
    return out


def test_rss_slope_per_10k_files_and_per_hour_ignore_warmup() -> None:
    # 11 MiB per 10,000 files (the figure) at 10 files/s = 39.6 MiB per hour; the
    # 15 MiB jump in the first 10 % (warm-up) must not count.
    per_10k, per_hour = rss_slopes(series(11.0, 15.0))
    assert per_10k == pytest.approx(11.0, abs=0.01)
    assert per_hour == pytest.approx(39.6, abs=0.05)
    flat_10k, flat_hour = rss_slopes(series(0.0, 15.0))
    assert abs(flat_10k) < 0.01
    assert abs(flat_hour) < 0.05


def test_after_warmup_keeps_the_last_60_percent() -> None:
    kept = after_warmup(series(0.0, 0.0))
    assert kept[0].seconds == 200.0
    assert kept[-1].seconds == 500.0
    assert len(kept) == 61
