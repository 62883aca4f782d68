"""The engine's contract: each member trains exactly as torch.nn + torch.optim would alone."""

from __future__ import annotations

import itertools

import pytest
import torch

from cuda_cases import DEVICES, use_stand_in_graphs
from hpstudy import Config
from hpstudy.config.choices import ACTIVATIONS, OPTIMIZERS, TOPOLOGIES
from hpstudy.config.config import is_chaotic
from hpstudy.engine import Outcome, batch_order, evaluate, make_split, train
from hpstudy.engine.model import build_mlp
from hpstudy.engine.population import initial_parameters
from hpstudy.engine.reference import make_torch_optimizer, train_reference

N_TRAIN, N_EVAL = 2000, 1000
LR = {"sgd": 0.05, "adam": 0.002, "rmsprop": 0.001}


def _splits(fashion, dtype, device="cpu"):
    kwargs = dict(mean=0.5, std=0.5, dtype=dtype, device=device)
    train_split = make_split(
        fashion.train_images[:N_TRAIN], fashion.train_labels[:N_TRAIN], **kwargs
    )
    eval_split = make_split(fashion.test_images[:N_EVAL], fashion.test_labels[:N_EVAL], **kwargs)
    return train_split, eval_split


def max_weight_error(reference_model, state_dict) -> float:
    expected = reference_model.state_dict()
    assert list(expected) == list(state_dict)
    return max((expected[k].cpu() - state_dict[k]).abs().max().item() for k in expected)


def assert_one_step_matches_torch(configs, train_split, dtype, *, step: str = "grouped") -> None:
    """From the same weights and batch, one step of `configs` as one population (optimizer step
    `step`) updates each member as nn + torch.optim do alone, to rounding (also used by
    test_fused_step). Adam and RMSprop divide by sqrt(v) + eps, so an element whose gradient
    cancels to near zero moves by up to a fraction of lr on a rounding change."""
    from hpstudy.engine.optimizers import StackedOptimizer
    from hpstudy.engine.population import Population
    from hpstudy.engine.steps import train_step

    pop = Population.from_configs(configs, device="cpu", dtype=dtype)
    idx = batch_order(7, 1, len(train_split))[:64]
    optimizer = StackedOptimizer(pop, step=step)
    train_step(pop, optimizer, train_split, idx, torch.zeros(len(configs), dtype=dtype))
    for m, config in enumerate(configs):
        torch.manual_seed(config.seed)
        net = build_mlp(config).to(dtype)
        torch_optimizer = make_torch_optimizer(config, net.parameters())
        torch.nn.functional.cross_entropy(net(train_split.x[idx]), train_split.y[idx]).backward()
        torch_optimizer.step()
        if dtype == torch.float64:
            bound = 1e-12
        else:
            bound = 1e-6 if config.optimizer == "sgd" else config.lr / 10
        assert max_weight_error(net, pop.member_state_dict(m)) < bound, config


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_initial_weights_are_those_of_manual_seed_and_nn_sequential(topology):
    config = Config(topology=topology, seed=123)
    torch.manual_seed(123)
    expected = list(build_mlp(config).state_dict().values())
    state_before = torch.random.get_rng_state()
    got = initial_parameters(config)
    assert torch.equal(torch.random.get_rng_state(), state_before), "global RNG must be untouched"
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_batch_order_is_a_function_of_seed_and_epoch():
    first = batch_order(seed=42, epoch=1, n=1000)
    assert torch.equal(torch.sort(first).values, torch.arange(1000))
    assert torch.equal(first, batch_order(seed=42, epoch=1, n=1000))
    assert not torch.equal(first, batch_order(seed=42, epoch=2, n=1000))
    assert not torch.equal(first, batch_order(seed=43, epoch=1, n=1000))


@pytest.fixture(scope="module")
def float64_mixed(fashion):
    """All 15 optimizer x activation cases, T4, trained as ONE mixed population in float64."""
    train_split, eval_split = _splits(fashion, torch.float64)
    configs = [
        Config(topology="T4", optimizer=o, activation=a, lr=LR[o], seed=7, max_epochs=1)
        for o, a in itertools.product(OPTIMIZERS, ACTIVATIONS)
    ]
    return (
        configs,
        train(configs, train_split, eval_split, dtype=torch.float64),
        _splits(fashion, torch.float64),
    )


