"""Many trials in one transaction of Optuna's RDB storage (SQLite, PostgreSQL): the trials a
process enqueues, a population's results, a batch of claims, one heartbeat for every held trial.

    >>> if batched.supported(rdb):
    ...     ids = batched.enqueue(rdb, study_id, [template, ...])   # Optuna FrozenTrials
    ...     done = batched.finish(rdb, [(trial_id, payload, TrialState.COMPLETE, [0.91]), ...])
    ...     got = batched.claim(rdb, [[tid_a], [tid_b, tid_b_duplicate]], limit=2, worker="h:1")
    ...     batched.beat(rdb, held_ids)
    ...     trials = batched.read(rdb, ids)                             # as get_trial reads them

Optuna writes one trial per transaction (`create_new_trial`, `set_trial_user_attr`,
`set_trial_state_values`, `record_heartbeat`), and a commit waits for the disk: 375 trials took
seconds on SQLite. These write the same rows, value for value, in one session, through the
helpers Optuna's own methods use (its models, `_get_prepared_new_trial`,
`_set_trial_attr_without_commit`, `_set_trial_value_without_commit`). Those are private:
`supported` checks they are there with the arguments used here, and `Store` takes Optuna's
per-trial methods when they are not. tests/test_store_batched.py fails on an Optuna whose
private API moved, so an upgrade that breaks this is seen, not silently slower.

A claim here is one conditional UPDATE (WAITING -> RUNNING only where still WAITING): atomic on
SQLite too, where Optuna's read-then-write is not.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from optuna.trial import TrialState

CHUNK = 500  # trial ids per IN (...) clause: far below SQLite's bound on parameters

# Optuna's private names used here, with the arguments they are called with.
_NEEDED = {
    "_set_trial_attr_without_commit": ("session", "model_cls", "trial_id", "key", "value"),
    "_set_trial_value_without_commit": ("session", "trial", "objective", "value"),
    "_build_frozen_trial_from_trial_model": ("trial",),
}


def _rdb_module() -> Any:
    return importlib.import_module("optuna.storages._rdb.storage")


def _models() -> Any:
    return importlib.import_module("optuna.storages._rdb.models")


def supported(rdb: Any) -> bool:
    """Whether `rdb` is Optuna's RDB storage with the private helpers this module uses."""
    try:
        from optuna.storages import RDBStorage

        if not isinstance(rdb, RDBStorage):
            return False
        for name, params in _NEEDED.items():
            if tuple(inspect.signature(getattr(rdb, name)).parameters) != params:
                return False
        models = _models()
        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        needed = (models.StudyModel.find_or_raise_by_id, trial.find_or_raise_by_id, trial.state,
                  trial.datetime_start, trial.datetime_complete, models.TrialUserAttributeModel,
                  beat.heartbeat, beat.trial_id, _rdb_module()._create_scoped_session)  # fmt: skip
        return all(n is not None for n in needed)
    except (AttributeError, ImportError, TypeError, ValueError):
        return False


def _session(rdb: Any) -> Any:
    """Optuna's session scope (commit at the end, rollback on error), looked up when called: it
    is the one `backends.defer_interrupts_in_sessions` wraps."""
    return _rdb_module()._create_scoped_session(rdb.scoped_session)


