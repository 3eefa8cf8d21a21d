"""What a pod does to a run: preemption (SIGTERM), kills at any moment (SIGKILL), damaged checkpoints,
a loss that turns non-finite; and gradient accumulation, which lets the same global batch fit any
device count."""

import json
import os
import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, assert_same_training, cli_command, load_config, run_cli, shrink

from vmd_jax import objectives, trainer
from vmd_jax.data import pipeline
from vmd_jax.errors import TrainingError
from vmd_jax.main import PREEMPTED_STATUS


@pytest.fixture(scope="module")
def setup(data_dir):
  config = shrink(load_config("synthetic.py", "d1,vmd"), data_dir, steps=6)
  config.train.checkpoint_every = 2
  config.train.max_to_keep = 5
  return config, pipeline.load(config.data)


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
  """An uninterrupted run of the setup config: its train states (on the host) at the start, after 4
  steps and at the end."""
  config, dataset = setup
  run = trainer.Run(config, str(tmp_path_factory.mktemp("straight")), dataset)
  start = jax.device_get(run.state)
  run.train(until_step=4)
  at_4 = jax.device_get(run.state)
  run.train()
  run.close()
  return start, at_4, jax.device_get(run.state)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _assert_same(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_accumulated_microbatches_give_the_full_batch_step(setup, monkeypatch):
  """With a loss that draws no noise, the mean of 4 microbatch gradients is the full-batch gradient."""
  config, dataset = setup

  def deterministic_loss(model, params, batch, key, settings, step):
    x0 = batch["tokens"]
    t = jnp.full((x0.shape[0],), 0.5)
    masked = (jnp.arange(x0.shape[1]) % 2 == 0)[None, :] & jnp.ones(x0.shape, bool)
    z = model.apply(params, x0, masked, method="posterior").mean
    logits = model.apply(params, jnp.where(masked, model.vocab_size, x0), t, z, method="denoise")
    loss = objectives.masked_cross_entropy(logits, x0, masked).mean()  # per-sequence mean
    return loss, {"loss": loss}

  monkeypatch.setattr(objectives, "loss_fn", deterministic_loss)
  mesh = trainer.make_mesh()
  results = {}
  for per_device in (0, 1):  # batch 8 on 2 devices: 1 microbatch of 4 per device, or 4 of 1
    c = config.copy_and_resolve_references()
    c.train.per_device_batch_size = per_device
    run = trainer.Run(c, None, dataset, mesh)
    init, accumulation = jax.device_get(run.state.params), run.accumulation
    for step in range(3):
      run.state, metrics = run.train_step(run.state, run.batch(step))
    state = run.state
    results[accumulation] = (jax.device_get(state.params), float(metrics["loss"]))
  assert sorted(results) == [1, 4]
  np.testing.assert_allclose(results[1][1], results[4][1], rtol=1e-5)
  assert_same_training(results[1][0], results[4][0], init)


def test_per_device_batch_must_divide_the_global_batch(setup):
  config, _ = setup
  c = config.copy_and_resolve_references()
  c.train.per_device_batch_size = 3
  with pytest.raises(Exception, match="per_device_batch_size=3"):
    trainer.accumulation_steps(c, trainer.make_mesh())


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
  setup, straight, tmp_path, monkeypatch
):
  config, dataset = setup
  real_loss = objectives.loss_fn

  def loss_turning_nan(model, params, batch, key, settings, step):
    loss, metrics = real_loss(model, params, batch, key, settings, step)
    loss = jnp.where(step >= 4, jnp.nan, loss)  # the 5th step diverges
    return loss, {**metrics, "loss": loss}

  monkeypatch.setattr(objectives, "loss_fn", loss_turning_nan)
  run = trainer.Run(config, str(tmp_path / "diverged"), dataset)
  with pytest.raises(TrainingError, match=r"step 5: loss nan .* last checkpoint \(step 4\) is kept"):
    run.train()
  run.close()
  assert run.step == 4  # the non-finite step was not applied
  stopped = jax.device_get(run.state)
  monkeypatch.undo()
  resumed = trainer.Run(config, str(tmp_path / "diverged"), dataset)
  assert resumed.checkpointer.latest_step() == 4
  assert all(np.isfinite(x).all() for x in _leaves(resumed.state.params))
  _assert_same(resumed.state, stopped)  # what it kept is the state it stopped with
  # and its good steps are those of a run without the fault: the same up to rounding, since the
  # loss that turns nan is another program
  assert_same_training(resumed.state.params, straight[1].params, straight[0].params)
  resumed.close()