@pytest.mark.parametrize("optimizer,activation", list(itertools.product(OPTIMIZERS, ACTIVATIONS)))
def test_member_matches_plain_pytorch_in_float64(float64_mixed, optimizer, activation):
    configs, results, (train_split, eval_split) = float64_mixed
    (i,) = [
        k for k, c in enumerate(configs) if (c.optimizer, c.activation) == (optimizer, activation)
    ]
    result = results[i]
    assert result.config == configs[i]
    ref = train_reference(configs[i], train_split, eval_split)
    assert result.epochs_run == 1 and result.best_epoch == 1
    # After one epoch (32 steps) the best-epoch weights are the final weights.
    assert max_weight_error(ref.model, result.state_dict) < 1e-9
    assert result.train_loss[0] == pytest.approx(ref.train_loss[0], rel=1e-10)
    assert result.eval_loss[0] == pytest.approx(ref.eval_loss[0], rel=1e-10)
    assert result.eval_accuracy == ref.eval_accuracy


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_contract_one_step_matches_plain_pytorch_to_rounding(fashion, dtype):
    """Per step: from the same weights and batch, all 15 cases in one population update as
    nn + torch.optim do, to rounding. Adam and RMSprop divide by sqrt(v) + eps, so an element
    whose gradient cancels to near zero moves by up to a fraction of lr on a rounding change."""
    from hpstudy.engine.population import member_order_key

    train_split, _ = _splits(fashion, dtype)
    configs = sorted(
        [
            Config(topology="T4", optimizer=o, activation=a, lr=LR[o], seed=7)
            for o, a in itertools.product(OPTIMIZERS, ACTIVATIONS)
        ],
        key=member_order_key,
    )
    assert_one_step_matches_torch(configs, train_split, dtype)


def test_contract_names_the_chaotic_configurations(fashion):
    """A rounding-level change (inputs x (1 + 1e-15), float64) stays at the rounding level for
    a stable configuration and grows by orders of magnitude for one named chaotic."""
    train_split, eval_split = _splits(fashion, torch.float64)
    nudged = type(train_split)(train_split.x * (1 + 1e-15), train_split.y)
    stable = Config(topology="T4", optimizer="adam", lr=0.002, seed=7, max_epochs=3, patience=9)
    chaotic = stable.replace(lr=0.05)
    assert not is_chaotic(stable) and is_chaotic(chaotic)
    growth = {}
    for config in (stable, chaotic):
        a = train_reference(config, train_split, eval_split).model
        b = train_reference(config, nudged, eval_split).model
        growth[config.lr] = max_weight_error(a, b.state_dict())
    assert growth[stable.lr] < 1e-12 < 1e-10 < growth[chaotic.lr]


@pytest.mark.parametrize("device", DEVICES)
def test_contract_stable_float32_curves_match_plain_pytorch(fashion, device):
    """Trajectories of stable configurations (not is_chaotic) agree while the dynamics are
    stable; float32 rounding still shifts an accuracy by a few tenths of a point (plain PyTorch
    with its batch rows reversed moves as much), hence the tolerances."""
    train_split, eval_split = _splits(fashion, torch.float32, device)
    configs = [
        Config(topology="T2", optimizer=o, activation=a, lr=LR[o], seed=s, max_epochs=6, patience=2)
        for o, a, s in [("sgd", "relu", 1), ("adam", "tanh", 2), ("rmsprop", "elu", 3)]
    ]
    results = train(configs, train_split, eval_split, device=device)
    for config, result in zip(configs, results, strict=True):
        assert not is_chaotic(config)
        ref = train_reference(config, train_split, eval_split)
        # Stated tolerance: losses within 1e-3 relative, accuracy within 0.5 points per epoch.
        assert result.epochs_run == len(ref.train_loss)
        assert result.best_epoch == ref.best_epoch
        assert result.train_loss == pytest.approx(ref.train_loss, rel=1e-3)
        assert result.eval_loss == pytest.approx(ref.eval_loss, rel=1e-3)
        assert result.eval_accuracy == pytest.approx(ref.eval_accuracy, abs=0.005)


