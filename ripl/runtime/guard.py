"""Tool-call guards: a decision taken, audited and enforced before a tool runs.

Input: a Python tool function (sync or async), the engine that decides, the
session the call is made in (principal, delegation or a signed chain token,
entities, trusted context) and a way to turn the call into a request.
Output: the tool's result, narrowed by the decision's obligations, or a typed
exception that says why the tool did not run.

The order is fixed, and every step fails closed:

1. the call's arguments are bound to the tool's signature; an argument that
   the guard fills (the credential) given by the caller is refused;
2. the request is built (the app's mapping, or `default_request`) and a
   signed chain token in the session is verified into its `delegation`;
3. the engine decides; the guard checks it can enforce every obligation of
   a `restrict` (an obligation it does not know is a deny, never ignored);
4. the decision is written to the audit log; if that fails, the call is
   denied (`audit_unavailable`) and the tool does not run;
5. deny raises `ToolDeniedError`; step_up raises `StepUpRequiredError` or
   returns what the app's handler returns, and the tool does not run;
   allow runs the tool; restrict caps the amount argument, hands the tool a
   one-call credential and filters the result (redacted fields removed, the
   credential stripped) before the caller sees it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import attrs

from ripl.ast import Duration
from ripl.decision import Decision, Verdict, deny
from ripl.runtime.credentials import Credential, CredentialBroker
from ripl.runtime.encoding import as_utc, parse_time
from ripl.runtime.errors import DelegationError, RiplRuntimeError
from ripl.runtime.identity import Identity
from ripl.runtime.interfaces import AuditSink, Decider
from ripl.runtime.revocation import RevocationCheck
from ripl.runtime.tokens import (
    DelegationChain,
    KeyResolver,
    RejectedChain,
    verify,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

CREDENTIAL_REMOVED = "[credential removed]"
_REQUEST_KEYS = ("principal", "delegation", "entities", "context", "now")


# -- errors ------------------------------------------------------------------


class GuardError(RiplRuntimeError, PermissionError):
    """A guarded call that did not run (or whose result was withheld).

    `decision` is what was enforced, as audited; `tool` names the tool."""

    def __init__(self, message: str, tool: str, decision: Decision) -> None:
        super().__init__(message)
        self.tool = tool
        self.decision = decision

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.decision.reasons


class ToolDeniedError(GuardError):
    """The decision was deny; `reasons` says why, each with its stable code."""


class ToolFailedError(RiplRuntimeError, RuntimeError):
    """A guarded tool that held a credential raised; this carries only its
    scrubbed type and message, never the original exception."""


class StepUpRequiredError(GuardError):
    """The decision was step_up; the tool runs only after `requirements` are
    met, which is a new call with a session that shows them."""

    @property
    def requirements(self) -> tuple[str, ...]:
        return self.decision.requirements


class ChainRejectedError(DelegationError):
    """A signed chain token failed verification; `failures` lists every
    reason, `code` is the first one's."""

    def __init__(self, failures: Sequence[str]) -> None:
        first = failures[0] if failures else "malformed_link: no reason given"
        code, _, message = first.partition(":")
        super().__init__(code, message.strip())
        self.failures = tuple(failures) or (first,)


# -- feeding a signed chain into a request ----------------------------------


def request_with_chain(
    request: Mapping[str, Any],
    token: str | DelegationChain,
    keys: KeyResolver,
    now: datetime,
    *,
    revoked: RevocationCheck | None = None,
    leeway: timedelta = timedelta(0),
) -> dict[str, Any]:
    """A copy of `request` whose `delegation` is the verified chain.

    The chain must end at the request's principal. The engine checks the
    chain's meaning again (scopes against the action, expiry at the
    request's `now`, revocation in its own store); this adds what only the
    token can prove: every link was signed by its grantor.

    Raises:
        ChainRejectedError: with every reason the chain is refused.
    """
    principal = request.get("principal")
    try:
        expected = Identity.of(principal) if principal is not None else None
    except ValueError:
        expected = None
    result = verify(token, keys, now, revoked, leeway=leeway, principal=expected)
    if isinstance(result, RejectedChain):
        raise ChainRejectedError(result.failures)
    out = dict(request)
    out["delegation"] = result.delegation()
    return out


