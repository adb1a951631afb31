"""The sans-I/O core: pure state machines and policies.

Nothing in this package imports trio, pykka, SQLAlchemy, asyncio or sockets, or reads a clock;
time is always passed in. ``tests/core/test_purity.py`` walks the imports to keep it so.
"""

from ._execution import (
    LIVE_STATES as LIVE_STATES,
)
from ._execution import (
    TERMINAL_STATES as TERMINAL_STATES,
)
from ._execution import (
    TRANSITIONS as TRANSITIONS,
)
from ._execution import (
    ExecutionStateMachine as ExecutionStateMachine,
)
from ._execution import (
    RunState as RunState,
)
from ._execution import (
    Transition as Transition,
)
from ._execution import (
    check_transition as check_transition,
)
from ._execution import (
    initial_transition as initial_transition,
)
from ._liveness import Liveness as Liveness
from ._liveness import LivenessPolicy as LivenessPolicy
from ._liveness import Verdict as Verdict
from ._restart import Decision as Decision
from ._restart import Escalate as Escalate
from ._restart import Restart as Restart
from ._restart import RestartPolicy as RestartPolicy
from ._restart import RestartTracker as RestartTracker
from ._restart import RestartType as RestartType
from ._restart import Stop as Stop
