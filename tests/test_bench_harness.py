"""The pure parts of the agent benchmark harness (bench/*.py, bench/procstat.py); nothing here is timed."""

from __future__ import annotations

import itertools
import math
import os
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from bench.agents import (
    KUBESCRAPE,
    PROMETHEUS,
    VMAGENT,
    Counters,
    kubescrape_config_toml,
    prometheus_agent_yaml,
    vmagent_scrape_yaml,
)
from bench.compare import compare_all, compare_series_sets, render_comparison, render_diff
from bench.procstat import (
    CpuTimeline,
    RssSampler,
    RssSummary,
    cpu_at,
    cpu_seconds,
    cpu_times,
    parse_stat,
    parse_status_kib,
    peak_rss_bytes,
    rss_bytes,
    summarize_rss,
)
from bench.receiver import first_scrapes
from bench.report import AgentResult, goal_line, profile_summary, ratio, render_table
from bench.stats import (
    bucket_delta,
    histogram_buckets,
    histogram_quantile,
    metric_sum,
    parse_exposition,
    percentile,
)
from bench.targets import QUICK, Scenario, bench_instances_toml, jobs_from_categraf

# --- /proc parsing ---------------------------------------------------------------------------------------


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    # comm may hold spaces and parentheses: "(a) (b c)" must not shift the fields
    fields = ["S"] + [str(n) for n in range(4, 53)]  # field 3 = state, then fields 4..52 hold their number
    text = "1234 (a) (b c) " + " ".join(fields)
    times = parse_stat(text, ticks=100)
    assert times == (0.14, 0.15, 0.16, 0.17)
    assert times.total == pytest.approx(0.62)


def test_parse_status_fields_in_bytes() -> None:
    text = "Name:\tpython3\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t1\n"
    assert parse_status_kib(text, "VmRSS") == 1024 * 1024
    assert parse_status_kib(text, "VmHWM") == 2048 * 1024
    with pytest.raises(KeyError):
        parse_status_kib(text, "VmSwap")


def test_this_process_cpu_and_memory_from_proc() -> None:
    pid = os.getpid()
    before = cpu_times(pid)
    sum(i * i for i in range(200_000))  # some CPU work so user time can move
    after = cpu_seconds(pid)
    assert after >= before.total > 0
    rss = rss_bytes(pid)
    assert 1 << 20 < rss <= peak_rss_bytes(pid)


def test_summarize_rss_peak_and_median_of_second_half() -> None:
    # start-up growth in the first half does not count towards steady; the spike counts towards peak
    s = summarize_rss([10, 50, 20, 30, 100, 30, 32, 31])
    assert s == RssSummary(peak=100, steady=31, samples=8)
    with pytest.raises(ValueError):
        summarize_rss([])


def test_rss_sampler_windows_on_this_process() -> None:
    sampler = RssSampler(os.getpid(), period=0.01).start()
    try:
        deadline = time.monotonic() + 5
        while not (_has_samples(sampler) and sampler.overall().samples >= 3):
            assert time.monotonic() < deadline, "no RSS samples within 5 s"
            time.sleep(0.01)
        sampler.mark()
        deadline = time.monotonic() + 5
        while not _has_window(sampler):
            assert time.monotonic() < deadline, "no RSS samples after mark within 5 s"
            time.sleep(0.01)
        window, overall = sampler.window(), sampler.overall()
        assert 0 < window.samples < overall.samples
        assert window.steady > 0 and overall.peak >= window.peak
    finally:
        sampler.stop()


def _has_samples(sampler: RssSampler) -> bool:
    try:
        sampler.overall()
    except ValueError:
        return False
    return True


def _has_window(sampler: RssSampler) -> bool:
    try:
        sampler.window()
    except ValueError:
        return False
    return True


