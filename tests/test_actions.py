"""genart_jax.train.actions, each action alone with fakes (no training, no JAX computation): the
loop's in-flight bound, throughput, logging, NaN policy, timed saves, checkpoint and sample
actions, and the multi-process stop/save agreement, over a fake collective and a fake
preemption sync manager shared by threads standing in for processes."""

import json
import threading
import types

import numpy as np
import pytest

from genart_jax.data import Position
from genart_jax.train import actions
from tests.conftest import tiny_config


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Recorder:
    """Any method call recorded as (name, args) in `calls`; returns `value`."""

    def __init__(self, value=None):
        self.calls, self.value = [], value

    def __getattr__(self, name):
        def method(*args, **kwargs):
            self.calls.append((name, args))
            return self.value
        return method


def test_every_is_false_for_a_period_of_zero():
    every = actions.every
    assert every(10, 5) and not every(11, 5) and not every(10, 0) and not every(0, 0)


def test_in_flight_waits_for_the_call_ahead_calls_back_and_never_the_newest():
    waited = []
    in_flight = actions.InFlight(ahead=2, wait=waited.append)
    for call in range(6):
        in_flight.launched(call)
        assert waited == list(range(max(0, call - 1))), call  # launched n: waited for n - 2
    assert 5 not in waited and 4 not in waited


def test_throughput_times_the_compile_apart_and_leaves_time_aside_out():
    clock = Clock()
    t = actions.Throughput(step=10, images_per_step=8, clock=clock)
    clock.t += 30.0
    t.compiled(step=11)  # the first call: 30 s of compile
    assert t.compile_s == 30.0
    clock.t += 2.0  # 4 steps of training
    with t.aside():
        clock.t += 100.0  # a save: not training time
    clock.t += 2.0
    assert t.rate(15) == pytest.approx(4 * 8 / 4.0)
    clock.t += 1.0
    assert t.rate(20) == pytest.approx(5 * 8 / 1.0)  # from the last logged step


def test_log_metrics_at_every_period_and_the_last_step(tmp_path):
    writer = actions.MetricsWriter(tmp_path / "metrics.jsonl", enabled=True)
    tb, bar, clock = Recorder(), Recorder(), Clock()
    log = actions.LogMetrics(every=5, last_step=12, writer=writer, tb=tb, bar=bar,
                     shown=("d_loss", "g_loss"), throughput=actions.Throughput(0, 4, clock))
    assert [s for s in range(1, 13) if log.due(s)] == [5, 10, 12]
    clock.t += 2.0
    metrics = {"d_loss": 1.5, "g_loss": float("nan"), "nonfinite_count": 1.0}
    record = log(5, metrics, epoch=3)
    assert record == {"step": 5, **metrics, "images_per_sec": 10.0, "epoch": 3}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {**record, "g_loss": None}  # NaN written as null
    assert tb.calls == [("scalars", (5, record))]
    assert bar.calls == [("set_postfix", ({"d_loss": "1.500", "g_loss": "nan",
                                           "img_s": "10"},))]


def test_metrics_writer_of_other_processes_writes_nothing(tmp_path):
    writer = actions.MetricsWriter(tmp_path / "metrics.jsonl", enabled=False)
    writer.write({"step": 1})
    writer.truncate_after(0)
    assert not (tmp_path / "metrics.jsonl").exists()


def diverged_state(step=7, count=1):
    return types.SimpleNamespace(nonfinite_count=np.int32(count),
                                 first_nonfinite_step=np.int32(step))


def test_nonfinite_stop_raises_at_a_logged_step_and_before_a_save():
    copies = []
    policy = actions.NonfinitePolicy("stop",
                                     to_host=lambda s: copies.append(s) or diverged_state(7))
    policy.check_logged({"d_loss": 1.0, "nonfinite_count": 0.0}, "device state")
    assert copies == []  # no host copy unless it stops
    with pytest.raises(actions.TrainingDiverged,
                       match="NaN/Inf at step 7 .*non-finite at the logged step: d_loss"):
        policy.check_logged({"d_loss": float("inf"), "nonfinite_count": 1.0}, "device state")
    assert copies == ["device state"]
    policy.check_saving(diverged_state(count=0))
    with pytest.raises(actions.TrainingDiverged, match="at step 3"):
        policy.check_saving(diverged_state(3))


def test_nonfinite_skip_goes_on():
    policy = actions.NonfinitePolicy("skip", to_host=lambda s: pytest.fail("no host copy"))
    policy.check_logged({"d_loss": float("nan"), "nonfinite_count": 2.0}, None)
    policy.check_saving(diverged_state())


def test_timed_save_is_due_after_its_minutes_since_the_last_save():
    clock = Clock()
    timer = actions.TimedSave(2.0, clock)
    clock.t += 119.0
    assert not timer.due()
    clock.t += 1.0
    assert timer.due()
    timer.saved()
    assert not timer.due()
    clock.t += 120.0
    assert timer.due()
    off = actions.TimedSave(0, clock)
    clock.t += 1e6
    assert not off.due()


