"""Mutation check: break the code on purpose, one named mutant at a time; its tests must fail.

Each mutant is a text patch (the `old` text must occur exactly once in `path`, so a mutant
whose code moved fails loudly instead of silently testing nothing). Mutants are applied to
a copy of the tree, never to the checkout. Usage:

    python scripts/mutants.py            # all mutants
    python scripts/mutants.py NAME ...   # some
    python scripts/mutants.py --list

Adding one: append a Mutant(name, path, old, new, tests) to MUTANTS; list it in
docs/reliability.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from trainer.contract import PROGRESS_ENV  # noqa: E402


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or files; at least one must fail


IN_EPOCH = (
    "tests/test_resume.py::"
    "test_sigterm_mid_epoch_resumes_from_that_step_to_the_uninterrupted_result"
)
BAD_LATEST = (
    "tests/test_resume.py::test_bad_latest_json_is_named_kept_and_promotion_retried_on_rerun"
)

MUTANTS = [
    # --- storage -----------------------------------------------------------------------
    Mutant("storage-412-after-retry-is-success", "trainer/storage.py",
           "return current == data", "return True",
           ("tests/test_reliability.py::test_lost_responses_on_conditional_writes_are_read_back",)),
    Mutant("storage-if-generation-match-dropped", "trainer/storage.py",
           "blob.upload_from_string(data, if_generation_match=generation, retry=None)",
           "blob.upload_from_string(data, retry=None)",
           ("tests/test_storage.py::test_create_only_write_refuses_to_overwrite[gcs]",
            "tests/test_storage.py::test_compare_and_swap[gcs]")),
    Mutant("storage-gcs-delete-skips-the-key-itself", "trainer/storage.py",
           'if prefix.strip("/") and not prefix.endswith("/") and self.exists(prefix):',
           "if False:",
           ("tests/test_storage.py::"
            "test_delete_prefix_of_one_key_removes_that_object_and_no_sibling[gcs]",)),
    Mutant("storage-written-in-place-not-renamed", "trainer/storage.py",
           "            tmp = write_new_file(path.parent, path.name, data)\n",
           "            path.write_bytes(data)\n"
           "            tmp = write_new_file(path.parent, path.name, data)\n",
           ("tests/test_storage_safety.py::test_disk_full_fails_the_write_cleanly",)),
    Mutant("storage-temp-kept-on-failed-write", "trainer/storage.py",
           "    except BaseException:\n        with contextlib.suppress(FileNotFoundError):\n"
           "            os.unlink(tmp)\n        raise\n",
           "    except BaseException:\n        raise\n",
           ("tests/test_storage_safety.py::test_disk_full_fails_the_write_cleanly",
            "tests/test_data_safety.py::test_full_cache_volume_costs_only_the_cache")),
    Mutant("storage-write-error-not-wrapped", "trainer/storage.py",
           "        except OSError as e:\n            # Disk full, read-only,",
           "        except ZeroDivisionError as e:\n            # Disk full, read-only,",
           ("tests/test_storage_safety.py::"
            "test_disk_full_mid_run_is_one_line_and_keeps_earlier_checkpoints",)),
    Mutant("storage-local-child-dotdot-allowed", "trainer/storage.py",
           "        _check_parts(self.uri, parts)\n        if any(Path(p).is_absolute()",
           "        if any(Path(p).is_absolute()",
           ("tests/test_storage_safety.py::test_child_cannot_leave_the_store",)),
    Mutant("storage-gs-prefix-dotdot-allowed", "trainer/storage.py",
           "        _check_parts(uri, (prefix,))\n", "",
           ("tests/test_storage_safety.py::test_open_store_refuses_uris_that_leave_the_store",)),
    Mutant("storage-artifacts-0600", "trainer/storage.py",
           "            os.fchmod(fd, 0o666 & ~_umask())\n", "",
           ("tests/test_storage_safety.py::test_artifacts_get_modes_from_the_umask",)),
    Mutant("storage-no-local-write-probe", "trainer/storage.py",
           "        existing = self.root\n", "        return\n",
           ("tests/test_storage_safety.py::test_unusable_output_is_refused_first",
            "tests/test_storage_safety.py::test_read_only_output_is_refused_first")),
    Mutant("storage-no-gcs-write-probe", "trainer/storage.py",
           '        key = f".write-probe-{uuid4().hex}"\n', "        return\n",
           ("tests/test_storage_safety.py::test_missing_bucket_is_bad_input_not_retryable",)),
    Mutant("storage-credentials-not-retried", "trainer/storage.py",
           "                if time.monotonic() + delay > deadline:",
           "                if True:",
           ("tests/test_credentials.py::test_a_slow_metadata_server_is_waited_for",)),
    # --- data ----------------------------------------------------------------------------
    Mutant("data-allow-pickle", "trainer/data/npz.py",
           "arr = _ArrayUnpickler(f).load()", "arr = pickle.Unpickler(f).load()",
           ("tests/test_data_safety.py::test_pickled_payload_never_runs",)),
    Mutant("data-array-checks-skipped", "trainer/data/npz.py",
           'if ys.ndim != 1 or ys.dtype.kind not in "iub":', "if False:",
           ("tests/test_data_safety.py::test_npz_with_wrong_arrays_is_refused",)),
    Mutant("data-no-words-check-skipped", "trainer/data/dataset.py",
           "        if not (arrays[f\"x_{split}\"] > START_CHAR).any():",
           "        if False:",
           ("tests/test_data_safety.py::test_every_review_empty_is_refused",)),
    Mutant("data-npz-ceiling-skipped", "trainer/data/npz.py",
           "if sum(infos[k].file_size for k in NPZ_ARRAYS) > limit:", "if False:",
           ("tests/test_data_safety.py::test_npz_bomb_is_refused_before_inflating",)),
    Mutant("data-cache-checksum-skipped", "trainer/data/cache.py",
           "if not np.array_equal(members[_CACHE_SUM], _cache_digest(members)):", "if False:",
           ("tests/test_data_safety.py::test_corrupt_cache_is_detected_and_rebuilt",)),
    Mutant("data-cache-shared-temp-name", "trainer/storage.py",
           "    tmp = write_new_file(path.parent, path.name, data)\n    try:\n        os.replace",
           '    tmp = path.with_name(f".{path.name}.tmp")\n    tmp.write_bytes(data)\n'
           "    try:\n        os.replace",
           ("tests/test_data_safety.py::test_concurrent_cold_cache_loads_never_fail",)),
    Mutant("data-sigterm-handler-installed-late", "trainer/__main__.py",
           "    termination = Termination().install()\n", "    termination = Termination()\n",
           ("tests/test_data_safety.py::test_sigterm_while_encoding_exits_resumable",)),
    # --- promotion -----------------------------------------------------------------------
    Mutant("promotion-tie-replaces-incumbent", "trainer/promotion.py",
           'if current and accuracy <= float(current["test_accuracy"]) - cfg.tolerance:',
           'if current and accuracy < float(current["test_accuracy"]) - cfg.tolerance:',
           ("tests/test_reliability.py::test_quality_gate",)),
    Mutant("promotion-pointer-overwritten-not-swapped", "trainer/promotion.py",
           "        if model_store.write_versioned(contract.LATEST, to_json(pointer), version):",
           "        model_store.write_bytes(contract.LATEST, to_json(pointer))\n        if True:",
           ("tests/test_reliability.py::test_concurrent_publishers_lose_no_update",)),
    Mutant("promotion-foreign-pointer-trusted", "trainer/promotion.py",
           "    elif not contract.is_run_id(doc.get(\"run_id\")):",
           "    elif False:",
           (BAD_LATEST,
            "tests/test_results_safety.py::test_bad_latest_pointer_is_one_line_naming_the_file")),
    Mutant("promotion-not-retried-for-a-complete-run", "trainer/train.py",
           "        return self._promote(metrics)\n\n    def _load(",
           "        return metrics\n\n    def _load(",
           (BAD_LATEST,)),
    # --- resume ----------------------------------------------------------------------------
    Mutant("resume-builds-a-fresh-model", "trainer/train.py",
           "        if restored is not None:\n",
           "        if False:\n",
           ("tests/test_resume.py::test_unreadable_last_checkpoint_falls_back_to_the_one_before",)),
    Mutant("resume-no-fallback-past-a-bad-checkpoint", "trainer/checkpoints.py",
           "            log(f\"checkpoint of {what} is unreadable ({reason}); skipping it\")\n"
           "            continue",
           "            raise",
           ("tests/test_resume.py::test_unreadable_last_checkpoint_falls_back_to_the_one_before",)),
    Mutant("resume-partial-epoch-checkpointed", "trainer/callbacks.py",
           "        if not self.termination.stopping or step >= self.steps:",
           "        if True:",
           ("tests/test_reliability.py::test_kill_in_epoch_2_then_resume",)),
    Mutant("in-epoch-checkpoint-not-saved", "trainer/callbacks.py",
           "            self.in_epoch_checkpoint(self.model, part)\n",
           "            pass\n",
           (IN_EPOCH, "tests/test_reliability.py::test_kill_in_epoch_2_then_resume")),
    Mutant("in-epoch-resume-position-lost", "trainer/train.py",
           "        return ds.skip(step) if step else ds", "        return ds",
           (IN_EPOCH,)),
    Mutant("in-epoch-resume-order-lost", "trainer/train.py",
           "        for _ in range(ITERATORS_PER_EPOCH * epoch):", "        for _ in range(0):",
           (IN_EPOCH,)),
    Mutant("in-epoch-group-position-lost", "trainer/train.py",
           "            return ds.skip(position) if position else ds", "            return ds",
           ("tests/test_multiworker.py::test_sigterm_stops_the_group_at_a_checkpoint[worker-1]",)),
    Mutant("resume-disk-full-is-a-crash", "trainer/train.py",
           "                if e.errno not in (errno.ENOSPC, errno.EDQUOT):",
           "                if True:",
           ("tests/test_disk_full.py",)),
    # --- one trainer per run, worker groups ------------------------------------------------
    Mutant("lease-not-taken", "trainer/train.py",
           "                lease.acquire()\n", "                pass\n",
           ("tests/test_lease.py::test_two_trainers_on_one_run_id_never_both_train",)),
    Mutant("lease-expired-never-taken-over", "trainer/lease.py",
           'expired = current is None or float(current["expires"]) <= now',
           "expired = current is None",
           ("tests/test_lease.py::test_an_expired_lease_is_taken_over",)),
    Mutant("multiworker-uneven-final-batch", "trainer/train.py",
           "        even = part is not None or distribute.is_multi_worker()\n",
           "        even = part is not None\n",
           ("tests/test_multiworker.py::test_uneven_final_batch_trains_on_every_worker",)),
    Mutant("multiworker-signalled-worker-stops-alone", "trainer/callbacks.py",
           "            self.termination.agreed = float(self._signalled(flag)) > 0",
           "            self.termination.agreed = self.termination.requested",
           ("tests/test_multiworker.py::test_sigterm_stops_the_group_at_a_checkpoint",)),
    Mutant("multiworker-group-flag-not-set", "trainer/distribute.py",
           "        termination.group = True\n", "        pass\n",
           ("tests/test_multiworker.py::test_sigterm_before_fit_stops_the_group_before_it_trains",)),
    Mutant("multiworker-stale-server-is-a-peer", "trainer/distribute.py",
           "    return reply.strip() == GREETING + b\" \" + expected.encode()",
           "    return True",
           ("tests/test_distribute.py::test_a_peer_is_met_on_a_port_a_stale_server_held_before",)),
    Mutant("multiworker-group-not-retried-by-the-job", "jobs/manifest.py",
           "    return spec.backoff_limit * spec.workers", "    return 0",
           ("tests/test_jobs_cluster.py::test_a_broken_worker_group_is_retried_by_the_cluster",)),
    Mutant("store-outage-at-start-is-bad-input", "trainer/storage.py",
           "    exit_code, resumable, store_refusal = contract.EXIT_PREEMPTED, True, False\n", "",
           ("tests/test_reliability.py::test_an_unreachable_store_at_start_up_is_an_outage_not_bad_input",)),
    Mutant("group-stopped-peer-counts", "trainer/train.py",
           "stopped = PreemptedError if self.termination.requested else GroupStoppedError",
           "stopped = PreemptedError",
           ("tests/test_multiworker.py::test_sigterm_before_fit_stops_the_group_before_it_trains",)),
    Mutant("cli-ids-parsed-as-numbers", "trainer/commandline.py",
           "command=strings_as_typed(flags, string_flags)", "command=flags",
           ("tests/test_jobs_submit.py::test_identifiers_are_strings_exactly_as_typed",)),
    Mutant("signal-while-reading-cache-is-corruption", "trainer/data/cache.py",
           "        raise  # a signal (preemption) while reading is never corruption",
           "        pass  # ",
           ("tests/test_data_safety.py::test_a_signal_while_reading_the_cache_keeps_the_cache",)),
    Mutant("multiworker-no-peer-timeout", "trainer/distribute.py",
           "if met or time.monotonic() >= deadline or",
           "if met or",
           ("tests/test_multiworker.py::test_a_group_that_does_not_form_exits_resumable",)),
    # --- jobs.results ------------------------------------------------------------------
    Mutant("results-pointer-not-checked", "trainer/promotion.py",
           '    return parse_pointer(raw, f"{model_store.uri}/{contract.LATEST}", model)',
           "    return json.loads(raw)",
           ("tests/test_results_safety.py::test_bad_latest_pointer_is_one_line_naming_the_file",)),
    Mutant("results-corrupt-metrics-fails-list", "jobs/results.py",
           "                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):",
           "                except ZeroDivisionError:",
           ("tests/test_results_safety.py::test_truncated_metrics_marks_one_run_corrupt",)),
    # --- hostile inputs, third audit (docs/reliability.md) ------------------------------
    Mutant("dataset-links-followed", "trainer/data/archives.py",
           "            if not stat.S_ISREG(os.lstat(full).st_mode):  # never opened: links, "
           "devices",
           "            if not stat.S_ISREG(os.stat(full).st_mode):",
           ("tests/test_data_safety.py::test_a_symlink_out_of_the_dataset_is_not_read",)),
    Mutant("dataset-ceiling-not-checked", "trainer/data/archives.py",
           "        if total > limit:\n"
           "            raise too_big(f\"directory {root}\", limit)",
           "        if False:\n"
           "            raise too_big(f\"directory {root}\", limit)",
           ("tests/test_data_safety.py::test_the_directory_ceiling_counts_bytes_read",)),
    Mutant("data-special-file-opened", "trainer/data/sources.py",
           "    if not (path.is_file() or path.is_dir()):",
           "    if False:",
           ("tests/test_data_safety.py::test_data_naming_a_special_file_or_nothing_is_bad_input",)),
    Mutant("npz-huge-ranks-wrap", "trainer/data/tokenizer.py",
           "    ids = np.minimum(ranks, ceiling).astype(np.int64) + index_from",
           "    ids = ranks.astype(np.int64) + index_from",
           ("tests/test_data_safety.py::test_ranks_near_the_top_of_the_integer_range_are_out_of_vocabulary",)),
    Mutant("diverged-loss-checkpointed", "trainer/callbacks.py",
           "        if diverged:\n", "        if False:\n",
           ("tests/test_reliability.py::test_a_diverged_loss_stops_with_its_own_exit_never_checkpointed_or_promoted",)),
    Mutant("word-index-ranks-unchecked", "trainer/runs.py",
           "    ranks = word_ranks(store.uri, word_index)\n",
           "    ranks = {str(k): int(v) for k, v in word_index.items()}\n",
           ("tests/test_predict_files.py::test_a_damaged_run_file_is_one_line_naming_it",)),
    Mutant("predict-ignores-runs-index-from", "trainer/runs.py",
           "        index_from=sizes[2],\n", "",
           ("tests/test_predict_files.py::test_the_encoder_uses_the_runs_index_from",)),
    Mutant("success-not-last", "trainer/artifacts.py",
           "        store.write_bytes(contract.METRICS, to_json(metrics))\n",
           "        store.write_bytes(contract.SUCCESS, b\"{}\", if_absent=True)\n"
           "        store.write_bytes(contract.METRICS, to_json(metrics))\n",
           ("tests/test_publish_order.py::test_success_marker_is_written_after_every_other_artifact",)),
    Mutant("gate-floor-softened-by-tolerance", "trainer/promotion.py",
           "    if accuracy < cfg.min_accuracy:",
           "    if accuracy < cfg.min_accuracy - cfg.tolerance:",
           ("tests/test_reliability.py::test_the_floor_is_exact_and_no_tolerance_softens_it",)),
    Mutant("results-deep-metrics-fails-list", "jobs/results.py",
           "                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):",
           "                except (UnicodeDecodeError, json.JSONDecodeError):",
           ("tests/test_results_safety.py::test_a_damaged_metrics_file_is_one_corrupt_run_the_others_unharmed",)),
    Mutant("pointer-of-another-model-trusted", "trainer/promotion.py",
           '    elif model is not None and doc.get("model", model) != model:',
           "    elif False:",
           ("tests/test_results_safety.py::test_bad_latest_pointer_is_one_line_naming_the_file",)),
    Mutant("damaged-config-on-resume-crashes", "trainer/train.py",
           "    except (ValueError, RecursionError) as e:  # truncated, not UTF-8, nested past "
           "the parser",
           "    except ZeroDivisionError as e:",
           ("tests/test_reliability.py::test_a_damaged_config_of_the_same_run_id_is_one_line_not_a_traceback",)),
    Mutant("signal-at-a-phase-is-bad-input", "trainer/termination.py",
           "    exit_code, resumable = contract.EXIT_PREEMPTED, True\n",
           "    exit_code, resumable = contract.EXIT_BAD_INPUT, False\n",
           ("tests/test_reliability.py::test_a_signal_at_every_phase_is_a_preemption_and_the"
            "_rerun_completes[model_ready]",)),
    Mutant("gs-data-cache-keyed-by-name", "trainer/data/sources.py",
           '            local = cache_dir / "downloads" / key / store.version(name) / name',
           '            local = cache_dir / "downloads" / key / name',
           ("tests/test_data_safety.py::test_a_gs_data_object_replaced_under_its_name_is_downloaded"
            "_again",)),
    Mutant("run-folder-not-probed", "trainer/__main__.py",
           "                store.child(cfg.model, cfg.run_id).check_writable()",
           "                pass",
           ("tests/test_storage_safety.py::test_a_read_only_run_folder_is_refused_before_the_data"
            "_is_read",)),
    Mutant("symlink-loop-passes-probe", "trainer/storage.py",
           "            if existing.is_symlink():  # exists() is False through a loop or a lost "
           "target",
           "            if False:",
           ("tests/test_storage_safety.py::test_a_symlink_loop_on_the_output_path_is_refused_first",)),
    Mutant("gcs-request-timeout-unbounded", "trainer/storage.py",
           "        return min(60.0, self.deadline)", "        return 60.0",
           ("tests/test_storage.py::test_a_frozen_store_is_given_up_on_within_about_the_deadline",)),
    Mutant("latest-dir-is-no-latest", "trainer/storage.py",
           "        except IsADirectoryError:\n",
           "        except ZeroDivisionError:\n",
           ("tests/test_reliability.py::test_a_latest_json_that_is_a_directory_is_named_every_time",)),
    Mutant("stray-temp-files-kept", "trainer/train.py",
           "                stray = self.store.remove_stray_temp()",
           "                stray = 0",
           ("tests/test_storage_safety.py::test_temp_files_a_killed_publisher_left_are_removed_by"
            "_the_next_attempt",)),
    Mutant("k8s-label-keys-unchecked", "jobs/values.py",
           "        if not _label_key(key):\n",
           "        if False:\n",
           ("tests/test_k8s_manifest.py::test_kubernetes_fields_are_checked_before_anything_is"
            "_created",)),
    Mutant("k8s-toleration-operator-unchecked", "jobs/values.py",
           "        if operator not in _TOLERATION_OPERATORS:",
           "        if False:",
           ("tests/test_k8s_manifest.py::test_kubernetes_fields_are_checked_before_anything_is"
            "_created",)),
    # --- settings valid alone, invalid together; strict creates; jobs.doctor -------------
    Mutant("spec-request-above-limit-rendered", "jobs/spec.py",
           "if req and lim and parse_quantity(req) > parse_quantity(lim):",
           "if False:",
           ("tests/test_spec_together.py::test_every_dry_run_is_refused_by_us_or_accepted_by_the"
            "_server",)),
    Mutant("spec-gpus-beyond-any-node-rendered", "jobs/spec.py",
           "if spec.gpus and counts and spec.gpus > max(counts):", "if False:",
           ("tests/test_spec_together.py::test_every_dry_run_is_refused_by_us_or_accepted_by_the"
            "_server",)),
    Mutant("create-fields-not-strict", "jobs/kube.py",
           'FIELD_VALIDATION = "Strict"', 'FIELD_VALIDATION = "Ignore"',
           ("tests/test_doctor.py::test_a_jobset_field_the_server_does_not_know_is_refused",)),
    Mutant("jobset-old-release-not-named", "jobs/kube.py",
           "    if newer:\n", "    if False:\n",
           ("tests/test_doctor.py::test_a_jobset_field_the_server_does_not_know_is_refused",)),
    Mutant("doctor-queue-coverage-unchecked", "jobs/doctor_addons.py",
           "missing = [r for r in self.requested_resources() if r not in covered]",
           "missing = []",
           ("tests/test_doctor.py::test_a_queue_without_ephemeral_storage_is_the_blocker",)),
    Mutant("doctor-any-node-offers-the-gpu", "jobs/doctor.py",
           "        if fits:\n", "        if True:\n",
           ("tests/test_doctor.py::test_an_accelerator_no_node_has_is_the_blocker",)),
    Mutant("doctor-missing-service-account-skipped", "jobs/doctor.py",
           "            if e.status == 404:\n                return Check(\"service account\"",
           "            if False:\n                return Check(\"service account\"",
           ("tests/test_doctor.py::test_a_missing_service_account_is_the_blocker",)),
    Mutant("doctor-autopilot-any-gpu-count", "jobs/doctor.py",
           "        if counts and s.gpus not in counts:\n", "        if False:\n",
           ("tests/test_doctor.py::test_autopilot_needs_no_node_but_takes_only_its_gpu_counts",)),
    Mutant("doctor-outage-is-bad-input", "jobs/doctor.py",
           '"check your kubeconfig context and network",\n                contract.EXIT_PREEMPTED,',
           '"check your kubeconfig context and network",',
           ("tests/test_doctor.py::test_an_api_server_that_does_not_answer_is_an_outage",)),
    # --- one definition of a Job's settings; JobSet ------------------------------------
    Mutant("submit-flag-dropped", "jobs/spec.py",
           '        "", "the pods\' PriorityClass (empty: the cluster default)", '
           'chart="priorityClassName"',
           '        "", "the pods\' PriorityClass (empty: the cluster default)"',
           ("tests/test_settings.py::test_every_chart_value_is_a_jobspec_setting_or_the_charts_own",)),
    Mutant("jobset-preemption-counted", "jobs/objects.py",
           '"action": "RestartJobSetAndIgnoreMaxRestarts"', '"action": "RestartJobSet"',
           ("tests/test_k8s_manifest.py::test_jobset_restarts_the_group_and_ignores_preemptions",)),
    # --- the GKE day-one checks ------------------------------------------------------------
    Mutant("gpu-check-skipped", "trainer/distribute.py",
           "    check_gpus(devices())\n", "",
           ("tests/test_distribute.py::test_a_cpu_pod_that_asked_for_a_gpu_stops_before_training",)),
    Mutant("gpu-missing-is-bad-input", "trainer/distribute.py",
           "    exit_code = contract.EXIT_NO_GPU\n", "    exit_code = contract.EXIT_BAD_INPUT\n",
           ("tests/test_distribute.py",)),
    Mutant("gpus-env-not-set", "jobs/manifest.py",
           "        client.V1EnvVar(name=GPUS_ENV, value=str(spec.gpus)),\n", "",
           ("tests/test_k8s_manifest.py",)),
    Mutant("group-not-formed-counted", "trainer/distribute.py",
           "            raise GroupNotFormedError(", "            raise RetryableError(",
           ("tests/test_multiworker.py::test_a_group_that_does_not_form_exits_resumable",)),
    Mutant("short-flags-not-expanded", "jobs/_cli.py",
           "        argv = expand_short_flags(sys.argv[1:] if argv is None else argv)\n", "",
           ("tests/test_jobs_submit.py::test_submit_takes_dash_n_as_the_namespace",)),
    Mutant("unknown-accelerator-refused", "jobs/values.py",
           "    if acc not in GKE_ACCELERATORS:\n        print(",
           "    if acc not in GKE_ACCELERATORS:\n        raise SpecError(acc)\n"
           "        print(",
           ("tests/test_k8s_manifest.py::test_an_unknown_gpu_type_is_a_warning_naming_the_known_ones",)),
    Mutant("restart-redone-work-not-subtracted", "trainer/cost.py",
           "float(this[\"training_from\"]) - kept)", "float(this[\"training_from\"]))",
           ("tests/test_cost.py",)),
    # --- hostile inputs, fourth audit (docs/reliability.md, classes 1 and 3-7) -----------
    Mutant("k8s-non-kubernetes-answer-traceback", "jobs/kube.py",
           "        return CheckedApiClient(configuration)\n"
           "    except (config.ConfigException, OSError) as e:",
           "        return client.ApiClient(configuration)\n"
           "    except (config.ConfigException, OSError) as e:",
           ("tests/test_reliability_audit4.py::test_a_server_that_is_not_kubernetes_is_one_line_naming_it",)),
    Mutant("k8s-wrong-type-value-traceback", "jobs/objects.py",
           "        raise invalid_field(e) from e", "        raise",
           ("tests/test_reliability_audit4.py::test_a_value_of_the_wrong_type_is_bad_input_naming_the_flag",)),
    Mutant("predict-special-file-read", "trainer/predict/__init__.py",
           "        if not stat.S_ISREG(os.fstat(fd).st_mode):", "        if False:",
           ("tests/test_reliability_audit4.py::test_predict_refuses_special_files_without_reading_them",)),
    Mutant("predict-review-unbounded", "trainer/predict/__init__.py",
           "        if len(line) > MAX_REVIEW_BYTES:", "        if False:",
           ("tests/test_reliability_audit4.py::test_one_review_and_one_input_have_a_bound",)),
    Mutant("run-model-kind-unchecked", "trainer/runs.py",
           "    if name is not None and kind != name:", "    if False:",
           ("tests/test_reliability_audit4.py::test_an_lstm_model_copied_into_a_mean_run_is_refused",)),
    Mutant("run-manifest-digest-unchecked", "trainer/manifest.py",
           "    if want != got:", "    if False:",
           ("tests/test_reliability_audit4.py::test_a_file_changed_after_publishing_is_named_by_the_manifest",)),
    Mutant("results-bad-pointer-exit-1", "jobs/results.py",
           "    return read_latest(store.child(model), model)\n",
           "    try:\n        return read_latest(store.child(model), model)\n"
           "    except PointerError as e:\n"
           "        raise _cli.CommandFailedError(str(e)) from None\n",
           ("tests/test_reliability_audit4.py::test_a_bad_latest_json_is_the_same_exit_in_predict_and_results",)),
    Mutant("env-unicode-digits-accepted", "trainer/numbers.py",
           "    elif isinstance(raw, str) and _INT.match(raw.strip()):",
           "    elif isinstance(raw, str) and raw.strip().isdigit():",
           ("tests/test_reliability_audit4.py::test_a_completion_index_of_unicode_digits_is_one_line",)),
    Mutant("tf-config-deep-traceback", "trainer/distribute.py",
           "        except (ValueError, KeyError, TypeError, RecursionError) as e:",
           "        except (ValueError, KeyError, TypeError) as e:",
           ("tests/test_reliability_audit4.py::test_a_tf_config_nested_100k_deep_is_one_line",)),
    Mutant("lease-period-unbounded", "trainer/lease.py",
           "    return bounded_float(raw, contract.LEASE_SECONDS_ENV, 0.1, MAX_SECONDS, "
           "ConfigError)",
           "    return float(raw)",
           ("tests/test_reliability_audit4.py::test_a_lease_period_out_of_bounds_is_bad_input",)),
    Mutant("lease-foreign-time-unbounded", "trainer/lease.py",
           '            expires = bounded_float(doc["expires"], "lease time", 0.0, _MAX_EXPIRES)',
           '            expires = float(doc["expires"])',
           ("tests/test_reliability_audit4.py::test_a_foreign_lease_with_an_unbounded_time_is_taken_over",)),
    Mutant("lease-renewal-dies-quietly", "trainer/lease.py",
           "        except BaseException as e:\n            self._lose(",
           "        except ZeroDivisionError as e:\n            self._lose(",
           ("tests/test_reliability_audit4.py::test_a_lease_renewal_that_dies_stops_the_run_resumable",)),
    Mutant("download-outage-is-bad-input", "trainer/data/sources.py",
           "        raise _download_failure(url, e) from e",
           '        raise DataError(f"cannot download {url}: {e}") from e',
           ("tests/test_reliability_audit4.py::test_a_refused_connection_is_an_outage",
            "tests/test_reliability_audit4.py::test_a_server_that_never_answers_is_an_outage")),
    Mutant("checkpoint-key-unicode-digits", "trainer/contract.py",
           'r"^checkpoints/epoch-([0-9]{4})\\.keras\\Z"',
           'r"^checkpoints/epoch-(\\d{4})\\.keras\\Z"',
           ("tests/test_reliability_audit4.py::test_checkpoint_keys_of_unicode_digits_are_not_checkpoints",)),
    Mutant("pointer-accuracy-unbounded", "trainer/promotion.py",
           '    elif not _accuracy(doc.get("test_accuracy")):',
           '    elif not isinstance(doc.get("test_accuracy"), (int, float)):',
           ("tests/test_reliability_audit4.py::test_a_pointer_accuracy_out_of_bounds_is_named",)),
    Mutant("checkpoint-state-shape-traceback", "trainer/checkpoints.py",
           "        except (StoreError, OSError, ValueError, KeyError, TypeError, RecursionError,",
           "        except (StoreError, OSError, ValueError, KeyError,",
           ("tests/test_reliability_audit4.py::test_a_damaged_checkpoint_state_is_skipped_not_a_traceback",)),
    Mutant("latest-dir-is-a-store-refusal", "trainer/storage.py",
           "            raise DamagedKeyError(\n", "            raise StoreError(\n",
           ("tests/test_reliability_audit4.py::test_a_latest_json_that_is_a_directory_is_the_same_exit_everywhere",)),
    Mutant("download-cut-short-is-bad-data", "trainer/data/sources.py",
           "        if total is not None and got_bytes < total:", "        if False:",
           ("tests/test_reliability_audit4.py::test_a_connection_cut_mid_download_is_an_outage",)),
    Mutant("k8s-client-errors-unmapped", "jobs/_cli.py",
           "        return contract.EXIT_FAILED\n    return None\n",
           "        return None\n    return None\n",
           ("tests/test_reliability_audit4.py::test_any_other_kubernetes_client_error_is_one_line_not_a_traceback",)),
    Mutant("data-encode-whole-corpus", "trainer/data/dataset.py",
           "    return encode_stream(path, vocab_size, max_review_length, "
           "_split_orders, workers, scratch)",
           "    from tests.oracle_encoder import encode_whole_corpus\n\n"
           "    return encode_whole_corpus(path, vocab_size, max_review_length)",
           ("tests/test_data_memory.py::test_encoding_4x_imdb_stays_within_the_arrays_plus_a_constant",)),
    # --- the local cluster ---------------------------------------------------------------
    Mutant("gpu-stand-in-for-every-container", "cluster/kubelet.py",
           ".filter(c, {asks})", "",
           ("tests/test_cluster_policies.py",)),
]  # fmt: skip


def _copy_tree(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files: what a commit would hold."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.relative_to(ROOT))


def _pytest(tree: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), PROGRESS_ENV: "0"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-rs", "-p", "no:cacheprovider", *tests]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for m in MUTANTS:
            print(f"{m.name}: {m.path} -> {' '.join(m.tests)}")
        return 0
    chosen = [m for m in MUTANTS if not argv or m.name in argv]
    unknown = set(argv) - {m.name for m in MUTANTS}
    if unknown:
        print(f"error: unknown mutants {sorted(unknown)}: see --list", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tree = Path(tmp) / ROOT.name
        _copy_tree(tree)
        # Tests find the shared data beside the checkout (../shared), as in the original.
        if (ROOT.parent / "shared").exists():
            (tree.parent / "shared").symlink_to(ROOT.parent / "shared")
        where = subprocess.run(
            [sys.executable, "-c", "import trainer; print(trainer.__file__)"],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip
        if not where.startswith(str(tree)):
            print(f"error: the copy imports trainer from {where}, not {tree}", file=sys.stderr)
            return 2
        # The tests must pass unmutated, or a "killed" mutant proves nothing.
        baseline = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        base = _pytest(tree, baseline)
        if base.returncode != 0 or " skipped" in base.stdout:
            print(f"error: the mutants' tests fail or skip on the unmutated tree:\n"
                  f"{base.stdout[-3000:]}", file=sys.stderr)  # fmt: skip
            return 1
        survivors = []
        for m in chosen:
            path = tree / m.path
            original = path.read_text()
            if original.count(m.old) != 1:
                print(
                    f"{m.name}: STALE (its text occurs {original.count(m.old)} times in {m.path})"
                )
                survivors.append(m.name)
                continue
            path.write_text(original.replace(m.old, m.new))
            t0 = time.monotonic()
            try:
                code = _pytest(tree, m.tests).returncode
            finally:
                path.write_text(original)
            verdict = "killed" if code == 1 else f"SURVIVED (pytest exit {code})"
            print(f"{m.name}: {verdict} in {time.monotonic() - t0:.0f} s by {' '.join(m.tests)}",
                  flush=True)  # fmt: skip
            if code != 1:
                survivors.append(m.name)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
