"""The demo's rate: samples leave in one burst per scrape, so the rate is taken over a sliding window."""

from __future__ import annotations

from kubescrape.demo import RateWindow


def test_a_bursty_counter_reads_a_steady_rate_not_mostly_zero() -> None:
    window = RateWindow(20.0)
    sent, readings = 0, []
    for second in range(60):
        if second % 5 == 2:
            sent += 1000  # one scrape's worth every 5 s
        window.add(float(second), sent)
        readings.append(window.rate())
    # after the first burst the rate never reads 0, and once the window is full it is 200/s give or take
    # the burst at its edge
    assert readings[:2] == [0.0, 0.0]
    assert all(r > 0 for r in readings[2:])
    assert all(150 <= r <= 250 for r in readings[25:]), readings[25:]
    assert window.span() == 20.0


def test_the_window_forgets_old_points() -> None:
    window = RateWindow(10.0)
    for t in range(30):
        window.add(float(t), 100 * min(t, 15))  # 100/s, then nothing from t=15
    assert window.rate() == 0.0
    assert window.span() == 10.0


def test_no_rate_before_two_points() -> None:
    window = RateWindow(10.0)
    assert window.rate() == 0.0 and window.span() == 0.0
    window.add(5.0, 42)
    assert window.rate() == 0.0
