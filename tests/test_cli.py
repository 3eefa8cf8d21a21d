"""The command line end to end: results.json, pictures, metrics, and one-line errors that leave the
workdir as it was."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import run_cli, run_in_process


def _tree(path):
  """{relative path: (size, mtime)} of every file under path (empty if it does not exist)."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      out[os.path.relpath(full, path)] = (os.path.getsize(full), os.path.getmtime(full))
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("run") / "pair_vmd")
  proc = run_in_process(workdir, "configs/synthetic.py:pair,vmd", "--config.train.steps=4", data_dir=data_dir)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return workdir, proc


def test_train_writes_results_pictures_metrics_and_checkpoints(trained):
  workdir, proc = trained
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for key in [
    "acc@nfe1",
    "kl@nfe1",
    "acc@nfe2",
    "kl@nfe2",
    "iwae2_bits_per_token",
    "iwae2_bits_per_token_se",
    "nelbo@nfe2_bits_per_token",
    "loss",
  ]:
    assert np.isfinite(results[key]), key
  # the paper's VMD sampler takes argmax values: the bounds are of its sampled version, and say so
  assert results["bound_sampler"] == "random order, sampled tokens at temperature 1, z fixed per sequence"
  assert "argmax" in results["bound_notes"]
  assert results["steps"] == 4 and results["method"] == "vmd" and results["dataset"] == "pair"
  assert os.path.getsize(os.path.join(workdir, "joint_nfe1.png")) > 1000
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [line["step"] for line in logged] == [2, 4]
  assert all(0 <= line["z_share"] <= 1 and line["z_kl"] >= 0 for line in logged)  # a latent model's signal
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert "step 4/4" in proc.stdout and "steps/s" in proc.stdout and "ETA" in proc.stdout


def test_eval_mode_reproduces_the_results_of_training(trained, data_dir):
  workdir, _ = trained
  with open(os.path.join(workdir, "results.json")) as f:
    after_training = json.load(f)
  proc = run_in_process(
    workdir, "configs/synthetic.py:pair,vmd", "--config.train.steps=4", "--mode=eval", data_dir=data_dir
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(workdir, "results.json")) as f:
    evaluated = json.load(f)
  after_training.pop("trained_steps")  # what only a training call knows; train_seconds is recorded
  assert evaluated == after_training  # the same checkpoint and seeds: the same numbers
  assert evaluated["train_seconds"] > 0
  assert "| pair | vmd | 4 |" in proc.stdout and "{" not in proc.stdout  # tables, not the JSON


