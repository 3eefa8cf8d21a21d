"""Test setup: two forced CPU devices (set before jax is imported), a compilation cache shared by the
session's processes, faster compilation, and small shared helpers."""

import os
import shutil
import subprocess
import sys
import tempfile


def _xla_knows(flag: str) -> bool:
  """Whether this jaxlib's XLA accepts a flag (an unknown flag in XLA_FLAGS aborts the process)."""
  env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
  probe = [sys.executable, "-c", "import jax; jax.devices()"]
  return subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0


# The tests' models are tiny, so compiling is most of their time. For them (and for the command lines,
# processes and notebook kernel they start), XLA's backend optimisation is off (test_configs 62 s ->
# 42 s when it came in) and, where this jaxlib has the choice, fusions are emitted by the older loop
# emitters instead of the MLIR ones (the tiny VMD's train step compiled in 3.7-5.2 s instead of
# 7.6-9.0 s). The numbers the library prints elsewhere use XLA's defaults. Found once per session (the
# test workers inherit it).
FAST_COMPILE = os.environ.get("VMD_TEST_FAST_COMPILE")
if FAST_COMPILE is None:
  FAST_COMPILE = "--xla_backend_optimization_level=0"
  if _xla_knows("--xla_cpu_use_fusion_emitters=false"):
    FAST_COMPILE += " --xla_cpu_use_fusion_emitters=false"
  os.environ["VMD_TEST_FAST_COMPILE"] = FAST_COMPILE
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=2 {FAST_COMPILE}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for this test session, its CLI subprocesses included: the same
# tiny models are compiled by many tests. It is new for every session, so no result depends on an
# earlier one, and the process that made it removes it at the end (pytest_unconfigure).
CACHE_MADE_HERE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if CACHE_MADE_HERE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vmd_jax_test_xla_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import importlib.util  # noqa: E402

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


# Command-line overrides for a tiny model, data and evaluation.
TINY = [
  "--config.model.width=16",
  "--config.model.depth=1",
  "--config.model.num_heads=2",
  "--config.model.encoder_width=16",
  "--config.model.encoder_depth=1",
  "--config.train.batch_size=8",
  "--config.train.warmup_steps=1",
  "--config.train.log_every=2",
  "--config.train.checkpoint_every=2",
  "--config.data.num_train=256",
  "--config.data.num_test=64",
  "--config.eval.num_samples=64",
  "--config.eval.batch_size=64",
  "--config.eval.bound_examples=16",
  "--config.eval.bound_draws=2",
  "--config.eval.iwae_k=2",
]


def cli_command(workdir, config, *flags, data_dir):
  """(argv, env) of `python -m vmd_jax.main` on one CPU device, with the TINY model and data."""
  env = dict(os.environ, XLA_FLAGS=FAST_COMPILE, JAX_PLATFORMS="cpu")
  args = [sys.executable, "-m", "vmd_jax.main", f"--config={config}", f"--workdir={workdir}"]
  return args + [f"--config.data.data_dir={data_dir}", *TINY, *flags], env


