"""A learned optimizer with three meta-parameters, for tests of meta-gradients.

``theta = {"log_lr", "beta_logit", "h0"}``: heavy-ball momentum whose learning rate, momentum
and initial velocity are learned. Small enough for finite differences and ES to be exact-ish.
"""

import jax
import jax.numpy as jnp

import lopt


def _init_state(p):
    return jnp.reshape(p["h0"], (1,))


def _step(p, h, g):
    return jax.nn.sigmoid(p["beta_logit"]) * h + g


def _readout(p, h):
    return -jnp.exp(p["log_lr"]) * h[0]


class TinyMomentum:
    def init(self, key):
        del key
        return {
            "log_lr": jnp.asarray(jnp.log(0.3), jnp.float32),
            "beta_logit": jnp.asarray(0.5, jnp.float32),
            "h0": jnp.asarray(0.1, jnp.float32),
        }

    def cell(self, theta):
        return lopt.make_cell(theta, _init_state, _step, _readout)

    def optimizer(self, theta, *, output_scale=None):
        del output_scale
        return lopt.cell_optimizer(self.cell(theta))

    def config(self):
        return {"type": "tiny_momentum"}