# --- percentiles and histograms ----------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0], 0.0) == 1.0
    assert percentile([1.0, 2.0, 3.0], 1.0) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_histogram_quantile_matches_prometheus_semantics() -> None:
    inf = float("inf")
    buckets = {0.1: 10.0, 0.5: 20.0, inf: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)  # rank 10 ends the first bucket
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)  # rank 15: halfway through (0.1, 0.5]
    # a quantile in the +Inf bucket is the last finite upper bound
    assert histogram_quantile(0.99, {0.1: 10.0, inf: 20.0}) == pytest.approx(0.1)
    assert math.isnan(histogram_quantile(0.5, {0.1: 0.0, inf: 0.0}))


EXPOSITION = """\
# TYPE kubescrape_scrape_duration_seconds histogram
kubescrape_scrape_duration_seconds_bucket{target="a",le="0.01"} 3
kubescrape_scrape_duration_seconds_bucket{target="a",le="0.1"} 5
kubescrape_scrape_duration_seconds_bucket{target="a",le="+Inf"} 6
kubescrape_scrape_duration_seconds_sum{target="a"} 0.5
kubescrape_scrape_duration_seconds_count{target="a"} 6
kubescrape_scrape_duration_seconds_bucket{target="b",le="0.01"} 1
kubescrape_scrape_duration_seconds_bucket{target="b",le="0.1"} 1
kubescrape_scrape_duration_seconds_bucket{target="b",le="+Inf"} 2
kubescrape_scrape_duration_seconds_sum{target="b"} 1.0
kubescrape_scrape_duration_seconds_count{target="b"} 2
# TYPE kubescrape_scrapes_total counter
kubescrape_scrapes_total{target="a",result="ok"} 6
kubescrape_scrapes_total{target="b",result="error"} 2
"""


def test_self_metrics_sums_and_histogram_buckets() -> None:
    samples = parse_exposition(EXPOSITION)
    assert metric_sum(samples, "kubescrape_scrapes_total") == 8
    assert metric_sum(samples, "kubescrape_scrapes_total", {"result": "ok"}) == 6
    assert metric_sum(samples, "absent_total") == 0
    buckets = histogram_buckets(samples, "kubescrape_scrape_duration_seconds")
    assert buckets == {0.01: 4.0, 0.1: 6.0, float("inf"): 8.0}
    assert bucket_delta(buckets, {0.01: 1.0, 0.1: 1.0, float("inf"): 1.0}) == {
        0.01: 3.0,
        0.1: 5.0,
        float("inf"): 7.0,
    }


# --- series-set comparison ---------------------------------------------------------------------------------


def _s(name: str, **labels: str) -> dict[str, str]:
    return {"__name__": name, **labels}


def test_series_sets_equal_apart_from_agent_labels() -> None:
    prom = [_s("m", job="kubelet", instance="n1:10250", bench_agent="prometheus")]
    ks = [_s("m", job="kubelet", instance="n1:10250", bench_agent="kubescrape", agent_hostname="bench")]
    diff = compare_series_sets("prometheus", prom, "kubescrape", ks)
    assert diff.same
    assert diff.labels_only_a == [] and diff.labels_only_b == []
    assert "SAME series set" in render_diff(diff)


def test_one_sided_labels_are_dropped_and_listed_names_apart() -> None:
    prom = [_s("m", pod="p1"), _s("m", pod="p2"), _s("up", pod="")]
    ks = [_s("m", pod="p1", extra="x"), _s("m", pod="p2", extra="x")]
    diff = compare_series_sets("prometheus", prom, "kubescrape", ks)
    assert diff.labels_only_b == ["extra"]
    assert diff.names_only_a == ["up"] and diff.names_only_b == []
    assert diff.only_a == [] and diff.only_b == []
    assert not diff.same
    text = render_diff(diff)
    assert "up*" in text and "only synthetic per-scrape series differ" in text
    # a target metric only one side delivered is a real difference
    diff = compare_series_sets("prometheus", [*prom, _s("n")], "kubescrape", ks)
    assert not diff.same_target_series
    assert "only whole metric names differ" in render_diff(diff)


