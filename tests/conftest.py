"""Shared fixtures: the real FashionMNIST files, loaded once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hpstudy.data import idx as data
from hpstudy.data import sources


@pytest.fixture(scope="session")
def fashion() -> data.FashionMNIST:
    """The canonical dataset (installed by `make test` via dataset-fashion-mnist)."""
    return sources.load(download=False)


@pytest.fixture
def copy_dir(tmp_path) -> Path:
    """A folder with the four real .gz files, ready to be damaged one at a time."""
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in data.FILES.values():
        shutil.copyfile(data.DEBIAN_DIR / f"{name}.gz", folder / f"{name}.gz")
    return folder


# The slow tier: whole studies (report runs, the replication), the browser, PostgreSQL, process
# kills and wheel builds. `make test-fast` (pytest -m "not slow") runs the rest in under a
# minute; `make test` and CI run everything.
SLOW_FIXTURES = {"report_runs", "replicated", "digits_run"}
SLOW_MARKERS = ("browser", "postgres")
# Tests that run a study through the CLI, kill or signal a process, serve downloads with
# timeouts, or time the bench: each takes seconds (measured with --durations on this machine).
SLOW_TESTS = {
    "test_run_cli.py": {"*"},  # its module fixture runs a study; kill -9 and rerun
    "test_hostile.py": {"test_a_signal_mid_run_leaves_no_running_trial",
                        "test_stage_names_and_titles_in_tables_and_report_stay_inside",
                        "test_a_full_disk_is_one_line_and_a_rerun_resumes",
                        "test_a_folder_holding_another_study_is_refused_unless_fresh",
                        "test_a_run_json_of_the_wrong_shape_is_one_line",
                        "test_a_gpu_run_is_reported_on_a_machine_without_one",
                        "test_a_damaged_study_db_is_one_line",
                        "test_an_interrupt_while_claiming_or_finishing_leaves_no_running_trial"},
    "test_predict.py": {"test_model_saved_by_a_study_predicts_the_test_pngs_with_its_recorded_"
                        "accuracy", "test_test_set_as_pngs_gives_exactly_the_recorded_accuracy",
                        "test_pickle_that_runs_code_is_refused_and_never_runs"},
    "test_own_data.py": {"test_user_npz_with_three_classes_end_to_end"},
    "test_engine.py": {"test_cuda_graph_training_matches_eager_training"},
    "test_cnn.py": {"test_float32_curves_match_plain_pytorch_within_the_stated_tolerance",
                    "test_cnn_study_runs_end_to_end_with_report_and_model",
                    "test_bench_family_cnn_reports_the_issues_keys"},
    "test_store.py": {"test_stale_running_trials_are_interrupted"},
    "test_factors.py": {"test_a_factor_declared_in_one_place_reaches_parser_store_table_and_"
                        "report"},
    "test_bench.py": {"test_bench_json_has_every_variant_with_medians_inside_their_spreads",
                      "test_bench_without_torchvision_says_why", "test_bench_table_and_bad_steps"},
    "test_download.py": {"test_gzip_bomb_from_a_mirror_is_inflated_no_further_than_the_real_file",
                         "test_two_processes_downloading_at_once",
                         "test_waits_for_a_held_lock_then_names_it",
                         "test_sha256_rejects_a_valid_gzip_of_wrong_content",
                         "test_trickling_mirror_is_abandoned_after_the_total_timeout"},
    "test_eda.py": {"*"},  # its module fixture summarises all 70,000 images
    "test_bounded_inputs.py": {"test_gzip_bomb_in_data_folder_is_cut_at_its_declared_size"},
    "test_protocols.py": {"test_staged_carries_winners_forward_and_trains_each_config_once",
                          "test_resumed_search_with_more_seeds_trains_only_the_missing_seeds",
                          "test_clean_protocol_tests_once_per_stage_winner",
                          "test_grid_trains_the_whole_space_once"},
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        uses_slow_fixture = SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        listed = SLOW_TESTS.get(item.path.name, ()) if item.path else ()
        named = "*" in listed or item.originalname in listed
        if uses_slow_fixture or named or any(item.get_closest_marker(m) for m in SLOW_MARKERS):
            item.add_marker(pytest.mark.slow)
