"""Trainer: resume equals uninterrupted, EMA, metrics log, and data parallel equals single process."""
import json
import re

import pytest
import torch
import torch.multiprocessing as mp

from tests.training._training_tasks import (TASKS, ddp_worker, ddp_worker_nan_on_rank_1, ddp_worker_rank_seeded,
                                            run_training)
from nde.training import EMA, Trainer, free_port


def _states_equal(a, b):
    for name, net in a.networks.items():
        for (k, x), (_, y) in zip(net.state_dict().items(), b.networks[name].state_dict().items()):
            assert torch.equal(x, y), f"{name}.{k} differs"


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_interrupted_and_resumed_equals_uninterrupted(kind, tmp_path):
    steps = 12
    full_task = TASKS[kind](seed=0)
    full = Trainer(full_task, steps, seed=3, checkpoint_dir=tmp_path / "a", checkpoint_every=5, ema_decay=0.9,
                   log_path=tmp_path / "a.jsonl", log_every=1)
    full.fit()

    first = Trainer(TASKS[kind](seed=0), steps, seed=3, checkpoint_dir=tmp_path / "b", checkpoint_every=5,
                    ema_decay=0.9, log_path=tmp_path / "b.jsonl", log_every=1)
    assert first.fit(stop_after=7) == 7  # "preempted" after step 7; last checkpoint is at 5
    resumed_task = TASKS[kind](seed=123)  # different initial weights: everything must come from the checkpoint
    resumed = Trainer(resumed_task, steps, seed=3, checkpoint_dir=tmp_path / "b", checkpoint_every=5,
                      ema_decay=0.9, log_path=tmp_path / "b.jsonl", log_every=1)
    assert resumed.fit() == steps

    _states_equal(full_task, resumed_task)
    for name in full.ema:
        for x, y in zip(full.ema[name].module.parameters(), resumed.ema[name].module.parameters()):
            assert torch.equal(x, y)
    for name, opt in full_task.optimizers.items():
        a, b = opt.state_dict()["state"], resumed_task.optimizers[name].state_dict()["state"]
        for k in a:
            assert torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"])
    log_a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == list(range(steps))  # no duplicated lines after the resume
    for ra, rb in zip(log_a, log_b):
        assert {k: v for k, v in ra.items() if k != "time_s"} == {k: v for k, v in rb.items() if k != "time_s"}


def test_ema_closed_form():
    net = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.5, warmup=False)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
    # 0 -> 0.5 -> 1.25 -> 2.125
    assert float(ema.module.weight) == pytest.approx(2.125)
    warm = EMA(net, decay=0.99)  # decays 1/10, 2/11, 3/12: the initial weight keeps 1/10 * 2/11 * 3/12
    for value in (1.0, 1.0, 1.0):
        with torch.no_grad():
            net.weight.fill_(value)
        warm.update(net)
    start = 3.0  # the weight when ``warm`` was created
    kept = (1 / 10) * (2 / 11) * (3 / 12)
    assert float(warm.module.weight) == pytest.approx(kept * start + (1 - kept) * 1.0)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_trainer_rejects_bad_arguments():
    task = TASKS["interpolant"]()
    with pytest.raises(ValueError, match="steps"):
        Trainer(task, 0)
    task.ema_networks = ("missing",)
    with pytest.raises(ValueError, match="ema_networks"):
        Trainer(task, 3, ema_decay=0.9)


def test_checkpoint_seed_mismatch_is_refused(tmp_path):
    Trainer(TASKS["interpolant"](), 2, seed=0, checkpoint_dir=tmp_path).fit()
    with pytest.raises(ValueError, match="seed"):
        Trainer(TASKS["interpolant"](), 4, seed=1, checkpoint_dir=tmp_path).fit()


