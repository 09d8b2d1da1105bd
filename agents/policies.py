"""Permutation-aware policy networks for the scheduling environment.

The observation is a set of task slots (K, F_t), a set of devices (D, F_d), a per-candidate
estimate tensor (K, V, D) and a global vector. The action is one candidate (k, v, d) or "wait".
Two ideas, used together by the ``attention`` policy net:

* :class:`SlotEncoder` embeds each task slot and device as a token and mixes the tokens with
  self-attention (or a deep-sets mean-pooled context), so every token knows about the others
  (is a faster device free? is a more urgent task waiting?). Absent task slots are masked out.
* :class:`CandidateScorer` scores every candidate (k, v, d) from the embedding of task k, a
  variant-slot-specific projection of its raw features, the embedding of device d and the
  candidate's own estimate: one logit per candidate plus one for "wait". The same weights score
  every candidate, so the policy is equivariant to task and device order and learns from every
  candidate at once, instead of from one row of a 97-way output layer.

Policies: :class:`MaskableCandidatePolicy` (sb3-contrib MaskablePPO), :class:`CandidatePolicy`
(PPO / A2C), :class:`CandidateDQNPolicy` (DQN, one Q-value per candidate). The encoder alone
(with SB3's standard heads) is available as the ``attention-flat`` / ``deepsets-flat`` nets.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

MIXERS = ("attention", "deepsets")


def _dims(observation_space: spaces.Dict) -> tuple[int, int, int, int, int, int, int]:
    """(K, V, D, F_t, F_d, G, A) from the environment's Dict observation space (A: the actions
    of one batch-size block plus wait)."""
    K, Ft = observation_space["tasks"].shape
    D, Fd = observation_space["devices"].shape
    _, V, _ = observation_space["estimates"].shape
    (G,) = observation_space["global"].shape
    return K, V, D, Ft, Fd, G, K * V * D + 1


def _blocks(encoder, action_space) -> int:
    """Batch-size blocks of the action space: ``Discrete(blocks * K * V * D + 1)``."""
    per = encoder.K * encoder.V * encoder.D
    n = int(action_space.n) - 1
    if n % per:
        raise ValueError(f"action space Discrete({n + 1}) is not blocks x K*V*D + 1 with K*V*D = {per}")
    return n // per


class SlotEncoder(BaseFeaturesExtractor):
    """Embed task slots, devices and the global vector as tokens and mix them.

    Output (flat, per sample): task embeddings (K, H), device embeddings (D, H), global
    embedding (H,), then the raw estimates (K, V, D), raw task features (K, F_t) and the
    task-present flags (K,), which :class:`CandidateScorer` unpacks with :meth:`unpack`.

    Args:
        embed_dim: token width H.
        mixer: ``"attention"`` (pre-norm transformer encoder layers over the K + D + 1 tokens,
            absent task slots masked) or ``"deepsets"`` (each token concatenated with the mean of
            the present tasks, the mean of the devices and the global token, then an MLP).
        n_layers: mixing layers.
        n_heads: attention heads (``attention`` only).
    """

    def __init__(self, observation_space: spaces.Dict, embed_dim: int = 64, mixer: str = "attention",
                 n_layers: int = 1, n_heads: int = 4):
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        K, V, D, Ft, Fd, G, _ = _dims(observation_space)
        #: Dynamic batching: devices also see their running batch, the global token the
        #: per-capability queues, and the batchable counts (K, V) go to the scorer.
        self.batching = "batch" in observation_space.spaces
        if self.batching:
            Fd += 1
            G += observation_space["queues"].shape[0]
        H = embed_dim
        super().__init__(observation_space, features_dim=(K + D + 1) * H + K * V * D + K * Ft + K
                         + (K * V if "batch" in observation_space.spaces else 0))
        self.K, self.V, self.D, self.Ft, self.H = K, V, D, Ft, H
        self.mixer = mixer
        # A task token also sees its own row of estimates (which variants/devices would meet the SLO).
        self.task_in = nn.Sequential(nn.Linear(Ft + V * D, H), nn.ReLU(), nn.Linear(H, H))
        self.device_in = nn.Sequential(nn.Linear(Fd, H), nn.ReLU(), nn.Linear(H, H))
        self.global_in = nn.Sequential(nn.Linear(G, H), nn.ReLU(), nn.Linear(H, H))
        if mixer == "attention":
            layer = nn.TransformerEncoderLayer(H, n_heads, dim_feedforward=2 * H, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.mix = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        else:
            self.mix = nn.ModuleList(
                nn.Sequential(nn.Linear(4 * H, H), nn.ReLU(), nn.Linear(H, H)) for _ in range(n_layers))

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        tasks, devices, est, glob = obs["tasks"], obs["devices"], obs["estimates"], obs["global"]
        if self.batching:
            devices = th.cat([devices, obs["device_batch"][..., None]], dim=-1)
            glob = th.cat([glob, obs["queues"]], dim=-1)
        B = tasks.shape[0]
        K, D = self.K, self.D
        present = tasks[..., 0] > 0.5  # (B, K): feature 0 of a task slot is "present"
        t = self.task_in(th.cat([tasks, est.reshape(B, K, -1)], dim=-1))  # (B, K, H)
        d = self.device_in(devices)  # (B, D, H)
        g = self.global_in(glob)[:, None, :]  # (B, 1, H)
        tokens = th.cat([t, d, g], dim=1)  # (B, K + D + 1, H)
        if self.mixer == "attention":
            pad = th.cat([~present, th.zeros(B, D + 1, dtype=th.bool, device=tasks.device)], dim=1)
            tokens = self.mix(tokens, src_key_padding_mask=pad)
        else:
            w = present.float()[..., None]
            for layer in self.mix:
                tm = (tokens[:, :K] * w).sum(1) / w.sum(1).clamp(min=1.0)
                dm = tokens[:, K:K + D].mean(1)
                ctx = th.cat([tm, dm, tokens[:, -1]], dim=-1)[:, None, :].expand(-1, tokens.shape[1], -1)
                tokens = tokens + layer(th.cat([tokens, ctx], dim=-1))
        parts = [tokens.reshape(B, -1), est.reshape(B, -1), tasks.reshape(B, -1), present.float()]
        if self.batching:
            parts.append(obs["batch"].reshape(B, -1))
        return th.cat(parts, dim=1)

    def unpack(self, features: th.Tensor) -> tuple[th.Tensor, ...]:
        """Inverse of the flat layout: task (B,K,H), device (B,D,H), global (B,H), estimates
        (B,K,V,D), raw tasks (B,K,F_t), present (B,K); with batching, then the batchable counts
        (B,K,V)."""
        B = features.shape[0]
        K, V, D, Ft, H = self.K, self.V, self.D, self.Ft, self.H
        sizes = [K * H, D * H, H, K * V * D, K * Ft, K] + ([K * V] if self.batching else [])
        t, d, g, est, raw, present, *batch = th.split(features, sizes, dim=1)
        out = (t.reshape(B, K, H), d.reshape(B, D, H), g, est.reshape(B, K, V, D), raw.reshape(B, K, Ft), present)
        return out + ((batch[0].reshape(B, K, V),) if self.batching else ())


class FlatSlotEncoder(SlotEncoder):
    """:class:`SlotEncoder` whose output is only the mixed tokens (flattened), for SB3's standard
    MLP heads (``attention-flat`` / ``deepsets-flat`` policy nets)."""

    def __init__(self, observation_space: spaces.Dict, **kwargs: Any):
        super().__init__(observation_space, **kwargs)
        self._features_dim = (self.K + self.D + 1) * self.H

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        return super().forward(obs)[:, :self._features_dim]


class CandidateScorer(nn.Module):
    """One score per candidate (k, v, d) plus one for "wait", from :class:`SlotEncoder` output.

    The first layer is additive over the parts of a candidate (task, variant slot of the task,
    device, estimate, global context), so it costs O(K*V*D*H) rather than a concatenation per
    candidate; two more layers make the score a nonlinear function of all of them.
    """

    def __init__(self, encoder: SlotEncoder, hidden: int = 64, layers: int = 2, blocks: int = 1):
        super().__init__()
        H, V, Ft = encoder.H, encoder.V, encoder.Ft
        self.encoder_layout = encoder.unpack
        #: Batch-size blocks of the action space (dynamic batching): a candidate (k, v, d) in
        #: block b adds an embedding of b and of the batchable count of (k, v) as block b sees it.
        self.blocks = blocks
        if blocks > 1:
            if not getattr(encoder, "batching", False):
                raise ValueError(f"the action space has {blocks} batch-size blocks but the observation has no "
                                 f"'batch' key")
            self.block = nn.Parameter(th.zeros(blocks, hidden))
            self.block_count = nn.Parameter(th.empty(blocks, hidden))
            nn.init.normal_(self.block_count, std=1.0)
        self.task = nn.Linear(H, hidden)
        # Variant slot v of task k: its raw features (capability one-hot, size, floor...) projected
        # with a separate matrix per slot, i.e. an embedding of (capability, variant) pairs.
        self.task_variant = nn.Parameter(th.empty(V, Ft, hidden))
        nn.init.normal_(self.task_variant, std=1.0 / np.sqrt(Ft))
        self.device = nn.Linear(H, hidden)
        self.glob = nn.Linear(H, hidden)
        self.estimate = nn.Linear(2, hidden)
        body: list[nn.Module] = [nn.ReLU()]
        for _ in range(layers - 1):
            body += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.out = nn.Linear(hidden, 1)
        self.wait = nn.Sequential(nn.Linear(3 * H, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: th.Tensor) -> th.Tensor:
        t, d, g, est, raw, present, *batch = self.encoder_layout(features)
        B, K, V, D = est.shape
        a = self.task(t)[:, :, None, :] + th.einsum("bkf,vfh->bkvh", raw, self.task_variant)
        # The estimate and whether it meets the SLO (est <= -0.5 means on time; see the env).
        e = self.estimate(th.stack([est, (est <= -0.5).float()], dim=-1))  # (B, K, V, D, h)
        x = a[:, :, :, None, :] + self.device(d)[:, None, None, :, :] + e \
            + self.glob(g)[:, None, None, None, :]
        if self.blocks > 1:  # (B, blocks, K, V, D, h), block-major as the action space
            count = batch[0][:, None, :, :, None] * self.block_count[None, :, None, None, :]  # (B, nb, K, V, h)
            x = x[:, None] + (self.block[None, :, None, None, :] + count)[:, :, :, :, None, :]
        scores = self.out(self.body(x)).reshape(B, self.blocks * K * V * D)
        w = present[..., None]
        pooled = th.cat([(t * w).sum(1) / w.sum(1).clamp(min=1.0), d.mean(1), g], dim=-1)
        return th.cat([scores, self.wait(pooled)], dim=1)


class CandidateHeads(nn.Module):
    """Stands in for SB3's ``MlpExtractor``: the actor latent *is* the vector of action logits
    (the policy's ``action_net`` is the identity) and the critic latent is an MLP over pooled
    tokens."""

    def __init__(self, encoder: SlotEncoder, hidden: int = 64, layers: int = 2, blocks: int = 1):
        super().__init__()
        self.scorer = CandidateScorer(encoder, hidden, layers, blocks)
        self.unpack = encoder.unpack
        H = encoder.H
        self.critic = nn.Sequential(nn.Linear(3 * H, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.latent_dim_pi = blocks * encoder.K * encoder.V * encoder.D + 1
        self.latent_dim_vf = hidden

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self.scorer(features)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        t, d, g, _, _, present, *_ = self.unpack(features)
        w = present[..., None]
        pooled = th.cat([(t * w).sum(1) / w.sum(1).clamp(min=1.0), d.mean(1), g], dim=-1)
        return self.critic(pooled)


class _CandidateActorCritic:
    """Mixin for SB3 actor-critic policies: candidate-scoring actor, pooled critic."""

    def __init__(self, observation_space, action_space, lr_schedule, *args, head_dim: int = 64,
                 head_layers: int = 2, **kwargs):
        self.head_dim = head_dim
        self.head_layers = head_layers
        kwargs.setdefault("features_extractor_class", SlotEncoder)
        kwargs["net_arch"] = []  # the heads below replace the MLP extractor
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = CandidateHeads(self.features_extractor, self.head_dim, self.head_layers,
                                            _blocks(self.features_extractor, self.action_space))

    def _build(self, lr_schedule) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            extractors = [self.features_extractor] if self.share_features_extractor \
                else [self.pi_features_extractor, self.vf_features_extractor]
            for module in [*extractors, self.mlp_extractor]:
                module.apply(partial(self.init_weights, gain=np.sqrt(2)))
            self.value_net.apply(partial(self.init_weights, gain=1.0))
            # Near-uniform initial policy over the valid actions, as SB3's 0.01 action_net gain.
            self.mlp_extractor.scorer.out.apply(partial(self.init_weights, gain=0.01))
            self.mlp_extractor.scorer.wait[-1].apply(partial(self.init_weights, gain=0.01))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(head_dim=self.head_dim, head_layers=self.head_layers)
        data.pop("net_arch", None)
        return data


class MaskableCandidatePolicy(_CandidateActorCritic, MaskableActorCriticPolicy):
    """MaskablePPO policy with per-candidate logits (see the module docstring)."""


class CandidatePolicy(_CandidateActorCritic, ActorCriticPolicy):
    """PPO / A2C policy with per-candidate logits (see the module docstring)."""


class CandidateQNetwork(QNetwork):
    """Q-network whose Q-values come one per candidate from :class:`CandidateScorer`."""

    def __init__(self, *args, head_dim: int = 64, head_layers: int = 2, **kwargs):
        self.head_dim = head_dim
        self.head_layers = head_layers
        super().__init__(*args, **kwargs)
        self.q_net = CandidateScorer(self.features_extractor, head_dim, head_layers,
                                     _blocks(self.features_extractor, self.action_space))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(head_dim=self.head_dim, head_layers=self.head_layers)
        return data


class CandidateDQNPolicy(DQNPolicy):
    """DQN policy with per-candidate Q-values over a :class:`SlotEncoder`."""

    def __init__(self, observation_space, action_space, lr_schedule, *args, head_dim: int = 64,
                 head_layers: int = 2, **kwargs):
        self.head_dim = head_dim
        self.head_layers = head_layers
        kwargs.setdefault("features_extractor_class", SlotEncoder)
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def make_q_net(self) -> CandidateQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return CandidateQNetwork(**net_args, head_dim=self.head_dim, head_layers=self.head_layers).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(head_dim=self.head_dim, head_layers=self.head_layers)
        return data


#: ``--policy-net`` choices: name -> description.
POLICY_NETS = {
    "mlp": "SB3 MultiInputPolicy (flatten + MLP heads)",
    "attention": "attention over task/device tokens, one logit (or Q-value) per candidate",
    "deepsets": "deep-sets over task/device tokens, one logit (or Q-value) per candidate",
    "attention-flat": "attention over tokens as a features extractor, SB3's standard MLP heads",
    "deepsets-flat": "deep-sets over tokens as a features extractor, SB3's standard MLP heads",
}


def policy_for(policy_net: str, algo: str, policy_kwargs: dict | None = None) -> tuple[Any, dict]:
    """(policy, policy_kwargs) for SB3's constructor, given a ``--policy-net`` name."""
    if policy_net not in POLICY_NETS:
        raise ValueError(f"unknown policy net {policy_net!r}: choose one of {', '.join(POLICY_NETS)}")
    kwargs = dict(policy_kwargs or {})
    if policy_net == "mlp":
        return "MultiInputPolicy", kwargs
    mixer, _, flat = policy_net.partition("-")
    fe_kwargs = {"mixer": mixer, **kwargs.pop("features_extractor_kwargs", {})}
    if flat:
        kwargs.update(features_extractor_class=FlatSlotEncoder, features_extractor_kwargs=fe_kwargs)
        return "MultiInputPolicy", kwargs
    kwargs["features_extractor_kwargs"] = fe_kwargs
    kwargs.pop("net_arch", None)
    policy = {"maskable_ppo": MaskableCandidatePolicy, "dqn": CandidateDQNPolicy}.get(algo, CandidatePolicy)
    return policy, kwargs