def enqueue(rdb: Any, study_id: int, templates: Sequence[Any]) -> list[int]:
    """`create_new_trial` of each template (a WAITING FrozenTrial with params and user
    attributes), in one transaction; the new trial ids. The rows are Optuna's: a trial numbered
    in creation order (the study's row locked first, as Optuna does), its params in Optuna's
    internal representation with their distribution checked against the study's, its
    attributes as JSON. Written as a few multi-row inserts: Optuna's ORM path costs a dozen
    queries per trial."""
    import sqlalchemy
    from optuna.distributions import (
        check_distribution_compatibility,
        distribution_to_json,
        json_to_distribution,
    )

    models = _models()
    trials, params, attrs = (
        models.TrialModel,
        models.TrialParamModel,
        models.TrialUserAttributeModel,
    )
    if any(
        t.state != TrialState.WAITING
        or t.values is not None
        or t.system_attrs
        or t.intermediate_values
        for t in templates
    ):
        raise ValueError("batched.enqueue writes WAITING trials with params and user attributes")
    with _session(rdb) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        known: dict[str, Any] = {}  # param name -> the study's distribution of it
        for name in {n for t in templates for n in t.params}:
            row = (
                session.query(params.distribution_json)
                .join(trials)
                .filter(trials.study_id == study_id, params.param_name == name)
                .first()
            )
            if row is not None:
                known[name] = json_to_distribution(row[0])
        ids = []
        for t in templates:
            insert = sqlalchemy.insert(trials).values(
                study_id=study_id,
                number=None,
                state=TrialState.WAITING,
                datetime_start=t.datetime_start,
                datetime_complete=t.datetime_complete,
            )
            ids.append(session.execute(insert).inserted_primary_key[0])
        if not ids:
            return []
        # Numbered as Optuna numbers: trials of the study created before this one. Nobody else
        # creates one in between: the study's row (PostgreSQL) or the file (SQLite) is locked.
        before = session.scalar(
            sqlalchemy.select(sqlalchemy.func.count(trials.trial_id)).where(
                trials.study_id == study_id, trials.trial_id < ids[0]
            )
        )
        number = (
            sqlalchemy.update(trials.__table__)
            .where(trials.trial_id == sqlalchemy.bindparam("id"))
            .values(number=sqlalchemy.bindparam("n"))
        )
        session.connection().execute(
            number, [{"id": t, "n": before + i} for i, t in enumerate(ids)]
        )
        rows_p, rows_a = [], []
        for trial_id, t in zip(ids, templates, strict=True):
            for name, value in t.params.items():
                distribution = t.distributions[name]
                check_distribution_compatibility(known.setdefault(name, distribution), distribution)
                rows_p.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": distribution.to_internal_repr(value),
                        "distribution_json": distribution_to_json(distribution),
                    }
                )
            rows_a += [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in t.user_attrs.items()
            ]
        if rows_p:
            session.execute(sqlalchemy.insert(params), rows_p)
        if rows_a:
            session.execute(sqlalchemy.insert(attrs), rows_a)
    return ids


def finish(rdb: Any, items: Sequence[tuple[int, dict, TrialState, Sequence[float]]]) -> list[bool]:
    """Write each (trial id, result payload, final state, values) as `Store.finish`'s two
    per-trial writes do, all in one transaction; False for a trial already ended (by another
    process that took this one for dead), which is left as it is."""
    models, done = _models(), []
    trials = models.TrialModel
    with _session(rdb) as session:
        for trial_id, payload, state, values in items:
            # Taken first, and only while the trial is not ended (`_move`): otherwise another
            # process that ended it meanwhile would see its FAIL overwritten (the key finished
            # here and re-trained there).
            taken = _move(session, trial_id, (TrialState.RUNNING, TrialState.WAITING),
                          datetime_complete=datetime.now())  # fmt: skip
            if not taken:
                trials.find_or_raise_by_id(trial_id, session)  # a missing trial still raises
                done.append(False)
                continue
            trial = trials.find_or_raise_by_id(trial_id, session)
            rdb._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, "result", payload
            )
            for objective, value in enumerate(values):
                rdb._set_trial_value_without_commit(session, trial, objective, value)
            trial.state = state  # the change that makes it count, last, as Optuna writes it
            done.append(True)
    return done


def end(rdb: Any, trial_ids: Sequence[int], state: TrialState) -> list[bool]:
    """RUNNING -> `state` (FAIL: interrupted) for each trial still RUNNING, in one transaction,
    each one conditional UPDATE; per trial whether it was ended here. Optuna's
    `set_trial_state_values` reads the state and then writes, which on SQLite is not atomic
    (pysqlite takes the write lock at the first write): a finish committed in between would be
    overwritten, the result dropped although its process counts it as trained."""
    if not trial_ids:
        return []
    with _session(rdb) as session:
        return [_move(session, trial_id, (TrialState.RUNNING,), state=state,
                      datetime_complete=datetime.now()) for trial_id in trial_ids]  # fmt: skip


