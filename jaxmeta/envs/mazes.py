"""Mazes generated in JAX: perfect (or braided) mazes over an R x C cell grid, as tasks.

A task is data, `MazeGenTask(walls, start, goal)`: the walls are a (2R+1) x (2C+1)
occupancy grid (cell (r, c) is pixel (2r+1, 2c+1); the pixel between two neighbouring
cells is the wall between them), and start and goal are cells. `kruskal_maze` draws a
perfect maze (a spanning tree of the grid graph: every cell reachable by exactly one
path) with randomised Kruskal's algorithm (Kruskal 1956): the internal walls in a
random order, each removed when the cells it separates are not yet connected, the
union-find kept as a label per cell; `extra_openings` then removes that many more
walls, chosen uniformly among those left, which makes loops (a braided maze).
Everything is `jax.random` and `lax.fori_loop`, so `jax.vmap` over keys draws a batch of
layouts in one program (1,024 7 x 7 mazes in milliseconds, `benchmarks/maze_q.py`).

`bfs_distances` is breadth-first search in JAX (synchronous relaxation until nothing
changes): start/goal placement uses it for a minimum distance, tests and baselines for
the optimal path length.

`GeneratedMaze` is the `MetaEnv`: the agent moves between cells (up, right, down, left;
a move into a wall leaves it in place), gets +1 on reaching the goal (the episode then
terminates) and `-step_cost` on every other step; episodes are truncated after
`horizon` steps. Observations (`observation=`): "cell", the one-hot agent cell (the
tabular case, Markov for a fixed maze); "local", the walls and goal in an
`rf_size` x `rf_size` window of the pixel grid around the agent (partially observable,
as gymnax MetaMaze); "grid", the whole maze as three planes (walls, agent, goal).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmeta.config import ConfigError, check_choice, check_float, check_int
from jaxmeta.envs.base import Box, Discrete, TaskDistribution
from jaxmeta.types import TimeStep

PLACEMENTS = ("corners", "random")
OBSERVATIONS = ("cell", "local", "grid")
# action -> (d_row, d_col): up, right, down, left
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], np.int32)


class MazeGenTask(NamedTuple):
    walls: jax.Array  # [2R+1, 2C+1] bool, True = wall
    start: jax.Array  # [2] int32 cell (row, col)
    goal: jax.Array  # [2] int32 cell (row, col)


class MazeGenState(NamedTuple):
    pos: jax.Array  # [2] int32 agent cell
    t: jax.Array  # [] int32 steps taken


def _float_dtype():
    """The default float type: float64 when x64 is enabled, float32 otherwise."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def grid_edges(rows: int, cols: int):
    """The internal walls of an R x C grid, as numpy arrays (static, built once).

    Returns:
      (u [W], v [W], wall_row [W], wall_col [W]): the two cells (flat indices r * C + c)
      each wall separates and its pixel in the occupancy grid; W = R(C-1) + (R-1)C.
    """
    u, v, wr, wc = [], [], [], []
    for r in range(rows):
        for c in range(cols):
            if c + 1 < cols:  # east wall
                u.append(r * cols + c), v.append(r * cols + c + 1), wr.append(2 * r + 1), wc.append(2 * c + 2)
            if r + 1 < rows:  # south wall
                u.append(r * cols + c), v.append((r + 1) * cols + c), wr.append(2 * r + 2), wc.append(2 * c + 1)
    return tuple(np.asarray(x, np.int32) for x in (u, v, wr, wc))


def kruskal_maze(key: jax.Array, rows: int, cols: int, extra_openings: int = 0) -> jax.Array:
    """A random maze by randomised Kruskal's algorithm, plus `extra_openings` loops.

    Args:
      key: PRNG key.
      rows, cols: cells per side (static).
      extra_openings: walls removed after the spanning tree is complete, chosen
        uniformly among the internal walls left (0: a perfect maze).
    Returns:
      [2R+1, 2C+1] bool occupancy grid (True = wall).
    """
    u, v, wr, wc = grid_edges(rows, cols)
    num_walls = u.shape[0]
    k_order, k_extra = jax.random.split(key)
    order = jax.random.permutation(k_order, num_walls)  # [W]
    u_o, v_o = jnp.asarray(u)[order], jnp.asarray(v)[order]  # [W] the cells of the i-th wall tried

    def body(i, carry):
        label, opened = carry  # [R*C] component label per cell, [W] bool (in the order tried)
        a, b = label[u_o[i]], label[v_o[i]]
        join = a != b
        label = jnp.where(join & (label == b), a, label)  # union: relabel b's component
        return label, opened.at[i].set(join)

    label0 = jnp.arange(rows * cols, dtype=jnp.int32)
    _, opened_o = lax.fori_loop(0, num_walls, body, (label0, jnp.zeros((num_walls,), bool)))
    opened = jnp.zeros((num_walls,), bool).at[order].set(opened_o)  # [W] by wall
    if extra_openings:
        priority = jnp.where(opened, -jnp.inf, jax.random.uniform(k_extra, (num_walls,)))  # [W]
        _, extra = lax.top_k(priority, extra_openings)
        opened = opened.at[extra].set(True)
    walls = jnp.ones((2 * rows + 1, 2 * cols + 1), bool)
    walls = walls.at[1::2, 1::2].set(False)  # cells
    return walls.at[wr, wc].set(~opened)


