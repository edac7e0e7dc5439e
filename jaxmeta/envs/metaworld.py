"""Meta-World ML1 / ML10 / ML45 (Yu et al. 2019, "Meta-World: A Benchmark and Evaluation
for Multi-Task and Meta Reinforcement Learning"), stepped on the host by worker processes.

Meta-World is MuJoCo on the CPU: it has no jittable implementation, so these
environments run only through `jaxmeta.host.HostCollector` on the `metaworld` host
simulator (`MetaWorldSimulator`), and every learner (MAML-TRPO, ProMP, RL^2, SNAIL)
trains on it with its usual `update`.

Tasks are data. A task is `MetaWorldTask(split, env_index, goal_index)`: the split
(0 = the benchmark's train tasks, 1 = its test tasks), the index of the environment
class in that split's list (`ML1`: the one task; `ML10`: 10 train / 5 test classes;
`ML45`: 45 / 5), and the index of one of Meta-World's 50 goal variations of that class.
The train distribution samples split 0 and the held-out distribution
(`TaskDistribution.sample_test`) split 1, so the learners' evaluations run on
Meta-World's own test tasks. The spaces and the horizon are known without stepping:
observations (39,) with the goal hidden, actions Box(-1, 1, (4,)), 500 steps.

The goals are Meta-World's own: `metaworld.ML1(name, seed=task_seed)` (train goals from
`task_seed`, test goals from `task_seed + 1`), `metaworld.ML10(seed=task_seed)`,
`metaworld.ML45(seed=task_seed)`, built once per process in the main process; the
workers receive the `metaworld.Task` of each environment. (The gymnasium registration
`gym.make_vec("Meta-World/ML1-train")` of metaworld 3.1.1 builds the *test* split; this
module does not use it.)

Names: Meta-World 3 ships the tasks as `-v3` environments only. A `-v2` name (the one
the papers and older code use) is mapped to its `-v3` task; any other unknown name is a
`ConfigError` that lists close matches.

Imports of metaworld, gymnasium and mujoco are lazy: this module imports without them.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.config import ConfigError, check_int
from jaxmeta.envs.base import Box, TaskDistribution
from jaxmeta.envs import worker_pool
from jaxmeta.envs.worker_pool import WorkerPool

# Meta-World 3.1.1's env_dict, in its order (tests check these against the installed
# package, so the constants cannot drift): ML10_V3 and ML45_V3 train / test classes.
ML10_TRAIN = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3",
              "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3")
ML10_TEST = ("drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3")
ML45_TRAIN = (
    "assembly-v3", "basketball-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-v3",
    "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3",
    "disassemble-v3", "door-close-v3", "door-open-v3", "drawer-close-v3", "drawer-open-v3", "faucet-open-v3",
    "faucet-close-v3", "hammer-v3", "handle-press-side-v3", "handle-press-v3", "handle-pull-side-v3",
    "handle-pull-v3", "lever-pull-v3", "pick-place-wall-v3", "pick-out-of-hole-v3", "push-back-v3",
    "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3",
    "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-wall-v3",
    "push-v3", "reach-wall-v3", "reach-v3", "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3",
    "window-close-v3",
)
ML45_TEST = ("bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3")
ML1_NAMES = tuple(sorted(ML45_TRAIN + ML45_TEST))  # every Meta-World task (50)

NUM_GOALS = 50  # goal variations Meta-World generates per environment class and split
MAX_HORIZON = 500  # Meta-World's max_path_length: stepping past it raises
OBS_DIM, ACTION_DIM = 39, 4
TRAIN, TEST = 0, 1


class MetaWorldTask(NamedTuple):
    """One Meta-World task, as data (int32 scalars; a batch has a leading axis)."""

    split: jax.Array  # [] 0 = train tasks, 1 = test tasks
    env_index: jax.Array  # [] index into the split's environment classes
    goal_index: jax.Array  # [] which of the class's NUM_GOALS goal variations


def ml1_name(name: str) -> str:
    """The Meta-World 3 name of an ML1 task: `-v2` names map to `-v3`; unknown names raise."""
    if not isinstance(name, str):
        raise ConfigError(f"task_name must be a Meta-World task name, got {name!r}", "task_name")
    if name.endswith("-v2") and name[:-3] + "-v3" in ML1_NAMES:
        return name[:-3] + "-v3"
    if name not in ML1_NAMES:
        close = difflib.get_close_matches(name, ML1_NAMES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(ML1_NAMES)}"
        raise ConfigError(f"task_name {name!r} is not a Meta-World task{hint}", "task_name")
    return name


@dataclass(frozen=True)
class _MetaWorld:
    """Shared fields and machinery of the three benchmarks.

    horizon: steps per episode (at most Meta-World's 500; fewer for quick checks).
    task_seed: seed of Meta-World's goal generation (which 50 + 50 goals a class gets).
    num_workers: simulator processes that step the environments (0: in this process);
      the episodes do not depend on it.
    """

    horizon: int = MAX_HORIZON
    task_seed: int = 0
    num_workers: int = 2

    benchmark = ""  # "ML1", "ML10" or "ML45"

    def __post_init__(self):
        check_int("horizon", self.horizon, 1, MAX_HORIZON)
        check_int("task_seed", self.task_seed, 0, 2**31 - 1)
        check_int("num_workers", self.num_workers, 0, 256)

    @property
    def observation_space(self) -> Box:
        return Box(-np.inf, np.inf, (OBS_DIM,))

    @property
    def action_space(self) -> Box:
        return Box(-1.0, 1.0, (ACTION_DIM,))

    @property
    def env_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(train classes, test classes), in Meta-World's order."""
        raise NotImplementedError

    def task_distribution(self) -> TaskDistribution:
        """Train tasks (split 0) uniformly over classes and goals; `sample_test` the test tasks."""
        train, test = (len(names) for names in self.env_names)

        def sampler(split: int, num_classes: int):
            def sample(key) -> MetaWorldTask:
                k_env, k_goal = jax.random.split(key)
                return MetaWorldTask(jnp.asarray(split, jnp.int32),
                                     jax.random.randint(k_env, (), 0, num_classes, jnp.int32),
                                     jax.random.randint(k_goal, (), 0, NUM_GOALS, jnp.int32))

            return sample

        return TaskDistribution(sampler(TRAIN, train), sampler(TEST, test))

    def task_names(self, tasks: MetaWorldTask) -> list[str]:
        """The environment class name of every task of a batch."""
        names = self.env_names
        return [names[int(s)][int(i)] for s, i in zip(np.ravel(tasks.split), np.ravel(tasks.env_index))]

    def make_benchmark(self):
        """Meta-World's benchmark object (imports metaworld; ML45 takes about 20 s to build)."""
        mw = _import_metaworld()
        if self.benchmark == "ML1":
            return mw.ML1(self.name, seed=self.task_seed)
        return getattr(mw, self.benchmark)(seed=self.task_seed)


@dataclass(frozen=True)
class MetaWorldML1(_MetaWorld):
    """Meta-World ML1: one manipulation task, 50 train and 50 test goals (host simulator `metaworld`)."""

    task_name: str = "button-press-v3"
    benchmark = "ML1"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "task_name", ml1_name(self.task_name))

    @property
    def name(self) -> str:
        return self.task_name

    @property
    def env_names(self):
        return (self.task_name,), (self.task_name,)