# -- what a guarded call looks like ----------------------------------------


@attrs.frozen
class ToolCall:
    """One call, before the decision. `arguments` are bound by parameter
    name, defaults applied, the guard-filled credential left out; treat them
    as the agent's words, not as facts."""

    tool: str
    action: str
    arguments: Mapping[str, Any]
    session: Mapping[str, Any]
    resource: Mapping[str, Any] | None = None


RequestMapper = Callable[[ToolCall], Mapping[str, Any]]
ResourceSpec = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]]
Session = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
StepUpHandler = Callable[[ToolCall, Decision], Any]


def default_request(call: ToolCall) -> dict[str, Any]:
    """The session's principal, delegation, entities and context, the tool's
    action, and as resource the one given to the guard, else
    `{"type": "Tool", "id": <tool name>}`.

    Arguments with a JSON value join the context under their own names, but
    never replace a key the session's context has: a trusted signal cannot be
    overridden by what the agent passes. List every trusted signal in the
    session, `None` when unknown, so an argument cannot fill it in either.
    """
    request = {key: call.session[key] for key in _REQUEST_KEYS if key in call.session}
    request["action"] = call.action
    if call.resource is not None:
        request["resource"] = dict(call.resource)
    else:
        request["resource"] = {"type": "Tool", "id": call.tool}
    trusted = call.session.get("context")
    context = dict(trusted) if isinstance(trusted, Mapping) else {}
    for name, value in call.arguments.items():
        if name not in context and _is_json(value):
            context[name] = value
    request["context"] = context
    return request


def _is_json(value: object, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if value is None or isinstance(value, str | bool | int | Decimal):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list | tuple):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return all(
            isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items()
        )
    return False


# -- obligations -------------------------------------------------------------


class ObligationRefused(Exception):
    """Raised by an obligation that cannot be applied to this call; the guard
    turns it into a deny with reason `obligation_unenforceable`."""


@attrs.define
class Enforcement:
    """The call as it will run: obligations may change `arguments`, add to
    `secrets` (strings that must never reach the caller) and `filters`
    (applied to the result in order)."""

    tool: ToolCall
    decision: Decision
    arguments: dict[str, Any]
    parameters: Mapping[str, inspect.Parameter]
    amount_argument: str | None
    credential_argument: str | None
    broker: CredentialBroker | None
    secrets: list[str] = attrs.field(factory=list)
    filters: list[Callable[[Any], Any]] = attrs.field(factory=list)
    credential: Credential | None = None
    resource: Identity | None = None
    notes: list[str] = attrs.field(factory=list)

    def _bound(self) -> inspect.BoundArguments:
        signature = inspect.Signature(list(self.parameters.values()))
        return inspect.BoundArguments(signature, dict(self.arguments))

    def args(self) -> tuple[Any, ...]:
        return self._bound().args

    def kwargs(self) -> dict[str, Any]:
        return self._bound().kwargs


class Obligation(Protocol):
    """Applies one obligation kind. Raise `ObligationRefused` when it cannot
    be applied: the call is then denied, never run unguarded."""

    def __call__(self, value: Any, call: Enforcement) -> None: ...


def redact_obligation(value: Any, call: Enforcement) -> None:
    fields = frozenset(str(name) for name in value)
    call.filters.append(lambda result: redact(result, fields))


def cap_obligation(value: Any, call: Enforcement, *, clamp: bool = True) -> None:
    name = call.amount_argument
    if name is None or name not in call.parameters:
        raise ObligationRefused(
            f"`cap({value})` applies to an amount, and the tool has no amount argument"
        )
    given = call.arguments.get(name)
    amount = _as_decimal(given)
    if amount is None:
        raise ObligationRefused(f"argument `{name}` is not a number the cap can bound")
    bound = Decimal(str(value))
    if amount <= bound:
        return
    if not clamp:
        raise ObligationRefused(
            f"argument `{name}` ({amount}) is above the cap {bound}"
        )
    call.arguments[name] = _same_kind(bound, given)
    call.notes.append(f"capped `{name}` from {amount} to {bound}")


