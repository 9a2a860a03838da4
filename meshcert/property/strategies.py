"""Hypothesis strategies of the property test: what an :class:`~meshcert.property.model.Example` is drawn from.

An example is an ACL policy (0-4 rules; sources among the world's tags, the user that owns them,
autogroup:tagged/member, ``*``, node addresses, the tailnet range, the VLAN and the legacy host;
destinations the same aliases with ports drawn around the served banner ports as a single port,
a list, a range or ``*``) plus route settings (the agent pods' ``acceptRoutes`` and the subnet
router's approved routes), drawn from a :class:`~meshcert.property.model.Shape` with world
addresses as ``${...}`` symbols. :func:`edge_examples` are the hand-picked ones every run starts with.

A policy without an ``acls`` section (allow-all in headscale) is never drawn: World.set_policy
appends its sentinel rule to ``acls``, which would turn it into a one-rule policy.
"""

from __future__ import annotations

from hypothesis import strategies as st

from meshcert.property.model import OWNER, TAGS, Example, RouteSettings, Shape
from meshcert.world.topology import AGENT_TAG, DB_TAG, ROUTER_TAG, SERVER_TAG


def _port_specs(served: tuple[int, ...]) -> st.SearchStrategy[str]:
    """Ports around the served ones: single, list, range, or ``*``."""
    near = st.builds(lambda p, d: min(65535, max(1, p + d)), st.sampled_from(served), st.sampled_from((0, 1, -1)))

    def around(p: int, below: int, above: int) -> str:
        return f"{max(1, p - below)}-{min(65535, p + above)}"

    def between(a: int, b: int, inset: int) -> str:
        lo, hi = sorted((a, b))
        return f"{lo + inset}-{hi - inset}" if hi - lo > 2 * inset else f"{lo}-{hi}"

    ranges = st.one_of(
        st.builds(around, st.sampled_from(served), st.sampled_from((1, 0, 2, 100)),
                  st.sampled_from((1, 0, 2, 100))).filter(lambda r: r.split("-")[0] != r.split("-")[1]),
        st.builds(between, st.sampled_from(served), st.sampled_from(served), st.sampled_from((0, 1)))
        .filter(lambda r: r.split("-")[0] != r.split("-")[1]),
    )
    lists = st.lists(st.one_of(near.map(str), ranges), min_size=2, max_size=3, unique=True).map(",".join)
    return st.one_of(near.map(str), lists, ranges, st.just("*"))


# Identity aliases: the tags first (shrinking goes there), then the user every tag belongs to and
# the autogroups -- tagged nodes are owned by their tags, not by that user (headscale >= 0.28).
IDENTITIES = (*TAGS, OWNER, "autogroup:tagged", "autogroup:member")


def _sources(shape: Shape) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(IDENTITIES),
        st.just("*"),
        st.sampled_from([f"${{ip:{n}}}" for n in shape.nodes]),
        st.sampled_from([f"${{net:{n}}}" for n in shape.networks] + ["${tailnet}"]
                        + [f"${{ip:{h}}}" for h in shape.hosts]),
    )


def _destinations(shape: Shape) -> st.SearchStrategy[str]:
    aliases = st.one_of(
        st.sampled_from(IDENTITIES),
        st.just("*"),
        st.sampled_from([f"${{ip:{n}}}" for n in shape.nodes if shape.served.get(n)]),
        st.sampled_from([f"${{net:{n}}}" for n in shape.networks] + [f"${{ip:{h}}}" for h in shape.hosts]
                        + ["${tailnet}"]),
    )
    return st.builds(lambda a, p: f"{a}:{p}", aliases, _port_specs(shape.served_ports))


def rules(shape: Shape) -> st.SearchStrategy[dict]:
    return st.builds(
        lambda s, d: {"action": "accept", "src": s, "dst": d},
        st.lists(_sources(shape), min_size=1, max_size=2, unique=True),
        st.lists(_destinations(shape), min_size=1, max_size=3, unique=True),
    )


def policies(shape: Shape, max_rules: int = 4) -> st.SearchStrategy[dict]:
    """Policies with tagOwners for the world's tags (owned by meshcert@) and 0..max_rules rules.

    Always with an ``acls`` list (an empty one denies everything): a policy without ``acls``
    allows all in headscale, but World.set_policy adds its sentinel rule to ``acls``, which
    would turn such a policy into a deny-all one, so that case cannot be drawn here.
    """
    return st.builds(lambda acls: {"tagOwners": {t: [OWNER] for t in TAGS}, "acls": acls},
                     st.lists(rules(shape), min_size=0, max_size=max_rules))


def route_settings(shape: Shape) -> st.SearchStrategy[RouteSettings]:
    """acceptRoutes of each pod; per router: its topology approval, none, or a covering prefix.

    Choices shrink towards the topology's own setting (acceptRoutes on, route approved).
    """
    def approvals(router: str) -> st.SearchStrategy[tuple[str, ...]]:
        own = shape.routers[router]
        # a prefix covering the advertised one: headscale approves only what is announced
        wider = tuple(s.replace("}", "/16}") for s in own if s.startswith("${net:"))
        return st.sampled_from([own, (), *([wider] if wider else [])])

    return st.builds(
        lambda approved, accept: RouteSettings(approved, accept),
        st.fixed_dictionaries({r: approvals(r) for r in shape.routers}),
        st.fixed_dictionaries({p: st.sampled_from((True, False)) for p in shape.pods}),
    )


def examples(shape: Shape) -> st.SearchStrategy[Example]:
    return st.builds(Example, policies(shape), route_settings(shape))


def edge_examples(shape: Shape) -> list[Example]:
    """Hand-picked examples on the documented semantics most likely to be got wrong; the property
    test runs them on every run before the drawn ones (Hypothesis ``@example``)."""
    owners = {t: [OWNER] for t in TAGS}
    routed = RouteSettings(dict(shape.routers), {p: True for p in shape.pods})

    def ex(acls: list[dict], routes: RouteSettings = routed) -> Example:
        return Example({"tagOwners": owners, "acls": acls}, routes)

    rule = lambda src, dst: {"action": "accept", "src": src, "dst": dst}  # noqa: E731
    lan = f"${{net:{shape.networks[0]}}}" if shape.networks else "${tailnet}"
    wider = RouteSettings({r: tuple(c.replace("}", "/16}") for c in cidrs) for r, cidrs in shape.routers.items()},
                          {p: True for p in shape.pods})
    return [
        # the guide's own policy (+ the VLAN rule its subnet-router section needs)
        ex([rule([AGENT_TAG], [f"{SERVER_TAG}:22"]), rule([AGENT_TAG], [f"{DB_TAG}:5432,3306"]),
            rule([AGENT_TAG], [f"{lan}:22"])]),
        # a router's tag names the router, never the network behind it
        ex([rule([AGENT_TAG], [f"{ROUTER_TAG}:*"])]),
        # an approval must match the advertised route exactly: a covering prefix approves nothing
        ex([rule(["*"], ["*:*"])], wider),
        # "*" includes approved subnet routes; a source CIDR matches packet sources, not routes
        ex([rule(["*"], ["*:22"]), rule([lan], ["*:*"])]),
        # port ranges and lists at their edges
        ex([rule([AGENT_TAG], [f"{DB_TAG}:3307-5431,6379", f"{SERVER_TAG}:21-22"])]),
    ]
