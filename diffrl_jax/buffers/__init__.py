"""On-device replay storage as pure functions over a pytree."""

from diffrl_jax.buffers.replay import ReplayBuffer, replay_add, replay_init, replay_sample

__all__ = ["ReplayBuffer", "replay_add", "replay_init", "replay_sample"]
