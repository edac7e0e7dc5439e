"""RL^2 meta-training throughput on a 5-armed bandit, n=100 one-pull episodes per trial.

Prints one JSON line per model: the paper's GRU(256) and a small GRU(64), and the same
two with an LSTM cell (`lstm256`, `lstm64`: same hidden size, batch and PPO settings);
`gru256-trpo` is GRU(256) with the TRPO outer step (a separate value network fit by the
same 2 x 2 Adam epochs, the Fisher on 10% of the trials).
Run: PYTHONPATH=. python benchmarks/rl2_bandit.py [--models gru256,gru256-trpo]
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _black_box_bench import main  # noqa: E402

from jaxmeta.algorithms.black_box import RL2Config  # noqa: E402

if __name__ == "__main__":
    gru = {
        "gru256": RL2Config(episodes_per_trial=100, hidden_size=256, meta_batch_size=256,
                            num_epochs=2, num_minibatches=2),
        # small GRU over many trials: memory-bound on a CPU, so recompute the gates
        "gru64": RL2Config(episodes_per_trial=100, hidden_size=64, meta_batch_size=2048,
                           num_epochs=1, num_minibatches=1, remat=True),
    }
    lstm = {"lstm" + k[3:]: dataclasses.replace(c, cell="lstm") for k, c in gru.items()}
    trpo = {"gru256-trpo": dataclasses.replace(gru["gru256"], outer="trpo", separate_value=True, cg_subsample=0.1)}
    main("rl2_bandit", {**gru, **lstm, **trpo})