@dataclass(frozen=True)
class MetaWorldML10(_MetaWorld):
    """Meta-World ML10: 10 train and 5 test manipulation tasks (host simulator `metaworld`)."""

    benchmark = "ML10"

    @property
    def env_names(self):
        return ML10_TRAIN, ML10_TEST


@dataclass(frozen=True)
class MetaWorldML45(_MetaWorld):
    """Meta-World ML45: 45 train and 5 test manipulation tasks (host simulator `metaworld`)."""

    benchmark = "ML45"

    @property
    def env_names(self):
        return ML45_TRAIN, ML45_TEST


# --------------------------------------------------------------------------- benchmark tasks


def _import_metaworld():
    try:
        import metaworld
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("Meta-World environments need the `metaworld` extra: pip install 'jaxmeta[metaworld]'") from e
    return metaworld


_BENCHMARKS: dict[tuple, tuple] = {}


def benchmark_tasks(env: _MetaWorld) -> tuple[tuple[list, ...], tuple[list, ...]]:
    """Meta-World's tasks per split and class: tasks[split][env_index] is the list of the
    class's NUM_GOALS `metaworld.Task`s, in Meta-World's order. Built once per process."""
    key = (env.benchmark, env.env_names, env.task_seed)
    if key not in _BENCHMARKS:
        bench = env.make_benchmark()
        out = []
        for names, tasks in zip(env.env_names, (bench.train_tasks, bench.test_tasks)):
            per_class = tuple([t for t in tasks if t.env_name == name] for name in names)
            for name, ts in zip(names, per_class):
                if len(ts) != NUM_GOALS:  # pragma: no cover - a Meta-World version we do not know
                    raise RuntimeError(f"Meta-World gave {len(ts)} tasks of {name}, expected {NUM_GOALS}")
            out.append(per_class)
        _BENCHMARKS[key] = tuple(out)
    return _BENCHMARKS[key]


