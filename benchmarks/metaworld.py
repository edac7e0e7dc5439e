"""MAML-TRPO meta-training on Meta-World ML1 through the `metaworld` host simulator.

One JSON line per worker count with env steps per second of meta-training, seconds per
meta-iteration (median of --repeats after jax.block_until_ready; the first iteration,
which compiles the jitted pieces, is timed separately), and where the wall time of an
iteration goes: in the simulator's calls ("simulator_fraction": the learner waiting for
the workers, inter-process transfers included), the rest ("learner_fraction": the
jitted policy at every step, advantages and inner steps between collections, the TRPO
update), and the busiest worker's own stepping time ("busiest_worker_fraction"; its
complement "learner_overhead_fraction" is the share of the iteration in which the
slowest worker is not stepping: policy, transfers, update, imbalance between workers;
with pipelined stepping the policy runs while workers step, which helps only where the
learner has a core of its own), and that overhead's parts besides the update
("between_collections_fraction": the learner's work outside collections and the update;
"idle_in_collections_fraction": the time inside collections in which the busiest
worker is not stepping); peak memory of the learner process and of the workers.
Then one summary line: the speed-up of the largest worker count over one worker and the learner's
overhead, against the goals (>= 1.7x with 2 workers, < 10%). `--pipelined 0,1` measures
both collection loops.

    python benchmarks/metaworld.py                       # the reference: 20 tasks x 10 episodes x 500 steps
    python benchmarks/metaworld.py --meta-batch-size 10 --num-episodes 5 --repeats 3

Each worker count runs in its own process, so the memory figures are its own.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

# This file's name is the metaworld package's: keep its folder off sys.path (Python puts
# it first when running a script) so that `import metaworld` finds the package, and load
# the shared helpers from their file.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
_spec = importlib.util.spec_from_file_location("benchmarks_common", os.path.join(HERE, "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

import jax  # noqa: E402

device_info, emit, peak_memory_mb = common.device_info, common.emit, common.peak_memory_mb


class TimedSimulator:
    """A host simulator that adds the wall time of its calls to `clock["sim"]`;
    `pipelined=False` hides the simulator's pipelined stepping (one blocking step per
    time step, as before it existed)."""

    def __init__(self, sim, clock: dict, pipelined: bool = True):
        self.sim, self.clock = sim, clock
        self.num_envs = sim.num_envs
        self.reports_success = sim.reports_success
        self.pipelined = pipelined and sim.pipelined

    def step_send(self, rows, action):
        return self._timed("step_send", rows, action)

    def step_recv(self):
        return self._timed("step_recv")

    def _timed(self, name, *args):
        t0 = time.perf_counter()
        out = getattr(self.sim, name)(*args)
        self.clock["sim"] += time.perf_counter() - t0
        return out

    def set_tasks(self, tasks):
        return self._timed("set_tasks", tasks)

    def reset(self, seed):
        return self._timed("reset", seed)

    def step(self, action):
        return self._timed("step", action)

    def close(self):
        self.sim.close()


def _worker_peak_mb(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _busiest_worker_s(sims) -> float:
    """Seconds the busiest worker has spent stepping Meta-World so far."""
    return max((max(s.sim.worker_busy_s()) for s in sims), default=0.0)


def _timed_collections(collector, sims, clock: dict) -> None:
    """Make `collector.episodes` add its wall seconds to `clock["collect"]` and the
    busiest worker's stepping seconds during it to `clock["collect_busy"]`."""
    episodes = collector.episodes

    def timed(*args, **kwargs):
        busy0 = _busiest_worker_s(sims)
        t0 = time.perf_counter()
        out = episodes(*args, **kwargs)
        clock["collect"] += time.perf_counter() - t0
        clock["collect_busy"] += _busiest_worker_s(sims) - busy0
        return out

    collector.episodes = timed


