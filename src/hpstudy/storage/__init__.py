"""The only door to Optuna's storage: trials, their identity, URLs, search and importances.

    >>> from hpstudy.storage import Store, default_url, trial_key
    >>> store = Store(default_url("runs/paper"), "paper"); store.create_or_load()
    >>> ids = store.enqueue([config], protocol="staged", split=split, space=study.space)
    >>> if store.claim(ids[0]): store.finish(ids[0], result, n_train=60_000, digests=digests)
    >>> store.records()[0].best_accuracy, store.test_accuracies()

One module per idea: `store` (the Store: enqueue, claim, finish, heartbeats, reading), `records`
(immutable TrialRecords read back), `keys` (a trial's identity and Optuna params), `urls`
(building, checking and redacting storage URLs; storage errors as one line), `search` (TPE
sampler and pruner, ask and report), `importance` (fANOVA). Nothing outside this package imports
Optuna's storage or touches its private API (tests/test_layout.py checks).
"""

from hpstudy.storage.keys import (
    distributions_of,
    identity_attrs,
    params_of,
    topology_param,
    trial_key,
)
from hpstudy.storage.records import (
    TrialRecord,
    TrialStatus,
    objective_value,
    pack_correct,
    record_from_trial,
    unpack_correct,
)
from hpstudy.storage.store import GRACE_S, HEARTBEAT_S, TEST_META, Store
from hpstudy.storage.urls import (
    check_durable,
    default_url,
    explain_storage_error,
    redact_args,
    redact_url,
    sqlite_file,
    storage_errors,
)

__all__ = [
    "GRACE_S", "HEARTBEAT_S", "TEST_META", "Store", "TrialRecord", "TrialStatus", "check_durable",
    "default_url", "distributions_of", "explain_storage_error", "identity_attrs",
    "objective_value", "pack_correct", "params_of", "record_from_trial", "redact_args",
    "redact_url", "sqlite_file",
    "storage_errors", "topology_param", "trial_key", "unpack_correct",
]  # fmt: skip