def test_data_parallel_two_processes_equals_single_process(tmp_path):
    """2 gloo ranks, each with half of the global batch, apply the same gradients at every step and
    reach the same final weights as one process on the whole batch (both tasks; f-distill also
    all-reduces its ratio normalisation and updates three networks on two time scales)."""
    steps = 4
    out = tmp_path / "ddp.pt"
    mp.start_processes(ddp_worker, args=(2, free_port(), str(out), steps), nprocs=2, join=True,
                       start_method="fork")
    ddp = torch.load(out, weights_only=False)
    for kind in TASKS:
        ddp_grads, ddp_weights = ddp[kind]
        grads, weights = run_training(kind, steps)
        assert len(ddp_grads) == len(grads) == steps
        for step_ddp, step_single in zip(ddp_grads, grads):
            assert sorted(step_ddp) == sorted(step_single) and step_single
            for name in step_single:
                for g_ddp, g_single in zip(step_ddp[name], step_single[name], strict=True):
                    torch.testing.assert_close(g_ddp, g_single, rtol=1e-10, atol=1e-12)
        for name in weights:
            for k in weights[name]:
                torch.testing.assert_close(ddp_weights[name][k], weights[name][k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs, word", [
    ({"grad_clip": -1.0}, "grad_clip"),   # would turn descent into ascent
    ({"grad_clip": 0.0}, "grad_clip"),    # would zero every gradient
    ({"checkpoint_every": 2.5}, "checkpoint_every"),
    ({"log_every": 0}, "log_every"),
    ({"seed": 0.5}, "seed"),
])
def test_trainer_refuses_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Trainer(TASKS["interpolant"](), 3, **kwargs)
    with pytest.raises(ValueError, match="steps"):
        Trainer(TASKS["interpolant"](), True)


def test_checkpoint_dir_that_is_a_file_is_refused_up_front(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        Trainer(TASKS["interpolant"](), 3, checkpoint_dir=path)


@pytest.mark.parametrize("change, word", [
    ({"ema_decay": 0.999}, "ema_decay"),
    ({"ema_decay": None}, "ema_decay"),
    ({"grad_clip": 1.0}, "grad_clip"),
    ({"task": lambda: TASKS["fdistill"]()}, "task_type"),
    ({"task": lambda: TASKS["interpolant"](lr=0.5)}, "lr"),
    ({"task": lambda: TASKS["interpolant"](batch_size=64)}, "batch_size"),
])
def test_resuming_with_other_settings_is_refused(tmp_path, change, word):
    settings = {"checkpoint_dir": tmp_path, "ema_decay": 0.9}
    Trainer(TASKS["interpolant"](), 2, **settings).fit()
    change = dict(change)
    task = change.pop("task", TASKS["interpolant"])()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'last.pt'} was written with {word}=")):
        Trainer(task, 4, **{**settings, **change}).fit()


def test_resuming_beyond_steps_is_refused_and_old_checkpoints_still_resume(tmp_path):
    Trainer(TASKS["interpolant"](), 4, checkpoint_dir=tmp_path, ema_decay=0.9).fit()
    with pytest.raises(ValueError, match="step 4, beyond steps=2"):
        Trainer(TASKS["interpolant"](), 2, checkpoint_dir=tmp_path, ema_decay=0.9).fit()
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["settings"]  # a checkpoint written before settings were recorded
    torch.save(state, tmp_path / "last.pt")
    assert Trainer(TASKS["interpolant"](), 5, checkpoint_dir=tmp_path, ema_decay=0.9).fit() == 5
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["settings"], state["ema"]["b"]
    with pytest.raises(ValueError, match="no ema entry 'b'"):
        Trainer(TASKS["interpolant"](), 6, checkpoint_dir=tmp_path, ema_decay=0.9).load_state_dict(state)


def test_ema_refuses_a_module_of_another_shape():
    ema = EMA(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="parameters"):
        ema.update(torch.nn.Linear(3, 2))


def test_a_run_whose_metrics_go_nan_stops_before_logging_or_checkpointing_them(tmp_path):
    """Data that turn NaN (here from step 3 on) used to train on to NaN weights and save them."""
    calls = []

    def poisoned(n, g):
        calls.append(n)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return x * float("nan") if len(calls) > 3 else x
    from tests.training._training_tasks import interpolant_task
    task = interpolant_task()
    task.sample_target = poisoned
    trainer = Trainer(task, 10, seed=1, checkpoint_dir=tmp_path, checkpoint_every=1, log_path=tmp_path / "log.jsonl",
                      log_every=1)
    with pytest.raises(FloatingPointError, match=r"not finite at step 3"):
        trainer.fit()
    logged = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2]
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["step"] == 3
    assert all(torch.isfinite(p).all() for net in saved["networks"].values() for p in net.values())


