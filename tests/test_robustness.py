"""Nothing lost, nothing mixed: the workdir rules, config validation, non-finite numbers and interrupts.

Every bad input stops with one line and exit code 2 (Ctrl-C: 130) before any work is lost or mixed: a second run
on a locked workdir, a resume with other settings, another mode's workdir, any config field with a bad value, a
config file that does not import, an unusable data_dir, an empty GLUE TSV, a non-finite agent.
"""

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REPO, tiny_mlp_config

from gns_jax import checkpoints, runtime
from gns_jax import compare as cmp
from gns_jax import main as cli
from gns_jax import workdir as workdirs
from gns_jax.compare import compare_config
from gns_jax.config import FIELD_BY_PATH, FIELDS, ConfigError, _interval, base_config, validate_config
from gns_jax.settings import agent_settings, training_options


def tiny(data_dir, cache_dir, **agent):
    """T = 30, K = 10: 3 decision points; one short episode."""
    return tiny_mlp_config(data_dir, cache_dir, steps=30, decision_interval=10, hidden=(8,),
                           **{"episodes": 1, "deploy_candidates": 2, "deploy_pre_decisions": 1, "probe": False,
                              **agent})


def exits(capsys, mode, config, workdir, code=2) -> str:
    """Run through the command line's error handling; returns the one stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run_or_exit(mode, config, str(workdir))
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    # Our lines, not the progress bars' (a bar leaves its last state on the line the error is printed on).
    lines = [line[line.index("gns_jax:"):] for line in err.replace("\r", "\n").splitlines() if "gns_jax:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


# ---- 3. every field validated from one table -------------------------------------------------------------------
def full_config():
    config = base_config()
    config.compare = compare_config("images")
    return config


def test_the_table_covers_every_field():
    paths = leaves(full_config())
    assert sorted(p for p in paths if p not in FIELD_BY_PATH) == []
    assert sorted(f.path for f in FIELDS if f.path not in paths) == []
    validate_config(full_config(), "compare")


def bad_values(spec):
    """An out-of-range value (where the field has a range or choices) and a wrongly typed one."""
    tuple_kind = spec.kind in ("ints", "floats", "strs")
    out = []
    if spec.interval:
        low, high, low_closed, high_closed = _interval(spec.interval)
        value = (low - 1 if low_closed else low) if low > -np.inf else (high + 1 if high_closed else high)
        value = int(value) if spec.kind in (int, "ints") else float(value)
        out.append(("range", (value,) if tuple_kind else value))
    if spec.choices:
        wrong = "no-such-choice" if isinstance(spec.choices[0], str) else 19
        out.append(("choice", (wrong,) if tuple_kind else wrong))
    if spec.directory:
        out.append(("directory", "/nonexistent/gns_jax/dir"))
    wrong_type = {int: "abc", float: "abc", bool: "yes", str: 5}.get(spec.kind, "abc")
    out.append(("type", wrong_type))
    return out


CASES = [(spec.path, what, value) for spec in FIELDS for what, value in bad_values(spec)]


@pytest.fixture(scope="module")
def valid(tiny_fashion_mnist, cache_dir):
    config = tiny(tiny_fashion_mnist, cache_dir)
    with config.unlocked():
        config.compare = compare_config("images")
    return config.to_dict()


@pytest.mark.parametrize("path,what,value", CASES, ids=[f"{p}-{w}" for p, w, _ in CASES])
def test_every_field_rejects_a_bad_value_before_any_file(valid, path, what, value, tmp_path, capsys):
    node = valid = json.loads(json.dumps(valid))  # a fresh copy (tuples become lists: still valid)
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    config = ml_collections.ConfigDict(valid)
    mode = FIELD_BY_PATH[path].modes[0]
    line = exits(capsys, mode, config, tmp_path / "w")
    assert line.startswith("gns_jax: error: ") and f"config.{path}" in line
    assert not (tmp_path / "w").exists()


def test_late_failures_are_caught_up_front(tiny_fashion_mnist, cache_dir, tmp_path, capsys):
    for field, value in (("data.val_size", 0), ("agent.num_envs", 0), ("agent.episodes", 0), ("agent.sigma", 0.0)):
        config = tiny(tiny_fashion_mnist, cache_dir)
        section, name = field.split(".")
        config[section][name] = value
        assert f"config.{field}" in exits(capsys, "train_agent", config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_group_size_must_divide_the_environments(tiny_fashion_mnist, cache_dir):
    config = tiny(tiny_fashion_mnist, cache_dir, num_envs=3, group_size=2)
    with pytest.raises(ConfigError, match="group_size"):
        validate_config(config, "train_agent")


# ---- config files that do not import -----------------------------------------------------------------------------
def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "gns_jax.main", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


@pytest.mark.parametrize("source,expected", [
    ("def get_config(:\n    pass\n", ":1: SyntaxError"),
    ("import no_such_module_here\n", ":1: ModuleNotFoundError"),
    ("def get_config():\n    return 1 / 0\n", ":2: ZeroDivisionError"),
    ("\n\ndef get_config():\n    return {'steps': 3}\n", ":3: get_config() returned dict"),
])
def test_bad_config_files_are_file_line_message(source, expected, tmp_path):
    path = tmp_path / "bad_config.py"
    path.write_text(source)
    proc = run_cli(f"--config={path}", f"--workdir={tmp_path / 'w'}", "--mode=train_target")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gns_jax: error: {path}") and expected in lines[0], lines
    assert not (tmp_path / "w").exists()


def test_one_line_keeps_quotes_inside_the_message():
    assert cli.one_line(ValueError("unknown optimizer 'sgdd'")) == "unknown optimizer 'sgdd'"
    assert cli.one_line(KeyError("'stpes'")) == "'stpes'"  # str(KeyError) wraps the quoted name once more
    assert cli.one_line(ValueError("field 'stpes' of\n 'config'")) == "field 'stpes' of 'config'"


# ---- 1. the lock -------------------------------------------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    lock = workdirs.WorkdirLock(str(tmp_path))
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "taken": time.time(), "started": "now"}
    (tmp_path / workdirs.LOCK_NAME).write_text(json.dumps(holder))
    with pytest.raises(workdirs.WorkdirError, match=f"workdir in use by pid {os.getppid()} on "):
        lock.acquire()
    (tmp_path / workdirs.LOCK_NAME).write_text(json.dumps(dict(holder, pid=dead_pid())))
    with lock:  # the holder is gone: stale
        assert lock.holder()["pid"] == os.getpid()
    assert not (tmp_path / workdirs.LOCK_NAME).exists()  # released on exit
    (tmp_path / workdirs.LOCK_NAME).write_text(json.dumps(dict(holder, pid=dead_pid(), host="elsewhere")))
    with pytest.raises(workdirs.WorkdirError, match="on elsewhere"):
        lock.acquire()  # another host's pid cannot be checked: never taken over


def test_skipped_checkpoint_save_is_an_error(tmp_path):
    state = {"w": jnp.ones(3)}
    checkpoints.save(str(tmp_path), 0, state, {"episodes": []})
    with pytest.raises(checkpoints.CheckpointError, match="exists already"):
        checkpoints.save(str(tmp_path), 0, state, {"episodes": []})


def test_ctrl_c_during_a_checkpoint_write_waits_for_it():
    with pytest.raises(KeyboardInterrupt):
        with checkpoints.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished = True  # the block ran to its end before the interrupt was raised
    assert finished


# ---- 2. resume checks the settings; one mode per workdir --------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_fashion_mnist, cache_dir, tmp_path_factory):
    """A finished one-episode train_agent workdir (through the command line's run)."""
    workdir = tmp_path_factory.mktemp("trained")
    config = tiny(tiny_fashion_mnist, cache_dir)
    cli.run("train_agent", config, str(workdir))
    return config, workdir


def snapshot(workdir) -> dict:
    return {name: (workdir / name).read_text() for name in ("config.json", "results.json", "settings.json")}


def test_resume_with_other_settings_is_refused(trained, capsys):
    config, workdir = trained
    before = snapshot(workdir)
    for field, value in (("model.hidden", (9,)), ("seed", 1), ("agent.encoder", "gat"), ("data.split_seed", 3)):
        changed = ml_collections.ConfigDict(config.to_dict())
        section, _, name = field.rpartition(".")
        (changed[section] if section else changed)[name] = value
        line = exits(capsys, "train_agent", changed, workdir)
        assert field in line and "other settings" in line, line
    assert snapshot(workdir) == before  # nothing rewritten, config.json included


def test_extending_a_run_is_not_a_mismatch(trained):
    config, workdir = trained
    assert workdirs.claim(str(workdir), "train_agent", ml_collections.ConfigDict(
        dict(config.to_dict(), agent=dict(config.agent.to_dict(), episodes=5, checkpoint_every=3))))


def test_a_setting_added_later_resumes_at_its_default_only(trained, tmp_path):
    """A workdir recorded before a field existed (here model.dtype) resumes when the field keeps its default."""
    config, workdir = trained
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    record = json.loads((old / "settings.json").read_text())
    del record["settings"]["model.dtype"]
    (old / "settings.json").write_text(json.dumps(record))
    assert workdirs.check(str(old), "train_agent", config) == record
    bf16 = ml_collections.ConfigDict(config.to_dict())
    bf16.model.dtype = "bfloat16"
    with pytest.raises(workdirs.WorkdirError, match=r"model\.dtype \(\"float32\" -> \"bfloat16\"\)"):
        workdirs.check(str(old), "train_agent", bf16)


def test_other_modes_refuse_the_workdir_and_rejected_runs_write_nothing(trained, capsys):
    config, workdir = trained
    before = snapshot(workdir)
    apply_config = ml_collections.ConfigDict(dict(config.to_dict(), agent_checkpoint=str(workdir / "checkpoints")))
    assert "holds train_agent results" in exits(capsys, "apply", apply_config, workdir)
    assert "holds train_agent results" in exits(capsys, "train_target", config, workdir)
    bad = ml_collections.ConfigDict(config.to_dict())
    bad.agent.validation_prob = 1.5
    assert "config.agent.validation_prob" in exits(capsys, "train_agent", bad, workdir)
    assert snapshot(workdir) == before


def listing(workdir) -> dict:
    """Every file and folder under ``workdir`` (itself included) with its mtime and size."""
    out = {}
    for root, dirs, files in os.walk(workdir):
        for name in ["", *dirs, *files]:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[os.path.relpath(path, workdir)] = (st.st_mtime_ns, st.st_size)
    return out


@contextlib.contextmanager
def workdir_log(workdir):
    """The command line's log file handler (``runtime.setup_logging``) on ``workdir``, INFO records on."""
    root = logging.getLogger()
    handler, level = runtime.WorkdirLogHandler(str(workdir)), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def test_a_rejected_run_leaves_the_workdir_as_it_was(trained, tmp_path, capsys):
    """No lock file, settings.json, config.json or log.txt is created or touched by a refused run."""
    config, source = trained
    workdir = tmp_path / "w"
    shutil.copytree(source, workdir)
    (workdir / "log.txt").write_text("the first run's log\n")
    other_seed = ml_collections.ConfigDict(dict(config.to_dict(), seed=1))
    bad_value = ml_collections.ConfigDict(config.to_dict())
    bad_value.agent.validation_prob = 1.5
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "taken": time.time(), "started": "now"}
    with workdir_log(workdir):
        for mode, cfg, expected in (("train_agent", bad_value, "config.agent.validation_prob"),
                                    ("train_agent", other_seed, "other settings: seed (0 -> 1)"),
                                    ("train_target", config, "holds train_agent results"),
                                    ("gns", config, "holds train_agent results")):
            before = listing(workdir)
            assert expected in exits(capsys, mode, cfg, workdir)
            assert listing(workdir) == before, mode
        (workdir / workdirs.LOCK_NAME).write_text(json.dumps(holder))  # a live run holds it
        before = listing(workdir)
        assert "workdir in use by pid" in exits(capsys, "train_agent", config, workdir)
        assert listing(workdir) == before
    with workdir_log(tmp_path / "new"):  # a refused run into a new workdir does not create it
        assert "config.agent.validation_prob" in exits(capsys, "train_agent", bad_value, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_refused_compare_rerun_leaves_the_workdir_as_it_was(tiny_fashion_mnist, cache_dir, tmp_path, capsys):
    """compare's own refusals (another agent selection, other agent settings) come before config.json is written."""
    config = tiny(tiny_fashion_mnist, cache_dir)
    with config.unlocked():
        config.compare = compare_config("images")
    config.compare.methods, config.compare.num_seeds = ("gns",), 1
    workdir = tmp_path / "w"
    workdirs.claim(str(workdir), "compare", config)  # the workdir of a compare run that selected best_val
    workdirs.write_json(str(workdir / "config.json"), {})
    workdirs.write_json(str(workdir / "experiment.json"), cmp._experiment_settings(config))
    workdirs.write_json(str(workdir / "tune" / "gns" / "selected.json"), {"agent_selection": "best_val"})
    workdirs.claim(str(workdir / "agents" / "gns"), "train_agent", cmp.agent_method_config("gns", config))
    (workdir / "agents" / "gns" / "checkpoints").mkdir()
    before = listing(workdir)
    assert "agent_selection='best_val'" in exits(capsys, "compare", config, workdir)
    assert listing(workdir) == before
    config.compare.agent_selection, config.compare.agent_seed = "best_val", 1
    assert "other settings: seed (0 -> 1)" in exits(capsys, "compare", config, workdir)
    assert listing(workdir) == before


def test_results_name_the_data_actually_read(trained, tiny_fashion_mnist):
    _, workdir = trained
    results = json.loads((workdir / "results.json").read_text())
    source = results["data_source"]
    assert set(source) == {"train", "val", "test"}
    for split in source.values():
        assert split["kind"] == "local" and split["path"] == tiny_fashion_mnist and len(split["sha256"]) == 64
    assert source["train"]["sha256"] != source["test"]["sha256"]


# ---- 4. data provenance ----------------------------------------------------------------------------------------
def test_an_unusable_data_dir_is_an_error_not_a_fallback(tiny_fashion_mnist, cache_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tiny(tiny_fashion_mnist, cache_dir)
    config.data.data_dir = str(empty)  # source 'auto': Debian's copy would be found, but data_dir was asked for
    line = exits(capsys, "train_target", config, tmp_path / "w")
    assert str(empty) in line and "nothing (it is empty)" in line
    (empty / "notes.txt").write_text("x")
    assert "1 entries: notes.txt" in exits(capsys, "train_target", config, tmp_path / "w2")


def test_empty_glue_tsv_is_one_line(tmp_path):
    from gns_jax.data.glue import TASKS, canonical_task_name, read_tsv_split

    (tmp_path / "train.tsv").write_text("")
    with pytest.raises(ValueError, match="train.tsv: the file is empty"):
        read_tsv_split(TASKS[canonical_task_name("rte")], str(tmp_path / "train.tsv"))
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(ValueError, match="dev.tsv: no labeled rows"):
        read_tsv_split(TASKS[canonical_task_name("rte")], str(tmp_path / "dev.tsv"))


# ---- 5. non-finite numbers ---------------------------------------------------------------------------------------
def test_results_json_is_strict_with_null_and_flags(tmp_path):
    path = str(tmp_path / "r.json")
    workdirs.write_json(path, {"val": float("nan"), "runs": [{"loss": float("inf")}, {"loss": 1.0}],
                               "x": np.float32(2.0)})

    def refuse(token):
        raise ValueError(token)

    data = json.loads(open(path).read(), parse_constant=refuse)
    assert data["val"] is None and data["runs"][0]["loss"] is None and data["x"] == 2.0
    assert data["non_finite"] == ["val", "runs[0].loss"]


def test_a_diverged_target_writes_strict_json(tiny_fashion_mnist, cache_dir, tmp_path):
    config = tiny(tiny_fashion_mnist, cache_dir)
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 1e30  # the weights overflow in the first steps
    cli.run("train_target", config, str(tmp_path))
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    results = json.loads(text)
    assert results["diverged"] is True and results["non_finite"]
    assert results["data_source"]["test"]["sha256"]


def strict(path) -> dict:
    """A results file read by a strict JSON parser (no NaN, Infinity or -Infinity tokens)."""

    def refuse(token):
        raise ValueError(f"{path}: bare {token}")

    with open(path) as f:
        return json.loads(f.read(), parse_constant=refuse)


def test_diverged_tuning_points_write_strict_json_and_are_never_selected(tiny_fashion_mnist, cache_dir, tmp_path):
    from gns_jax.report import LABELS, write_report
    from gns_jax.targets.build import build_task

    config = tiny(tiny_fashion_mnist, cache_dir)
    config.optimizer.name = "sgd"
    with config.unlocked():
        config.compare = compare_config("images")
    cc = config.compare
    cc.methods, cc.num_seeds = ("constant", "cmaes"), 1
    cc.space.alpha_max = (1e30, 1e-2)  # the first grid point overflows the weights in its first steps
    cc.cma.alpha_max, cc.cma.eta2 = (1e29, 1e30), ()  # every CMA-ES evaluation (and its selection) diverges
    cc.cma.evaluations, cc.cma.popsize = 2, 2
    workdir = str(tmp_path)
    task = build_task(config)
    cmp.compare(config, workdir, task=task)
    records = {os.path.relpath(os.path.join(root, name), workdir): strict(os.path.join(root, name))
               for root, _, names in os.walk(workdir) for name in names if name.endswith(".json")}
    diverged = [path for path, r in records.items() if r.get("diverged")]
    assert len(diverged) == 4  # the 1e30 grid point, both CMA-ES evaluations, the cmaes run of seed 0
    for path in diverged:
        assert None in records[path]["train_loss_trajectory"] and records[path]["non_finite"], path
    assert records[os.path.join("tune", "constant", "selected.json")]["hparams"] == {"alpha": 1e-2}
    assert not records[os.path.join("runs", "constant", "seed_0.json")]["diverged"]

    # Resumed from the records (nulls read back, nothing evaluated again), the searches select alike.
    def never(hp):
        raise AssertionError(f"{hp} was evaluated again")

    best, results = cmp.grid_search(cmp.grid_points("constant", config), never, os.path.join(workdir, "tune",
                                                                                              "constant"))
    assert results[best]["hparams"] == {"alpha": 1e-2} and results[0]["val_loss"] is None
    _, results = cmp.cma_search(cmp.Box.from_config(cc.cma), never, evaluations=2, seed=0, popsize=2,
                                cache_dir=os.path.join(workdir, "tune", "cmaes"))
    assert all(r["diverged"] for r in results)
    assert cmp.select_best([{"val_metric": None}, {"val_metric": 0.2}, {"val_metric": float("nan")}]) == 1

    out = write_report(workdir, methods=("constant", "cmaes"))
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in open(out["md"]).read().splitlines()
            if line.startswith("| ")}
    assert rows[LABELS["cmaes"]].endswith("(1 diverged)") and "diverged" not in rows[LABELS["constant"]]


def test_a_non_finite_ppo_update_stops_before_the_checkpoint(tiny_fashion_mnist, cache_dir, tmp_path, capsys,
                                                             monkeypatch):
    from gns_jax.agent import Agent

    update = Agent.ppo_update

    def poisoned(self, *args, **kwargs):
        state, metrics = update(self, *args, **kwargs)
        return state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params)), metrics

    monkeypatch.setattr(Agent, "ppo_update", poisoned)
    config = tiny(tiny_fashion_mnist, cache_dir, episodes=2)
    line = exits(capsys, "train_agent", config, tmp_path)
    assert "PPO update of episode 1 is not finite" in line and line.endswith(os.path.join("checkpoints", "0"))
    assert checkpoints.all_steps(str(tmp_path / "checkpoints")) == [0]  # the last good agent stays