# ---------------------------------------------------------------------------------------------
# the stop/save agreement


def fail(*args):
    pytest.fail(f"a collective in a single-process run: {args}")


@pytest.mark.parametrize("logged", [False, True])
@pytest.mark.parametrize("signalled", [False, True])
@pytest.mark.parametrize("timed", [False, True])
def test_one_process_decides_alone(logged, signalled, timed):
    agreement = actions.StopAgreement(1, sync=fail, any_process=fail)
    assert agreement.decide(3, logged, signalled, timed) == (signalled, timed)


@pytest.mark.parametrize("sync_on", [False, True])
@pytest.mark.parametrize("logged", [False, True])
@pytest.mark.parametrize("signalled", [False, True])
@pytest.mark.parametrize("timed", [False, True])
def test_every_process_makes_the_same_collective_calls_whatever_it_saw(sync_on, logged,
                                                                      signalled, timed):
    """The sequence of collectives depends only on the call and whether it is logged (the
    same on every process), never on a process's own signal or clock: else one process
    waits in a collective the others never enter."""
    calls = []

    def sync(call):
        calls.append(("sync", call))
        return False

    def any_process(flag):
        calls.append(("any_process",))
        return flag

    agreement = actions.StopAgreement(2, sync=sync if sync_on else None, any_process=any_process)
    agreement.decide(7, logged, signalled, timed)
    expected = ([("sync", 7)] if sync_on else []) + [("any_process",)] * (2 if logged else 0)
    assert calls == expected


@pytest.mark.parametrize("logged", [False, True])
def test_a_notice_from_the_sync_manager_stops_at_any_call(logged):
    agreement = actions.StopAgreement(2, sync=lambda call: True, any_process=lambda flag: flag)
    assert agreement.decide(5, logged, signalled=False, timed=False) == (True, False)


def test_without_a_logged_step_own_signal_and_clock_wait():
    """Not logged: neither this process's signal (the sync manager carries it) nor its clock
    (agreed at logged steps only) decides on its own."""
    agreement = actions.StopAgreement(2, sync=lambda call: False, any_process=fail)
    assert agreement.decide(5, False, signalled=True, timed=True) == (False, False)
    agreement = actions.StopAgreement(2, sync=None, any_process=fail)
    assert agreement.decide(5, False, signalled=True, timed=True) == (False, False)


class FakeRun:
    """What several processes share in a multi-process run, for threads standing in for them:
    the train step's collectives (`step`: all wait for all, which keeps them in lockstep as
    the real step does), an all-reduce `any_process` (likewise: a process that calls either
    alone fails on the barrier's timeout instead of hanging), and a preemption sync manager as
    JAX's: once a notice is posted, every process's `sync(call)` is true at the same call, the
    largest any process has reached plus one."""

    def __init__(self, processes: int):
        self.n, self.lock = processes, threading.Lock()
        self.barrier = threading.Barrier(processes, timeout=10)
        self.flags = [False] * processes
        self.reached = [0] * processes
        self.sync_point = None

    def step(self):
        self.barrier.wait()

    def any_process(self, rank):
        def collective(flag):
            self.flags[rank] = flag
            self.barrier.wait()
            out = any(self.flags)
            self.barrier.wait()  # all have read before a next collective writes
            return out
        return collective

    def sync(self, rank):
        def reached(call):
            with self.lock:
                self.reached[rank] = call
                return call == self.sync_point
        return reached

    def announce(self):
        with self.lock:
            if self.sync_point is None:
                self.sync_point = max(self.reached) + 1


