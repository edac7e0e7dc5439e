"""SNAIL meta-training throughput on a 5-armed bandit, n=100 one-pull episodes per trial.

Prints one JSON line per model: the paper's bandit SNAIL (TC(T,32), TC(T,32),
attention(32,32)) and a small one (16 filters, 16-wide attention), and each with 8
attention heads of the same per-head width (`snail32x8h`, `snail16x8h`).
Run: PYTHONPATH=. python benchmarks/snail_bandit.py [--models snail16,snail16x8h]
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _black_box_bench import main  # noqa: E402

from jaxmeta.algorithms.black_box import SNAILConfig  # noqa: E402

if __name__ == "__main__":
    one_head = {
        "snail32": SNAILConfig(episodes_per_trial=100, filters=32, key_size=32, value_size=32,
                               meta_batch_size=128, num_epochs=2, num_minibatches=2),
        "snail16": SNAILConfig(episodes_per_trial=100, filters=16, key_size=16, value_size=16,
                               meta_batch_size=128, num_epochs=1, num_minibatches=1),
    }
    heads = {k + "x8h": dataclasses.replace(c, num_heads=8) for k, c in one_head.items()}
    main("snail_bandit", {**one_head, **heads}, repeats=5, steps_per_run=1)
