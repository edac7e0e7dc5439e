"""Single-stream RL math, batched by vmap."""
from jaxmeta.rl.baselines import fit_linear, linear_baseline, linear_features
from jaxmeta.rl.losses import (
    episode_mean, gaussian_kl, ppo_clip_loss, reinforce_loss, trpo_surrogate, weighted_mean, weighted_normalize,
)
from jaxmeta.rl.optim import (
    backtracking_line_search, conjugate_gradient, gauss_newton_vector_product, hvp, trpo_step,
)
from jaxmeta.rl.returns import discounted_returns, gae, n_step_returns
