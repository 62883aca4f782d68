"""The only door to Optuna's storage: trials, their identity, URLs, search and importances.

    >>> from hpstudy.storage import Store, default_url, trial_key
    >>> store = Store(default_url("runs/paper"), "paper"); store.create_or_load()
    >>> ids = store.enqueue([config], protocol="staged", split=split, space=study.space)
    >>> if store.claim(ids[0]): store.finish(ids[0], result, n_train=60_000, digests=digests)
    >>> store.records()[0].best_accuracy, store.test_accuracies()

One module per idea: `store` (the Store: enqueue, claim, finish, reading), `liveness` (its
heartbeats, stale trials and live workers), `backends` (opening Optuna's RDB or journal storage),
`records` (immutable TrialRecords read back), `keys` (a trial's identity and Optuna params),
`urls` (building, checking and redacting storage URLs; storage errors as one line), `search`
(TPE sampler and pruner, ask and report), `importance` (fANOVA). Nothing outside this package
imports Optuna's storage or touches its private API (tests/test_layout.py checks).
"""

from __future__ import annotations

from hpstudy.lazy import lazy_names

# How often a process marks its running trials alive, and after how long without a mark a
# running trial belongs to a dead process (both in seconds). Here, not in `store`, so that
# naming them (RunOptions' default) loads neither Optuna nor torch.
HEARTBEAT_S = 5
GRACE_S = 30

# Where each public name lives: loaded on first use (PEP 562), so importing one light module of
# this package (`urls`, `interrupts`) does not load Optuna and torch through the others.
_LAZY = {
    "Store": "hpstudy.storage.store",
    "TEST_META": "hpstudy.storage.store",
    "TrialRecord": "hpstudy.storage.records",
    "TrialStatus": "hpstudy.storage.records",
    "check_durable": "hpstudy.storage.urls",
    "default_url": "hpstudy.storage.urls",
    "distributions_of": "hpstudy.storage.keys",
    "explain_storage_error": "hpstudy.storage.urls",
    "identity_attrs": "hpstudy.storage.keys",
    "objective_value": "hpstudy.storage.records",
    "pack_correct": "hpstudy.storage.records",
    "params_of": "hpstudy.storage.keys",
    "record_from_trial": "hpstudy.storage.records",
    "redact_args": "hpstudy.storage.urls",
    "redact_url": "hpstudy.storage.urls",
    "sqlite_file": "hpstudy.storage.urls",
    "storage_errors": "hpstudy.storage.urls",
    "topology_param": "hpstudy.storage.keys",
    "trial_key": "hpstudy.storage.keys",
    "unpack_correct": "hpstudy.storage.records",
}

__all__ = ["GRACE_S", "HEARTBEAT_S", *_LAZY]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