def run_cli(workdir, config, *flags, data_dir):
  """Run the command line to completion (see cli_command): the CompletedProcess."""
  args, env = cli_command(workdir, config, *flags, data_dir=data_dir)
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def run_in_process(workdir, config, *flags, data_dir):
  """The command line of cli_command run in this process, from the repository root, through
  main.command_status (no interpreter start-up, and the compiled functions of earlier tests are
  reused): a CompletedProcess with what it printed. It runs on the test process's two CPU devices."""
  import contextlib
  import io

  from vmd_jax import main

  args, _ = cli_command(workdir, config, *flags, data_dir=data_dir)
  cwd, out, err = os.getcwd(), io.StringIO(), io.StringIO()
  os.chdir(REPO)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      status = main.command_status(args[2:])
  finally:
    os.chdir(cwd)
  return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def load_config(filename: str, arg: str | None = None):
  """get_config(arg) of configs/<filename>, loaded by path as the CLI does."""
  spec = importlib.util.spec_from_file_location(
    f"test_configs_{filename[:-3]}", os.path.join(CONFIGS, filename)
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def shrink(config, data_dir: str, steps: int = 2):
  """Tiny shapes for fast tests: a 1-block width-16 model, small data, short eval."""
  config.data.data_dir = data_dir
  config.data.num_train = 512
  config.data.num_test = 256
  if "num_hard_test" in config.data:  # sudoku: a small hard side (hard puzzles take 50 ms each)
    config.data.base_train, config.data.num_hard_test, config.data.num_validation = 16, 6, 4
  config.model.width = 16
  config.model.depth = 1
  config.model.num_heads = 2
  config.model.encoder_width = 16
  config.model.encoder_depth = 1
  if config.model.latent_dim > 0:
    config.model.latent_dim = 4
  config.train.steps = steps
  config.train.batch_size = 8
  config.train.warmup_steps = 1
  config.train.log_every = 1
  config.train.checkpoint_every = steps
  config.objective.kl_warmup_steps = 0
  config.eval.num_samples = 64
  config.eval.batch_size = 64
  config.eval.bound_examples = 32
  config.eval.bound_draws = 2
  config.eval.iwae_k = 2
  return config


def multiprocess_config(data_dir: str, npy_path: str):
  """The tiny VMD on a .npy of distinct sequences that the 2-process test trains (also in one process)."""
  config = shrink(load_config("sequences.py", "vmd"), data_dir, steps=6)
  config.data.path = npy_path
  config.model.max_length = 8
  config.train.checkpoint_every = 3
  config.train.log_every = 2
  config.eval.nfes = (4,)  # one sampler and one bound to compile in each process
  config.eval.iwae_k = 0
  return config


def train_steps(config, dataset, mesh, num_steps: int):
  """num_steps train steps of a fresh trainer.Run (no workdir) on the given mesh: (state on host, losses)."""
  import jax

  from vmd_jax import trainer

  run = trainer.Run(config, None, dataset, mesh)
  losses = []
  for step in range(num_steps):
    run.state, metrics = run.train_step(run.state, run.batch(step))
    losses.append(float(metrics["loss"]))
  return jax.device_get(run.state), losses


def initial_params(config, dataset, mesh=None):
  """The parameters a fresh trainer.Run of config starts from, on the host."""
  import jax

  from vmd_jax import trainer

  return jax.device_get(trainer.Run(config, None, dataset, mesh).state.params)


def assert_same_training(params_a, params_b, params_init, rtol: float = 1e-2):
  """Two trainings that differ only in the order of their sums (device count, microbatches, processes)
  end at the same parameters, up to a share rtol of how far training moved them.

  Rounding differences are of the order of float32 epsilon times the gradient, but Adam divides each
  update by the root of its squared gradient, so an entry whose gradient is itself at rounding level
  (the key biases, to which softmax attention is blind) moves by up to the learning rate in either
  run. The tolerance therefore follows the scale of the whole update, not of the values:
  ||a - b|| <= rtol * ||a - init|| over all parameters together."""
  import jax
  import numpy as np

  def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])

  a, b, init = flat(params_a), flat(params_b), flat(params_init)
  difference, moved = np.linalg.norm(a - b), np.linalg.norm(a - init)
  assert moved > 0 and difference <= rtol * moved, (difference, moved)


@pytest.fixture
def no_network(monkeypatch):
  """Any connection attempt (a tfds download, a GCS lookup) fails the test at once instead of hanging."""
  import socket

  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def perturbed_params(model, length: int, seed: int = 0, noise: float = 0.5):
  """Initial parameters of a VMDModel for sequences of `length`, perturbed everywhere by Gaussian noise
  of scale `noise`, so that zero-initialised paths are exercised too."""
  import jax
  import jax.numpy as jnp

  key = jax.random.PRNGKey(seed)
  # jitted: run eagerly, a network is traced op by op, each op compiled on its own
  params = jax.jit(model.init)(
    key, jnp.zeros((1, length), jnp.int32), jnp.ones((1, length), bool), jnp.ones((1,))
  )
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  return jax.tree.unflatten(
    tree, [x + noise * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One tfds data dir shared by the whole session (datasets are prepared once)."""
  return str(tmp_path_factory.mktemp("tfds"))


# The two workers take whole files, in the order of the collection (pyproject: --no-loadscope-reorder),
# and a worker takes the next file when it has two tests left. The longest files go first, so that none
# of them starts while the other worker is almost done (longest processing time first); the rest
# follow in alphabetical order.
LONGEST_FIRST = [
  "test_resilience.py",
  "test_exact_samplers.py",
  "test_blocks.py",
  "test_cli.py",
  "test_multiprocess.py",
  "test_notebook.py",
  "test_sudoku.py",
  "test_api.py",
  "test_configs.py",
  "test_trainer.py",
  "test_bounds_vs_entropy.py",
  "test_objectives.py",
]


def pytest_unconfigure(config):
  if CACHE_MADE_HERE:  # the workers inherit the directory; the main process outlives them
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.path))
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

  items.sort(key=rank)  # stable: each file's tests keep their order