def test_a_seed_whose_step_seeds_overflow_is_refused_at_construction():
    """seed=2**62 passed the constructor and failed inside fit with torch's 'Overflow when unpacking long long'."""
    with pytest.raises(ValueError, match=r"seed \* 1000003 \+ step must be a torch seed"):
        Trainer(TASKS["interpolant"](), 2, seed=2 ** 62)


def _logged_steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_run_interrupted_before_its_first_checkpoint_does_not_log_steps_twice(tmp_path):
    """With no checkpoint to resume from, the rerun starts at step 0 and used to append to the old lines
    (log 0, 1, 2, 0, 1, ..., 7); likewise a second run without checkpoints into the same log file."""
    settings = {"checkpoint_dir": tmp_path / "c", "checkpoint_every": 5, "log_path": tmp_path / "log.jsonl",
                "log_every": 1}
    Trainer(TASKS["interpolant"](), 8, **settings).fit(stop_after=3)
    assert not (tmp_path / "c" / "last.pt").exists()
    Trainer(TASKS["interpolant"](), 8, **settings).fit()
    assert _logged_steps(tmp_path / "log.jsonl") == list(range(8))
    Trainer(TASKS["interpolant"](), 4, log_path=tmp_path / "log.jsonl", log_every=1).fit()
    assert _logged_steps(tmp_path / "log.jsonl") == list(range(4))


def test_a_log_line_cut_short_by_the_interruption_does_not_stop_the_resume(tmp_path):
    """A run killed while appending a log line leaves half a JSON record; resuming raised JSONDecodeError."""
    settings = {"checkpoint_dir": tmp_path / "c", "checkpoint_every": 2, "log_path": tmp_path / "log.jsonl",
                "log_every": 1}
    Trainer(TASKS["interpolant"](), 6, **settings).fit(stop_after=3)
    with (tmp_path / "log.jsonl").open("a") as f:
        f.write('{"step": 3, "time_')
    assert Trainer(TASKS["interpolant"](), 6, **settings).fit() == 6
    assert _logged_steps(tmp_path / "log.jsonl") == list(range(6))


def test_a_numpy_int_seed_trains_like_the_python_int():
    """np.int64 passed the seed check, then failed in fit ('an integer is required'); the range check of the step
    seeds overflowed (wrapped) in int64."""
    np = pytest.importorskip("numpy")
    tasks = [TASKS["interpolant"]() for _ in range(2)]
    assert Trainer(tasks[0], 2, seed=np.int64(3)).fit() == Trainer(tasks[1], 2, seed=3).fit() == 2
    _states_equal(tasks[0], tasks[1])
    with pytest.raises(ValueError, match="must be a torch seed"):
        Trainer(TASKS["interpolant"](), 2, seed=np.int64(2 ** 62))


def test_data_parallel_ranks_start_from_rank_0s_weights(tmp_path):
    """Ranks whose networks were initialised differently (an unseeded script) used to train apart: each applied the
    averaged gradient to its own weights, and rank 0's result matched no single-process run. Like
    DistributedDataParallel, every rank now starts from rank 0's networks (and EMA copies)."""
    steps = 3
    out = tmp_path / "ddp.pt"
    mp.start_processes(ddp_worker_rank_seeded, args=(2, free_port(), str(out), steps), nprocs=2, join=True,
                       start_method="fork")
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    task = TASKS["interpolant"](seed=0)  # rank 0's initialisation, trained in one process on the global batch
    trainer = Trainer(task, steps, ema_decay=0.9)
    trainer.fit()
    for saved in ranks:
        for name, net in task.networks.items():
            for k, v in net.state_dict().items():
                torch.testing.assert_close(saved["networks"][name][k], v, rtol=1e-10, atol=1e-12)
            for k, v in trainer.ema[name].module.state_dict().items():
                torch.testing.assert_close(saved["ema"][name][k], v, rtol=1e-10, atol=1e-12)