def test_series_differences_and_collapsed_series_show() -> None:
    prom = [_s("m", pod="p1", node="n1"), _s("m", pod="p1", node="n2"), _s("m", pod="p3", node="n1")]
    # `node` only on one side: dropped, so prometheus' two p1 series collapse into one key counted twice
    ks = [_s("m", pod="p1"), _s("m", pod="p4")]
    diff = compare_series_sets("prometheus", prom, "kubescrape", ks)
    assert diff.labels_only_a == ["node"]
    assert diff.only_a == [(("__name__", "m"), ("pod", "p1")), (("__name__", "m"), ("pod", "p3"))]
    assert diff.only_b == [(("__name__", "m"), ("pod", "p4"))]
    text = render_diff(diff)
    assert 'only kubescrape: `m{pod="p4"}`' in text
    assert "only prometheus, by metric name: m 2" in text
    assert "DIFFERENT series sets" in text


# --- configuration translation -----------------------------------------------------------------------------

PRINTED = """\
[[instances]]
urls = ["http://127.0.1.1:10249/metrics"]
labels = { job="kube-proxy" }

[[instances]]
urls = ["https://127.0.1.1:12345/metrics", "https://127.0.1.2:12345/metrics"]
bearer_token_file = "/s/tokens/flashcat/categraf-daemonset"
use_tls = true
tls_ca = "/s/ca.crt"
labels = { job="kubelet" }
"""


def test_categraf_toml_becomes_equivalent_prometheus_agent_config() -> None:
    toml = bench_instances_toml(PRINTED, 12345, 2.0)
    instances = tomllib.loads(toml)["instances"]
    assert len(instances) == 1  # kube-proxy (port 10249, off in the bench) is dropped
    assert instances[0]["url_label_value"] == "{{.Host}}" and instances[0]["timeout"] == "2s"
    jobs = jobs_from_categraf(toml)
    assert [(j.job, j.scheme, j.metrics_path, j.addresses) for j in jobs] == [
        ("kubelet", "https", "/metrics", ("127.0.1.1:12345", "127.0.1.2:12345"))
    ]
    cfg = yaml.safe_load(prometheus_agent_yaml(jobs, 2.0, "http://127.0.0.1:9/api/v1/write"))
    assert cfg["global"]["external_labels"] == {"bench_agent": "prometheus"}
    assert cfg["global"]["scrape_interval"] == cfg["global"]["scrape_timeout"] == "2s"
    (sc,) = cfg["scrape_configs"]
    assert sc["authorization"] == {"credentials_file": "/s/tokens/flashcat/categraf-daemonset"}
    assert sc["tls_config"] == {"insecure_skip_verify": False, "ca_file": "/s/ca.crt"}
    assert sc["static_configs"][0]["labels"] == {"job": "kubelet"}
    assert cfg["remote_write"] == [{"url": "http://127.0.0.1:9/api/v1/write"}]
    ks = tomllib.loads(kubescrape_config_toml(2.0, "http://127.0.0.1:9/api/v1/write"))
    assert ks["global"]["labels"] == {"bench_agent": "kubescrape"}
    assert ks["writers"] == [{"url": "http://127.0.0.1:9/api/v1/write"}]


# --- tables --------------------------------------------------------------------------------------------


def _result(agent: str, cpu: float, rss_mib: int, scraped: float) -> AgentResult:
    rss = RssSummary(peak=rss_mib << 20, steady=rss_mib << 20, samples=10)
    return AgentResult(
        agent=agent,
        window=10.0,
        cpu_seconds=cpu,
        rss=rss,
        rss_overall=rss,
        samples_scraped=scraped,
        samples_received=scraped,
        samples_sent=scraped,
        scrapes=10,
        failed_scrapes=0,
        scrape_p50=0.01,
        scrape_p90=0.02,
        scrape_p99=0.04,
    )


