"""Populations that advance together (`train(concurrent_populations=True)`) give every trial the
bits it gets when populations run one after another, and each population's results are handed
over as soon as it finishes; the memory model says how many run together."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest
import torch

from cuda_cases import ON_CUDA, use_stand_in_graphs
from hpstudy import Config
from hpstudy.engine import planning, train, training
from hpstudy.engine.planning import bytes_per_member, n_admitted, population_bytes
from slices import fashion_splits

N_TRAIN, N_EVAL = 640, 300

_MLP = dict(patience=1, max_epochs=4)
CONFIGS = [
    # (32,), batch 64: four members, one of which diverges in its second epoch
    Config(topology=(32,), optimizer="adam", lr=0.002, seed=1, **_MLP),
    Config(topology=(32,), optimizer="sgd", lr=0.05, momentum=0.9, seed=2, **_MLP),
    Config(topology=(32,), optimizer="sgd", lr=100.0, momentum=0.9, seed=3, **_MLP),
    Config(topology=(32,), optimizer="rmsprop", lr=0.001, seed=4, max_epochs=3, patience=3),
    # (48, 24), batch 64: a scheduled member and a dropout member (pruned at epoch 2)
    Config(topology=(48, 24), optimizer="adam", lr=0.001, seed=5, schedule="cosine", **_MLP),
    Config(topology=(48, 24), optimizer="sgd", lr=0.05, seed=6, dropout=0.1, **_MLP),
    Config(topology=(48, 24), activation="tanh", optimizer="adam", lr=0.002, seed=7,
           max_epochs=3, patience=3),
    # (32,), batch 128: its own population
    Config(topology=(32,), batch_size=128, optimizer="adam", lr=0.003, seed=8, **_MLP),
    Config(topology=(32,), batch_size=128, optimizer="sgd", lr=0.1, seed=9, max_epochs=2),
    # a small CNN
    Config(topology=(16,), conv=(4,), batch_size=64, optimizer="adam", lr=0.002, seed=10,
           max_epochs=2, patience=2),
]  # fmt: skip
PRUNED = 5  # index of the member the callback prunes after its second epoch


@pytest.fixture(scope="module")
def splits(fashion):
    return fashion_splits(fashion, N_TRAIN, N_EVAL)


def _run(splits, *, together: bool, device="cpu", **kwargs):
    """Results, and the log of epochs ("epoch", population, epoch) and results ("result", i)
    in the order the callbacks saw them."""
    log, progress = [], []

    def on_epoch(event):
        log.append(("epoch", event.population, event.epoch))
        progress.append((event.progress, event.expected_progress))
        return [PRUNED] if event.epoch == 2 and PRUNED in event.config_indices else []

    def on_results(population):
        log.extend(("result", i) for i, _ in population)

    train_split, eval_split = (s.to(device, torch.float32) for s in splits)
    results = train(CONFIGS, train_split, eval_split, device=device, on_epoch=on_epoch,
                    on_results=on_results, concurrent_populations=together, **kwargs)  # fmt: skip
    return results, log, progress


@pytest.fixture(scope="module")
def sequential(splits):
    return _run(splits, together=False)


def _bits(values: list[float]) -> bytes:
    """The float64 bits of a curve: `==` on lists, with a diverged epoch's NaN equal to itself."""
    return np.array(values, dtype=np.float64).tobytes()


def assert_same_results(got, expected) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.config == b.config
        assert (a.outcome, a.best_epoch) == (b.outcome, b.best_epoch), a.config
        for curve in ("train_loss", "eval_loss", "eval_accuracy"):
            assert _bits(getattr(a, curve)) == _bits(getattr(b, curve)), (a.config, curve)
        assert (a.device, a.dtype, a.engine) == (b.device, b.dtype, b.engine)
        assert (a.eval_correct is None) == (b.eval_correct is None)
        if a.eval_correct is not None:
            assert np.array_equal(a.eval_correct, b.eval_correct), a.config
        assert (a.state_dict is None) == (b.state_dict is None), a.config
        if a.state_dict is not None:
            assert list(a.state_dict) == list(b.state_dict)
            for key, tensor in a.state_dict.items():
                assert torch.equal(tensor, b.state_dict[key]), (a.config, key)


