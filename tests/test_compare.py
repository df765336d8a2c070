"""The comparison harness: every method runs, selection is on validation, CMA-ES is seeded, compare resumes, report."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, SHARED_GLUE, tiny_mlp_config

from gns_jax import compare as cmp
from gns_jax.agent import Agent
from gns_jax.apply import AgentController
from gns_jax.config import ConfigError, base_config
from gns_jax.report import LABELS, describe_setting, write_report
from gns_jax.runtime import cpu_model, describe_machine
from gns_jax.settings import agent_settings, deploy_options, training_options
from gns_jax.targets.build import build_task

T, K = 40, 10


def tiny_config(data_dir, cache_dir):
    config = tiny_mlp_config(data_dir, cache_dir, steps=T, decision_interval=K, episodes=1, deploy_candidates=2,
                             deploy_pre_decisions=1)
    config.compare = cmp.compare_config()
    cc = config.compare
    cc.num_seeds = 2
    cc.space.alpha_max = (1e-2, 1e-3)
    cc.space.mu = (0.1,)
    cc.space.eta2 = (1.0,)
    cc.space.power = (1.0,)
    cc.hd.alpha0 = (1e-2, 1e-3)
    cc.hd.beta = (1e-8,)
    cc.cma.evaluations = 3
    cc.cma.popsize = 2
    cc.lr_free.schedule_free_adamw = (2.5e-3,)
    cc.lr_free.prodigy = (1.0,)
    cc.lr_free.dadapt_adamw = (1.0,)
    return config


@pytest.fixture(scope="module")
def setup(tiny_fashion_mnist, cache_dir):
    config = tiny_config(tiny_fashion_mnist, cache_dir)
    return config, build_task(config)


def eq7_numpy(kind, t, total, alpha=None, alpha_max=None, mu=0.0, eta1=0.0, eta2=1.0, power=1.0):
    """Eq. 7 by hand (constant: ``alpha``; the decayed kinds stay at alpha_min from T_decay on)."""
    if kind == "constant":
        return alpha
    a_min, t_warm, t_decay = mu * alpha_max, eta1 * total, eta2 * total
    if t < t_warm:
        return t / t_warm * alpha_max
    if t >= t_decay:
        return a_min
    f = (t - t_warm) / (t_decay - t_warm)
    if kind == "polynomial":
        return (alpha_max - a_min) * (1 - f) ** power + a_min
    return 0.5 * (alpha_max - a_min) * (1 + np.cos(np.pi * f)) + a_min


@pytest.mark.parametrize("name", cmp.METHODS)
def test_every_method_runs(setup, name):
    """Like optax.contrib's common test: each method, a few steps on tiny data, gives a metric and an LR trajectory."""
    config, task = setup
    if name in cmp.AGENT_METHODS:
        cfg = cmp.agent_method_config(name, config)
        agent = Agent(task, agent_settings(cfg))
        # The policy path (an untrained agent from a fixed initial LR); training + deployment: the end-to-end test.
        controller = AgentController(agent, agent.init_params(jax.random.key(0)), deploy_options(cfg), initial_lr=1e-3,
                                     name=name)
    elif name == "cmaes":
        controller = cmp.controller_for(name, cmp.Box.from_config(config.compare.cma).hparams([0.5] * 3), config)
    else:
        hparams = cmp.grid_points(name, config)[0]
        controller = cmp.controller_for(name, hparams, config)
    result = controller.run(task, T, K, seed=0)
    assert np.isfinite(result["val_metric"]) and np.isfinite(result["test_metric"])
    assert 0.0 <= result["test_metric"] <= 1.0
    lrs = np.asarray(result["lr_trajectory"])
    assert lrs.shape == (T // K,) and np.all(np.isfinite(lrs)) and np.all(lrs > 0)
    assert result["steps"] == T and not result["diverged"]
    if name == "cmaes":
        hparams = cmp.Box.from_config(config.compare.cma).hparams([0.5] * 3)
    if name in ("constant", "polynomial", "cosine", "cmaes"):  # the schedule at the decision points k K
        kind = "cosine" if name == "cmaes" else name
        expected = [eq7_numpy(kind, k * K, T, **hparams) for k in range(T // K)]
        np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    if name in cmp.HD_METHODS:
        assert lrs[0] == pytest.approx(hparams["alpha0"])
    if name in cmp.AGENT_METHODS:
        assert lrs[0] == pytest.approx(1e-3)
        ratios = lrs[1:] / lrs[:-1]
        assert np.all((ratios >= 0.9 - 1e-6) & (ratios <= 1.1 + 1e-6))  # alpha (1 + a), |a| <= 0.1 (Eq. 4)


def test_search_spaces_of_the_paper():
    config = base_config()
    config.steps = 1000
    config.compare = cmp.compare_config()
    assert len(cmp.grid_points("constant", config)) == 3
    assert len(cmp.grid_points("polynomial", config)) == 36  # Table 5: 3 x 3 x 2 x 2
    assert len(cmp.grid_points("cosine", config)) == 18  # p does not apply
    assert len(cmp.grid_points("adam_hd", config)) == 9  # App. B.4: 3 alpha_0 x 3 beta
    assert cmp.grid_points("mechanize", config) == [{}]
    glue = cmp.compare_config("glue")
    with config.unlocked():
        config.compare = glue
    assert len(cmp.grid_points("polynomial", config)) == 20  # Table 6: 2 x 5 x 2
    box = cmp.Box.from_config(glue.cma)
    assert [d[0] for d in box.dims] == ["alpha_max", "eta1"]
    hp = box.hparams([0.0, 1.0])
    assert hp["alpha_max"] == pytest.approx(1e-5) and hp["eta1"] == pytest.approx(0.1) and hp["eta2"] == 1.0
    images = cmp.Box.from_config(cmp.compare_config().cma).hparams([0.5, 0.5, 0.5])
    assert images["alpha_max"] == pytest.approx(1e-2) and images["mu"] == pytest.approx(1e-2)  # log-uniform centre
    assert images["eta2"] == pytest.approx(0.75)


def test_agent_method_settings(setup):
    config, _ = setup
    settings = {m: cmp.agent_method_config(m, config).agent for m in cmp.AGENT_METHODS}
    assert (settings["gns"].encoder, settings["gns"].validation_prob) == ("gcn", 0.2)
    assert (settings["frs"].encoder, settings["frs"].validation_prob) == ("gcn", 1.0)
    assert (settings["css"].encoder, settings["css"].validation_prob) == ("css", 0.2)
    assert (settings["srls"].encoder, settings["srls"].validation_prob) == ("srls", 1.0)
    assert config.agent.encoder == "gcn" and config.agent.validation_prob == 0.2  # the original is untouched


def test_grid_search_selects_on_validation_not_test(tmp_path):
    # The point best on validation is the worst on test: the search must pick it anyway.
    scores = {0.1: (0.70, 0.95), 0.01: (0.90, 0.60), 0.001: (0.80, 0.80)}
    points = [{"alpha": a} for a in scores]
    evaluate = lambda hp: {"val_metric": scores[hp["alpha"]][0], "test_metric": scores[hp["alpha"]][1],
                           "wall_seconds": 0.0}
    best, results = cmp.grid_search(points, evaluate, str(tmp_path))
    assert points[best] == {"alpha": 0.01}
    best_low, _ = cmp.grid_search(points, evaluate, str(tmp_path / "low"), higher_is_better=False)
    assert points[best_low] == {"alpha": 0.1}
    # Diverged and NaN points never win.
    assert cmp.select_best([{"val_metric": 0.9, "diverged": True}, {"val_metric": float("nan")},
                            {"val_metric": 0.1}]) == 2


def test_cma_es_is_seeded_deterministic_and_resumable(tmp_path):
    box = cmp.Box.from_config(cmp.compare_config().cma)
    calls = []

    def evaluate(hp):  # a smooth validation score, best at alpha_max = 1e-2, eta2 = 0.8
        calls.append(hp)
        val = -(np.log10(hp["alpha_max"]) + 2) ** 2 - (hp["eta2"] - 0.8) ** 2
        return {"val_metric": float(val), "test_metric": 0.0, "wall_seconds": 0.0}

    kw = dict(evaluations=7, seed=3, popsize=3)
    best, a = cmp.cma_search(box, evaluate, cache_dir=str(tmp_path / "a"), **kw)
    _, b = cmp.cma_search(box, evaluate, cache_dir=str(tmp_path / "b"), **kw)
    _, c = cmp.cma_search(box, evaluate, cache_dir=str(tmp_path / "c"), **dict(kw, seed=4))
    assert len(a) == 7 and len(calls) == 21  # exactly the budget (the last generation is cut short)
    assert [r["x"] for r in a] == [r["x"] for r in b]
    assert [r["x"] for r in a] != [r["x"] for r in c]
    assert a[best]["val_metric"] == max(r["val_metric"] for r in a)
    for r in a:
        assert 1e-3 <= r["hparams"]["alpha_max"] <= 1e-1 and 0.5 <= r["hparams"]["eta2"] <= 1.0
    calls.clear()
    _, again = cmp.cma_search(box, evaluate, cache_dir=str(tmp_path / "a"), **kw)
    assert calls == [] and [r["x"] for r in again] == [r["x"] for r in a]  # resumed entirely from the cache


def count_files(root, pattern="seed_"):
    return sum(name.startswith(pattern) for _, _, names in os.walk(root) for name in names)


def test_compare_end_to_end_resumes_and_reports(setup, tmp_path):
    config, task = setup
    methods = ("constant", "cmaes", "adam_hd", "schedule_free_adamw", "gns")
    with config.unlocked():
        config.compare.methods = methods
    workdir = str(tmp_path)
    first = cmp.compare(config, workdir, task=task)["counts"]
    assert first == {"tuning_runs": 2 + 3 + 2 + 1, "runs": 10, "skipped_runs": 0, "agent_trainings": 1}
    assert count_files(os.path.join(workdir, "runs")) == 10
    for m in methods:
        for s in (0, 1):
            run = json.loads(open(cmp.seed_path(workdir, m, s)).read())
            assert run["method"] == m and run["seed"] == s and np.isfinite(run["test_metric"])
            assert len(run["lr_trajectory"]) == T // K
            # where it ran: on a CPU the core count changes the numbers (docs/results/proxy_fashion_mnist_mlp.md)
            assert run["machine"]["backend"] == jax.default_backend()
            assert run["machine"]["cpu_cores"] == len(os.sched_getaffinity(0))
            assert run["machine"]["cpu_model"] == cpu_model() and cpu_model()
    # The selection is the validation argmax over the tuning runs.
    tuned = [json.loads(open(os.path.join(workdir, "tune", "constant", f)).read())
             for f in os.listdir(os.path.join(workdir, "tune", "constant")) if f != "selected.json"]
    selected = json.loads(open(os.path.join(workdir, "tune", "constant", "selected.json")).read())
    assert selected["val_metric"] == max(t["val_metric"] for t in tuned)
    for s in (0, 1):  # deployment picked the initial LR by V(s) (§4.3)
        gns = json.loads(open(cmp.seed_path(workdir, "gns", s)).read())
        best = int(np.argmax(gns["candidate_values"]))
        assert gns["initial_lr"] == pytest.approx(gns["candidate_lrs"][best], rel=1e-6)
        assert gns["lr_trajectory"][0] == pytest.approx(gns["initial_lr"], rel=1e-6)

    # A second call finds everything done; after losing one run it redoes exactly that run, without tuning.
    again = cmp.compare(config, workdir, task=task)["counts"]
    assert again == {"tuning_runs": 0, "runs": 0, "skipped_runs": 10, "agent_trainings": 0}
    os.remove(cmp.seed_path(workdir, "adam_hd", 1))
    third = cmp.compare(config, workdir, task=task)["counts"]
    assert third == {"tuning_runs": 0, "runs": 1, "skipped_runs": 9, "agent_trainings": 0}

    out = write_report(workdir, methods=methods, title="tiny", reference="table20")
    text = open(out["md"]).read()
    for m in methods:
        assert LABELS[m] in text
    assert "GNS (" in text and "best baseline" in text and "paper (Table 20)" in text
    assert f"Runs by machine: {describe_machine(run['machine'])}: {LABELS['constant']} (2), " in text
    rows = list(csv.DictReader(open(out["csv"])))
    assert [r["method"] for r in rows] == list(methods) and all(r["seeds"] == "2" for r in rows)
    for r in rows:  # the table's numbers are those of the per-seed files (mean, sample std)
        tests = [json.loads(open(cmp.seed_path(workdir, r["method"], s)).read())["test_metric"] for s in (0, 1)]
        assert float(r["test_mean"]) == pytest.approx(np.mean(tests), abs=1e-9)
        assert float(r["test_std"]) == pytest.approx(abs(tests[0] - tests[1]) / np.sqrt(2), abs=1e-9)
        assert f"{np.mean(tests) * 100:.2f} ± {abs(tests[0] - tests[1]) / np.sqrt(2) * 100:.2f}" in text
    assert os.path.getsize(out["png"]) > 5000


def write_seed_runs(workdir, method, test_metrics, metric_name="accuracy", machines=()):
    for s, m in enumerate(test_metrics):
        cmp.write_json(cmp.seed_path(workdir, method, s), {
            "method": method, "seed": s, "test_metric": m, "val_metric": m - 0.01, "wall_seconds": 1.0,
            "lr_trajectory": [1e-3, 1e-3], "decision_interval": 10, "steps": 20, "hparams": {"alpha": 1e-3},
            "metric_name": metric_name, "diverged": False, **({"machine": machines[s]} if machines else {})})


def test_report_says_which_machines_the_runs_used(tmp_path):
    """Runs on one core and on two, or on two CPU models, are told apart (XLA:CPU's results depend on both); runs
    recorded before the CPU model and runs without a record are counted as such."""
    one = {"backend": "cpu", "device_kind": "cpu", "devices": 1, "cpu_model": "AMD EPYC", "cpu_cores": 1,
           "jax": jax.__version__}
    two = dict(one, cpu_cores=2)
    intel = dict(one, cpu_model="Intel(R) Xeon(R) CPU @ 2.20GHz")
    unknown_model = {k: v for k, v in one.items() if k != "cpu_model"}
    gpu = {"backend": "gpu", "device_kind": "NVIDIA H200", "devices": 1, "cpu_cores": 16, "jax": jax.__version__}
    workdir = str(tmp_path)
    write_seed_runs(workdir, "cosine", (0.893, 0.891, 0.895), machines=(one, one, two))
    write_seed_runs(workdir, "gns", (0.89, 0.89, 0.89, 0.89), machines=(gpu, one, intel, unknown_model))
    write_seed_runs(workdir, "constant", (0.88,))
    text = open(write_report(workdir, methods=("cosine", "gns", "constant"))["md"]).read()
    assert (f"Runs by machine: cpu (AMD EPYC), 1 core: {LABELS['cosine']} (2), {LABELS['gns']} (1); "
            f"cpu (AMD EPYC), 2 cores: {LABELS['cosine']} (1); gpu (NVIDIA H200) x 1, 16 cores: {LABELS['gns']} (1); "
            f"cpu (Intel(R) Xeon(R) CPU @ 2.20GHz), 1 core: {LABELS['gns']} (1); cpu, 1 core: {LABELS['gns']} (1); "
            f"not recorded (older results): {LABELS['constant']} (1).") in text


@pytest.mark.parametrize("gns,verdict", [
    ((0.897, 0.899, 0.898), "GNS (89.80 ± 0.10) beats the best baseline, {best} (89.30 ± 0.20): difference +0.50."),
    ((0.894, 0.892, 0.896), "GNS (89.40 ± 0.20) is ahead of, but within one standard deviation of, the best "
                            "baseline, {best} (89.30 ± 0.20): difference +0.10."),
    ((0.880, 0.880, 0.880), "GNS (88.00 ± 0.00) does not beat the best baseline, {best} (89.30 ± 0.20): "
                            "difference -1.30."),
])
def test_report_numbers_from_per_seed_files(tmp_path, gns, verdict):
    """Mean ± sample std (ddof = 1) in percent and the verdict, computed by hand from the per-seed JSON files:
    constant 88.6/89.0/88.8 -> 88.80 ± 0.20; cosine 89.3/89.1/89.5 -> 89.30 ± 0.20 (the best baseline)."""
    workdir = str(tmp_path)
    write_seed_runs(workdir, "constant", (0.886, 0.890, 0.888))
    write_seed_runs(workdir, "cosine", (0.893, 0.891, 0.895))
    write_seed_runs(workdir, "gns", gns)
    text = open(write_report(workdir, methods=("constant", "cosine", "gns"))["md"]).read()
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in text.splitlines() if line.startswith("| ")}
    assert rows[LABELS["constant"]] == "88.80 ± 0.20" and rows[LABELS["cosine"]] == "89.30 ± 0.20"
    assert verdict.format(best=LABELS["cosine"]) in text


def test_workdir_of_another_experiment_is_refused(setup, tmp_path):
    config, task = setup
    with config.unlocked():
        config.compare.methods = ()
    cmp.compare(config, str(tmp_path), task=task)
    config.steps = 2 * T
    try:
        with pytest.raises(ConfigError, match="steps"):
            cmp.compare(config, str(tmp_path), task=task)
    finally:
        config.steps = T
    with config.unlocked():
        config.compare.methods = ("nope",)
    with pytest.raises(ConfigError, match="nope"):
        cmp.compare(config, str(tmp_path), task=task)


def test_an_experiment_recorded_before_a_field_existed_resumes_at_its_default(setup, tmp_path):
    """experiment.json written before config.model.dtype existed: the same experiment at the default, another
    experiment at bfloat16."""
    config, task = setup
    with config.unlocked():
        config.compare.methods = ()
    cmp.compare(config, str(tmp_path), task=task)
    path = tmp_path / "experiment.json"
    recorded = json.loads(path.read_text())
    del recorded["model"]["dtype"]
    path.write_text(json.dumps(recorded))
    cmp.check_workdir(config, str(tmp_path))
    config.model.dtype = "bfloat16"
    try:
        with pytest.raises(ConfigError, match="another experiment.*model"):
            cmp.check_workdir(config, str(tmp_path))
    finally:
        config.model.dtype = "float32"


def load_config(name="compare_fashion_mnist_mlp"):
    from ml_collections import config_flags

    path = os.path.join(REPO, "configs", f"{name}.py")
    return config_flags.config_flags._LoadConfigModule(name, path).get_config()


def test_minilm_sst2_config():
    config = load_config("compare_glue_sst2_minilm")
    assert config.data.name == "glue/sst2" and config.model.name == "transformer" and config.model.checkpoint == ""
    assert config.optimizer.name == "adamw" and config.optimizer.weight_decay == 0.1 and config.batch_size == 32
    assert tuple(config.compare.methods) == ("constant", "cosine", "gns")
    assert config.steps % config.decision_interval == 0
    # The grid stays inside the agent's initial-LR prior, so GNS and the baselines search the same range.
    assert all(config.agent.prior_lr_min <= a <= config.agent.prior_lr_max for a in config.compare.space.alpha_max)
    assert os.path.normpath(os.path.join(REPO, config.data.data_dir)) == SHARED_GLUE  # run from the repo root


def test_paper_config():
    config = load_config()
    assert (config.steps, config.decision_interval, config.batch_size) == (78_200, 500, 128)
    assert config.model.name == "mlp" and tuple(config.model.hidden) == (128, 128)
    assert config.optimizer.name == "adam" and config.agent.episodes == 30 and config.agent.validation_prob == 0.2
    assert config.compare.num_seeds == 5 and tuple(config.compare.methods) == cmp.METHODS
    assert config.compare.cma.evaluations == 50


def test_cli_compare_and_report(tiny_fashion_mnist, cache_dir, tmp_path):
    args = [f"--config={os.path.join('configs', 'compare_fashion_mnist_mlp.py')}", f"--workdir={tmp_path}",
            "--config.data.source=local", f"--config.data.data_dir={tiny_fashion_mnist}",
            f"--config.data.cache_dir={cache_dir}", "--config.data.val_size=100", "--config.model.hidden=(8,)",
            "--config.steps=20", "--config.decision_interval=10", "--config.batch_size=32",
            "--config.compare.methods=('constant',)", "--config.compare.num_seeds=1",
            "--config.compare.space.alpha_max=(0.001,)"]
    for mode in ("compare", "report"):
        proc = subprocess.run([sys.executable, "-m", "gns_jax.main", *args, f"--mode={mode}"], capture_output=True,
                              text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((tmp_path / "runs" / "constant" / "seed_0.json").read_text())
    assert run["hparams"] == {"alpha": 0.001} and run["steps"] == 20
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.png").exists()


def test_report_setting_names_only_the_methods_that_run():
    from gns_jax.report import describe_setting

    config = load_config()
    full = describe_setting(config)
    assert "Agents: 30 training episodes" in full and "N = T // K = 156" in full
    assert "Eq. 7 grid" in full and "HD: alpha_0" in full and "CMA-ES: 50 evaluations" in full
    assert "from the prior's centre, initial LR 0.001 (no §4.3 search)" in full  # the default preset
    with config.unlocked():
        config.agent.deploy_candidates = 5
    assert "with 5 initial-LR candidates (§4.3)" in describe_setting(config)
    config.compare.methods = ("constant",)
    only_constant = describe_setting(config)
    assert "Eq. 7 grid" in only_constant
    assert "Agents:" not in only_constant and "HD:" not in only_constant and "CMA-ES" not in only_constant


def test_best_validation_agent_selection(setup, tmp_path):
    """agent_selection='best_val' deploys the policy of the best-validation episode (checkpoint e = its policy)."""
    import copy

    from gns_jax import checkpoints
    from gns_jax.train import initial_agent_state, train_agent

    config, task = setup
    cfg = copy.deepcopy(config)
    cfg.agent.episodes = 3
    cfg.compare.methods = ("gns",)
    cfg.compare.num_seeds = 1
    cfg.compare.agent_selection = "best_val"
    workdir = str(tmp_path / "best")
    cmp.compare(cfg, workdir, task=task)
    selected = json.loads(open(os.path.join(workdir, "tune", "gns", "selected.json")).read())
    rows = list(csv.DictReader(open(os.path.join(workdir, "agents", "gns", "logs", "episodes.csv"))))
    vals = [float(r["val_metric"]) for r in rows]
    assert len(vals) == 3 and selected["selected_episode"] == int(np.argmax(vals))
    assert selected["agent_selection"] == "best_val"
    assert selected["agent_checkpoint"].endswith(os.path.join("checkpoints", str(selected["selected_episode"])))

    # Every checkpoint is kept, step 0 included; step 0 is the initial agent, the policy that played episode 0.
    agent_dir = os.path.join(workdir, "agents", "gns")
    ckpt_dir = os.path.join(agent_dir, "checkpoints")
    assert checkpoints.all_steps(ckpt_dir) == [0, 1, 2, 3]
    agent_cfg = cmp.agent_method_config("gns", cfg)
    out = train_agent(agent_cfg, agent_dir, task=task, progress=False)  # all done: restores the last episode
    initial = initial_agent_state(out["agent"], training_options(agent_cfg))
    step0, _, _ = checkpoints.restore(ckpt_dir, out["state"], step=0)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(step0.ppo.params),
                                                    jax.tree.leaves(initial.ppo.params), strict=True))
    e, params = cmp.best_validation_agent(out, agent_dir)
    at_e, _, _ = checkpoints.restore(ckpt_dir, out["state"], step=e)
    assert e == selected["selected_episode"]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(at_e.ppo.params),
                                                    strict=True))
    last = jax.tree.leaves(out["state"].ppo.params)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), last, strict=True))  # e < 3

    out_report = write_report(workdir, methods=("gns",), title="best", preamble=describe_setting(cfg))
    text = open(out_report["md"]).read()
    assert f"policy of episode {e} (best validation)" in text and "best-validation training episode" in text

    # A workdir holding one selection refuses the other; a checkpoint that was not kept is a clear error.
    cfg.compare.agent_selection = "last"
    with pytest.raises(ConfigError, match="agent_selection='best_val'"):
        cmp.compare(cfg, workdir, task=task)
    cfg.compare.agent_selection = "newest"
    with pytest.raises(ConfigError, match="unknown compare.agent_selection"):
        cmp.compare(cfg, workdir, task=task)
    fake = {"results": {"episodes": [{"episode": 7, "val_metric": 0.5}]}, "state": out["state"]}
    with pytest.raises(ConfigError, match="keep_checkpoints=0"):
        cmp.best_validation_agent(fake, agent_dir)