def simulate(run, *, calls, log_every, signal=None, timer_due=None, sync_on=True):
    """Each process (a thread) runs the loop's decisions per call until it stops: `signal` is
    (rank, call) of a signal that arrives after that call's decision (the handler announces
    it where the sync manager is on); `timer_due` (rank, call): that process's clock says a
    timed save is due from that call on. Returns per process the calls it saved at, as (call,
    stop, timed)."""
    out = [None] * run.n

    def process(rank):
        agreement = actions.StopAgreement(run.n, run.sync(rank) if sync_on else None,
                                  run.any_process(rank))
        signalled, saves = False, []
        for call in range(1, calls + 1):
            run.step()
            timed = timer_due is not None and timer_due[0] == rank and call >= timer_due[1]
            stop, timed = agreement.decide(call, call % log_every == 0, signalled, timed)
            if stop or timed:
                saves.append((call, stop, timed))
            if stop:
                break
            if signal is not None and signal == (rank, call):
                signalled = True
                if sync_on:
                    run.announce()
        out[rank] = saves

    threads = [threading.Thread(target=process, args=(r,)) for r in range(run.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert all(o is not None for o in out), "a process failed (a collective it called alone)"
    return out


@pytest.mark.parametrize("processes", [2, 3])
def test_a_signal_to_one_process_stops_all_at_the_same_call_between_logged_steps(processes):
    run = FakeRun(processes)
    saves = simulate(run, calls=50, log_every=1000, signal=(processes - 1, 7))
    # at the next call end (the sync point), not at a logged step
    assert saves == [[(8, True, False)]] * processes


def test_without_the_sync_manager_a_signal_stops_all_at_the_next_logged_step():
    saves = simulate(FakeRun(2), calls=50, log_every=10, signal=(1, 13), sync_on=False)
    assert saves == [[(20, True, False)], [(20, True, False)]]


def test_one_process_s_clock_makes_all_save_at_the_next_logged_step_and_go_on():
    saves = simulate(FakeRun(2), calls=25, log_every=10, timer_due=(0, 3))
    # the clock of process 0 stays due (the simulation never resets it): a save at every
    # logged step from the first one after it, on both processes, and no stop
    assert saves == [[(10, False, True), (20, False, True)]] * 2


# ---------------------------------------------------------------------------------------------
# checkpoint and sample actions


class FakeCheckpointer:
    def __init__(self, workdir, latest=None):
        self.workdir, self.latest, self.saved, self.closed, self.waited = workdir, latest, [], 0, 0

    def save(self, step, state, meta):
        self.saved.append((step, state, meta))
        self.latest = step
        return self.workdir / "checkpoints" / str(step)

    def latest_step(self):
        return self.latest

    def wait(self):
        self.waited += 1

    def close(self):
        self.closed += 1


def healthy_state(step):
    return types.SimpleNamespace(step=np.int32(step), nonfinite_count=np.int32(0))


def test_save_checkpoint_every_period_with_config_and_data_position(tmp_path):
    cfg = tiny_config("mlp")
    ckpt = FakeCheckpointer(tmp_path)
    stop = actions.NonfinitePolicy("stop", lambda s: s)
    save = actions.SaveCheckpoint(ckpt, cfg, every=4, policy=stop)
    assert [s for s in range(1, 13) if save.due(s)] == [4, 8, 12]
    assert not actions.SaveCheckpoint(ckpt, cfg, 0, stop).due(4)
    state = healthy_state(4)
    assert save(4, state, Position(epoch=2, batch=5)) == tmp_path / "checkpoints" / "4"
    ((step, saved, meta),) = ckpt.saved
    assert step == 4 and saved is state
    assert meta["data_position"] == {"epoch": 2, "batch": 5}
    assert meta["config"]["train"]["steps"] == cfg.train.steps
    with pytest.raises(actions.TrainingDiverged):  # a diverged state is not saved
        save(8, diverged_state(6), Position())
    assert len(ckpt.saved) == 1


@pytest.mark.parametrize("latest", [None, 8, 10])
def test_the_final_save_only_where_the_newest_checkpoint_is_older(tmp_path, latest):
    ckpt = FakeCheckpointer(tmp_path, latest)
    skip = actions.NonfinitePolicy("skip", lambda s: s)
    save = actions.SaveCheckpoint(ckpt, tiny_config("mlp"), 0, skip)
    path = save.final(healthy_state(10), Position())
    assert path == tmp_path / "checkpoints" / "10"
    assert [s for s, _, _ in ckpt.saved] == ([] if latest == 10 else [10])
    assert ckpt.waited == 1 and ckpt.closed == 1


def test_write_samples_on_process_zero_every_period_before_the_end(tmp_path):
    written = []

    def write(cfg, state, path, real):
        written.append((state, path.name, real))
        return [path]

    tb = Recorder()
    sample = actions.WriteSamples("cfg", write, tmp_path, tb, every=5, last_step=15, enabled=True)
    assert [s for s in range(1, 16) if sample.due(s)] == [5, 10]  # 15: final.png instead
    sample(5, "state", "real")
    assert sample.final(15, "state", "real") == [tmp_path / "final.png"]
    assert written == [("state", "step_000005.png", "real"), ("state", "final.png", "real")]
    assert tb.calls == [("images", (5, [tmp_path / "step_000005.png"])),
                        ("images", (15, [tmp_path / "final.png"]))]
    other = actions.WriteSamples("cfg", write, tmp_path, Recorder(), 5, 15, enabled=False)
    assert not any(other.due(s) for s in range(1, 16))
    assert other.final(15, "state", None) == [] and len(written) == 2
    assert not any(actions.WriteSamples("cfg", write, tmp_path, tb, 0, 15, True).due(s)
                   for s in range(1, 16))


def test_real_images_from_host_batches_or_from_the_split_on_the_devices():
    images = np.arange(20 * 2 * 2 * 1, dtype=np.uint8).reshape(20, 2, 2, 1)
    labels = np.arange(20)
    real, lab = actions.real_images({"image": images[None], "label": labels[None]})
    assert real.shape == (16, 2, 2, 1) and real.dtype == np.float32
    np.testing.assert_array_equal(lab, labels[:16])
    indices = np.arange(19, -1, -1)  # batches of indices into the resident split
    resident_real, _ = actions.real_images({"image": indices[None], "label": labels[None]}, images)
    np.testing.assert_array_equal(resident_real, actions.real_images(
        {"image": images[indices][None], "label": labels[None]})[0])
