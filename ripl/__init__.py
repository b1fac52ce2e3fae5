"""ripl: decides, at the moment an AI agent acts, whether this exact action may
happen now. Load a policy set, build an engine, decide requests:

    engine = ripl.load("examples/refunds")
    decision = engine.decide(request)   # never raises
    if decision.allowed: ...
"""

from __future__ import annotations

from ripl.decision import Decision, RuleRef
from ripl.engine import Engine, load, load_or_deny, load_policy
from ripl.errors import (
    CheckError,
    CompileError,
    Diagnostic,
    EvaluationError,
    ParseError,
    RequestError,
    RiplError,
    SourceError,
    UsageError,
)
from ripl.ir import PolicySet
from ripl.request import BadRequest

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "CheckError",
    "CompileError",
    "Decision",
    "Diagnostic",
    "Engine",
    "EvaluationError",
    "ParseError",
    "PolicySet",
    "RequestError",
    "RiplError",
    "RuleRef",
    "SourceError",
    "UsageError",
    "load",
    "load_or_deny",
    "load_policy",
]
