"""Evaluate heuristics and trained SB3 agents on the same seeds; write tables, plots, TensorBoard.

    python evaluate.py --scenario serving-small --policies all --seeds 0 1 --out results/small
    python evaluate.py --scenario serving-small --policies mct runs/ppo/best_model.zip --jobs 4
    python evaluate.py --scenario serving-small --policies all --seeds 1000-1999 --backend batched

Default seeds are the evaluation set 1000..1029 (training uses 0..999). See
``baselines/evaluation.py`` for the statistics and the output files; bad input (unknown policy
or scenario, missing model file) prints one error line and exits with code 2.
"""

from __future__ import annotations

import sys

from baselines.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
