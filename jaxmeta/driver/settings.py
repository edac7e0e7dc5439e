"""A run's settings: one frozen, validated object, checked once.

`RunSettings` names what a run trains (algorithm, environment and its fields, the
algorithm's config, the simulator) and how (meta-iterations, seeds, checkpoints). The
command line builds one from its flags, `resume` reads one back from config.json, and
the driver trusts it. A bad value fails at construction with a `ConfigError` naming the
field.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from jaxmeta import envs
from jaxmeta.algorithms import registry
from jaxmeta.algorithms.registry import AlgorithmSpec
from jaxmeta.config import ConfigError, check_choice, check_int
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
    seed_layout: how several seeds run: "vmap", "map" (in turn, in one program) or
      "auto" (per algorithm on a CPU, "vmap" on an accelerator; see `resolved_seed_layout`).
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
    seed_layout: str = "auto"

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
        check_choice("seed_layout", self.seed_layout, ("auto", "vmap", "map"))
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

    def resolved_seed_layout(self) -> str:
        """How several seeds run: "vmap" (one batched program) or "map" (one seed after
        the other inside one program). "auto": on a CPU the algorithm's measured faster
        layout (`AlgorithmSpec.cpu_seed_layout`: MAML and SNAIL "map", RL^2 "vmap"; see
        docs/benchmarks.md), "vmap" on an accelerator."""
        if self.seed_layout != "auto":
            return self.seed_layout
        return self.spec.cpu_seed_layout if jax.default_backend() == "cpu" else "vmap"

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

    def identity_defaults(self) -> dict:
        """{"config": {field: default}}: what a checkpoint saved before a config field
        existed is taken to hold (the field's default, which the older code used)."""
        fields = [f for f in dataclasses.fields(self.config) if f.init and f.default is not dataclasses.MISSING]
        return {"config": {f.name: canonical(f.default) for f in fields}}

    @classmethod
    def from_json(cls, values: dict) -> RunSettings:
        """Settings from `to_json`'s form (config.json of a run)."""
        if values["algorithm"] not in registry.REGISTRY:
            raise ConfigError(f"unknown algorithm {values['algorithm']!r}", "algorithm")
        spec = registry.get(values["algorithm"])
        kw = {k: values[k] for k in ("algorithm", "env", "env_kwargs", "num_batches", "seed", "num_seeds",
                                     "checkpoint_every", "simulator", "seed_layout") if k in values}
        return cls(config=config_from_json(spec.config_cls, values["config"]), **kw)


def config_from_json(cls, values: dict):
    """A config dataclass from its JSON form (lists back to tuples where the field is one).

    An unknown key is a ConfigError naming it (a hand-edited typo is not ignored)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config must be a JSON object of {cls.__name__} fields, got {values!r}", "config")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for k in values:
        if k not in fields:
            raise ConfigError(f"{k!r} is not a field of {cls.__name__}", k)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# --------------------------------------------------------------------------- config files

FILE_KEYS = ("algorithm", "env", "env_kwargs", "config", "num_batches", "seed", "num_seeds", "checkpoint_every",
             "simulator", "seed_layout")
SHIPPED = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> dict[str, Path]:
    """The published settings shipped with jaxmeta, by name (`jaxmeta train --config NAME`)."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}


def read_settings_file(path: str | os.PathLike) -> dict:
    """A run-settings file (TOML, YAML or JSON) as a dict of RunSettings fields.

    `path` may also name a shipped config (`maml-navigation`, see `shipped_configs`).
    The top level holds `algorithm`, `env`, `num_batches`, `seed`, ... and the tables
    `[config]` (the algorithm's config fields) and `[env_kwargs]` (the environment's).
    An unknown key is a ConfigError naming it.
    """
    p = Path(path)
    if not p.exists() and str(path) in shipped_configs():
        p = shipped_configs()[str(path)]
    try:
        text = p.read_text()
    except OSError as e:
        known = ", ".join(shipped_configs())
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}; shipped configs: {known}", "config") \
            from None
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            values = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        elif p.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"config file {p} must end in .toml, .yaml, .yml or .json", "config")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - each parser has its own error types
        raise ConfigError(f"config file {p} does not parse: {' '.join(str(e).split())[:200]}", "config") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {p} must hold a table of settings", "config")
    for k in values:
        if k not in FILE_KEYS:
            raise ConfigError(f"config file {p}: unknown key {k!r}; known: {', '.join(FILE_KEYS)}", k)
    for k in ("config", "env_kwargs"):
        if not isinstance(values.get(k, {}), dict):
            raise ConfigError(f"config file {p}: {k} must be a table", k)
    return values


def merge_settings(file_values: dict, algorithm: str | None, env: str | None, config_kw: dict, env_kw: dict,
                   scalars: dict) -> RunSettings:
    """RunSettings from a settings file overridden by command-line values (None: not
    given). Unknown config fields in the file are a ConfigError naming the field."""
    algorithm = algorithm or file_values.get("algorithm")
    if algorithm is None:
        raise ConfigError("no algorithm: name one, or give a config file that does", "algorithm")
    if file_values.get("algorithm") not in (None, algorithm):
        raise ConfigError(f"the config file is for {file_values['algorithm']!r}, not {algorithm!r}", "algorithm")
    if algorithm not in registry.REGISTRY:
        raise ConfigError(f"unknown algorithm {algorithm!r}; known: {', '.join(sorted(registry.REGISTRY))}",
                          "algorithm")
    spec = registry.get(algorithm)
    file_env = file_values.get("env")
    env = env or file_env
    file_env_kw = file_values.get("env_kwargs", {}) if env == file_env or file_env is None else {}
    config = config_from_json(spec.config_cls, {**file_values.get("config", {}), **config_kw})
    given = {k: v for k, v in scalars.items() if v is not None}
    rest = {k: file_values[k] for k in ("num_batches", "seed", "num_seeds", "checkpoint_every", "simulator",
                                        "seed_layout") if k in file_values}
    return RunSettings(algorithm, env, {**file_env_kw, **env_kw}, config, **{**rest, **given})


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def settings_to_toml(settings: RunSettings) -> str:
    """The settings as a file `read_settings_file` reads back (for --print-config)."""
    values = settings.to_json()
    lines = [f"{k} = {_toml_value(values[k])}" for k in FILE_KEYS if k not in ("config", "env_kwargs")]
    for table in ("env_kwargs", "config"):
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values[table].items() if v is not None]
    return "\n".join(lines) + "\n"