def refuse_over_cap(value: Any, call: Enforcement) -> None:
    cap_obligation(value, call, clamp=False)


def credential_obligation(value: Any, call: Enforcement) -> None:
    seconds = value.seconds if isinstance(value, Duration) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ObligationRefused(f"credential lifetime {value!r} is not positive")
    name = call.credential_argument
    if call.broker is None:
        raise ObligationRefused("a credential is required and no broker is set up")
    if name is None or name not in call.parameters:
        raise ObligationRefused("the tool takes no credential argument")
    if call.resource is None:
        raise ObligationRefused("the request has no resource to scope a credential to")
    resource = call.resource
    credential = call.broker.issue(
        call.tool.action, resource, seconds, call.decision.evaluated_at
    )
    if credential.expires_at > as_utc(call.decision.evaluated_at) + timedelta(
        seconds=seconds
    ):
        raise ObligationRefused("the broker issued a credential that lives too long")
    call.credential = credential
    call.arguments[name] = credential
    call.secrets.append(credential.secret)


STANDARD_OBLIGATIONS: Mapping[str, Obligation] = {
    "redact": redact_obligation,
    "cap": cap_obligation,
    "credential_ttl": credential_obligation,
}


def _as_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value else None
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _same_kind(bound: Decimal, like: object) -> object:
    """The cap in the type the tool was given, when that loses nothing."""
    if isinstance(like, int) and bound == bound.to_integral_value():
        return int(bound)
    if isinstance(like, float):
        near = float(bound)
        # The nearest float can lie above the cap; never round a cap upward.
        return math.nextafter(near, -math.inf) if Decimal(near) > bound else near
    if isinstance(like, str):
        return str(bound)
    return bound


# -- filtering results -----------------------------------------------------


class Unfilterable(Exception):
    """A result the guard cannot look inside, so cannot prove filtered."""


def redact(value: Any, fields: frozenset[str]) -> Any:
    """A copy of `value` without any mapping key in `fields`, at any depth
    (mappings, lists, tuples). Raises `Unfilterable` for other objects."""
    folded = frozenset(f.casefold() for f in fields)
    return _walk(value, lambda key: key.casefold() in folded, (), 0)


def strip_secrets(value: Any, secrets: Sequence[str]) -> Any:
    """A copy of `value` with every `Credential` removed and every secret
    string replaced by `CREDENTIAL_REMOVED`, in keys and values alike."""
    return _walk(value, lambda key: False, tuple(secrets), 0)


def _walk(
    value: Any, drop: Callable[[str], bool], secrets: tuple[str, ...], depth: int
) -> Any:
    if depth > 64:
        raise Unfilterable("the result nests deeper than 64 levels")
    if isinstance(value, Credential):
        return CREDENTIAL_REMOVED
    if value is None or isinstance(value, bool | int | float | Decimal | datetime):
        return value
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, bytes | bytearray):
        if any(secret.encode() in value for secret in secrets):
            return CREDENTIAL_REMOVED.encode()
        return bytes(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            if isinstance(name, str) and drop(name):
                continue
            if isinstance(key, Credential) or isinstance(item, Credential):
                continue
            # Keys are walked like values: a secret must not ride in a key.
            clean_key = _walk(key, lambda k: False, secrets, depth + 1)
            out[clean_key] = _walk(item, drop, secrets, depth + 1)
        return out
    if isinstance(value, list | tuple):
        items = [
            _walk(item, drop, secrets, depth + 1)
            for item in value
            if not isinstance(item, Credential)
        ]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, set | frozenset):
        items = [_walk(item, drop, secrets, depth + 1) for item in value]
        return type(value)(items)
    raise Unfilterable(f"cannot look inside a result of type `{type(value).__name__}`")


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, CREDENTIAL_REMOVED)
    return text