def test_table_has_both_agents_and_the_ratio() -> None:
    sc = Scenario("t", nodes=1, pods=10, interval=2.0, warmup=1.0, window=10.0)
    text = render_table(
        sc,
        {
            "prometheus": _result("prometheus", 1.0, 40, 1e5),
            "kubescrape": _result("kubescrape", 0.2, 20, 1e5),
        },
    )
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "kubescrape / Prometheus" in lines["figure"]
    assert lines["CPU µs per sample scraped"].split("|")[2:5] == [" 10.00 ", " 2.00 ", " 0.20 "]
    assert lines["RSS steady (MiB, median 2nd half)"].split("|")[2:5] == [" 40.0 ", " 20.0 ", " 0.50 "]
    assert ratio(1.0, 0.0) == "n/a" and ratio(float("nan"), 1.0) == "n/a"
    only = render_table(QUICK, {"prometheus": _result("prometheus", 1.0, 40, 0.0)})
    assert "kubescrape / Prometheus" not in only and "| CPU µs per sample scraped | n/a |" in only


def test_profile_summary_self_and_inclusive_shares() -> None:
    collapsed = "main;loop;parse 60\nmain;loop;encode 30\nmain;loop 10\n"
    text = profile_summary(collapsed)
    assert text.startswith("100 samples")
    assert "| 60.0 | 60.0 | `parse` |" in text
    assert "| 10.0 | 100.0 | `loop` |" in text


# --- three contenders ----------------------------------------------------------------------------------


def test_vmagent_scrape_config_honours_timestamps_and_leaves_labels_to_flags() -> None:
    jobs = jobs_from_categraf(bench_instances_toml(PRINTED, 12345, 2.0))
    cfg = yaml.safe_load(vmagent_scrape_yaml(jobs, 2.0))
    assert "remote_write" not in cfg and "external_labels" not in cfg["global"]
    (sc,) = cfg["scrape_configs"]
    assert sc["honor_timestamps"] is True
    assert sc["authorization"] == {"credentials_file": "/s/tokens/flashcat/categraf-daemonset"}
    assert sc["tls_config"]["ca_file"] == "/s/ca.crt"
    # Prometheus' own config leaves honor_timestamps at its default (true)
    prom = yaml.safe_load(prometheus_agent_yaml(jobs, 2.0, "http://x/api/v1/write"))
    assert "honor_timestamps" not in prom["scrape_configs"][0]


VMAGENT_METRICS = """\
vm_promscrape_scraped_samples_sum 2138
vm_promscrape_scraped_samples_count 4
vmagent_remotewrite_block_size_rows_sum 1607
vmagent_remotewrite_rows_pushed_after_relabel_total{path="/q/1_A",url="1:secret-url"} 2162
vmagent_remotewrite_pending_data_bytes{path="/q/1_A",url="1:secret-url"} 0
vmagent_remotewrite_pending_inmemory_blocks{path="/q/1_A",url="1:secret-url"} 0
"""


def test_each_agent_reads_its_own_counters() -> None:
    from bench.agents import kubescrape_counters, prometheus_counters, vmagent_counters, vmagent_drained

    vm = parse_exposition(VMAGENT_METRICS)
    assert vmagent_counters(vm)[:3] == (2138.0, 2162.0, 1607.0)
    assert not vmagent_drained(vm, 2162.0)  # rows not yet packed into blocks
    assert vmagent_drained(vm, 1607.0)
    pending = parse_exposition(VMAGENT_METRICS + "vmagent_remotewrite_pending_data_bytes{path=\"/q/2\"} 9\n")
    assert not vmagent_drained(pending, 1607.0)  # still on its way
    prom = parse_exposition(
        "prometheus_agent_samples_appended_total 50\nprometheus_remote_storage_samples_total 40\n"
    )
    c = prometheus_counters(prom)
    assert math.isnan(c.scraped) and (c.queued, c.sent) == (50.0, 40.0)
    ks = kubescrape_counters(parse_exposition(EXPOSITION))
    assert ks.scraped == 0.0 and ks.scrape_buckets == {0.01: 4.0, 0.1: 6.0, float("inf"): 8.0}
    assert Counters(1.0, 2.0, 3.0).scrape_buckets == {}