def test_apply_refuses_a_non_finite_agent(trained, tmp_path, capsys):
    config, workdir = trained
    like = checkpoints.restore(str(workdir / "checkpoints"), _like(config), step=1)[0]
    nan_state = like.replace(ppo=like.ppo.replace(params=jax.tree.map(lambda p: p * jnp.nan, like.ppo.params)))
    checkpoints.save(str(tmp_path / "nan"), 1, nan_state, {"episodes": []})
    apply_config = ml_collections.ConfigDict(dict(config.to_dict(), agent_checkpoint=str(tmp_path / "nan" / "1")))
    assert "non-finite parameters" in exits(capsys, "apply", apply_config, tmp_path / "apply")


@pytest.mark.parametrize("part", ["state", "history"])
def test_a_corrupt_checkpoint_is_one_line_with_a_reason(trained, tmp_path, capsys, part):
    config, source = trained
    workdir = tmp_path / "w"
    shutil.copytree(source, workdir)
    for root, _, names in os.walk(workdir / "checkpoints" / "1" / part):
        for name in names:
            if name != "commit_success.txt":
                (Path(root) / name).write_bytes(b"\x00garbage{")
    more = ml_collections.ConfigDict(dict(config.to_dict(), agent=dict(config.agent.to_dict(), episodes=2)))
    line = exits(capsys, "train_agent", more, workdir)
    assert f"cannot restore checkpoint {workdir / 'checkpoints' / '1'}: " in line, line
    why = line.split(": ", 3)[-1]  # after 'gns_jax: error: cannot restore checkpoint PATH: '
    assert " at 0x" not in why and not why.endswith("Exception") and len(why) > 10, line


