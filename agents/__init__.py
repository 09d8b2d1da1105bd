"""SB3 agents for modelsched: everything ``train.py`` uses.

* :mod:`agents.registry`: algorithms (``maskable_ppo`` default; ``ppo``, ``a2c``, ``dqn`` on the
  env's ``invalid_action="penalize"``).
* :mod:`agents.hyperparams`: ``hyperparams/<algo>.yml`` per scenario, ``-p key=value`` overrides.
* :mod:`agents.policies`: permutation-aware networks (``--policy-net attention``: attention over
  task/device tokens, one logit per candidate assignment).
* :mod:`agents.shaping`: training rewards (on-time accuracy, potential-based shaping).
* :mod:`agents.pretrain`: behaviour-cloning / DAgger warm start from a heuristic.
* :mod:`agents.callbacks`: ``sim/`` metrics, evaluation against the strongest heuristic, ...
* :mod:`agents.envs`: environment construction and the disjoint seed sets.
* :mod:`agents.training` / :mod:`agents.report`: the run itself and its final table.
"""