def _population_of() -> dict[int, int]:
    """Config index -> its population's index in the plan."""
    populations = training.plan_populations(
        CONFIGS, device=torch.device("cpu"), dtype=torch.float32, n_eval=N_EVAL
    )
    return {i: p for p, indices in enumerate(populations) for i in indices}


def assert_results_handed_over_at_once(log) -> None:
    """Each configuration's result comes once, right after its population's last epoch (only
    its population's other results between), so before any population's next epoch."""
    results = [entry[1] for entry in log if entry[0] == "result"]
    assert sorted(results) == list(range(len(CONFIGS)))
    population = _population_of()
    for position, entry in enumerate(log):
        if entry[0] != "result":
            continue
        p = population[entry[1]]
        before = position - 1
        while log[before][0] == "result":
            assert population[log[before][1]] == p, (entry, log[before])
            before -= 1
        assert log[before][:2] == ("epoch", p), (entry, log[before])
        assert ("epoch", p) not in [e[:2] for e in log[position:]]


def test_populations_together_give_the_same_bits_as_one_after_another(splits, sequential):
    expected, sequential_log, _ = sequential
    started = time.perf_counter()
    got, log, progress = _run(splits, together=True)
    wall_s = time.perf_counter() - started
    assert_same_results(got, expected)
    # Each trial's wall time is its share of its population's, which shares each epoch's time
    # with the populations beside it: disjoint parts of the call, so they add up to less.
    assert 0 < sum(r.wall_s for r in got) <= wall_s
    outcomes = {r.outcome.value for r in got}
    assert outcomes == {"complete", "diverged", "pruned"}
    assert len({r.epochs_run for r in got}) >= 3  # members stop at different epochs
    # They did run together: epoch 1 of every population before epoch 2 of any ...
    epochs = [(e, p) for kind, p, e in (x for x in log if x[0] == "epoch")]
    assert epochs == sorted(epochs) and len({p for _, p in epochs}) == 4
    # ... where one after another, population 0 finishes first.
    sequential_epochs = [(p, e) for kind, p, *e in sequential_log if kind == "epoch"]
    assert sequential_epochs == sorted(sequential_epochs)
    assert_results_handed_over_at_once(log)
    assert_results_handed_over_at_once(sequential_log)
    shares = [share for share, _ in progress]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)
    assert progress[-1][1] == pytest.approx(1.0)


def test_graphed_populations_together_give_the_same_bits(splits, sequential, monkeypatch):
    """On the CPU stand-in for CUDA graphs: warm-ups and captures of several populations begin
    before any epoch finishes, and the scheduled member recaptures each epoch."""
    from cuda_cases import StandInGraph
    from hpstudy.engine import steps
    from hpstudy.engine.population_run import PopulationRun

    use_stand_in_graphs(monkeypatch)
    calls, running = [], [None]  # ("capture" | "finish", population)
    real_begin, real_finish = PopulationRun.begin_training, PopulationRun.finish_training

    def begin(self):
        running[0] = self.index
        real_begin(self)

    def finish(self):
        calls.append(("finish", self.index))
        real_finish(self)

    def capture(step, generators=()):
        calls.append(("capture", running[0]))
        return StandInGraph(step, generators)

    monkeypatch.setattr(PopulationRun, "begin_training", begin)
    monkeypatch.setattr(PopulationRun, "finish_training", finish)
    monkeypatch.setattr(steps, "capture_graph", capture)
    got, log, _ = _run(splits, together=True, cuda_graphs=True)
    assert_same_results(got, sequential[0])
    # Every population captures in its first epoch, all before any epoch finishes.
    first_finish = calls.index(("finish", 0))
    assert sorted(p for kind, p in calls[:first_finish]) == [0, 1, 2, 3]
    assert all(kind == "capture" for kind, _ in calls[:first_finish])
    # Population 1 holds the scheduled member: a new capture in every epoch it runs.
    epochs_of_1 = sum(1 for kind, p, *_ in log if kind == "epoch" and p == 1)
    assert calls.count(("capture", 1)) == epochs_of_1 >= 3