def _like(config):
    from gns_jax.agent import Agent
    from gns_jax.targets.build import build_task
    from gns_jax.train import initial_agent_state

    return initial_agent_state(Agent(build_task(config), agent_settings(config)), training_options(config))


def test_divergence_before_the_first_action_is_penalized():
    from gns_jax.env import StepInfo, episode_rewards

    n = 3
    nan = jnp.full((n,), jnp.nan)
    infos = StepInfo(learning_rate=jnp.ones(n), mean_loss=nan, metric=nan, validated=jnp.zeros(n, bool),
                     diverged=jnp.zeros(n, bool), done=jnp.zeros(n, bool))
    reset = StepInfo(learning_rate=jnp.ones(()), mean_loss=jnp.nan, metric=jnp.asarray(jnp.nan),
                     validated=jnp.asarray(True), diverged=jnp.asarray(True), done=jnp.asarray(True))
    rewards, valid = episode_rewards(infos, reset, -2.0)
    np.testing.assert_array_equal(np.asarray(valid), [True, False, False])
    np.testing.assert_array_equal(np.asarray(rewards), [-2.0, 0.0, 0.0])


def test_a_target_diverging_before_the_first_action_is_penalized_counted_and_shown(tiny_fashion_mnist, cache_dir,
                                                                                    tmp_path, capsys):
    from gns_jax.train import train_agent

    # Every initial LR is 1e30: SGD overflows the weights in the first K steps, before the agent acts.
    config = tiny(tiny_fashion_mnist, cache_dir, prior_lr_min=1e30, prior_lr_max=1e30, lr_max=1e31,
                  divergence_penalty=-2.0)
    config.optimizer.name = "sgd"
    episode = train_agent(config, str(tmp_path), progress=True)["results"]["episodes"][0]
    envs = int(config.agent.num_envs)
    assert episode["return"] == pytest.approx(-2.0) and episode["diverged"] == envs
    lines = [line for line in capsys.readouterr().out.replace("\r", "\n").splitlines() if "episode 1:" in line]
    assert len(lines) == 1 and lines[0].endswith(f"diverged {envs}/{envs}"), lines