@pytest.mark.parametrize("workdir,config_name", [
    ("docs/results/workdirs/fashion_mnist_mlp", "compare_fashion_mnist_mlp"),
    ("experiments/runs/proxy_E60_s1", "proxy_fashion_mnist_mlp")])
def test_committed_workdirs_still_resume(workdir, config_name):
    """The committed experiments stay resumable after fields are added to the config (reads their JSON only)."""
    recorded = json.load(open(os.path.join(REPO, workdir, "config.json")))
    config = load_config(config_name)
    with config.unlocked():
        for section in ("steps", "decision_interval", "batch_size", "data", "model", "optimizer", "agent", "compare"):
            if isinstance(recorded.get(section), dict):
                for key, value in recorded[section].items():
                    if key in config[section] and not isinstance(value, dict):
                        config[section][key] = tuple(value) if isinstance(value, list) else value
            elif section in recorded:
                config[section] = recorded[section]
    cmp.check_workdir(config, os.path.join(REPO, workdir))


def _headroom_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("table20_headroom",
                                                  os.path.join(REPO, "experiments", "table20_headroom.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_headroom_reads_complete_table20_sets_once(tmp_path):
    """experiments/table20_headroom.py: only sets with all 5 seeds at T = 78,200 count, a repeat counts once
    (under the baseline's name), and the committed results hold the tuned cosine it compares with."""
    headroom = _headroom_module()

    def write(folder, tests, steps=78_200):
        os.makedirs(tmp_path / folder, exist_ok=True)
        for seed, test in enumerate(tests):
            with open(tmp_path / folder / f"seed_{seed}.json", "w") as f:
                json.dump({"test_metric": test, "val_metric": test + 0.01, "steps": steps}, f)

    cosine = [0.89, 0.891, 0.892, 0.893, 0.894]
    write("workdirs/fashion_mnist_mlp/runs/cosine", cosine)
    write("proxy_fashion_mnist_mlp/T20_cosine_amd/runs/cosine", cosine)  # the same runs again
    write("proxy_fashion_mnist_mlp/E_s0/full_T78200_K2500", [0.9] * 5)
    write("proxy_fashion_mnist_mlp/E_s1/full_T78200_K2500", [0.9] * 4)  # seed 4 missing
    write("proxy_fashion_mnist_mlp/E_s2/full_T78200_K2500", [0.95] * 5, steps=7_800)  # not Table 20
    sets = headroom.run_sets(str(tmp_path))
    assert sorted(sets) == ["proxy_fashion_mnist_mlp/E_s0", headroom.COSINE]
    assert sets[headroom.COSINE][3] == (0.893, 0.893 + 0.01)
    assert headroom.COSINE in headroom.run_sets()