def claim(rdb: Any, groups: Iterable[Sequence[int]], *, limit: int, worker: str) -> list[int]:
    """WAITING -> RUNNING for the first trial of each group that is still WAITING, up to `limit`
    groups, with its `worker` attribute and a first heartbeat, in one transaction; the trial ids
    claimed, in order."""
    models, claimed = _models(), []
    with _session(rdb) as session:
        for group in groups:
            if len(claimed) >= limit:
                break
            for trial_id in group:
                if _move(session, trial_id, (TrialState.WAITING,), state=TrialState.RUNNING,
                         datetime_start=datetime.now()):  # fmt: skip
                    rdb._set_trial_attr_without_commit(
                        session, models.TrialUserAttributeModel, trial_id, "worker", worker
                    )
                    claimed.append(trial_id)
                    break
        if claimed:
            _heartbeats(session, claimed)
    return claimed


def beat(rdb: Any, trial_ids: Sequence[int]) -> None:
    """Optuna's heartbeat (`record_heartbeat`) of every trial in `trial_ids`, in one transaction."""
    if trial_ids:
        with _session(rdb) as session:
            _heartbeats(session, trial_ids)


def read(rdb: Any, trial_ids: Sequence[int]) -> list[Any]:
    """Optuna's `get_trial` of each trial in `trial_ids` (FrozenTrials, in that order), in one
    session: its relations loaded a few queries at a time, as Optuna's `get_all_trials` does."""
    from sqlalchemy.orm import selectinload

    trials, found = _models().TrialModel, {}
    relations = (trials.params, trials.values, trials.user_attributes, trials.system_attributes,
                 trials.intermediate_values)  # fmt: skip
    with _session(rdb) as session:
        for start in range(0, len(trial_ids), CHUNK):
            chunk = list(trial_ids[start : start + CHUNK])
            query = session.query(trials).options(*(selectinload(r) for r in relations))
            for model in query.filter(trials.trial_id.in_(chunk)):
                found[model.trial_id] = rdb._build_frozen_trial_from_trial_model(model)
    return [found[trial_id] for trial_id in trial_ids]


def _move(session: Any, trial_id: int, states: Sequence[TrialState], **values: Any) -> bool:
    """Set `values` on the trial only while its state is one of `states`, in one conditional
    UPDATE; whether it was. The claims, finishes and ends above all go through here: reading
    the state and then writing is not atomic on SQLite (pysqlite takes the write lock at the
    first write), so two processes could both act on one trial."""
    import sqlalchemy

    trials = _models().TrialModel
    update = (
        sqlalchemy.update(trials)
        .where(trials.trial_id == trial_id, trials.state.in_(tuple(states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return session.execute(update).rowcount == 1


def _heartbeats(session: Any, trial_ids: Sequence[int]) -> None:
    """Date these trials' heartbeat rows with the database's clock (as Optuna does: its stale
    check compares them with that clock), adding the rows that do not exist yet."""
    import sqlalchemy

    model = _models().TrialHeartbeatModel
    now = session.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
    for start in range(0, len(trial_ids), CHUNK):
        chunk = list(trial_ids[start : start + CHUNK])
        have = set(session.scalars(sqlalchemy.select(model.trial_id)
                                   .where(model.trial_id.in_(chunk))))  # fmt: skip
        if have:
            session.execute(
                sqlalchemy.update(model)
                .where(model.trial_id.in_(sorted(have)))
                .values(heartbeat=now)
                .execution_options(synchronize_session=False)
            )
        session.add_all(model(trial_id=t, heartbeat=now) for t in chunk if t not in have)