def test_early_stopping_ends_at_the_same_epoch_as_the_reference(fashion):
    train_split, eval_split = _splits(fashion, torch.float64)
    # A large SGD step makes accuracy wobble, so patience 1 stops it early.
    config = Config(topology="T1", optimizer="sgd", lr=0.3, seed=3, max_epochs=12, patience=1)
    (result,) = train([config], train_split, eval_split, dtype=torch.float64)
    ref = train_reference(config, train_split, eval_split)
    assert result.epochs_run == len(ref.eval_accuracy) < config.max_epochs
    assert result.best_epoch == ref.best_epoch
    assert result.eval_accuracy == ref.eval_accuracy
    assert result.outcome is Outcome.COMPLETE


def test_mixing_members_does_not_change_a_members_result(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    target = Config(
        topology="T3", optimizer="adam", activation="relu", lr=0.001, seed=5, max_epochs=2
    )
    others = [
        target.replace(optimizer="sgd", lr=0.1, seed=9),
        target.replace(activation="sigmoid", optimizer="rmsprop"),
        target.replace(activation="elu", lr=0.01, seed=11),
    ]
    (alone,) = train([target], train_split, eval_split)
    mixed = train([*others, target], train_split, eval_split)[-1]
    assert mixed.config == target
    # Neighbour-free arithmetic: the same bits (tests/test_invariance.py covers it in depth).
    assert mixed.eval_accuracy == alone.eval_accuracy
    assert mixed.train_loss == alone.train_loss
    for key, tensor in alone.state_dict.items():
        assert torch.equal(mixed.state_dict[key], tensor), key


def test_divergence_is_an_outcome_and_spares_the_others(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    stable = Config(topology="T4", optimizer="sgd", lr=0.01, seed=1, max_epochs=2)
    wild = stable.replace(lr=10.0)
    (alone,) = train([stable], train_split, eval_split)
    results = train([wild, stable], train_split, eval_split)
    assert results[0].outcome is Outcome.DIVERGED
    assert results[0].epochs_run == 1
    # A diverged epoch is never a best epoch, and a diverged trial returns no weights.
    assert results[0].best_epoch == 0 and results[0].state_dict is None
    assert results[1].outcome is Outcome.COMPLETE
    assert results[1].eval_accuracy == alone.eval_accuracy
    assert results[1].train_loss == alone.train_loss


def test_pruned_members_stop_and_others_continue(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    configs = [Config(topology="T1", optimizer="adam", lr=lr, max_epochs=3) for lr in (1e-3, 1e-2)]
    events = []

    def prune_first(event):
        events.append(event)
        return [0] if event.epoch == 1 else []

    results = train(configs, train_split, eval_split, on_epoch=prune_first)
    assert results[0].outcome is Outcome.PRUNED and results[0].epochs_run == 1
    assert results[1].outcome is Outcome.COMPLETE and results[1].epochs_run == 3
    assert [e.n_members for e in events] == [2, 1, 1]
    assert sorted(events[0].config_indices) == [0, 1]


def test_results_keep_input_order_and_best_weights_reproduce_best_accuracy(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    configs = [
        Config(topology="T2", optimizer="adam", lr=0.001, max_epochs=2),
        Config(topology="T1", optimizer="sgd", lr=0.05, max_epochs=3, batch_size=32),
        Config(topology="T2", optimizer="sgd", activation="tanh", lr=0.05, max_epochs=2),
    ]
    results = train(configs, train_split, eval_split)
    assert [r.config for r in results] == configs
    for result in results:
        again = evaluate(result.config, result.state_dict, eval_split)
        assert again.accuracy == pytest.approx(result.best_accuracy, abs=1e-9)
        assert result.wall_s > 0 and result.device == "cpu" and result.dtype == "float32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float64_members_match_plain_pytorch_and_steps_never_sync(fashion):
    """On CUDA: the float64 contract holds (tolerance 1e-9), and a training epoch runs without
    one host synchronisation (CUDA's sync debug mode turns any sync into an error)."""
    train_split, eval_split = _splits(fashion, torch.float64, "cuda")
    configs = [
        Config(topology="T4", optimizer=o, activation=a, lr=LR[o], seed=7, max_epochs=1)
        for o, a in [("sgd", "relu"), ("adam", "elu"), ("rmsprop", "leaky_relu")]
    ]
    results = train(configs, train_split, eval_split, device="cuda", dtype=torch.float64)
    for config, result in zip(configs, results, strict=True):
        ref = train_reference(config, train_split, eval_split)
        assert max_weight_error(ref.model, result.state_dict) < 1e-9

    from hpstudy.engine.optimizers import StackedOptimizer
    from hpstudy.engine.population import Population, member_order_key
    from hpstudy.engine.steps import StepRunner

    members = sorted(configs, key=member_order_key)
    pop = Population.from_configs(members, device=train_split.x.device, dtype=torch.float64)
    optimizer = StackedOptimizer(pop)
    torch.cuda.set_sync_debug_mode("error")
    try:
        StepRunner(pop, optimizer, train_split).epoch(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_tf32_is_opt_in_and_refused_without_cuda(fashion):
    from hpstudy.engine.flops import training_numerics

    train_split, eval_split = _splits(fashion, torch.float32)
    with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
        train([Config(topology="T1", max_epochs=1)], train_split, eval_split, tf32=True)

    # The switches are scoped: set inside the block, restored after it, even when the block
    # raises. TF32 covers cuDNN's convolutions too, whose TF32 is on by default (a float32 run
    # turns it off), and training asks cuDNN for deterministic algorithms.
    def switches():
        cudnn = torch.backends.cudnn
        return torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic

    before = switches()
    with training_numerics(False):
        assert switches() == (False, False, True)
    with training_numerics(True):
        assert switches() == (True, True, True)
    assert switches() == before
    with pytest.raises(RuntimeError), training_numerics(False):
        raise RuntimeError("a training step failed")
    assert switches() == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf32_results_are_recorded_as_such_and_close_to_float32(fashion):
    train_split, eval_split = _splits(fashion, torch.float32, "cuda")
    config = Config(topology="T4", optimizer="adam", lr=0.001, max_epochs=2)
    (plain,) = train([config], train_split, eval_split, device="cuda")
    (fast,) = train([config], train_split, eval_split, device="cuda", tf32=True)
    assert plain.dtype == "float32" and fast.dtype == "float32+tf32"
    assert fast.eval_accuracy == pytest.approx(plain.eval_accuracy, abs=0.02)
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_progress_weighs_populations_by_their_work(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    small = Config(topology="T1", max_epochs=2, patience=5)  # 101,770 parameters
    large = Config(topology="T3", max_epochs=2, patience=5)  # 535,818 parameters
    events = []
    train([small, large], train_split, eval_split, on_epoch=events.append)
    progress = [e.progress for e in events]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    # After T1's two epochs only T1's share of the work is done, not half of the populations.
    assert progress[1] == pytest.approx(101_770 / (101_770 + 535_818))


def test_expected_progress_learns_from_members_that_stopped(fashion):
    """Two T1 populations (batch sizes differ): the first stops early (patience 1 at lr 10
    diverges at once), so the estimate for the second shrinks below the upper bound."""
    from hpstudy.engine.training import _WorkTracker

    tracker = _WorkTracker([100.0, 100.0])
    tracker.epoch_done(10, 1)
    # nobody stopped yet: the upper bound, 10 of 10 x 10 + 100
    assert tracker.expected_progress(0, 1, 10, 10, 1) == pytest.approx(10 / 200)
    tracker.member_stopped(2, 10)  # a member that ran 2 of 10 epochs: expect 20% of the rest
    expected = tracker.expected_progress(0, 1, 10, 9, 1)
    assert expected == pytest.approx(10 / (10 + 9 * (2 - 1) + 0.2 * 100))
    train_split, eval_split = _splits(fashion, torch.float32)
    quick = Config(topology="T1", optimizer="sgd", lr=10.0, max_epochs=6, patience=1)
    slow = Config(topology="T1", batch_size=128, max_epochs=6, patience=6)
    events = []
    train([quick, slow], train_split, eval_split, on_epoch=events.append)
    later = [e for e in events if e.population == 1]
    assert later[0].expected_progress > later[0].progress  # it learnt from the quick one
    assert events[-1].expected_progress == pytest.approx(1.0)
    from hpstudy.commands.progress import eta_text

    assert eta_text(later[0]).startswith("ETA ~") and "(at most " in eta_text(later[0])
    assert eta_text(events[0]).startswith("ETA <= ")  # nothing stopped yet: only the bound


def _population(fashion, seeds, dtype=torch.float64):
    from hpstudy.engine.optimizers import StackedOptimizer
    from hpstudy.engine.population import Population, member_order_key

    configs = [
        Config(topology="T2", optimizer=o, activation=a, lr=LR[o], seed=s)
        for (o, a), s in zip(
            [("sgd", "relu"), ("adam", "tanh"), ("rmsprop", "elu"), ("adam", "relu")],
            seeds,
            strict=True,
        )
    ]
    pop = Population.from_configs(sorted(configs, key=member_order_key), device="cpu", dtype=dtype)
    return pop, StackedOptimizer(pop)


@pytest.mark.parametrize("seeds", [(1, 1, 1, 1), (1, 2, 3, 4)], ids=["shared", "own-batches"])
def test_graphed_steps_read_their_batches_from_static_buffers(fashion, monkeypatch, seeds):
    """The graph logic on CPU, with a stand-in graph: warm-up, capture, static batch indices,
    an eager last (short) batch, and a new capture after members are selected away give the
    very same numbers as plain eager steps."""
    from hpstudy.engine import steps

    use_stand_in_graphs(monkeypatch)
    train_split, _ = _splits(fashion, torch.float64)  # 2,000 images: 31 batches of 64 and 16
    runs = {}
    for graphed in (False, True):
        pop, optimizer = _population(fashion, seeds)
        runner = steps.StepRunner(pop, optimizer, train_split, cuda_graph=graphed)
        losses = [runner.epoch(1)]
        keep = torch.tensor([0, 2, 3])
        pop.select(keep)
        optimizer.select(keep)
        runner.reset()
        losses.append(runner.epoch(2))
        losses.append(runner.epoch(3, max_steps=5))
        runs[graphed] = (losses, pop.params, runner.n_captures)
    (eager_losses, eager_params, _), (graph_losses, graph_params, captures) = runs.values()
    assert captures == 2  # once per member set; epochs reuse the graph
    for eager, graphed in zip(eager_losses, graph_losses, strict=True):
        assert torch.equal(eager, graphed)
    for eager, graphed in zip(eager_params, graph_params, strict=True):
        assert torch.equal(eager, graphed)


def test_cuda_graphs_are_refused_without_cuda(fashion):
    train_split, eval_split = _splits(fashion, torch.float32)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        train([Config(topology="T1", max_epochs=1)], train_split, eval_split, cuda_graphs=True)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_graph_training_matches_eager_training(fashion, monkeypatch, device, dtype):
    """Replayed steps launch the kernels the eager steps launch, on the same data: expected bit
    for bit, and asserted to 1e-6 (weights) with identical epochs and outcomes. A member
    diverges and one is pruned, so the graph is captured again for each new member set. On the
    CPU a stand-in graph (replay = run the step again) checks the trainer's side of it."""
    if device == "cpu":
        use_stand_in_graphs(monkeypatch)
    train_split, eval_split = _splits(fashion, dtype, device)
    configs = [
        Config(topology="T4", optimizer=o, activation=a, lr=lr, seed=s, max_epochs=4, patience=2)
        for o, a, lr, s in [
            ("sgd", "relu", 0.05, 1), ("adam", "elu", 0.002, 2), ("rmsprop", "tanh", 0.001, 3),
            ("sgd", "relu", 10.0, 4), ("adam", "leaky_relu", 0.001, 5),
        ]
    ]  # fmt: skip

    def prune_last(event):
        return [4] if event.epoch == 2 else []

    eager = train(configs, train_split, eval_split, device=device, dtype=dtype,
                  on_epoch=prune_last)  # fmt: skip
    graphed = train(configs, train_split, eval_split, device=device, dtype=dtype,
                    on_epoch=prune_last, cuda_graphs=True)  # fmt: skip
    outcomes = [r.outcome for r in eager]
    assert outcomes[3] is Outcome.DIVERGED and outcomes[4] is Outcome.PRUNED
    assert eager[3].state_dict is None and graphed[3].state_dict is None
    assert [r.outcome for r in graphed] == outcomes
    for a, b in zip(eager, graphed, strict=True):
        assert b.epochs_run == a.epochs_run and b.best_epoch == a.best_epoch
        assert b.eval_accuracy == pytest.approx(a.eval_accuracy, abs=1e-6)
        if a.state_dict is not None:
            for key, tensor in a.state_dict.items():
                assert torch.allclose(b.state_dict[key], tensor, rtol=0, atol=1e-6,
                                      equal_nan=True), key  # fmt: skip
