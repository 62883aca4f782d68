"""Train a share of a study that several processes share through one storage.

    hpstudy worker search --storage postgresql://user@host/db       # start N of these, anywhere
    hpstudy worker grid --storage journal:///shared/hpstudy/grid.log   # no server: a shared file

Every protocol can be shared: grid and replicate trials are claimed atomically; a search's
workers ask Optuna's sampler for proposals through the storage (the budget of distinct
configurations and the confirmation round hold across workers); a staged study's stage starts
once the previous one is complete in the store. A claim is at most one population on this
device and this worker's share among the live workers (printed). A worker that dies is detected
by its missing heartbeats and its trials are trained again by the others. Workers exit when the
study is complete; then `hpstudy run STUDY --storage URL` writes the tables, the final model and
the report without training anything. The first process records the study's settings (seeds,
epochs, limits, dtype, data); a worker with others is refused.
"""

from __future__ import annotations

import argparse

from hpstudy.commands.study_args import add_study_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="a study: name in studies/ or path to a .toml file")
    add_study_options(parser, worker=True)


def run(args: argparse.Namespace) -> int:
    from hpstudy.commands.progress import machine_hint, make_progress
    from hpstudy.commands.study_args import options_from
    from hpstudy.runner.execute import run_worker

    study, options = options_from(args)
    progress = make_progress(quiet=args.quiet, hint=machine_hint(options))
    n = run_worker(study, options, on_event=_WorkerPrinter(progress))
    print(f"worker done: trained {n} trials; the study is complete")
    return 0


class _WorkerPrinter:
    """The run's progress lines, and each claim's size (said once per change)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last: tuple | None = None

    def __call__(self, event) -> None:
        from hpstudy.protocols.events import Claiming

        if not isinstance(event, Claiming):
            self.inner(event)
            return
        shown = (event.n_trials, event.n_workers)
        if shown != self.last:
            self.last = shown
            fit = f", one population here holds {event.population}" if event.population else ""
            print(f"claiming {event.n_trials} trials at a time ({event.n_left} left, "
                  f"{event.n_workers} live workers{fit})", flush=True)  # fmt: skip