# --------------------------------------------------------------------------- the host simulator

SimulatorError = worker_pool.SimulatorError  # what a dead, hung or failing worker raises


class MetaWorldSimulator:
    """A `jaxmeta.host.HostSimulator` over Meta-World environments in worker processes.

    Environment i of the batch runs in worker i * W // N (consecutive blocks; see
    `jaxmeta.envs.worker_pool.WorkerPool`); a batch's observations, rewards and
    successes do not depend on the number of workers W, because every environment is
    seeded by its index in the batch (reset(seed): environment i gets seed + i) and
    Meta-World's episodes are a function of the task, the seed and the actions. A worker
    is the standalone script `host_worker.py` (numpy and metaworld, no JAX); a worker
    that dies or fails raises `SimulatorError` naming it, instead of a hang. With
    workers, stepping can be pipelined (`step_send` / `step_recv`).

    Args:
      env: a MetaWorldML1 / ML10 / ML45.
      num_envs: environments in the batch.
      num_workers: processes (default `env.num_workers`; 0 steps in this process).
      timeout_s: most seconds to wait for a worker's answer before raising.
    """

    reports_success = True

    def __init__(self, env: _MetaWorld, num_envs: int, num_workers: int | None = None, timeout_s: float = 600.0):
        self.env = env
        self.num_envs = int(num_envs)
        self.tasks = benchmark_tasks(env)  # builds Meta-World's benchmark once per process
        W = env.num_workers if num_workers is None else num_workers
        self.pool = WorkerPool("metaworld", self.num_envs, W, name="Meta-World", timeout_s=timeout_s)

    observation_space = property(lambda self: self.env.observation_space)
    action_space = property(lambda self: self.env.action_space)
    worker_pids = property(lambda self: self.pool.worker_pids)
    pipelined = property(lambda self: self.pool.pipelined)

    def set_tasks(self, tasks: MetaWorldTask) -> None:
        """One task per environment: int arrays with leading axis num_envs."""
        split, env_index, goal = (np.asarray(x).reshape(-1) for x in (tasks.split, tasks.env_index, tasks.goal_index))
        self.pool.call_split("set_tasks", [self.tasks[int(s)][int(c)][int(g)] for s, c, g in zip(split, env_index, goal)])

    def reset(self, seed: int) -> np.ndarray:
        """obs [N, 39] float64; environment i seeded with seed + i."""
        return self.pool.reset(seed)

    def step(self, action: np.ndarray):
        """(obs [N, 39], reward [N], terminated [N] (always False: Meta-World episodes end
        at the horizon), success [N] (info['success'] of this step))."""
        obs, reward, success = self.pool.step(np.clip(np.asarray(action, np.float64), -1.0, 1.0))
        return obs, reward, np.zeros(self.num_envs, bool), success

    def step_send(self, rows: np.ndarray, action: np.ndarray) -> None:
        """Start stepping the environments `rows` with `action` [len(rows), 4]; see `WorkerPool`."""
        self.pool.step_send(rows, np.clip(np.asarray(action, np.float64), -1.0, 1.0))

    def step_recv(self):
        """The answer of the oldest `step_send`: (obs, reward, terminated, success) of its rows."""
        obs, reward, success = self.pool.step_recv()
        return obs, reward, np.zeros(len(reward), bool), success

    def worker_busy_s(self) -> list[float]:
        """Seconds each worker has spent in Meta-World's reset and step so far."""
        return self.pool.busy_s()

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self.pool.close()
