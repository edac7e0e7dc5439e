import os
import tempfile

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session (this process and the CLI
# subprocesses the tests start): the many tiny runs compile each program once.
CACHE_DIR = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jaxmeta-tests-jit-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def run_cli(args, capsys):
    """Run the `jaxmeta` command in-process: (exit code, stdout, stderr)."""
    from jaxmeta import cli

    try:
        code = cli.main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- shared helpers
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A MAML run that compiles and trains in seconds.
TINY = ["--env", "navigation2d", "--meta-batch-size", "4", "--num-episodes", "2", "--hidden-sizes", "16",
        "--horizon", "10", "--num-eval-tasks", "4", "--no-progress"]


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes (to check that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def metrics_rows(run) -> list[dict]:
    """metrics.jsonl of a run without the wall-clock field."""
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def subprocess_env(cache_dir, **extra) -> dict:
    """Environment for `python -m jaxmeta.cli` subprocesses: CPU, this checkout, and a
    shared persistent compilation cache so that they compile each program once."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    # one host device, as in this process (the CLI's own CPU layout is tested in test_cpu_layout.py)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.update(extra)
    return env


def jaxmeta_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "jaxmeta.cli", *args]


def run_jaxmeta(args, env, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(jaxmeta_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, **kw)


def central_differences(loss, x, num: int, seed: int, eps: float = 1e-6):
    """Directional central differences of `loss` at the flat float64 vector `x`: (ds, fds)
    for `num` random unit directions d (keys PRNGKey(seed + i)), fd = (loss(x + eps d) -
    loss(x - eps d)) / (2 eps)."""
    import jax
    import jax.numpy as jnp

    ds = [jax.random.normal(jax.random.PRNGKey(seed + i), x.shape, jnp.float64) for i in range(num)]
    ds = [d / jnp.linalg.norm(d) for d in ds]
    return ds, [float(loss(x + eps * d) - loss(x - eps * d)) / (2 * eps) for d in ds]


def relative_errors(grad, ds, fds) -> list[float]:
    """|grad . d - fd| / |fd| per direction (`central_differences`'s)."""
    return [abs(float(grad @ d) - fd) / max(abs(fd), 1e-12) for d, fd in zip(ds, fds)]


def one_line_error(err: str) -> str:
    """The error output must be exactly one line and no traceback; returns it."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    return lines[0]


# --------------------------------------------------------------------------- a toy algorithm
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from jaxmeta.algorithms import MAMLConfig, registry  # noqa: E402
from jaxmeta.algorithms.base import Algorithm  # noqa: E402
from jaxmeta.algorithms.registry import AlgorithmSpec  # noqa: E402
from jaxmeta.driver import RunSettings  # noqa: E402
from jaxmeta.types import AdaptationCurve  # noqa: E402


def toy_spec(nan_at: int | None = None, nan_in: str = "metric") -> AlgorithmSpec:
    """A 3-parameter quadratic learner that compiles in milliseconds; it can inject a NaN
    into its loss metric or into its updated parameters at meta-iteration `nan_at`."""

    def build(env, config, collector=None):
        def init(key):
            return {"w": jax.random.normal(key, (3,)), "step": jnp.zeros((), jnp.int32)}

        def sample(state, key):
            return jax.random.normal(key, (3,))  # the batch: a target

        def update(state, target):
            loss, g = jax.value_and_grad(lambda w: jnp.sum((w - target) ** 2))(state["w"])
            w = state["w"] - 0.1 * g
            if nan_at is not None:
                bad = state["step"] + 1 == nan_at
                if nan_in == "metric":
                    loss = jnp.where(bad, jnp.nan, loss)
                else:
                    w = jnp.where(bad, jnp.nan, w)
            return {"w": w, "step": state["step"] + 1}, {"loss": loss, "toy_return": -loss}

        def evaluate(state, key):
            r = -jnp.sum(state["w"] ** 2)
            return AdaptationCurve(jnp.stack([r, r]), jnp.stack([r, r])[None].repeat(2, 0))

        return Algorithm(init, sample, update, evaluate)

    return AlgorithmSpec("toy", MAMLConfig, build, "navigation2d", ("navigation2d",))


@pytest.fixture
def toy(monkeypatch):
    """Registers the toy learner as "toy"; returns settings for it (nan_at, nan_in, num_batches, ...)."""

    def settings(nan_at=None, nan_in="metric", **kw):
        monkeypatch.setitem(registry.REGISTRY, "toy", toy_spec(nan_at, nan_in))
        return RunSettings("toy", config=MAMLConfig(), **{"checkpoint_every": 0, **kw})

    return settings




@pytest.fixture(scope="session")
def jax_cache():
    """The session's persistent compilation cache, for `subprocess_env`."""
    return CACHE_DIR


def tiny_run(root, name: str, num_batches: int, checkpoint_every: int = 0):
    """A finished tiny MAML run made through the CLI in-process: RUN path."""
    from jaxmeta import cli

    assert cli.main(["train", "maml", *TINY, "--num-batches", str(num_batches), "--checkpoint-every",
                     str(checkpoint_every), "--out", str(root), "--name", name]) == 0
    return Path(root) / name