def run_one(args, workers: int, pipelined: bool) -> dict:
    import jaxmeta
    from jaxmeta import envs
    from jaxmeta.algorithms.maml import MAMLConfig
    from jaxmeta.envs.metaworld import MetaWorldSimulator
    from jaxmeta.host import HostCollector

    env = envs.make("metaworld-ml1", task_name=args.task, horizon=args.horizon, num_workers=workers)
    config = MAMLConfig(hidden_sizes=(64, 64), meta_batch_size=args.meta_batch_size, num_episodes=args.num_episodes,
                        outer="trpo", cg_subsample=args.cg_subsample)
    clock = {"sim": 0.0, "collect": 0.0, "collect_busy": 0.0}
    sims = []

    def make_sim(n):
        sims.append(TimedSimulator(MetaWorldSimulator(env, n), clock, pipelined))
        return sims[-1]

    collector = HostCollector(env, make_sim, max_envs=config.envs_per_batch)
    _timed_collections(collector, sims, clock)
    algo = jaxmeta.maml(env, config=config, collector=collector)
    update = jax.jit(algo.update)
    state = algo.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    env_steps = config.meta_batch_size * config.num_episodes * env.horizon * (config.num_inner_steps + 1)

    def iteration(i):
        """(state, seconds, of which in the simulator, of which in the update, the busiest
        worker's stepping seconds, seconds in collections, the busiest worker's stepping
        seconds during them)."""
        nonlocal state
        clock.update(sim=0.0, collect=0.0, collect_busy=0.0)
        busy0 = _busiest_worker_s(sims)
        t0 = time.perf_counter()
        batch = jax.block_until_ready(algo.sample(state, jax.random.fold_in(key, i)))
        t1 = time.perf_counter()
        state, metrics = jax.block_until_ready(update(state, batch))
        t2 = time.perf_counter()
        return (t2 - t0, clock["sim"], t2 - t1, _busiest_worker_s(sims) - busy0, clock["collect"],
                clock["collect_busy"])

    t0 = time.perf_counter()
    first_s = iteration(0)[0]  # starts the workers, builds the benchmark, compiles
    runs = [iteration(i + 1) for i in range(args.repeats)]
    secs = [r[0] for r in runs]
    sec = statistics.median(secs)
    sim_frac = statistics.median([r[1] / r[0] for r in runs])
    update_frac = statistics.median([r[2] / r[0] for r in runs])
    busy_frac = statistics.median([r[3] / r[0] for r in runs])
    # the overhead's parts: the update, the learner's work between collections (the inner
    # step, advantages, keys), and the time in collections the busiest worker does not step
    between_frac = statistics.median([(r[0] - r[2] - r[4]) / r[0] for r in runs])
    idle_frac = statistics.median([(r[4] - r[5]) / r[0] for r in runs])
    record = {
        "benchmark": "metaworld_maml_trpo",
        "env": f"metaworld-ml1 ({args.task})",
        "workers": workers,
        "pipelined": pipelined,
        "config": common.maml_config_record(config, env.horizon),
        "s_per_meta_iteration": sec,
        "s_per_meta_iteration_all": secs,
        "env_steps_per_meta_iteration": env_steps,
        "env_steps_per_s": env_steps / sec,
        "simulator_fraction": sim_frac,
        "learner_fraction": 1.0 - sim_frac,
        "update_fraction": update_frac,
        "busiest_worker_fraction": busy_frac,
        "learner_overhead_fraction": 1.0 - busy_frac,
        "between_collections_fraction": between_frac,
        "idle_in_collections_fraction": idle_frac,
        "first_iteration_s": first_s,
        "compile_s": max(first_s - sec, 0.0),
        "total_s": time.perf_counter() - t0,
        "worker_peak_rss_mb": _worker_peak_mb([p for s in sims for p in s.sim.worker_pids]),
        "load_average_1m": os.getloadavg()[0],
        **peak_memory_mb(),
        **device_info(),
    }
    collector.close()
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: 1,2)")
    p.add_argument("--task", default="button-press-v3")
    p.add_argument("--meta-batch-size", type=int, default=20)
    p.add_argument("--num-episodes", type=int, default=10)
    p.add_argument("--horizon", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cg-subsample", type=float, default=1.0,
                   help="fraction of the tasks the TRPO step's Fisher-vector products use (default: 1, all)")
    p.add_argument("--pipelined", default="1", help="comma-separated 0 (one blocking step per time step) / "
                   "1 (the policy of half the tasks overlaps the stepping of the other half); default: 1")
    p.add_argument("--one", default=None, help="WORKERS,PIPELINED: run one setting in this process (internal)")
    args = p.parse_args(argv)
    if args.one is not None:
        w, pipe = (int(x) for x in args.one.split(","))
        print(json.dumps(run_one(args, w, bool(pipe))), flush=True)
        return
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for pipe in (bool(int(x)) for x in args.pipelined.split(",")):
        results = {}
        for w in (int(x) for x in args.workers.split(",")):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), *base, "--one", f"{w},{int(pipe)}"],
                                 check=True, capture_output=True, text=True).stdout
            rec = json.loads(out.strip().splitlines()[-1])
            emit(rec)
            results[w] = rec
        if 1 in results and len(results) > 1:
            most = max(results)
            speedup = results[most]["env_steps_per_s"] / results[1]["env_steps_per_s"]
            overhead = results[most]["learner_overhead_fraction"]
            emit({
                "benchmark": "metaworld_summary",
                "pipelined": pipe,
                f"speedup_{most}_workers_over_1": speedup,
                "speedup_goal": 1.7 if most == 2 else None,
                f"learner_fraction_{most}_workers": results[most]["learner_fraction"],
                f"learner_overhead_fraction_{most}_workers": overhead,
                "learner_fraction_goal": 0.10,
                "speedup_met": speedup >= 1.7 if most == 2 else None,
                "learner_overhead_met": overhead < 0.10,
            })


if __name__ == "__main__":
    main()
