"""A run's settings: one frozen, validated object, checked once.

`RunSettings` names what a run trains (algorithm, environment and its fields, the
algorithm's config, the simulator) and how (meta-iterations, seeds, checkpoints). The
command line builds one from its flags, `resume` reads one back from config.json, and
the driver trusts it. A bad value fails at construction with a `ConfigError` naming the
field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jaxmeta import envs
from jaxmeta.algorithms import registry
from jaxmeta.algorithms.registry import AlgorithmSpec
from jaxmeta.config import ConfigError, check_int
from jaxmeta.driver.run_folder import canonical, to_jsonable

MAX_SEED = 2**31 - 1
SIMULATORS = ("jax", "brax") + tuple(envs.HOST_SIMULATORS)

# What identifies a run: a checkpoint resumes only under the same values of these.
IDENTITY = ("algorithm", "env", "env_kwargs", "config", "seed", "num_seeds", "simulator")


@dataclass(frozen=True)
class RunSettings:
    """What a run trains and how.

    algorithm: a registered algorithm (`jaxmeta list`).
    env: a registered environment it supports (None: the algorithm's default).
    env_kwargs: fields of the environment (e.g. {"horizon": 50}).
    config: the algorithm's config object (None: its defaults).
    num_batches: meta-iterations to train in all.
    seed, num_seeds: seeds seed .. seed+num_seeds-1, vmapped in one program.
    checkpoint_every: checkpoint every this many meta-iterations (0: only at the end
      and when stopped by Ctrl-C / SIGTERM).
    simulator: "jax" (the environment's own jittable implementation; "brax" is the same
      for the Brax locomotion tasks) or a host simulator ("mujoco", "metaworld"). None:
      the environment's default -- "jax", or the one host simulator of a host-only
      environment (Meta-World: "metaworld"); "jax" for a host-only environment is an error.
    """

    algorithm: str
    env: str | None = None
    env_kwargs: dict = field(default_factory=dict)
    config: Any = None
    num_batches: int = 100
    seed: int = 0
    num_seeds: int = 1
    checkpoint_every: int = 100
    simulator: str | None = None

    def __post_init__(self):
        if self.algorithm not in registry.REGISTRY:
            raise ConfigError(f"unknown algorithm {self.algorithm!r}; known: {', '.join(sorted(registry.REGISTRY))}",
                              "algorithm")
        spec = self.spec
        if self.env is None:
            object.__setattr__(self, "env", spec.default_env)
        if self.env not in spec.envs:
            raise ConfigError(f"{spec.name} supports {', '.join(spec.envs)}, got {self.env!r}", "env")
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict of environment fields, got {self.env_kwargs!r}", "env_kwargs")
        self.make_env()  # validates the environment's fields
        if self.config is None:
            object.__setattr__(self, "config", spec.config_cls())
        if not isinstance(self.config, spec.config_cls):
            raise ConfigError(f"{spec.name} needs a {spec.config_cls.__name__}, got {type(self.config).__name__}",
                              "config")
        check_int("num_batches", self.num_batches, 1, 10_000_000)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("num_seeds", self.num_seeds, 1, 100_000)
        if self.seed + self.num_seeds - 1 > MAX_SEED:
            raise ConfigError(f"seed + num_seeds - 1 must be <= {MAX_SEED}", "num_seeds")
        check_int("checkpoint_every", self.checkpoint_every, 0, 10_000_000)
        if self.simulator is None:
            object.__setattr__(self, "simulator", envs.default_simulator(self.env))
        if self.simulator not in SIMULATORS:
            raise ConfigError(f"simulator must be one of {', '.join(map(repr, SIMULATORS))}, got {self.simulator!r}",
                              "simulator")
        if self.simulator == "brax" and self.env not in envs.LOCOMOTION_ENVS:
            raise ConfigError(f"simulator 'brax' runs {', '.join(envs.LOCOMOTION_ENVS)}, not {self.env!r}", "simulator")
        if self.env in envs.HOST_ONLY and self.simulator != envs.HOST_ONLY[self.env]:
            raise ConfigError(f"{self.env} has no jittable implementation: it runs on simulator "
                              f"{envs.HOST_ONLY[self.env]!r} (its default), not {self.simulator!r}", "simulator")
        if self.host:
            runs = envs.HOST_SIMULATORS[self.simulator]
            if self.env not in runs:
                raise ConfigError(f"simulator {self.simulator!r} runs {', '.join(runs)}, not {self.env!r}", "simulator")
            if self.num_seeds > 1:
                raise ConfigError(f"simulator {self.simulator!r} steps its environments outside jit: "
                                  "it trains one seed at a time", "num_seeds")

    @property
    def spec(self) -> AlgorithmSpec:
        return registry.get(self.algorithm)

    @property
    def host(self) -> bool:
        """True when the environments are stepped by a host simulator, outside XLA."""
        return self.simulator in envs.HOST_SIMULATORS

    def make_env(self) -> Any:
        try:
            return envs.make(self.env, **self.env_kwargs)
        except TypeError as e:
            raise ConfigError(f"environment {self.env!r}: {e}", "env_kwargs") from e

    def replace(self, **changes) -> RunSettings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def identity(self) -> dict:
        """The JSON values of the fields a checkpoint must match (see IDENTITY)."""
        return {k: canonical(getattr(self, k)) for k in IDENTITY}

    @classmethod
    def from_json(cls, values: dict) -> RunSettings:
        """Settings from `to_json`'s form (config.json of a run)."""
        spec = registry.get(values["algorithm"])
        kw = {k: values[k] for k in ("algorithm", "env", "env_kwargs", "num_batches", "seed", "num_seeds",
                                     "checkpoint_every", "simulator") if k in values}
        return cls(config=config_from_json(spec.config_cls, values["config"]), **kw)


def config_from_json(cls, values: dict):
    """A config dataclass from its JSON form (lists back to tuples where the field is one)."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            kw[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)