# ---- 1 + 6. concurrent runs and Ctrl-C (subprocesses) ------------------------------------------------------------
def config_file(tmp_path, data_dir, cache_dir, episodes) -> str:
    path = tmp_path / "tiny_config.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
        "from conftest import tiny_mlp_config\n\n\n"
        "def get_config():\n"
        f"    return tiny_mlp_config({data_dir!r}, {cache_dir!r}, steps=30, decision_interval=10, hidden=(8,),\n"
        f"                           episodes={episodes}, probe=False)\n")
    return str(path)


def test_second_run_is_refused_and_ctrl_c_exits_130_and_resumes(tiny_fashion_mnist, cache_dir, tmp_path):
    workdir = tmp_path / "w"
    config = config_file(tmp_path, tiny_fashion_mnist, cache_dir, episodes=10_000)
    first = subprocess.Popen([sys.executable, "-m", "gns_jax.main", f"--config={config}", f"--workdir={workdir}",
                              "--mode=train_agent"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 900
        while not (workdir / "checkpoints" / "1").is_dir():  # one episode finished and saved
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.5)
        second = run_cli(f"--config={config}", f"--workdir={workdir}", "--mode=train_agent",
                         "--config.seed=1", "--config.model.hidden=(16,)")
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"gns_jax: error: workdir in use by pid {first.pid} on {socket.gethostname()}"), lines
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130
    ours = [line[line.index("gns_jax:"):] for line in err.replace("\r", "\n").splitlines() if "gns_jax:" in line]
    assert "Traceback" not in err
    done = checkpoints.latest_step(str(workdir / "checkpoints"))
    message = f"gns_jax: interrupted after episode {done}; rerun the same command to resume"
    assert done >= 1 and ours == [message]
    # A line of its own: the progress bar ended its line before the message and is not drawn again after it.
    lines = err.split("\n")
    assert message in lines, [line for line in lines if "gns_jax:" in line]
    assert not [line for line in lines[lines.index(message):] if "%|" in line]
    assert not (workdir / workdirs.LOCK_NAME).exists()
    episodes = (workdir / "logs" / "episodes.csv").read_text().splitlines()
    assert episodes[0].startswith("step,") and sum(line.startswith("step,") for line in episodes) == 1