def test_resume_after_a_lost_checkpoint_logs_every_step_once(setup, tmp_path):
  config, dataset = setup
  workdir = tmp_path / "run"
  first = trainer.Run(config, str(workdir), dataset)
  first.train(until_step=5)  # logs steps 1..5, checkpoints at 2, 4 and 5
  first.close()
  shutil.rmtree(workdir / "checkpoints" / "5")  # killed after logging step 5, before its checkpoint
  resumed = trainer.Run(config, str(workdir), dataset)
  assert resumed.step == 4
  resumed.train()
  resumed.close()
  with open(workdir / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4, 5, 6]


def _damage(step_dir):
  """Overwrite every file of a checkpoint's state with garbage of the same size."""
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      with open(path, "wb") as f:
        f.write(b"\x13" * max(size, 1))


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(setup, straight, tmp_path, capsys):
  config, dataset = setup
  workdir = tmp_path / "damaged"
  first = trainer.Run(config, str(workdir), dataset)
  first.train(until_step=4)  # checkpoints at steps 2 and 4
  first.close()
  _damage(workdir / "checkpoints" / "4")
  capsys.readouterr()
  second = trainer.Run(config, str(workdir), dataset)
  err = capsys.readouterr().err
  assert "checkpoint at step 4 is unreadable" in err and "falling back" in err
  assert second.step == 2
  assert (workdir / "checkpoints_unreadable" / "4").is_dir()  # moved aside, not deleted
  second.train()
  second.close()
  _assert_same(second.state, straight[2])


def _final_state(workdir):
  """(step, train state) of a workdir's newest checkpoint, as saved (no config needed)."""
  step = _newest_step(workdir)
  return step, ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


KILL_RUN = (
  "configs/synthetic.py:d1,vmd",
  "--config.train.steps=80",
  "--config.train.checkpoint_every=10",
  "--config.eval.nfes=(1,)",
  "--config.eval.iwae_k=0",
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  proc = run_cli(workdir, *KILL_RUN, data_dir=data_dir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return _final_state(workdir)


def _start(workdir, data_dir):
  args, env = cli_command(workdir, *KILL_RUN, data_dir=data_dir)
  return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _newest_step(workdir) -> int:
  directory = os.path.join(workdir, "checkpoints")
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
  return max(steps, default=-1)


def _wait_for_new_checkpoint(proc, workdir, timeout=120):
  """Wait until the run has written a checkpoint newer than those there now (or has ended)."""
  before = _newest_step(workdir)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and _newest_step(workdir) <= before:
    time.sleep(0.05)


def test_kills_and_a_preemption_at_any_moment_then_resume_matches_the_uninterrupted_run(
  tmp_path, data_dir, uninterrupted
):
  """One workdir through a SIGKILL during start-up or compilation, a SIGTERM (preemption) as soon as a
  checkpoint appears, a SIGKILL during training (possibly mid-save), then a run to the end."""
  workdir = str(tmp_path)
  rng = np.random.default_rng(0)
  proc = _start(workdir, data_dir)
  time.sleep(rng.uniform(1.0, 4.0))
  proc.kill()
  proc.communicate(timeout=60)

  proc = _start(workdir, data_dir)
  _wait_for_new_checkpoint(proc, workdir)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == PREEMPTED_STATUS, err[-2000:]  # unfinished: a script must not go on
  assert "preempted (SIGTERM) at step" in out
  stopped_at = int(out.split("preempted (SIGTERM) at step ")[1].split(":")[0])
  assert 0 < stopped_at < 80
  assert _final_state(workdir)[0] == stopped_at  # saved where it stopped, not at the last periodic save
  assert not os.path.exists(os.path.join(workdir, "results.json"))  # evaluation waits for the resume
  with open(os.path.join(workdir, "train_time.json")) as f:
    before_resume = json.load(f)["train_seconds"]  # the preempted call's time is kept
  assert before_resume > 0

  proc = _start(workdir, data_dir)
  _wait_for_new_checkpoint(proc, workdir)
  time.sleep(rng.uniform(0.0, 0.5))
  proc.kill()
  proc.communicate(timeout=60)

  proc = run_cli(workdir, *KILL_RUN, data_dir=data_dir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  step, state = _final_state(workdir)
  assert step == 80
  _assert_same(state, uninterrupted[1])
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  # the results' training time sums every call that trained, the preempted one's included
  assert results["trained_steps"] < 80 and results["train_seconds"] > before_resume
