"""What a run leaves besides its trials: replication.json, the final model, the costs, and the
tables recomputed from the store.

    >>> write_replication(run_dir, replication)                  # replication.json
    >>> save_final_model(study, trainer, tables, run_dir)        # final_best_model.pth
    >>> cost_summary(records, "cpu", matmul_flops)  # {"model_epochs", "wall_s", "floor_s"}
    >>> recompute_tables(run_dir)                   # `hpstudy.tabulate` on the stored records
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hpstudy.atomic import atomic_file
from hpstudy.config.study import Study
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord
from hpstudy.storage.rundir import (
    MODEL_FILE,
    REPLICATION_FILE,
    load_study_from_info,
    open_run,
    read_run_info,
)
from hpstudy.tabulate import tabulate

if TYPE_CHECKING:  # the trainer loads torch; `hpstudy status` reads a run without it
    from hpstudy.protocols import Trainer


def write_replication(run_dir: Path, replication) -> Path:
    """replication.json: every published cell and claim with its verdict (for scripts)."""
    path = Path(run_dir) / REPLICATION_FILE
    with atomic_file(path, "w") as f:
        json.dump(replication.to_dict(), f, indent=1)
        f.write("\n")
    return path


def save_final_model(
    study: Study,
    trainer: Trainer,
    tables: list[StageTable],
    run_dir: Path,
    *,
    record: TrialRecord | None = None,
) -> Path | None:
    """final_best_model.pth: `record` where the protocol chose it (a replication: the
    recommended configuration at the first seed), else the last table's winner at its first
    usable seed in the study's order: fixed in advance, never the best seed (on the paper's
    protocol the best seed would be the test set's maximum over seeds)."""
    from hpstudy import engine
    from hpstudy.predict.modelfile import save_model

    if record is not None:
        best = record
    else:
        winner = tables[-1].winner if tables else None
        if winner is None:
            return None
        finished = trainer.store.finished()
        records = [r for r in finished.values()
                   if r.number in winner.trial_numbers and r.is_usable]  # fmt: skip
        if not records:
            return None
        order = {seed: i for i, seed in enumerate(study.seeds)}
        best = min(records, key=lambda r: (order.get(r.seed, len(order)), r.seed))
    state_dict, retrained = trainer.weights_of(best)
    tests = trainer.store.test_accuracies()
    if study.selection.is_leaky:
        test_accuracy = best.best_accuracy
    elif best.key in tests:
        test_accuracy = tests[best.key]
    else:
        evaluation = engine.evaluate(best.config, state_dict, trainer.data.test,
                                     device=trainer.data.device)  # fmt: skip
        test_accuracy = evaluation.accuracy
    metrics = {
        "test_accuracy": float(test_accuracy),
        f"{study.selection.value}_accuracy": float(best.best_accuracy),
        "best_epoch": float(best.best_epoch),
    }
    extra = {
        "study": study.name,
        "protocol": study.protocol.value,
        "selection": study.selection.value,
        "trial_number": best.number,
        "split": trainer.data.split,
        "retrained": retrained,
        "device": trainer.data.device,
        "input_shape": list(trainer.data.input_shape),
        "pixel_max": trainer.data.pixel_max,
    }
    return save_model(run_dir / MODEL_FILE, state_dict=state_dict, config=best.config,
                      normalization=trainer.data.normalization, metrics=metrics,
                      data_digests=trainer.data.digests, class_names=trainer.data.class_names,
                      extra=extra)  # fmt: skip


def cost_summary(
    records: list[TrialRecord], device: str, matmul_flops: float | None = None
) -> dict[str, float]:
    """model_epochs, wall_s and floor_s over the finished trials; the floor divides their FLOPs
    by `matmul_flops` (the run's recorded throughput), else by a fresh measurement."""
    from hpstudy.config.cost import model_epoch_flops

    done = [r for r in records if r.status.is_finished]
    flops = sum(model_epoch_flops(r.config, r.n_train) * r.epochs for r in done)
    if not matmul_flops:  # not recorded: measured now (this loads torch, which status avoids)
        from hpstudy.engine.flops import measure_matmul_flops

        matmul_flops = measure_matmul_flops(device)
    return {
        "model_epochs": sum(r.epochs for r in done),
        "wall_s": sum(r.wall_s for r in done),
        "floor_s": flops / matmul_flops if flops else 0.0,
    }


def recompute_tables(run_dir: str | Path, storage: str | None = None) -> list[StageTable]:
    """A run's tables recomputed from its store alone (what the report checks against);
    `storage` overrides the URL in run.json (`open_run`)."""
    info = read_run_info(run_dir)
    study = load_study_from_info(info, run_dir)
    store = open_run(run_dir, storage)
    tests = store.test_accuracies()
    return tabulate(study, store.records(), tests, info["split"])