def test_table_with_three_agents_has_a_ratio_column_per_peer() -> None:
    sc = Scenario("t", nodes=1, pods=10, interval=2.0, warmup=1.0, window=10.0)
    results = {
        KUBESCRAPE: _result(KUBESCRAPE, 0.2, 20, 1e5),
        VMAGENT: _result(VMAGENT, 0.5, 16, 1e5),
        PROMETHEUS: _result(PROMETHEUS, 1.0, 40, 1e5),
    }
    text = render_table(sc, results)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    # columns in the fixed order Prometheus, vmagent, kubescrape, whatever order the results came in
    assert [c.strip() for c in lines["figure"].split("|")[2:7]] == [
        "Prometheus agent", "vmagent", "kubescrape", "kubescrape / Prometheus agent", "kubescrape / vmagent",
    ]
    assert [c.strip() for c in lines["CPU µs per sample scraped"].split("|")[2:7]] == [
        "10.00", "5.00", "2.00", "0.20", "0.40",
    ]
    assert [c.strip() for c in lines["RSS steady (MiB, median 2nd half)"].split("|")[2:7]] == [
        "40.0", "16.0", "20.0", "0.50", "1.25",
    ]
    assert lines["start-up CPU s, exec → first scrape (any target) done"].count("n/a") == 5
    goals = goal_line(results)
    assert "CPU/sample vs Prometheus agent 0.20× (goal ≤ 0.25×) met" in goals
    assert "CPU/sample vs vmagent 0.40× (goal ≤ 0.25×) NOT met" in goals
    assert "steady RSS vs Prometheus agent 0.50× (goal ≤ 0.4×) NOT met" in goals
    assert "steady RSS vs vmagent 1.25× (goal ≤ 1×) NOT met" in goals
    assert goal_line({PROMETHEUS: results[PROMETHEUS]}) == ""


def test_three_series_sets_compared_pairwise_with_synthetic_names_apart() -> None:
    target = [_s("m", pod="p1"), _s("up", job="kubelet")]
    sets = {
        PROMETHEUS: target,
        VMAGENT: [*target, _s("scrape_timeout_seconds", job="kubelet")],
        KUBESCRAPE: list(target),
    }
    diffs = compare_all(sets)
    pairs = [(PROMETHEUS, VMAGENT), (PROMETHEUS, KUBESCRAPE), (VMAGENT, KUBESCRAPE)]
    assert [(d.a, d.b) for d in diffs] == pairs
    assert [d.same for d in diffs] == [False, True, False]
    assert all(d.same_target_series for d in diffs)
    text = render_comparison(diffs)
    assert "scrape_timeout_seconds*" in text
    assert "SAME target series (only synthetic per-scrape series differ)" in text
    assert "Equivalence over prometheus, vmagent, kubescrape: **the SAME target series" in text
    sets[KUBESCRAPE] = [_s("m", pod="p2"), _s("up", job="kubelet")]
    text = render_comparison(compare_all(sets))
    assert "**DIFFERENT series sets (see above)**" in text
    assert render_comparison([]) == ""


def test_first_scrapes_end_at_start_plus_duration_per_target() -> None:
    def rng(job: str, points: list[tuple[float, str]]) -> dict[str, object]:
        return {"metric": {"job": job, "instance": "n1:10250"}, "values": [[t, v] for t, v in points]}

    up = [rng("kubelet", [(100.0, "1"), (102.0, "1")]), rng("cadvisor", [(100.5, "1"), (102.5, "1")])]
    durations = [
        rng("kubelet", [(100.0, "0.05"), (102.0, "0.04")]),
        rng("cadvisor", [(100.5, "0.3"), (102.5, "0.2")]),
    ]
    first = first_scrapes(up, durations)
    assert first is not None and first.targets == 2
    assert first.first_done == pytest.approx(100.05) and first.all_done == pytest.approx(100.8)
    assert first_scrapes([], durations) is None


def test_cpu_at_interpolates_and_refuses_outside_the_timeline() -> None:
    points = [(10.0, 1.0), (11.0, 1.5), (12.0, 1.5)]
    assert cpu_at(points, 10.5) == pytest.approx(1.25)
    assert cpu_at(points, 12.0) == 1.5
    assert math.isnan(cpu_at(points, 9.0)) and math.isnan(cpu_at(points, 13.0))
    assert math.isnan(cpu_at([], 1.0))


