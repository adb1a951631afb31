"""How the runtime treats failure and time: restarts, liveness, retries and circuit breakers.

Policies are frozen values, validated when built (a bad value is a ``ConfigError``). Set them
per agent class (``restart_policy``, ``liveness``) or for the whole runtime
(``RuntimeConfig.restart``, ``RuntimeConfig.liveness``, ``RuntimeConfig.dependencies``)::

    import netra_actors as na
    from netra_actors.policies import Dependency, RestartPolicy, RetryPolicy

    class Flaky(na.Agent):
        name = "flaky"
        restart_policy = RestartPolicy(max_restarts=5, backoff_initial=0.5)

    config = na.RuntimeConfig(dependencies=[Dependency("search", retry=RetryPolicy(attempts=3))])

``RestartPolicy``/``RestartType``
    how a crashed run is restarted (permanent / transient / temporary, intensity, backoff).
``LivenessPolicy``
    the heartbeat timeout and the run deadline.
``Dependency``, ``RetryPolicy``, ``BreakerPolicy``
    a tool or model API, how its failed calls are retried and when its breaker opens.
``Resilience``
    what applies the dependency policies, one per runtime (``runtime.resilience``).
"""

from ._core import LivenessPolicy as LivenessPolicy
from ._core import RestartPolicy as RestartPolicy
from ._core import RestartType as RestartType
from ._core._resilience import BreakerPolicy as BreakerPolicy
from ._core._resilience import Dependency as Dependency
from ._core._resilience import RetryPolicy as RetryPolicy
from ._resilience import Resilience as Resilience

__all__ = [
    "BreakerPolicy",
    "Dependency",
    "LivenessPolicy",
    "Resilience",
    "RestartPolicy",
    "RestartType",
    "RetryPolicy",
]
