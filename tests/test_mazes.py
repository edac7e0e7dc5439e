"""Generated mazes: perfect and connected, jit == no-jit, vmap == loop, BFS, env semantics."""
from collections import deque

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import ConfigError
from jaxmeta.envs import make
from jaxmeta.envs.mazes import MOVES, GeneratedMaze, bfs_distances, kruskal_maze, num_openings, open_sides
from jaxmeta.rollout import rollout_episodes


def _python_bfs(walls: np.ndarray, source) -> np.ndarray:
    """Textbook BFS over the cell graph of an occupancy grid, in Python."""
    R, C = (walls.shape[0] - 1) // 2, (walls.shape[1] - 1) // 2
    d = np.full((R, C), R * C, np.int64)
    d[source[0], source[1]] = 0
    queue = deque([tuple(source)])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            nr, nc = r + dr, c + dc
            if not walls[2 * r + 1 + dr, 2 * c + 1 + dc] and d[nr, nc] > d[r, c] + 1:
                d[nr, nc] = d[r, c] + 1
                queue.append((nr, nc))
    return d


@pytest.mark.parametrize("rows,cols,n", [(7, 7, 4096), (3, 8, 512), (2, 2, 64)])
def test_every_generated_maze_is_perfect_and_connected(rows, cols, n):
    env = GeneratedMaze(rows=rows, cols=cols, placement="random", min_distance=min(3, rows + cols - 2))

    @jax.jit
    def draw(key):
        tasks = env.task_distribution().sample_batch(key, n)
        return tasks, jax.vmap(num_openings)(tasks.walls), jax.vmap(bfs_distances)(tasks.walls, tasks.start)

    tasks, edges, dist = draw(jax.random.PRNGKey(rows * cols))  # [n], [n, R, C]
    # a spanning tree: cells = edges + 1 and every cell reachable from the start
    np.testing.assert_array_equal(np.asarray(edges), rows * cols - 1)
    assert int(jnp.max(dist)) < rows * cols
    d_goal = dist[jnp.arange(n), tasks.goal[:, 0], tasks.goal[:, 1]]
    assert int(jnp.min(d_goal)) >= min(3, rows + cols - 2)  # placement honours the minimum distance
    # the border is closed and every cell pixel is open
    w = np.asarray(tasks.walls)
    assert w[:, 0].all() and w[:, -1].all() and w[:, :, 0].all() and w[:, :, -1].all()
    assert not w[:, 1::2, 1::2].any()
    # different keys give different layouts (a 2 x 2 grid has exactly 4 spanning trees: all drawn)
    layouts = {w[i].tobytes() for i in range(64)}
    assert len(layouts) == 4 if rows * cols == 4 else len(layouts) > 32


def test_braided_mazes_have_the_extra_openings_and_stay_connected():
    env = GeneratedMaze(rows=6, cols=5, extra_openings=4)

    @jax.jit
    def draw(key):
        tasks = env.task_distribution().sample_batch(key, 512)
        return jax.vmap(num_openings)(tasks.walls), jax.vmap(bfs_distances)(tasks.walls, tasks.start)

    edges, dist = draw(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(edges), 6 * 5 - 1 + 4)
    assert int(jnp.max(dist)) < 30
    with pytest.raises(ConfigError, match="extra_openings"):
        GeneratedMaze(rows=3, cols=3, extra_openings=5)  # 12 internal walls, 8 in the tree: at most 4 more


def test_bfs_matches_python_bfs():
    keys = jax.random.split(jax.random.PRNGKey(0), 16)
    sources = np.stack([np.arange(16) % 5, (3 * np.arange(16)) % 6], 1)
    for extra in (0, 3):
        walls = jax.jit(jax.vmap(lambda k: kruskal_maze(k, 5, 6, extra)))(keys)
        dist = jax.jit(jax.vmap(bfs_distances))(walls, jnp.asarray(sources))
        for i in range(16):
            np.testing.assert_array_equal(np.asarray(dist[i]), _python_bfs(np.asarray(walls[i]), sources[i]))