def test_populations_wait_for_memory_and_start_as_others_finish(splits, sequential, monkeypatch):
    """A budget that holds the first two populations: the others start when one leaves, at
    most two run at once, and the bits do not change."""
    populations = training.plan_populations(
        CONFIGS, device=torch.device("cpu"), dtype=torch.float32, n_eval=N_EVAL
    )
    need = [population_bytes(CONFIGS[ix[0]], len(ix), torch.float32, N_EVAL) for ix in populations]
    monkeypatch.setattr(training, "memory_budget", lambda device: need[0] + need[1])
    got, log, _ = _run(splits, together=True)
    assert_same_results(got, sequential[0])
    assert_results_handed_over_at_once(log)
    population = _population_of()
    live, most, finished = set(), 0, set()
    for entry in log:
        if entry[0] == "epoch":
            live.add(entry[1])
        elif population[entry[1]] not in finished:
            live.discard(population[entry[1]])
            finished.add(population[entry[1]])
        most = max(most, len(live))
    assert most == 2
    first_epochs = [p for kind, p, *e in log if kind == "epoch" and e == [1]]
    assert first_epochs == [0, 1, 2, 3]


class _StandInStream:
    """Records what a CUDA stream is asked to do, in one log shared with the launches."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))

    def synchronize(self):
        self.log.append(("synchronize", self.name))


def test_each_population_launches_on_its_own_stream_and_a_wave_syncs_once(splits, monkeypatch):
    """The CUDA choreography, with stand-in streams on the CPU: every epoch, each stream waits
    for the current one (the bookkeeping) before its population launches; every epoch begins
    before any finishes; each launch runs on its population's stream; then the current stream
    waits for all of them and the stats cross to the host once."""
    import contextlib

    from hpstudy.engine.population_run import PopulationRun

    log: list[tuple] = []
    active = ["current"]
    current = _StandInStream("current", log)
    counter = iter(range(100))
    monkeypatch.setattr(training, "_new_stream", lambda device: _StandInStream(next(counter), log))
    monkeypatch.setattr(training, "_current_stream", lambda stream: current)

    @contextlib.contextmanager
    def on_stream(stream):
        active.append(stream.name)
        yield
        active.pop()

    monkeypatch.setattr(training, "on_stream", on_stream)
    for name in ("begin_training", "finish_training", "launch_evaluation"):
        real = getattr(PopulationRun, name)

        def logged(self, real=real, name=name):
            log.append((name, self.index, active[-1]))
            return real(self)

        monkeypatch.setattr(PopulationRun, name, logged)
    real_to_host = training._to_host
    monkeypatch.setattr(training, "_to_host", lambda stats: log.append(("to_host", len(stats)))
                        or real_to_host(stats))  # fmt: skip
    quick = [c.replace(max_epochs=min(c.max_epochs, 2)) for c in CONFIGS]
    train(quick, *splits, concurrent_populations=True)
    # Stream n is population n's (they start in plan order).
    waves, wave = [], []
    for entry in log:
        wave.append(entry)
        if entry[0] == "to_host":
            waves.append(wave)
            wave = []
    assert len(waves) == 2 and not wave  # max_epochs 2: two epochs, one sync each
    for wave in waves:
        n = wave[-1][1]  # populations in the wave
        kinds = [e[0] for e in wave]
        assert kinds == ["wait"] * n + ["begin_training"] * n + ["finish_training"] * n + [
            "launch_evaluation"] * n + ["wait"] * n + ["to_host"]  # fmt: skip
        assert all(e[2] == "current" for e in wave[:n])  # each stream waits on the current
        assert all(e[1] == "current" for e in wave[-n - 1 : -1])  # and the current on each
        launches = [e for e in wave if e[0] in ("begin_training", "finish_training",
                                                "launch_evaluation")]  # fmt: skip
        assert all(stream == p for _, p, stream in launches)  # on its own stream
    assert waves[0][-1] == ("to_host", 4)


def test_the_memory_model_sizes_populations_that_run_together():
    config = Config(topology="T2")
    one = bytes_per_member(config, torch.float32, 1000)
    assert (
        population_bytes(config, 5, torch.float32, 1000)
        - population_bytes(config, 4, torch.float32, 1000)
        == one
    )
    # Each population evaluates on its own stream: its chunk's working set counts once each.
    workspace = population_bytes(config, 0, torch.float32, 1000)
    assert workspace == 3 * planning.EVAL_CHUNK_ELEMENTS * 4
    assert population_bytes(config, 0, torch.float64, 1000) == 2 * workspace
    cnn = Config(topology=(16,), conv=(4,))
    assert population_bytes(cnn, 0, torch.float32) == workspace + planning.shared_bytes(
        cnn, torch.float32
    )
    # The longest prefix of the waiting populations that fits beside those running.
    assert n_admitted(0, [3, 3, 3], budget=7) == 2
    assert n_admitted(3, [3, 3, 3], budget=7) == 1
    assert n_admitted(5, [3, 1], budget=7) == 0  # in order: the small one waits its turn
    assert n_admitted(0, [10, 1], budget=7) == 1  # alone, a population always runs
    assert n_admitted(4, [10], budget=7) == 0
    assert n_admitted(0, [], budget=7) == 0
    assert n_admitted(0, [2, 2, 2], budget=6) == 3  # exactly full fits


def test_the_default_runs_populations_one_after_another_on_the_cpu(splits, monkeypatch):
    """On the CPU the default path is the sequential one (`_train_population`), untouched."""
    started = []
    real = training._train_population

    def spy(configs, indices, *args, **kwargs):
        started.append(list(indices))
        yield from real(configs, indices, *args, **kwargs)

    monkeypatch.setattr(training, "_train_population", spy)
    quick = [c.replace(max_epochs=1) for c in CONFIGS[7:9]] + [CONFIGS[0].replace(max_epochs=1)]
    train(quick, *splits)
    assert started == [[0, 1], [2]]
    started.clear()
    train(quick, *splits, concurrent_populations=True)
    assert started == []


@pytest.mark.parametrize("device", ON_CUDA)
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
def test_populations_together_on_cuda_streams(splits, device, graphs):
    """On CUDA: each population on its own stream (graphs replayed there), one sync per epoch
    for all: the bits of one population after another."""
    expected, _, _ = _run(splits, together=False, device=device, cuda_graphs=graphs)
    got, log, _ = _run(splits, together=True, device=device, cuda_graphs=graphs)
    assert_same_results(got, expected)
    assert_results_handed_over_at_once(log)
    epochs = [(e, p) for kind, p, *e in log if kind == "epoch"]
    assert epochs == sorted(epochs)  # they ran in lockstep


def test_an_error_mid_wave_waits_for_every_stream_before_unwinding(splits, monkeypatch):
    """An error while a wave's work is queued (out of memory, an interrupt) unwinds through
    the wave: every running population's stream is synchronised first, so no kernel still
    queued there writes memory the unwinding frees and a later call reuses (stand-in streams;
    the error is raised in the second population's evaluation launch of epoch 2)."""
    from hpstudy.engine.population_run import PopulationRun

    log: list[tuple] = []
    current = _StandInStream("current", log)
    counter = iter(range(100))
    monkeypatch.setattr(training, "_new_stream", lambda device: _StandInStream(next(counter), log))
    monkeypatch.setattr(training, "_current_stream", lambda stream: current)
    monkeypatch.setattr(training, "on_stream", lambda stream: contextlib.nullcontext())

    class OutOfMemory(Exception):
        pass

    launch = PopulationRun.launch_evaluation

    def failing(self):
        if self.index == 1 and self.epoch == 2:
            raise OutOfMemory
        return launch(self)

    monkeypatch.setattr(PopulationRun, "launch_evaluation", failing)
    train_split, eval_split = splits
    with pytest.raises(OutOfMemory):
        train(CONFIGS, train_split, eval_split, concurrent_populations=True)
    waits = [name for kind, name, *_ in log if kind == "wait" and name != "current"]
    last_wave = [waits[-1]]  # each wave begins with every running stream's wait, in order
    for name in reversed(waits[:-1]):
        if name >= last_wave[0]:
            break
        last_wave.insert(0, name)
    synced = [name for kind, name, *_ in log if kind == "synchronize"]
    assert 1 in last_wave and len(last_wave) > 1
    assert synced == last_wave and log[-len(synced) :] == [("synchronize", n) for n in synced]
