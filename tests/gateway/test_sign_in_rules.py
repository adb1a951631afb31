"""The sign-in runner (``netra_actors/gateway/_sign_in.py``) and the loader of ``--agents`` and
``--auth`` (``_loading.py``), without a server: what a sign-in function's answers become, how
sync and async functions run, and the one-line errors of a bad spec."""

from __future__ import annotations

import math
import threading

import pytest
import trio
import trio.lowlevel

from netra_actors import Agent
from netra_actors.exceptions import ConfigError
from netra_actors.gateway import SignInRefused, SignInRequest, TokenClaims, load_agents
from netra_actors.gateway._http import HttpRequest
from netra_actors.gateway._sign_in import SignIn, SignInFailed, parse_cookies


def request(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest(method="GET", target="/ws?x=1", headers=headers, local=("127.0.0.1", 1))


def test_the_request_view_has_headers_cookies_and_the_bearer_token() -> None:
    view = SignInRequest.of(
        request(("authorization", "Bearer  abc.def "), ("cookie", 'a=1; b="two"; a=3'),
                ("cookie", "c=x=y; broken; =v"))
    )  # fmt: skip
    assert (view.method, view.path) == ("GET", "/ws")
    assert view.bearer == "abc.def"
    assert view.header("Authorization") == "Bearer  abc.def "
    assert dict(view.cookies) == {"a": "1", "b": "two", "c": "x=y"}
    assert SignInRequest.of(request(("authorization", "Basic abc"))).bearer is None
    assert SignInRequest.of(request(("authorization", "Bearer "))).bearer is None
    assert dict(parse_cookies(())) == {}


async def test_what_the_answers_become() -> None:
    def named(answer: object) -> SignIn:
        return SignIn(lambda _r: answer, timeout=5)  # type: ignore[arg-type,return-value]

    claims = await named("ann")(request())
    assert claims == TokenClaims(user="ann", expires_at=math.inf)
    expiring = TokenClaims(user="bob", expires_at=123.0)
    assert await named(expiring)(request()) == expiring
    assert await named(None)(request()) is None
    for bad in ("", "x" * 65, 42, b"ann"):
        with pytest.raises(SignInFailed):
            await named(bad)(request())


async def test_refusals_pass_and_failures_are_contained() -> None:
    def refuse(_r: SignInRequest) -> str:
        raise SignInRefused("the cookie expired")

    def crash(_r: SignInRequest) -> str:
        raise KeyError("bug")

    with pytest.raises(SignInRefused, match="the cookie expired"):
        await SignIn(refuse, timeout=5)(request())
    with pytest.raises(SignInFailed):
        await SignIn(crash, timeout=5)(request())


async def test_a_sync_function_runs_in_a_thread_and_an_async_one_is_awaited() -> None:
    seen: list[bool] = []

    def blocking(_r: SignInRequest) -> str:
        seen.append(threading.current_thread() is threading.main_thread())
        return "ann"

    async def coroutine(r: SignInRequest) -> str:
        await trio.lowlevel.checkpoint()
        return r.cookies["who"]

    claims = await SignIn(blocking, timeout=5)(request())
    assert claims is not None
    assert claims.user == "ann"
    assert seen == [False]
    claims = await SignIn(coroutine, timeout=5)(request(("cookie", "who=bob")))
    assert claims is not None
    assert claims.user == "bob"


async def test_a_slow_function_fails_after_the_timeout() -> None:
    async def slow(_r: SignInRequest) -> str:
        await trio.sleep(10)
        return "ann"

    with pytest.raises(SignInFailed):
        await SignIn(slow, timeout=0.05)(request())


class Valid(Agent):
    name = "valid"


class NotJson(Agent):
    name = "not_json"
    example_input = {"when": object()}


VALID = [Valid]
NOT_JSON = [NotJson]


def test_load_agents_checks_what_it_loads() -> None:
    here = __name__
    assert load_agents([f"{here}:VALID"]) == [Valid]
    with pytest.raises(ConfigError, match="example_input is not a JSON value"):
        load_agents([f"{here}:NOT_JSON"])
    with pytest.raises(ConfigError, match="not among the agents served"):
        load_agents([f"{here}:VALID"], "other")
