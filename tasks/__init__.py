"""Task families: distributions of optimisation problems that learned optimizers train on.

``tasks.get(name, **overrides)`` builds a family; ``tasks.names()`` lists them. See
:mod:`tasks.base` for the contract and :func:`tasks.custom` for families of your own.
"""

import functools

from tasks.base import CustomFamily, TaskError, TaskFamily, custom, get, names, pytree_family
from tasks.base import register as register
from tasks.base import static as static
from tasks.linear_regression import LinearRegression
from tasks.mnist import Mnist
from tasks.rosenbrock import Rosenbrock
from tasks.two_moons import TwoMoons

register("linear_regression", LinearRegression)
register(
    "linear_regression_scaled",
    functools.partial(LinearRegression, name="linear_regression_scaled", scale_decades=4.0),
)
register("mnist", Mnist.load)
register("rosenbrock", Rosenbrock)
register("two_moons", TwoMoons)

__all__ = [
    "CustomFamily",
    "LinearRegression",
    "Mnist",
    "Rosenbrock",
    "TaskError",
    "TaskFamily",
    "TwoMoons",
    "custom",
    "get",
    "names",
    "pytree_family",
    "register",
    "static",
]