def open_sides(walls: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(open_east [R, C], open_south [R, C]): no wall between (r, c) and (r, c+1) / (r+1, c)."""
    return ~walls[1::2, 2::2], ~walls[2::2, 1::2]


def num_openings(walls: jax.Array) -> jax.Array:
    """Number of open internal walls (graph edges); a perfect maze has R*C - 1."""
    east, south = open_sides(walls)
    return jnp.sum(east) + jnp.sum(south)


def bfs_distances(walls: jax.Array, source: jax.Array) -> jax.Array:
    """Shortest path length (in moves) from `source` to every cell; R*C where unreachable.

    Breadth-first search as synchronous relaxation d <- min(d, d_neighbour + 1) over
    open walls, repeated until no distance changes (at most R*C - 1 rounds).

    Args:
      walls: [2R+1, 2C+1] bool occupancy grid; source: [2] int cell.
    Returns:
      [R, C] int32 distances.
    """
    east, south = open_sides(walls)
    R, C = east.shape
    far = R * C
    d0 = jnp.full((R, C), far, jnp.int32).at[source[0], source[1]].set(0)

    def relax(d):
        inf_col = jnp.full((R, 1), far, jnp.int32)
        inf_row = jnp.full((1, C), far, jnp.int32)
        from_west = jnp.where(east[:, :-1], d[:, :-1] + 1, far)  # reaches columns 1..C-1
        from_east = jnp.where(east[:, :-1], d[:, 1:] + 1, far)  # reaches columns 0..C-2
        from_north = jnp.where(south[:-1], d[:-1] + 1, far)
        from_south = jnp.where(south[:-1], d[1:] + 1, far)
        d = jnp.minimum(d, jnp.concatenate([inf_col, from_west], 1))
        d = jnp.minimum(d, jnp.concatenate([from_east, inf_col], 1))
        d = jnp.minimum(d, jnp.concatenate([inf_row, from_north], 0))
        return jnp.minimum(d, jnp.concatenate([from_south, inf_row], 0))

    def cond(c):
        d, prev, i = c
        return jnp.any(d != prev) & (i < far)

    def body(c):
        d, _, i = c
        return relax(d), d, i + 1

    d, _, _ = lax.while_loop(cond, body, (relax(d0), d0, jnp.int32(1)))
    return jnp.minimum(d, far)


def place(key: jax.Array, walls: jax.Array, placement: str, min_distance: int) -> tuple[jax.Array, jax.Array]:
    """Start and goal cells: opposite corners, or random with a minimum BFS distance.

    With "random", the start is uniform over the cells and the goal uniform over the
    cells at least `min_distance` moves away (the farthest cell if there is none).
    """
    R, C = (walls.shape[0] - 1) // 2, (walls.shape[1] - 1) // 2
    if placement == "corners":
        return jnp.zeros((2,), jnp.int32), jnp.array([R - 1, C - 1], jnp.int32)
    k_start, k_goal = jax.random.split(key)
    s = jax.random.randint(k_start, (), 0, R * C)
    start = jnp.stack([s // C, s % C]).astype(jnp.int32)
    d = bfs_distances(walls, start).reshape(-1)  # [R*C]
    ok = (d >= min_distance) & (d < R * C)
    ok = jnp.where(jnp.any(ok), ok, d == jnp.max(jnp.where(d < R * C, d, -1)))
    g = jax.random.categorical(k_goal, jnp.where(ok, 0.0, -jnp.inf))
    return start, jnp.stack([g // C, g % C]).astype(jnp.int32)


@dataclass(frozen=True)
class GeneratedMaze:
    """Procedurally generated mazes (randomised Kruskal, optional loops) as a task distribution."""

    rows: int = 7
    cols: int = 7
    extra_openings: int = 0  # walls removed after the spanning tree (loops; 0: perfect mazes)
    placement: str = "corners"  # "corners" (start top-left, goal bottom-right) or "random"
    min_distance: int = 1  # "random" placement: BFS moves from start to goal at least
    observation: str = "cell"  # "cell" (one-hot), "local" (receptive field) or "grid" (3 planes)
    rf_size: int = 5  # "local": window side in pixels (odd)
    step_cost: float = 0.0  # reward of every step that does not reach the goal is -step_cost
    horizon: int = 100

    def __post_init__(self):
        check_int("rows", self.rows, 2, 64)
        check_int("cols", self.cols, 2, 64)
        internal = self.rows * (self.cols - 1) + (self.rows - 1) * self.cols
        check_int("extra_openings", self.extra_openings, 0, internal - (self.rows * self.cols - 1))
        check_choice("placement", self.placement, PLACEMENTS)
        check_int("min_distance", self.min_distance, 1, self.rows * self.cols - 1)
        if self.placement == "corners" and self.min_distance != 1:
            raise ConfigError("min_distance is a setting of placement='random'; corners are placed as they are",
                              "min_distance")
        check_choice("observation", self.observation, OBSERVATIONS)
        check_int("rf_size", self.rf_size, 3, 31)
        if self.rf_size % 2 == 0:
            raise ConfigError(f"rf_size must be odd, got {self.rf_size}", "rf_size")
        check_float("step_cost", self.step_cost, 0.0, 1.0)
        check_int("horizon", self.horizon, 1, 1_000_000)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return 2 * self.rows + 1, 2 * self.cols + 1

    @property
    def observation_space(self) -> Box:
        P = self.grid_shape[0] * self.grid_shape[1]
        size = {"cell": self.rows * self.cols, "local": 2 * self.rf_size**2, "grid": 3 * P}[self.observation]
        return Box(0.0, 1.0, (size,))

    @property
    def action_space(self) -> Discrete:
        return Discrete(4)

    def sample_task(self, key: jax.Array) -> MazeGenTask:
        """One maze with its start and goal."""
        k_maze, k_place = jax.random.split(key)
        walls = kruskal_maze(k_maze, self.rows, self.cols, self.extra_openings)
        start, goal = place(k_place, walls, self.placement, self.min_distance)
        return MazeGenTask(walls, start, goal)

    def task_distribution(self) -> TaskDistribution:
        return TaskDistribution(self.sample_task)

    def _obs(self, pos, task: MazeGenTask):
        dtype = _float_dtype()
        if self.observation == "cell":
            return jax.nn.one_hot(pos[0] * self.cols + pos[1], self.rows * self.cols, dtype=dtype)
        H, W = self.grid_shape
        goal = jnp.zeros((H, W), dtype).at[2 * task.goal[0] + 1, 2 * task.goal[1] + 1].set(1.0)
        walls = task.walls.astype(dtype)
        if self.observation == "grid":
            agent = jnp.zeros((H, W), dtype).at[2 * pos[0] + 1, 2 * pos[1] + 1].set(1.0)
            return jnp.concatenate([walls.reshape(-1), agent.reshape(-1), goal.reshape(-1)])
        h = self.rf_size // 2  # "local": the window centred on the agent's pixel
        planes = jnp.stack([jnp.pad(walls, h, constant_values=1.0), jnp.pad(goal, h)])  # [2, H+2h, W+2h]
        zero = jnp.zeros((), pos.dtype)  # one index dtype, whatever the x64 setting
        window = lax.dynamic_slice(planes, (zero, 2 * pos[0] + 1, 2 * pos[1] + 1), (2, self.rf_size, self.rf_size))
        return window.reshape(-1)

    def reset(self, key, task: MazeGenTask):
        del key
        dtype = _float_dtype()
        pos = task.start.astype(jnp.int32)
        false = jnp.zeros((), bool)
        return MazeGenState(pos, jnp.zeros((), jnp.int32)), TimeStep(
            self._obs(pos, task), jnp.zeros((), dtype), false, false, {})

    def step(self, key, state: MazeGenState, action, task: MazeGenTask):
        del key
        dtype = _float_dtype()
        move = jnp.asarray(MOVES)[action]  # [2]
        wall = task.walls[2 * state.pos[0] + 1 + move[0], 2 * state.pos[1] + 1 + move[1]]
        pos = jnp.where(wall, state.pos, state.pos + move)
        reached = jnp.all(pos == task.goal)
        reward = jnp.where(reached, 1.0, -self.step_cost).astype(dtype)
        t = state.t + 1
        return MazeGenState(pos, t), TimeStep(self._obs(pos, task), reward, reached, t >= self.horizon, {})
