"""Run logs: sinks (CSV, JSONL, TensorBoard, W&B) and the interval reporter, fed synthetic
metric dicts as `jax.debug.callback` delivers them (numpy values, seeds in any order)."""

import csv
import io
import json
import math
import struct
import sys
import threading
import types

import numpy as np
import pytest

from diffrl_jax import run_logs
from diffrl_jax.run_logs import (
    CsvSink,
    IntervalReporter,
    JsonlSink,
    MetricSink,
    TensorBoardSink,
    WandbSink,
    flatten_row,
    make_sinks,
)


def metrics(env_steps, seed, extra=True):
    """One seed's interval report, typed as the debug callback hands it over."""
    out = {
        "env_steps": np.asarray(env_steps, np.int32),
        "eval_return": np.asarray(10.0 * seed + env_steps / 100, np.float32),
        "eval_return_deterministic": np.asarray(seed + 0.5, np.float32),
        "eval_length": np.asarray(1000, np.int32),
        "train_return": np.asarray(-1.25, np.float32),
        "train_episodes": np.asarray(3, np.int32),
        "nonfinite_env_steps": np.asarray(0, np.int32),
        "nonfinite_updates": np.asarray(0, np.int32),
    }
    if extra:
        out["eval_mode_counts"] = np.asarray([seed, 2, 0], np.int32)
        out["critic_loss"] = np.asarray(0.5, np.float32)
    return out


class ListSink:
    def __init__(self):
        self.writes, self.closed = [], False

    def write(self, rows):
        self.writes.append(rows)

    def close(self):
        self.closed = True


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Reporter ordering


def test_out_of_order_seeds_give_one_row_per_seed_per_interval_in_order():
    sink = ListSink()
    reporter = IntervalReporter(3, 300, "sac ant", [sink], progress="none")
    assert isinstance(sink, MetricSink)
    order = [(100, 2), (100, 0), (200, 1), (100, 1), (200, 2), (300, 0), (200, 0), (300, 2),
             (300, 1)]
    for steps, seed in order:
        reporter.record(np.asarray(seed), metrics(steps, seed))
    reporter.close()
    assert sink.closed
    assert [[(r["interval"], r["env_steps"], r["seed"]) for r in rows] for rows in sink.writes] == [
        [(0, 100, 0), (0, 100, 1), (0, 100, 2)],
        [(1, 200, 0), (1, 200, 1), (1, 200, 2)],
        [(2, 300, 0), (2, 300, 1), (2, 300, 2)],
    ]
    row = sink.writes[1][2]
    assert row["eval_return"] == pytest.approx(22.0)
    assert row["eval_mode_counts"] == [2, 2, 0]
    assert isinstance(row["eval_length"], int) and isinstance(row["eval_return"], float)
    assert reporter.intervals_written == 3 and not reporter.pending


def test_a_later_interval_waits_for_an_earlier_incomplete_one():
    sink = ListSink()
    reporter = IntervalReporter(2, 200, sinks=[sink], progress="none")
    reporter.record(0, metrics(100, 0))
    reporter.record(0, metrics(200, 0))
    reporter.record(1, metrics(200, 1))  # 200 complete, 100 still waits for seed 1
    assert sink.writes == []
    reporter.record(1, metrics(100, 1))
    assert [rows[0]["env_steps"] for rows in sink.writes] == [100, 200]
    assert [rows[0]["interval"] for rows in sink.writes] == [0, 1]
    reporter.close()


def test_close_writes_held_intervals_and_warns_about_incomplete_ones():
    sink = ListSink()
    reporter = IntervalReporter(2, 300, sinks=[sink], progress="none", start_interval=5)
    reporter.record(0, metrics(100, 0))
    reporter.record(0, metrics(200, 0))
    reporter.record(1, metrics(200, 1))
    with pytest.warns(UserWarning, match="not reported by every seed"):
        reporter.close()
    assert [(rows[0]["interval"], rows[0]["env_steps"]) for rows in sink.writes] == [(5, 200)]
    reporter.close()  # twice is fine