def test_generator_jit_equals_no_jit_and_vmap_equals_loop():
    env = GeneratedMaze(rows=5, cols=4, extra_openings=2, placement="random", min_distance=2)
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    sample = jax.jit(env.sample_task)
    chex.assert_trees_all_equal(env.sample_task(keys[0]), sample(keys[0]))  # no jit == jit
    batched = jax.jit(jax.vmap(env.sample_task))(keys)
    for i, key in enumerate(keys):  # vmap == a loop over keys
        chex.assert_trees_all_equal(sample(key), jax.tree.map(lambda x: x[i], batched))


def test_moves_walls_goal_and_observations():
    env = GeneratedMaze(rows=4, cols=4, observation="local", rf_size=3, step_cost=0.01, horizon=30)
    task = env.sample_task(jax.random.PRNGKey(0))
    east, south = open_sides(task.walls)
    state, ts = env.reset(jax.random.PRNGKey(1), task)
    np.testing.assert_array_equal(state.pos, [0, 0])
    # the local window shows the four walls around the start cell
    window = np.asarray(ts.obs[:9]).reshape(3, 3)
    assert window[0, 1] == 1.0 and window[1, 0] == 1.0  # border above and to the left
    assert window[1, 2] == float(not east[0, 0]) and window[2, 1] == float(not south[0, 0])
    # moving up (into the border) stays put and costs the step cost
    state2, ts2 = env.step(jax.random.PRNGKey(2), state, jnp.int32(0), task)
    np.testing.assert_array_equal(state2.pos, [0, 0])
    assert float(ts2.reward) == pytest.approx(-0.01) and not bool(ts2.terminated)
    # an oracle that follows BFS distances to the goal arrives in exactly d moves with +1
    d_goal = bfs_distances(task.walls, task.goal)  # [R, C] distance of every cell to the goal
    pos, total, steps = state.pos, 0.0, 0
    s = state
    while not np.array_equal(np.asarray(pos), np.asarray(task.goal)):
        nxt = [(a, np.asarray(pos) + MOVES[a]) for a in range(4)
               if not task.walls[2 * pos[0] + 1 + MOVES[a][0], 2 * pos[1] + 1 + MOVES[a][1]]]
        a = min(nxt, key=lambda x: int(d_goal[x[1][0], x[1][1]]))[0]
        s, ts = env.step(jax.random.PRNGKey(3), s, jnp.int32(a), task)
        pos, total, steps = s.pos, total + float(ts.reward), steps + 1
    assert steps == int(d_goal[0, 0]) and bool(ts.terminated)
    assert total == pytest.approx(1.0 - 0.01 * (steps - 1))
    # observation sizes
    for obs, size in (("cell", 16), ("local", 18), ("grid", 3 * 81)):
        e = GeneratedMaze(rows=4, cols=4, observation=obs, rf_size=3)
        assert e.reset(None, task)[1].obs.shape == (size,) == e.observation_space.shape
    cell = GeneratedMaze(rows=4, cols=4).step(None, state, jnp.int32(1), task)[1].obs  # right
    assert float(cell[1]) == float(east[0, 0]) and float(cell.sum()) == 1.0


def test_rollout_and_float64():
    env = GeneratedMaze(rows=3, cols=3, observation="grid", horizon=12)
    task = env.sample_task(jax.random.PRNGKey(0))
    act = lambda p, obs, key: (jax.random.randint(key, (obs.shape[0],), 0, 4), jnp.zeros(obs.shape[0]))
    traj = jax.jit(lambda k: rollout_episodes(env, act, None, task, k, 5))(jax.random.PRNGKey(1))
    assert traj.obs.shape == (12, 5, 3 * 49) and traj.obs.dtype == jnp.float32
    with jax.enable_x64(True):
        ts = env.reset(None, task)[1]
        assert ts.obs.dtype == jnp.float64 and ts.reward.dtype == jnp.float64


def test_registered_and_config_errors():
    assert isinstance(make("maze_gen", rows=5), GeneratedMaze)
    for kw, field in (({"rf_size": 4}, "rf_size"), ({"placement": "centre"}, "placement"),
                      ({"min_distance": 3}, "min_distance"), ({"observation": "pixels"}, "observation"),
                      ({"rows": 1}, "rows"), ({"step_cost": -0.1}, "step_cost")):
        with pytest.raises(ConfigError, match=field) as e:
            GeneratedMaze(**kw)
        assert e.value.field == field