# -- the guard ---------------------------------------------------------------


@attrs.frozen
class GuardStats:
    decided: Mapping[str, int]
    ran: int
    audit_failures: int


@attrs.frozen
class Permit:
    """What the context-manager form hands to the block it guards."""

    decision: Decision
    arguments: Mapping[str, Any]
    credential: Credential | None
    _filters: tuple[Callable[[Any], Any], ...]
    _secrets: tuple[str, ...]

    def filter(self, result: Any) -> Any:
        """The result as the caller may see it: redacted, credential stripped.

        Raises `Unfilterable` for a result the guard cannot look inside when
        anything needs removing."""
        for step in self._filters:
            result = step(result)
        if self._secrets or self._filters:
            result = strip_secrets(result, self._secrets)
        return result


@attrs.frozen
class _ToolSpec:
    name: str
    action: str
    resource: ResourceSpec | None
    mapper: RequestMapper | None
    amount: str | None
    credential: str | None
    signature: inspect.Signature


class Guard:
    """Guards tool calls for one engine, audit log and broker.

    `session` is the mapping a request is built from (or a function returning
    it, e.g. reading a context variable): `principal`, `entities`, `context`,
    `now`, and either `delegation` or `delegation_token` (a signed chain,
    verified with `keys` against `revocations` before every call).
    `audit` must be given; `None` is an explicit choice to audit nothing.
    """

    def __init__(
        self,
        engine: Decider,
        *,
        audit: AuditSink | None,
        session: Session,
        broker: CredentialBroker | None = None,
        keys: KeyResolver | None = None,
        revocations: RevocationCheck | None = None,
        mapper: RequestMapper = default_request,
        on_step_up: StepUpHandler | None = None,
        obligations: Mapping[str, Obligation] | None = None,
        tag: str = "guard",
        clock: Callable[[], datetime] | None = None,
        leeway: timedelta = timedelta(0),
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.broker = broker
        self.keys = keys
        self.revocations = revocations
        self.mapper = mapper
        self.on_step_up = on_step_up
        self.obligations = dict(STANDARD_OBLIGATIONS)
        self.obligations.update(obligations or {})
        self.tag = tag
        self.leeway = leeway
        self._session = session
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._decided = {"allow": 0, "restrict": 0, "step_up": 0, "deny": 0}
        self._ran = 0
        self._audit_failures = 0

    def with_session(self, session: Session) -> Guard:
        """The same guard (engine, audit, broker, counters apart) for another
        session, e.g. one per connected agent."""
        other = Guard(
            self.engine,
            audit=self.audit,
            session=session,
            broker=self.broker,
            keys=self.keys,
            revocations=self.revocations,
            mapper=self.mapper,
            on_step_up=self.on_step_up,
            obligations=self.obligations,
            tag=self.tag,
            clock=self._clock,
            leeway=self.leeway,
        )
        return other

    @property
    def stats(self) -> GuardStats:
        with self._lock:
            return GuardStats(dict(self._decided), self._ran, self._audit_failures)

    # -- the decorator ---------------------------------------------------

    def tool(
        self,
        fn: Callable[P, R] | None = None,
        *,
        name: str | None = None,
        action: str | None = None,
        resource: ResourceSpec | None = None,
        mapper: RequestMapper | None = None,
        amount: str | None = "amount",
        credential: str | None = "credential",
    ) -> Any:
        """Guard a tool function; usable bare (`@guard.tool`) or with options.

        `action` defaults to the tool's name; `resource` is a mapping or a
        function of the bound arguments; `amount` names the argument a `cap`
        bounds and `credential` the one the guard fills (callers may not).
        The wrapper's signature leaves the credential out, so frameworks that
        read signatures (MCP servers) never offer it to an agent.
        """

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            tool_name = name or func.__name__
            spec = _ToolSpec(
                name=tool_name,
                action=action or tool_name,
                resource=resource,
                mapper=mapper,
                amount=amount,
                credential=credential,
                signature=_signature(func),
            )
            public = _public_signature(spec.signature, credential)
            if inspect.iscoroutinefunction(func):
                async_func = cast(Callable[..., Awaitable[Any]], func)

                @functools.wraps(func)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    call = self._admit(spec, args, kwargs)
                    if isinstance(call, _Answered):
                        return call.value
                    failure: BaseException | None = None
                    try:
                        result = await async_func(*call.args(), **call.kwargs())
                    except BaseException as exc:
                        failure = _scrubbed(exc, call.secrets)
                    if failure is not None:
                        raise failure  # outside `except`: no chained context
                    return self._release(spec, call, result)

                run_async.__signature__ = public  # type: ignore[attr-defined]
                return cast(Callable[P, R], run_async)

            @functools.wraps(func)
            def run(*args: Any, **kwargs: Any) -> Any:
                call = self._admit(spec, args, kwargs)
                if isinstance(call, _Answered):
                    return call.value
                failure: BaseException | None = None
                try:
                    result = func(*call.args(), **call.kwargs())
                except BaseException as exc:
                    failure = _scrubbed(exc, call.secrets)
                if failure is not None:
                    raise failure  # outside `except`: no chained context
                return self._release(spec, call, result)

            run.__signature__ = public  # type: ignore[attr-defined]
            return cast(Callable[P, R], run)

        if fn is not None:
            return decorate(fn)
        return decorate

    def call(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run one call of an unwrapped function through the guard."""
        return cast(R, self.tool(fn)(*args, **kwargs))

    # -- the context manager -----------------------------------------------

    @contextlib.contextmanager
    def check(
        self,
        action: str,
        *,
        resource: Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
        name: str | None = None,
        amount: str | None = "amount",
    ) -> Iterator[Permit]:
        """Decide and audit before a block runs: the block is entered only
        when the action may happen, and gets a `Permit` with the decision,
        the (capped) arguments and a one-call credential. The block must pass
        what it returns to the caller through `permit.filter`.

        deny raises `ToolDeniedError` and step_up `StepUpRequiredError` (a
        step-up handler applies to decorated tools only, which can return its
        answer in place of the result).
        """
        given = dict(arguments or {})
        parameters = {
            key: inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY)
            for key in [*given, "credential"]
        }
        spec = _ToolSpec(
            name=name or action,
            action=action,
            resource=resource,
            mapper=None,
            amount=amount,
            credential="credential",
            signature=inspect.Signature(list(parameters.values())),
        )
        call = self._admit(spec, (), given, step_up_handler=False)
        assert isinstance(call, Enforcement)
        call.arguments.pop("credential", None)
        yield Permit(
            call.decision,
            dict(call.arguments),
            call.credential,
            tuple(call.filters),
            tuple(call.secrets),
        )

    def preview(
        self,
        action: str,
        *,
        resource: ResourceSpec | None = None,
        arguments: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Decision:
        """The decision a call would get, built exactly as a call builds it
        (same session, mapping and chain check), without auditing or running
        anything. Listing tools uses it, so what is listed and what may be
        called can never disagree."""
        spec = _ToolSpec(
            name=name or action,
            action=action,
            resource=resource,
            mapper=None,
            amount=None,
            credential=None,
            signature=inspect.Signature(),
        )
        session = self._current_session()
        call = ToolCall(spec.name, action, dict(arguments or {}), session, None)
        return self._decide(spec, call, session)[1]

    # -- the steps ---------------------------------------------------------

    def _admit(
        self,
        spec: _ToolSpec,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        step_up_handler: bool = True,
    ) -> Enforcement | _Answered:
        """Steps 1 to 5 up to running the tool."""
        session = self._current_session()
        refused: str | None = None
        arguments: dict[str, Any] = {}
        if spec.credential is not None and spec.credential in kwargs:
            refused = (
                f"bad_request: argument `{spec.credential}` is filled by the guard"
                " and may not be passed by the caller"
            )
        else:
            try:
                public = _public_signature(spec.signature, spec.credential)
                bound = public.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{spec.name}(): {exc}") from None
            bound.apply_defaults()
            arguments = dict(bound.arguments)
        visible = {k: v for k, v in arguments.items() if k != spec.credential}
        tool_call = ToolCall(spec.name, spec.action, visible, session, None)
        request: Mapping[str, Any] = {"action": spec.action, "tool": spec.name}
        decision: Decision | None = None
        if refused is None:
            request, decision = self._decide(spec, tool_call, session)
        else:
            decision = self._guard_deny(refused)
        tool_call = attrs.evolve(
            tool_call,
            resource=_mapping_or_none(request.get("resource")),
        )

        enforcement = Enforcement(
            tool=tool_call,
            decision=decision,
            arguments=arguments,
            parameters=spec.signature.parameters,
            amount_argument=spec.amount,
            credential_argument=spec.credential,
            broker=self.broker,
        )
        if decision.effect == "restrict":
            decision = self._plan(enforcement, request)
            enforcement.decision = decision

        self._record(request, decision, spec)
        self._count(decision.effect)
        if decision.effect == "deny":
            raise ToolDeniedError(
                f"`{spec.name}` denied: {'; '.join(decision.reasons)}",
                spec.name,
                decision,
            )
        if decision.effect == "step_up":
            if step_up_handler and self.on_step_up is not None:
                return _Answered(self.on_step_up(tool_call, decision))
            raise StepUpRequiredError(
                f"`{spec.name}` needs {', '.join(decision.requirements) or 'step-up'}",
                spec.name,
                decision,
            )
        with self._lock:
            self._ran += 1
        return enforcement

    def _decide(
        self, spec: _ToolSpec, call: ToolCall, session: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], Decision]:
        try:
            if spec.resource is not None:
                resource = (
                    spec.resource(call.arguments)
                    if callable(spec.resource)
                    else spec.resource
                )
                call = attrs.evolve(call, resource=resource)
            request = dict((spec.mapper or self.mapper)(call))
        except Exception as exc:
            log.debug("request mapping failed for %s", spec.name, exc_info=True)
            reason = f"bad_request: the call could not be mapped to a request: {exc}"
            return {"action": spec.action, "tool": spec.name}, self._guard_deny(reason)
        token = session.get("delegation_token")
        if token is not None:
            try:
                request = self._with_chain(request, token)
            except ChainRejectedError as exc:
                return request, self._guard_deny(*exc.failures)
            except Exception as exc:
                return request, self._guard_deny(
                    f"malformed_link: the delegation token could not be read: {exc}"
                )
        try:
            return request, self.engine.decide(request)
        except Exception:  # decide never raises; a custom engine might
            log.error(
                "engine raised while deciding %s: %r",
                spec.name,
                sys.exc_info()[1],
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return request, self._guard_deny(
                "error_in_rule: the engine failed while deciding; failing closed"
            )

    def _with_chain(self, request: dict[str, Any], token: object) -> dict[str, Any]:
        if self.keys is None:
            raise ChainRejectedError(
                ["invalid_signature: the guard has no keys to verify the token"]
            )
        if not isinstance(token, str | DelegationChain):
            raise ChainRejectedError(["malformed_link: the token is not a string"])
        return request_with_chain(
            request,
            token,
            self.keys,
            _request_time(request, self._clock),
            revoked=self.revocations,
            leeway=self.leeway,
        )

    def _plan(self, call: Enforcement, request: Mapping[str, Any]) -> Decision:
        """Apply every obligation before the tool runs; a deny if one cannot."""
        call.resource = _resource_identity(request)
        for kind, value in call.decision.obligations.items():
            apply = self.obligations.get(kind)
            try:
                if apply is None:
                    raise ObligationRefused(f"the guard cannot apply `{kind}`")
                apply(value, call)
            except ObligationRefused as exc:
                return self._overrule(call.decision, f"obligation `{kind}`: {exc}")
            except Exception as exc:
                log.debug("obligation %s failed", kind, exc_info=True)
                return self._overrule(
                    call.decision, f"obligation `{kind}` failed: {type(exc).__name__}"
                )
        return call.decision

    def _release(self, spec: _ToolSpec, call: Enforcement, result: Any) -> Any:
        """Filter a result before the caller sees it (step 5, restrict)."""
        if not call.filters and not call.secrets:
            return result
        try:
            for step in call.filters:
                result = step(result)
            return strip_secrets(result, call.secrets)
        except Unfilterable as exc:
            withheld = self._overrule(call.decision, f"{exc}; the result was withheld")
            self._record_quietly(call, withheld, spec)
            raise ToolDeniedError(
                f"`{spec.name}` result withheld: {exc}", spec.name, withheld
            ) from None

    def _record(
        self, request: Mapping[str, Any], decision: Decision, spec: _ToolSpec
    ) -> None:
        if self.audit is None:
            return
        try:
            self.audit.append(request, decision.to_json(), tag=self.tag)
        except Exception as exc:
            with self._lock:
                self._audit_failures += 1
            log.warning("audit log write failed for %s: %s", spec.name, exc)
            self._count("deny")
            failed = self._guard_deny(
                f"audit_unavailable: the decision could not be recorded ({exc})"
            )
            raise ToolDeniedError(
                f"`{spec.name}` denied: the audit log is unavailable",
                spec.name,
                failed,
            ) from None

    def _record_quietly(
        self, call: Enforcement, decision: Decision, spec: _ToolSpec
    ) -> None:
        request = {"action": call.tool.action, "tool": call.tool.tool}
        with contextlib.suppress(ToolDeniedError):
            self._record(request, decision, spec)

    def _guard_deny(self, *reasons: str) -> Decision:
        return Decision.from_verdict(
            deny(*reasons), _policy_hash(self.engine), self._clock()
        )

    def _overrule(self, decision: Decision, why: str) -> Decision:
        verdict = Verdict(
            "deny",
            decision.rules,
            (f"obligation_unenforceable: {why}",),
            errors=(*decision.errors, f"guard: the rules decided {decision.effect}"),
        )
        return Decision.from_verdict(
            verdict, decision.policy_hash, decision.evaluated_at
        )

    def _count(self, effect: str) -> None:
        with self._lock:
            self._decided[effect] = self._decided.get(effect, 0) + 1

    def _current_session(self) -> Mapping[str, Any]:
        session = self._session() if callable(self._session) else self._session
        if not isinstance(session, Mapping):
            raise TypeError("a guard session must be a mapping")
        return session


@attrs.frozen
class _Answered:
    value: Any


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, TypeError):
        return inspect.signature(func)


def _public_signature(
    signature: inspect.Signature, credential: str | None
) -> inspect.Signature:
    kept = [p for name, p in signature.parameters.items() if name != credential]
    return signature.replace(parameters=kept)


def _scrubbed(exc: BaseException, secrets: Sequence[str]) -> BaseException:
    """The tool's own exception when the call held no credential. Otherwise a
    fresh one: a secret can hide in an exception's arguments, attributes,
    notes, chained causes or traceback frames, so none of them is kept."""
    if not any(secrets):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt()
    text = _scrub(f"{type(exc).__name__}: {exc}", tuple(secrets))
    return ToolFailedError(text)


def _mapping_or_none(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _resource_identity(request: Mapping[str, Any]) -> Identity | None:
    resource = request.get("resource")
    if not isinstance(resource, Mapping):
        return None
    try:
        return Identity.of(resource)
    except ValueError:
        return None


def _request_time(
    request: Mapping[str, Any], clock: Callable[[], datetime]
) -> datetime:
    raw = request.get("now")
    if isinstance(raw, datetime):
        return as_utc(raw)
    if isinstance(raw, str):
        return parse_time(raw)
    return clock()


def _policy_hash(engine: Decider) -> str:
    try:
        return engine.policy_hash
    except Exception:
        return "unknown"