def test_threads_reporting_concurrently():
    sink = ListSink()
    num_seeds, intervals = 8, 20
    reporter = IntervalReporter(num_seeds, 100 * intervals, sinks=[sink], progress="none")

    def seed_thread(seed):
        for i in range(1, intervals + 1):
            reporter.record(seed, metrics(100 * i, seed, extra=False))

    threads = [threading.Thread(target=seed_thread, args=(s,)) for s in range(num_seeds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reporter.close()
    assert [rows[0]["env_steps"] for rows in sink.writes] == [100 * i for i in range(1, 21)]
    assert all([r["seed"] for r in rows] == list(range(num_seeds)) for rows in sink.writes)


def test_reporter_input_errors():
    with pytest.raises(ValueError, match="progress mode"):
        IntervalReporter(1, 10, progress="fancy")
    with pytest.raises(ValueError, match="num_seeds"):
        IntervalReporter(0, 10)
    reporter = IntervalReporter(2, 10, progress="none")
    with pytest.raises(ValueError, match="out of range"):
        reporter.record(2, metrics(5, 0))
    with pytest.raises(ValueError, match="env_steps"):
        reporter.record(0, {"eval_return": 1.0})


# ---------------------------------------------------------------------------------------------
# File contents


def feed(reporter, intervals, num_seeds, extra=True):
    for steps in intervals:
        for seed in reversed(range(num_seeds)):
            reporter.record(seed, metrics(steps, seed, extra))


def test_jsonl_contents_exact(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with IntervalReporter(2, 200, sinks=[JsonlSink(path)], progress="none") as reporter:
        feed(reporter, [100], 2)
    lines = path.read_text().splitlines()
    assert lines[0] == (
        '{"interval": 0, "env_steps": 100, "seed": 0, "critic_loss": 0.5, "eval_length": 1000, '
        '"eval_mode_counts": [0, 2, 0], "eval_return": 1.0, "eval_return_deterministic": 0.5, '
        '"nonfinite_env_steps": 0, "nonfinite_updates": 0, "train_episodes": 3, '
        '"train_return": -1.25}')
    assert json.loads(lines[1])["seed"] == 1 and json.loads(lines[1])["eval_return"] == 11.0
    assert len(lines) == 2


def test_jsonl_flushes_each_write_and_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    sink.write([{"interval": 0, "env_steps": 10, "seed": 0, "x": 1.0}])
    assert read_jsonl(path) == [{"interval": 0, "env_steps": 10, "seed": 0, "x": 1.0}]  # before close
    sink.close()
    sink = JsonlSink(path)  # a new run on the same file appends
    sink.write([{"interval": 1, "env_steps": 20, "seed": 0, "x": float("nan")}])
    sink.close()
    rows = read_jsonl(path)
    assert [r["env_steps"] for r in rows] == [10, 20] and math.isnan(rows[1]["x"])


def test_csv_contents_exact(tmp_path):
    path = tmp_path / "metrics.csv"
    with IntervalReporter(2, 200, sinks=[CsvSink(path)], progress="none") as reporter:
        feed(reporter, [100, 200], 2)
    assert path.read_text().splitlines() == [
        "interval,env_steps,seed,critic_loss,eval_length,eval_mode_counts_0,eval_mode_counts_1,"
        "eval_mode_counts_2,eval_return,eval_return_deterministic,nonfinite_env_steps,"
        "nonfinite_updates,train_episodes,train_return",
        "0,100,0,0.5,1000,0,2,0,1.0,0.5,0,0,3,-1.25",
        "0,100,1,0.5,1000,1,2,0,11.0,1.5,0,0,3,-1.25",
        "1,200,0,0.5,1000,0,2,0,2.0,0.5,0,0,3,-1.25",
        "1,200,1,0.5,1000,1,2,0,12.0,1.5,0,0,3,-1.25",
    ]


def test_csv_extra_keys_are_ignored_with_one_warning_and_missing_left_empty(tmp_path):
    path = tmp_path / "metrics.csv"
    sink = CsvSink(path)
    sink.write([{"interval": 0, "env_steps": 1, "seed": 0, "a": 1}])
    with pytest.warns(UserWarning, match=r"\['b'\] are not columns"):
        sink.write([{"interval": 1, "env_steps": 2, "seed": 0, "b": 2}])
    sink.write([{"interval": 2, "env_steps": 3, "seed": 0, "a": 3, "b": 4}])  # no second warning
    sink.close()
    assert path.read_text().splitlines() == [
        "interval,env_steps,seed,a", "0,1,0,1", "1,2,0,", "2,3,0,3"]
    # a resumed run keeps the existing header
    sink = CsvSink(path)
    sink.write([{"interval": 3, "env_steps": 4, "seed": 0, "a": 5}])
    sink.close()
    assert path.read_text().splitlines()[0] == "interval,env_steps,seed,a"
    assert path.read_text().splitlines()[-1] == "3,4,0,5"


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_resume_truncation_drops_later_intervals_and_keeps_earlier(tmp_path, kind):
    out = tmp_path / "run"

    def run(intervals, resume=None):
        sinks = make_sinks(out, [kind], resume_from_env_steps=resume)
        with IntervalReporter(2, 400, sinks=sinks, progress="none",
                              start_env_steps=resume or 0,
                              start_interval=(resume or 0) // 100) as reporter:
            feed(reporter, intervals, 2, extra=False)

    def steps_and_intervals():
        if kind == "jsonl":
            rows = read_jsonl(out / "metrics.jsonl")
        else:
            with open(out / "metrics.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        return [(int(r["interval"]), int(r["env_steps"]), int(r["seed"])) for r in rows]

    run([100, 200, 300])  # crashed after 300; the last checkpoint was at 200
    run([300, 400], resume=200)
    assert steps_and_intervals() == [
        (i, 100 * (i + 1), s) for i in range(4) for s in range(2)]
    if kind == "csv":
        assert (out / "metrics.csv").read_text().count("interval,") == 1


def test_truncate_after_and_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"interval": 0, "env_steps": 10, "seed": 0}\n'
                    '{"interval": 1, "env_steps": 20, "seed": 0}\n'
                    '{"interval": 2, "env_steps": 30, "se')  # killed mid-write
    sink = JsonlSink(path)
    sink.write([{"interval": 2, "env_steps": 30, "seed": 0}])
    assert [r["env_steps"] for r in read_jsonl(path)] == [10, 20, 30]
    sink.truncate_after(10)
    sink.write([{"interval": 1, "env_steps": 20, "seed": 0}])
    sink.close()
    assert [r["env_steps"] for r in read_jsonl(path)] == [10, 20]

    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("interval,env_steps,seed,a\n0,10,0,1\n1,20,0,2\n2,30,0,3\n")
    sink = CsvSink(csv_path)
    sink.truncate_after(20)
    sink.write([{"interval": 2, "env_steps": 30, "seed": 0, "a": 9}])
    sink.close()
    assert csv_path.read_text().splitlines() == [
        "interval,env_steps,seed,a", "0,10,0,1", "1,20,0,2", "2,30,0,9"]


def test_flatten_row():
    assert flatten_row({"seed": 0, "c": np.asarray([[1, 2], [3, 4]]), "x": np.float32(1.5)}) == {
        "seed": 0, "c_0": 1, "c_1": 2, "c_2": 3, "c_3": 4, "x": 1.5}


# ---------------------------------------------------------------------------------------------
# TensorBoard


def read_scalars(logdir):
    """{tag: [(step, value)]} from the TFRecord event files (length, crc, Event, crc)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_event_file_has_per_seed_and_mean_tags(tmp_path):
    sinks = make_sinks(tmp_path, ["tensorboard"])
    assert isinstance(sinks[0], TensorBoardSink)
    with IntervalReporter(2, 200, sinks=sinks, progress="none") as reporter:
        feed(reporter, [100, 200], 2)
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    assert b"eval_return/seed_1" in files[0].read_bytes()
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["eval_return/seed_0"] == [(100, 1.0), (200, 2.0)]
    assert scalars["eval_return/seed_1"] == [(100, 11.0), (200, 12.0)]
    assert scalars["eval_return/mean"] == [(100, 6.0), (200, 7.0)]
    assert scalars["eval_mode_counts_0/mean"] == [(100, 0.5), (200, 0.5)]
    assert {"critic_loss/mean", "train_return/seed_0", "nonfinite_updates/mean"} <= set(scalars)
    assert not any(tag.startswith(("seed/", "interval/", "env_steps/")) for tag in scalars)


# ---------------------------------------------------------------------------------------------
# make_sinks and W&B


def test_make_sinks_layout_and_unknown_format(tmp_path):
    sinks = make_sinks(tmp_path / "out", ["csv", "jsonl", "tensorboard", "csv"])
    assert [type(s) for s in sinks] == [CsvSink, JsonlSink, TensorBoardSink]
    for sink in sinks:
        sink.close()
    assert (tmp_path / "out" / "metrics.csv").exists()
    assert (tmp_path / "out" / "metrics.jsonl").exists()
    assert (tmp_path / "out" / "tensorboard").is_dir()
    with pytest.raises(ValueError, match="allowed: csv, jsonl, tensorboard, wandb") as info:
        make_sinks(tmp_path, ["csv", "parquet"])
    assert "parquet" in str(info.value)


def test_wandb_missing_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match=r"W&B logging needs `pip install wandb`"):
        WandbSink("proj", "run")
    with pytest.raises(ImportError, match=r"pip install wandb"):
        make_sinks(tmp_path, ["jsonl", "wandb"])


def test_wandb_calls_with_a_fake_module(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, payload, step=None):
            calls.append(("log", payload, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    sinks = make_sinks(tmp_path / "myrun", ["wandb"], wandb_project="proj",
                       wandb_config={"algo": "sac"})
    with IntervalReporter(2, 200, sinks=sinks, progress="none") as reporter:
        feed(reporter, [100], 2)
    assert calls[0] == ("init", {"project": "proj", "name": "myrun", "config": {"algo": "sac"}})
    kind, payload, step = calls[1]
    assert kind == "log" and step == 100
    assert payload["eval_return/mean"] == pytest.approx(6.0)
    assert payload["eval_return/seed_0"] == pytest.approx(1.0)
    assert payload["eval_return/seed_1"] == pytest.approx(11.0)
    assert payload["eval_mode_counts_0/seed_1"] == 1.0
    assert calls[2:] == [("finish",)]


# ---------------------------------------------------------------------------------------------
# Progress display


def test_progress_lines_show_steps_rates_return_and_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(run_logs.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    reporter = IntervalReporter(2, 1000, "sac ant", progress="lines", stream=stream)
    clock[0] = 130.0  # compilation: not counted
    reporter.compile_report(30.0)
    reporter.start()
    clock[0] = 140.0
    feed(reporter, [250], 2)
    reporter.close()
    assert reporter.lines[0] == "[sac ant] compiled in 30.0 s"
    line = reporter.lines[1]
    # 250 steps per seed in 10 s: 25/s per seed, 50/s for both; 750 left -> 30 s
    assert line.startswith("[sac ant] env steps 250/1,000  ")
    assert "50 env steps/s (2 seeds; 25/s per seed)" in line
    # the seeds' returns are named as such (not an interval-like [a, b])
    assert "eval return (stochastic) mean 7.50 (seeds: 2.5, 12.5)" in line
    assert "elapsed 10.0s" in line and line.endswith("ETA 30.0s")
    assert stream.getvalue().splitlines() == reporter.lines


def test_progress_resumed_run_counts_only_new_steps(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(run_logs.time, "perf_counter", lambda: clock[0])
    reporter = IntervalReporter(1, 10_000, progress="lines", start_env_steps=6000,
                                stream=io.StringIO(), max_listed_seeds=0)
    reporter.start()
    clock[0] = 100.0
    feed(reporter, [8000], 1)
    reporter.close()
    line = reporter.lines[0]
    assert line.startswith("env steps 8,000/10,000")
    assert "20 env steps/s (1 seeds; 20/s per seed)" in line
    assert "mean 80.00  " in line and "[" not in line  # no per-seed list past max_listed_seeds
    assert "elapsed 1m40s" in line and line.endswith("ETA 1m40s")


def test_progress_none_prints_nothing_but_keeps_lines(capsys):
    stream = io.StringIO()
    reporter = IntervalReporter(1, 100, progress="none", stream=stream)
    reporter.compile_report(1.0)
    feed(reporter, [100], 1)
    reporter.close()
    assert stream.getvalue() == "" and capsys.readouterr().out == ""
    assert len(reporter.lines) == 2 and "ETA" in reporter.lines[1]


def test_bar_falls_back_to_lines_when_not_a_terminal():
    stream = io.StringIO()
    reporter = IntervalReporter(1, 100, "x", progress="bar", stream=stream)
    assert reporter.mode == "lines"
    feed(reporter, [100], 1)
    reporter.close()
    assert stream.getvalue().splitlines() == reporter.lines


def test_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with IntervalReporter(2, 200, "ppo ant", progress="bar", stream=stream) as reporter:
        assert reporter.mode == "bar"
        reporter.compile_report(2.0)
        reporter.start()
        feed(reporter, [100, 200], 2)
    text = stream.getvalue()
    assert "compiled in 2.0 s" in text
    assert "env steps/seed" in text and "ETA" in text and "per seed" in text
    assert len(reporter.lines) == 3