def test_train_only_mode_trains_on_and_evaluates_nothing(trained, data_dir, tmp_path):
  """--mode=train_only resumes the checkpoint to the new step count and leaves the results as they were."""
  workdir = str(tmp_path / "pair_vmd")
  shutil.copytree(trained[0], workdir)
  before = _tree(workdir)["results.json"]
  proc = run_in_process(
    workdir, "configs/synthetic.py:pair,vmd", "--config.train.steps=6", "--mode=train_only", data_dir=data_dir
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _tree(workdir)["results.json"] == before
  with open(os.path.join(workdir, "train_time.json")) as f:
    assert json.load(f)["step"] == 6
  assert "step 6/6" in proc.stdout and "|---|" not in proc.stdout  # progress, and no results table


def test_sample_mode_uses_the_checkpoint(trained, data_dir, capsys):
  workdir, _ = trained
  proc = run_in_process(
    workdir,
    "configs/synthetic.py:pair,vmd",
    "--config.train.steps=4",
    "--mode=sample",
    data_dir=data_dir,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  samples = np.load(os.path.join(workdir, "samples_nfe1.npy"))
  assert samples.shape == (64, 2) and samples.max() < 10


def _assert_one_line_error(proc, *words):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  for word in words:
    assert word in lines[0], lines[0]


def test_checkpoint_of_another_config_is_an_error_and_changes_nothing(trained, data_dir, capsys):
  workdir, _ = trained
  before = _tree(workdir)
  proc = run_in_process(
    workdir,
    "configs/synthetic.py:pair,vmd",
    "--config.train.steps=8",
    "--config.model.width=32",
    data_dir=data_dir,
  )
  _assert_one_line_error(proc, "does not match", "model.width")
  assert _tree(workdir) == before


@pytest.mark.parametrize(
  "config, flags, words",
  [
    ("configs/synthetic.py:pair,vmd", ["--config.train.steps=-3"], ["train.steps"]),
    ("configs/synthetic.py:pair,vmd", ["--config.eval.order=best"], ["eval.order"]),
    ("configs/synthetic.py:pair,vmd", ["--config.model.latent_path=film"], ["model.latent_path", "low_rank"]),
    ("configs/synthetic.py:pair,mdm", ["--config.model.latent_dim=4"], ["latent_dim"]),
    ("configs/synthetic.py:pair,vmd", ["--config.objective.schedule=square"], ["schedule"]),
    ("configs/synthetic.py:pair,vmd", ["--config.eval.nfes=(1,3)"], ["eval.nfes"]),
    ("configs/synthetic.py:triple,vmd", [], ["triple"]),
    ("configs/sequences.py:vmd", ["--config.data.path=does_not_exist.npy"], ["not found"]),
    ("configs/synthetic.py:pair,vmd", ["--config.train.nope=1"], ["--config.train.nope", "no field"]),
    ("configs/nosuch.py", [], ["no such config file", "nosuch.py"]),
    ("configs/synthetic.py:pair,vmd", ["--config.train.steps=many"], ["train.steps", "many"]),
    ("configs/synthetic.py:pair,vmd", ["--mode=fly"], ["--mode=fly"]),
  ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, data_dir, capsys, config, flags, words):
  """In this process (main.command_status), as the command line runs: exit status 2, one line."""
  workdir = tmp_path / "run"
  _assert_one_line_error(run_in_process(str(workdir), config, *flags, data_dir=data_dir), *words)
  assert not workdir.exists()


def test_the_command_line_reports_a_bad_override_as_one_line_with_status_2(tmp_path, data_dir):
  proc = run_cli(
    str(tmp_path / "run"), "configs/synthetic.py:pair,vmd", "--config.train.nope=1", data_dir=data_dir
  )
  _assert_one_line_error(proc, "--config.train.nope")
  assert not (tmp_path / "run").exists()


def test_malformed_data_file_is_a_one_line_error(tmp_path, data_dir, capsys):
  path = tmp_path / "tokens.npy"
  path.write_text("0 1 2\n3 4 5\n")
  proc = run_in_process(
    str(tmp_path / "run"), "configs/sequences.py:mdm", f"--config.data.path={path}", data_dir=data_dir
  )
  _assert_one_line_error(proc, "tokens.npy")
  assert not (tmp_path / "run").exists()


def test_own_sequences_train_end_to_end_with_nfes_that_follow_the_length(tmp_path, data_dir):
  path = tmp_path / "tokens.npy"
  rng = np.random.default_rng(0)
  np.save(path, rng.integers(0, 5, size=(128, 8)).astype(np.int64))
  workdir = tmp_path / "run"
  proc = run_in_process(
    str(workdir),
    "configs/sequences.py:vmd",
    f"--config.data.path={path}",
    "--config.train.steps=2",
    "--config.eval.iwae_k=0",
    data_dir=data_dir,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((workdir / "results.json").read_text())
  assert results["vocab_size"] == 5 and results["length"] == 8
  nfes = sorted(
    int(k.split("@nfe")[1].split("_")[0]) for k in results if k.startswith("nelbo@nfe") and "_se" not in k
  )
  assert nfes == [1, 4, 8]  # the config's 1, 4 and 16 steps, capped at the length
  assert np.load(workdir / "samples_nfe8.npy").shape == (64, 8)