def test_cpu_timeline_of_this_process() -> None:
    timeline = CpuTimeline(os.getpid(), period=0.01).start()
    try:
        deadline = time.monotonic() + 5
        while len(timeline.points()) < 3:
            assert time.monotonic() < deadline, "no CPU samples within 5 s"
            time.sleep(0.01)
    finally:
        timeline.stop()
    points = timeline.points()
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(points))
    assert timeline.at(points[1][0]) == points[1][1] > 0


# --- bench/memory.py -------------------------------------------------------------------------------------


def test_series_cache_memory_of_a_small_node() -> None:
    from bench.memory import cache_memory, render_cache

    m = cache_memory(pods=2, top=3)
    assert m.series > 0 and m.samples >= m.series and m.payload_bytes > 0
    assert 0 < m.held_bytes <= m.peak_bytes
    assert m.scrapes == 8 and 0 < m.steady_bytes <= m.peak_bytes
    assert len(m.top_sites) <= 3 and all(size > 0 for _, size in m.top_sites)
    text = render_cache([m])
    assert f"| 2 | {m.series} | {m.samples} |" in text and "Largest allocation sites" in text


def test_spool_table_per_sample_figures(tmp_path: Path) -> None:
    from bench.memory import SpoolBytes, render_spool, written_bytes

    row = SpoolBytes(pods=100, records=4, samples=1000, chunk_bytes=400_000, snappy_bytes=90_000,
                     put_written=401_000, ack_written=80, disk_bytes=401_000)
    assert "| 100 | 4 | 1000 | 400.0 | 90.0 | 401.0 | 0.08 | 401.0 |" in render_spool([row])
    assert math.isnan(SpoolBytes(1, 0, 0, 0, 0, 0, 0, 0).per_sample(5))
    before = written_bytes()
    (tmp_path / "f").write_bytes(b"x" * 4096)
    assert written_bytes() - before >= 4096


def test_stored_differences_by_metric_name() -> None:
    from bench.report import render_stored_differences

    a, b = _result(PROMETHEUS, 1.0, 40, 10.0), _result(VMAGENT, 1.0, 40, 10.0)
    a.received_by_name = {"m": 10.0, "up": 4.0}
    b.received_by_name = {"m": 10.0, "up": 4.0, "scrape_timeout_seconds": 4.0}
    assert render_stored_differences({PROMETHEUS: a}) == ""
    text = render_stored_differences({VMAGENT: b, PROMETHEUS: a})
    assert "differ for 1 metric name(s)" in text
    assert "| `scrape_timeout_seconds` | 0 | 4 |" in text and "`m`" not in text


# --- bench/startup.py ------------------------------------------------------------------------------------


def test_importtime_summed_by_top_level_package() -> None:
    from bench.startup import parse_importtime

    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |   aiohttp.helpers\n"
        "import time:        50 |        400 | aiohttp\n"
        "import time:       300 |        300 |     pydantic.main\n"
        "import time:        20 |         20 | json\n"
        "some other line\n"
    )
    assert parse_importtime(stderr) == [("pydantic", 300), ("aiohttp", 150), ("json", 20)]


def test_startup_table_medians_and_ranges() -> None:
    from bench.startup import Startup, median, render_startups

    nan = float("nan")
    runs = [
        Startup(KUBESCRAPE, 1.0, 2.0, 0.5, 3.0),
        Startup(KUBESCRAPE, 3.0, 4.0, 0.7, 5.0),
        Startup(KUBESCRAPE, 2.0, nan, 0.6, nan),
        Startup(VMAGENT, nan, nan, nan, nan),
    ]
    text = render_startups(runs)
    assert "| kubescrape | 3 | 2.00 [1.00–3.00] | 3.00 [2.00–4.00] | 4.00 |" in text
    assert "| vmagent | 1 | n/a | n/a | n/a |" in text
    assert math.isnan(median([nan]))
