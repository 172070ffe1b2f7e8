"""Plant known bugs one at a time and check that the tests named for each catch it.

    bash tools/env.sh python tools/mutants.py            # every mutation (~10 minutes on 2 cores)
    bash tools/env.sh python tools/mutants.py --only=xla_off,untrained_ignores_mask

Each mutation is a one-line (or one-expression) change to a function of the
library, named by its qualified name (``fit``, ``Mask.apply_to``,
``search.train_round``) and found by parsing every module of lt_keras (so a
function that moves to another module is still found; the name must be
unique), applied to a temporary copy of the tracked tree (the work tree is
never touched), followed by the tests that must fail on it. A mutation whose
tests still pass "survived": the suite does not protect that behaviour.
Prints a table (mutation, tests, killed or survived, seconds) and exits
non-zero if any survived or no longer applies (the code it patches moved).

Hand-written rather than a mutation-testing package: the point is a small,
curated list of plausible bugs above the layers, each tied to the test that
promises the behaviour, not a sweep of every operator.
"""
import ast
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_list("only", [], "Run only these mutations (by name).")
flags.DEFINE_integer("timeout", 900, "Seconds per mutation's test run.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    function: str  # qualified name of the function it changes: "fit", "Mask.apply_to", "search.train_round"
    old: str  # must occur exactly once in that function's source
    new: str
    tests: tuple
    why: str


MUTATIONS = (
    Mutation("train_keeps_no_backup", "Train.execute",
             "        backup = os.path.join(run_dir, \"backup\")\n", "        backup = None\n",
             ("tests/test_train_binary.py::test_killed_train_resumes_to_the_uninterrupted_result",),
             "lt-train checkpoints nothing, so a killed run starts again from step 1"),
    Mutation("mask_leaves_stale_momenta", "Mask.apply_to",
             "            for slot in slots.get(_shared_name(layer.kernel), ()):\n",
             "            for slot in ():\n",
             ("tests/test_layers.py::test_a_mask_applied_in_the_middle_of_training_keeps_pruned_entries_zero",),
             "a mask applied mid-training leaves the optimizer's momenta, which move pruned weights off zero"),
    Mutation("fit_trusts_the_stored_kernel", "fit",
             "        layer.store_zeros()\n", "        pass\n",
             ("tests/test_training.py::test_fit_stores_zeros_where_weights_were_set_by_hand",),
             "lt_keras.training.fit trains a kernel set by hand with values where the mask prunes"),
    Mutation("controls_are_the_ticket", "_control",
             "    if name == \"random_reinit\":\n"
             "        used, weights = mask, _seeded_build(build, train.seed, k, name).get_weights()\n",
             "    if True:\n        used, weights = mask, rewind_weights\n",
             ("tests/test_imp.py::test_controls_differ_from_the_ticket_as_each_defines",),
             "both controls train the ticket itself (same mask, rewind weights)"),
    Mutation("resume_loads_zero_rewind_weights", "_load_round_state",
             "[f[f\"rewind{i}\"] for i in range(num_weights)],",
             "[0 * f[f\"rewind{i}\"] for i in range(num_weights)],",
             ("tests/test_imp.py::test_resumed_round_trains_from_the_saved_rewind_weights",),
             "a resumed IMP run rewinds to zeros"),
    Mutation("control_moves_the_next_rounds_data_order", "search.train_round",
             "        seed_globals(train.seed, k, \"train\")\n        return fit(model, data, train, callbacks",
             "        return fit(model, data, train, callbacks",
             ("tests/test_imp.py::test_killed_run_with_controls_resumes_bit_identical",),
             "a round's data order depends on what ran before it in the process"),
    Mutation("xla_off", "compile_model", "        jit_compile=jit,\n", "        jit_compile=False,\n",
             ("tests/test_training.py::test_xla_setting_is_what_the_compiled_step_runs",),
             "jit_compile hard-coded off in compile_model"),
    Mutation("untrained_ignores_mask", "untrained_accuracy",
             "        layer.kernel.assign(apply_mask1(mask1, layer.kernel.numpy(), mask[key], rng))\n"
             "    mask.apply_to(model)\n",
             "        layer.kernel.assign(apply_mask1(mask1, layer.kernel.numpy(), 0 * mask[key] + 1, rng))\n",
             ("tests/test_supermask.py::test_untrained_accuracy_follows_the_mask_it_is_given",),
             "untrained-mask evaluation keeps the model's own mask"),
    Mutation("resumed_fit_restarts_the_data", "_backed_up_steps",
             "    return (epoch + 1) * interval if epoch >= 0 else 0", "    return 0",
             ("tests/test_training.py::test_killed_fit_with_backup_resumes_at_its_last_evaluation",),
             "a resumed fit sees the first batches again"),
    Mutation("divergence_unchecked", "DivergenceGuard._stop",
             "    def _stop(self, step, why):\n        self.model.stop_training = True\n",
             "    def _stop(self, step, why):\n        return\n",
             ("tests/test_reliability.py::test_divergence_stops_imp_with_no_ticket_or_round",
              "tests/test_reliability.py::test_divergence_is_caught_between_evaluations"),
             "a diverged run is written as a result"),
    Mutation("no_lock", "take_lock", "        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
             "        pass\n",
             ("tests/test_reliability.py::"
              "test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_free",
              "tests/test_reliability.py::test_a_second_export_into_the_same_folder_is_one_line"),
             "two runs write one run directory (or one export target)"),
    Mutation("nan_ticket_written", "write_ticket",
             "    _check_finite(model, f\"refusing to write ticket {os.fspath(folder)!r}: the model\")\n", "",
             ("tests/test_reliability.py::test_nan_tickets_are_refused_on_write_and_on_load",),
             "a NaN model is written as a ticket"),
    Mutation("export_parity_passes_nan", "max_abs_diff",
             "    if not (np.isfinite(a).all() and np.isfinite(b).all()):\n        return float(\"inf\")\n", "",
             ("tests/test_reliability.py::test_export_parity_fails_on_nan",),
             "NaN outputs pass the export parity check"),
    Mutation("degenerate_schedule_trains", "check_schedule", "            if kept < min_kept(layer):\n",
             "            if False:\n",
             ("tests/test_reliability.py::test_degenerate_schedules_are_refused_before_training",),
             "a schedule that empties a layer trains and reports 10%"),
    Mutation("zero_mask_ignores_movement", "_frozen_zero_mask",
             "    return np.where(_moved_toward_zero(w_init, w_final), 0.0, w_init)", "    return w_init",
             ("tests/test_pruning.py::test_mask0_freeze_init_zero_mask_zeroes_pruned_weights_that_moved_toward_zero",
              "tests/test_imp.py::test_mask0_actions_end_to_end_use_theta0_and_the_trained_kernels"),
             "freeze_init_zero_mask behaves as freeze_init"),
    Mutation("signed_reshuffle_loses_signs", "_signed_reshuffle",
             "    return np.sign(w_init) * np.abs(_reshuffle(w_init, mask, rng, fresh))",
             "    return _reshuffle(w_init, mask, rng, fresh)",
             ("tests/test_pruning.py::test_mask1_signed_reshuffle_keeps_signs_and_the_multiset_of_kept_magnitudes",
              "tests/test_imp.py::test_every_mask1_action_end_to_end"),
             "signed_reshuffle is plain reshuffle"),
    Mutation("early_bird_distance_to_oldest_only", "EarlyBirdDetector.update",
             "distance = max(queue[-1].hamming_distance(m) for m in list(queue)[:-1])",
             "distance = queue[-1].hamming_distance(queue[0])",
             ("tests/test_early_bird.py::"
              "test_detector_declares_when_the_newest_mask_is_within_epsilon_of_the_full_queue",),
             "Early-Bird compares the newest mask with the oldest only"),
    Mutation("stochastic_rounding_floors", "stochastic_round_quantize", "q = tf.floor(x / safe + _uniform_noise(x))",
             "q = tf.floor(x / safe + 0.5)",
             ("tests/test_precision.py::test_stochastic_rounding_is_unbiased_keeps_zero_and_uses_few_levels",),
             "8-bit search rounds to nearest instead of stochastically"),
    Mutation("strip_masks_keeps_pruned_weights", "strip_masks.weights",
             "            kernel = old.deterministic_kernel().numpy()", "            kernel = old.kernel.numpy()",
             ("tests/test_retrain_export.py::test_retrain_keeps_masks_and_exports_to_a_plain_saved_model",
              "tests/test_mask_holds.py::test_strip_masks_bakes_the_mask_however_it_was_written"),
             "the exported model carries the pruned weights"),
    Mutation("weight_decay_dropped", "make_optimizer", "    wd = config.weight_decay or None\n",
             "    wd = None\n", ("tests/test_training.py::test_step_schedule_and_decoupled_weight_decay_inside_fit",),
             "--weight_decay never reaches the optimizer"),
    Mutation("schedule_dropped", "make_optimizer",
             "    if config.warmup_steps or config.lr_schedule != \"constant\":\n", "    if False:\n",
             ("tests/test_training.py::test_step_schedule_and_decoupled_weight_decay_inside_fit",),
             "the learning-rate schedule is never applied"),
    Mutation("every_worker_writes_the_run_dir", "Method.placement",
             "        if is_chief():", "        if True:",
             ("tests/test_retrain_export.py::test_multi_worker_strategy_with_two_local_workers",),
             "a non-chief worker writes the chief's run directory"),
    Mutation("theta_final_from_stored_kernel", "kernels",
             "    return {mask_key(l): l.masked_kernel(training=False).numpy() for l in masked_layers(model)}",
             "    return {mask_key(l): l.kernel.numpy() for l in masked_layers(model)}",
             ("tests/test_imp.py::test_freeze_init_zero_mask_keeps_earlier_zeros_in_later_rounds",),
             "theta_final read from the stored kernel (0 where pruned): weights frozen at theta_0 are zeroed later"),
    Mutation("run_dir_accepts_other_config", "RunDir.open", "            if saved != now:\n",
             "            if False:\n", ("tests/test_runs.py::test_refuses_a_different_config",),
             "a run directory resumes under a different configuration"),
    Mutation("quadrant_criterion_on_one_absolute_scale", "_large_init_large_final",
             "    return np.minimum(_percentile_ranks(np.abs(wi), kept), _percentile_ranks(np.abs(wf), kept))",
             "    return np.minimum(np.abs(wi), np.abs(wf))",
             ("tests/test_pruning.py::test_quadrant_criteria_rank_each_distribution_as_the_authors_code",),
             "large_init_large_final thresholds min(|w_init|, |w_final|), i.e. selects by the smaller scale"),
    Mutation("bernoulli_key_from_global_rng", "BernoulliMask.next_sample_key",
             "        return tf.stack([tf.constant(word, tf.int32), tf.cast(count, tf.int32)])",
             "        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32) + 0 * tf.cast(count, tf.int32)",
             ("tests/test_supermask.py::test_killed_bernoulli_supermask_fit_resumes_bit_identical",
              "tests/test_supermask_binary.py::test_killed_bernoulli_run_resumes_to_the_uninterrupted_result"),
             "a resumed supermask run draws other masks than an uninterrupted one"),
    Mutation("early_bird_fifo_not_restored", "EarlyBirdCallback.restore",
             "        if not self.state_dir or not os.path.isdir(self.state_dir):",
             "        if True:",
             ("tests/test_early_bird.py::test_killed_search_resumes_with_its_fifo_and_a_stopped_search_stays_stopped",
              "tests/test_early_bird.py::test_binary_finds_slims_retrains_and_counts_flops"),
             "a resumed Early-Bird search starts with empty mask queues"),
    Mutation("stopped_fit_trains_on", "fit",
             "    stopped = bool(done) and _stopped_step(backup_dir) == done\n",
             "    stopped = False\n",
             ("tests/test_early_bird.py::test_killed_search_resumes_with_its_fifo_and_a_stopped_search_stays_stopped",),
             "a search stopped at its Early-Bird epoch trains on when re-run after a kill"),
    Mutation("early_bird_ticket_from_the_last_epoch", "_ticket_for",
             "    mask = callback.mask_at(ratio, callback.emerged[ratio])",
             "    mask = callback.history[ratio][-1]",
             ("tests/test_early_bird.py::"
              "test_callback_puts_the_initial_mask_first_and_the_ticket_is_the_eb_epochs_mask",),
             "an Early-Bird ticket is cut by the last epoch's mask instead of its EB epoch's"),
    Mutation("slim_takes_channel_major_rows_after_flatten", "slim",
             "(np.arange(spatial)[:, None] * channels + current[None, :]).ravel()",
             "(current[:, None] * spatial + np.arange(spatial)[None, :]).ravel()",
             ("tests/test_early_bird.py::test_slimming_before_flatten_keeps_the_right_dense_rows",),
             "slimming copies the wrong Dense rows after a Flatten of a map larger than 1x1"),
    Mutation("export_parity_against_itself", "_export",
             "        reference = model(x_check, training=False).numpy()\n",
             "        reference = exported\n",
             ("tests/test_reliability.py::test_export_parity_catches_a_wrong_strip",),
             "the export's parity check compares the export with itself"),
    Mutation("coupled_decay_once_per_replica", "_coupled_weight_decay.Coupled.apply_gradients",
             "            share = self.coupled_weight_decay / tf.distribute.get_strategy().num_replicas_in_sync",
             "            share = self.coupled_weight_decay",
             ("tests/test_training.py::test_coupled_weight_decay_is_applied_once_per_step_on_two_replicas",),
             "coupled weight decay is added by every replica, so N replicas decay N times"),
    Mutation("global_allocation_at_the_pooled_rate_per_layer", "_next_mask",
             "        return prune_global(scores, mask, imp.prune_rate, rng=rng, count_rule=imp.prune_count)",
             "        return prune_layerwise(scores, mask, {k: imp.prune_rate for k in mask}, rng=rng)",
             ("tests/test_imp.py::test_one_shot_and_global",),
             "global allocation prunes each layer at the pooled rate (the total density is the same)"),
    Mutation("keras3_bridge_drops_initializers", "_translate_config",
             "    for key, value in layer.get_config().items():\n",
             "    for key, value in layer.get_config().items():\n        if key.endswith(\"_initializer\"):\n"
             "            continue\n",
             ("tests/test_keras3.py::test_from_keras3_keeps_the_initializers",),
             "a Keras 3 model's initializers are lost (He-normal becomes Glorot-uniform; reinit draws change)"),
    Mutation("ticket_mask_npz_unchecked", "load_ticket", "    if Mask.from_model(model) != mask:",
             "    if False:",
             ("tests/test_reliability.py::test_a_mask_npz_whose_values_differ_from_the_models_masks_is_refused",),
             "load_ticket accepts a mask.npz whose values differ from the model's masks"),
    Mutation("expected_mask_keeps_p_one_half", "BernoulliMask.learned",
             "scale * tf.cast(scores > 0.0, scores.dtype)", "scale * tf.cast(scores >= 0.0, scores.dtype)",
             ("tests/test_supermask.py::test_expected_bernoulli_mask_keeps_only_scores_above_zero",),
             "the expected Bernoulli mask keeps scores of exactly 0 (p = 0.5)"),
    Mutation("mask_ignored_in_training", "FixedMask.kernel",
             "        return layer.compose(tf.cast(self.mask(training), layer.kernel.dtype), kernel)",
             "        return layer.kernel if training and kernel is None else "
             "layer.compose(tf.cast(self.mask(training), layer.kernel.dtype), kernel)",
             ("tests/test_layers.py::test_a_fixed_mask_is_stored_as_zeros_and_masks_the_gradient",
              "tests/test_mask_holds.py::test_output_is_kernel_times_mask_after_every_write"),
             "a fixed mask is ignored in training (training=True): pruned weights compute and get gradients"),
    Mutation("compact_folds_nothing", "_Plan._weights",
             "            folded = (self.absorbed[layer.name] * removed)", "            folded = (0.0 * removed)",
             ("tests/test_compact.py::test_a_unit_with_no_live_inputs_is_removed_and_its_constant_folded",),
             "compaction removes a unit that emits a constant without adding the constant to the next bias"),
    Mutation("compact_folds_through_padding", "_Plan._mixing",
             "if uniform else (const == 0)", "",
             ("tests/test_compact.py::test_compact_equals_the_ticket_with_dead_units_everywhere",),
             "a zero-padding convolution absorbs a constant channel, wrong at the image's border"),
    Mutation("compact_ignores_zero_scales", "_Plan._visit",
             "const = np.where(layer.gamma.numpy() == 0, offset, const)", "const = const",
             ("tests/test_early_bird.py::test_slimmed_network_equals_the_channel_masked_network",),
             "a channel BatchNorm scales by zero (an Early-Bird channel mask) is kept"),
    Mutation("attention_hides_its_projections", "walk_layers",
             "        elif expand and isinstance(unwrapped(layer), MASKED_CONTAINERS):\n",
             "        elif False:\n",
             ("tests/test_attention.py::test_mask_model_masks_every_kernel_of_a_transformer_encoder",),
             "the projections of a masked attention layer are not seen: no mask, no pruning"),
    Mutation("separable_weights_not_split", "parts",
             "    if type(layer) is keras.layers.SeparableConv2D and layer.built:\n",
             "    if False:\n",
             ("tests/test_layer_kinds.py::"
              "test_a_separable_convolution_is_two_masked_kernels_and_strips_back_to_one_layer",),
             "a separable convolution's plain weights are not carried into (or back from) its two masked parts"),
    Mutation("compact_misses_keyword_tensors", "_Plan.__init__",
             "                self._opaque(read, outputs)", "                self._opaque(inputs, outputs)",
             ("tests/test_compact.py::test_a_layer_reading_tensors_by_keyword_keeps_their_channels",),
             "a layer compaction does not know reads tensors passed by keyword, which lose channels"),
    Mutation("recurrent_cell_reads_raw_kernels", "_MaskedCell._masked",
             'return getattr(self, f"_{name}_part").masked_kernel(getattr(self, "_step_training", None))',
             'return getattr(self, f"_{name}_part").kernel',
             ("tests/test_layer_kinds.py::test_recurrent_kernels_are_masked_where_the_layer_computes",),
             "a recurrent layer computes with its stored kernels: a mask written by assignment is ignored"),
    Mutation("compact_unties_merges", "_Plan._visit",
             "                self._union(ids, self.ids[id(t)])\n", "                pass\n",
             ("tests/test_compact.py::test_compact_equals_the_ticket_with_dead_units_everywhere",),
             "a residual addition's inputs lose channels independently"),
)


def copy_tree(target):
    """The tracked files (and new untracked ones) of the work tree, without .git or the virtualenv."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = os.path.join(REPO, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, name))


def functions(path):
    """Qualified name -> (first line, last line) of every function in the module at ``path`` (1-based)."""
    found = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found[name] = (child.lineno, child.end_lineno)
                visit(child, name + ".")

    visit(ast.parse(open(path).read()), "")
    return found


def locate(tree, function):
    """``(path, first, last)`` of the one function of lt_keras with this qualified name, or an error string."""
    hits = []
    for folder, _, names in os.walk(os.path.join(tree, "lt_keras")):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                span = functions(path).get(function)
                if span:
                    hits.append((path, *span))
    if len(hits) != 1:
        return f"function {function} found {len(hits)} times"
    return hits[0]


def apply(tree, mutation):
    where = locate(tree, mutation.function)
    if isinstance(where, str):
        return where
    path, first, last = where
    lines = open(path).read().splitlines(keepends=True)
    body = "".join(lines[first - 1:last])
    count = body.count(mutation.old)
    if count != 1:
        return f"patch target found {count} times in {mutation.function}"
    text = "".join(lines[:first - 1]) + body.replace(mutation.old, mutation.new) + "".join(lines[last:])
    open(path, "w").write(text)
    compile(text, path, "exec")  # a mutant that does not parse would be killed for nothing
    return None


def run_tests(tree, tests):
    env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="3")
    # One process (-n 0): a few named tests, and under xdist -x reports a failure as exit 2 ("interrupted").
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", *tests],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=FLAGS.timeout)
    return proc.returncode, proc.stdout


def main(argv):
    del argv
    names = [m.name for m in MUTATIONS]
    unknown = sorted(set(FLAGS.only) - set(names))
    if unknown:
        sys.exit(f"mutants: error: --only: unknown {unknown}; choose from {names}.")
    chosen = [m for m in MUTATIONS if not FLAGS.only or m.name in FLAGS.only]
    rows, start = [], time.time()
    with tempfile.TemporaryDirectory(prefix="lt_mutants_") as root:
        pristine = os.path.join(root, "pristine")
        copy_tree(pristine)
        code, out = run_tests(pristine, sorted({t for m in chosen for t in m.tests}))
        if code != 0:
            sys.exit(f"mutants: error: the named tests fail without any mutation:\n{out[-3000:]}")
        for i, mutation in enumerate(chosen, 1):
            tree = os.path.join(root, mutation.name)
            shutil.copytree(pristine, tree)
            began = time.time()
            problem = apply(tree, mutation)
            if problem:
                verdict = f"NOT APPLIED ({problem})"
            else:
                code, out = run_tests(tree, list(mutation.tests))
                # pytest: 1 = tests failed (killed); 0 = all passed (survived); other codes are broken runs.
                verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"ERROR (pytest exit {code})")
                if code not in (0, 1):
                    print(out[-2000:], flush=True)
            rows.append((mutation.name, mutation.why, verdict, time.time() - began))
            shutil.rmtree(tree, ignore_errors=True)
            eta = (time.time() - start) / i * (len(chosen) - i)
            print(f"[{i}/{len(chosen)}] {mutation.name}: {verdict} ({rows[-1][3]:.0f} s; ETA {eta / 60:.0f} min)",
                  flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'mutation':<{width}}  {'verdict':<10} {'s':>5}  planted bug")
    for name, why, verdict, seconds in rows:
        print(f"{name:<{width}}  {verdict:<10} {seconds:5.0f}  {why}")
    killed = sum(r[2] == "killed" for r in rows)
    print(f"\n{killed} of {len(rows)} mutations killed in {(time.time() - start) / 60:.1f} min.")
    if killed != len(rows):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