def test_a_nan_on_one_rank_stops_every_rank_with_the_same_error(tmp_path):
    """Each rank checked its own metrics: rank 1 raised FloatingPointError, rank 0 went on into the log's all_reduce
    and failed with gloo's 'Connection reset by peer' (or waited for the collective's timeout)."""
    out = tmp_path / "nan"
    mp.start_processes(ddp_worker_nan_on_rank_1, args=(2, free_port(), str(out), 5), nprocs=2, join=True,
                       start_method="fork")
    errors = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    for error in errors:
        assert error is not None and error.startswith("FloatingPointError") and "not finite at step 2" in error


@pytest.mark.parametrize("make, error, message", [
    (lambda p: Trainer("task", 3), TypeError, "task must be an nde.training.Task"),  # was AttributeError
    (lambda p: Trainer(TASKS["interpolant"](), 3, ema_decay="0.9"), ValueError, "ema_decay"),  # was '<=' TypeError
    (lambda p: Trainer(TASKS["interpolant"](), 3, ema_decay=1.0), ValueError, "ema_decay"),  # said "decay"
    (lambda p: Trainer(_without_ema(TASKS["interpolant"]()), 3, ema_decay=1.5), ValueError, "ema_decay"),  # accepted
    (lambda p: Trainer(TASKS["interpolant"](), 3, checkpoint_dir=p / "file" / "sub"), ValueError,
     "checkpoint_dir"),  # NotADirectoryError after the last step
    (lambda p: Trainer(TASKS["interpolant"](), 3, log_path=p), ValueError, "log_path"),  # IsADirectoryError later
    (lambda p: Trainer(TASKS["interpolant"](), 3).fit(stop_after=1.5), ValueError, "stop_after"),  # ran 2 steps
    (lambda p: Trainer(TASKS["interpolant"](), 3).fit(stop_after=-1), ValueError, "stop_after"),
    (lambda p: EMA(torch.nn.Linear(1, 1), decay="0.5"), ValueError, "decay"),  # was '<=' TypeError
    (lambda p: EMA("model"), TypeError, "torch.nn.Module"),  # was AttributeError
])
def test_bad_arguments_are_refused_up_front_with_their_name(tmp_path, make, error, message):
    (tmp_path / "file").write_text("")
    with pytest.raises(error, match=re.escape(message)):
        make(tmp_path)


def _without_ema(task):
    task.ema_networks = ()
    return task


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_a_longer_run_into_the_same_checkpoint_dir_extends_the_shorter_one_exactly(kind, tmp_path):
    """Two runs that differ only in ``steps``: the longer one continues the shorter one's finished checkpoint and
    ends where one uninterrupted run of the longer length ends (weights, Adam state, LR schedule, EMA), since
    nothing in a step depends on the total; the shorter one after the longer is refused (see above)."""
    settings = {"seed": 2, "ema_decay": 0.9, "checkpoint_every": 3}
    Trainer(TASKS[kind](), 4, checkpoint_dir=tmp_path / "shared", **settings).fit()
    extended = Trainer(TASKS[kind](seed=9), 9, checkpoint_dir=tmp_path / "shared", **settings)
    assert extended.fit() == 9
    alone = Trainer(TASKS[kind](), 9, **settings)
    alone.fit()
    _states_equal(alone.task, extended.task)
    for name, opt in alone.task.optimizers.items():
        ours = extended.task.optimizers[name].state_dict()
        assert [g["lr"] for g in opt.state_dict()["param_groups"]] == [g["lr"] for g in ours["param_groups"]]
        for k, v in opt.state_dict()["state"].items():
            assert all(torch.equal(v[key], ours["state"][k][key]) for key in v)
    for name, ema in alone.ema.items():
        assert all(torch.equal(x, y) for x, y in zip(ema.module.parameters(), extended.ema[name].module.parameters()))
    with pytest.raises(ValueError, match="step 9, beyond steps=4"):
        Trainer(TASKS[kind](), 4, checkpoint_dir=tmp_path / "shared", **settings).fit()
