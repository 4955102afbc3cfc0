"""Step-size schedules for the denoising chain (spec section 2).

schedule(k) for k = 0..K-1 with t = (K - k) / K, so t runs from 1 (at the prior) down to 1/K:
  linear:   (1 - t) * m + t
  cosine:   m + (1 - m) * (1 + cos(pi * (1 - t))) / 2
  constant: 1
Both non-constant schedules start at 1 and move toward m as k approaches K.
"""

import numpy as np

SCHEDULES = ("linear", "cosine", "constant")


def step_schedule(name: str, num_steps: int, minimum: float) -> np.ndarray:
    """Returns schedule(k) for k = 0..num_steps-1 as a float32 numpy array [K]."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown step schedule {name!r}; allowed: {list(SCHEDULES)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    k = np.arange(num_steps, dtype=np.float64)
    t = (num_steps - k) / num_steps
    if name == "linear":
        s = (1.0 - t) * minimum + t
    elif name == "cosine":
        s = minimum + (1.0 - minimum) * 0.5 * (1.0 + np.cos(np.pi * (1.0 - t)))
    else:
        s = np.ones_like(t)
    return s.astype(np.float32)
