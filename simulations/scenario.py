"""Scenarios: what a simulation runs, as a small TOML file (`simulations/scenarios/*.toml`).

A scenario names the network (node count, topology, link latency, bandwidth and loss), the
builders (how many, how many entries each logs over the run, how often they sign), what goes
wrong (partitions on a schedule, churn) and, at most, one attack.  Every field has a default,
so a file says only what differs; an unknown key or a value of the wrong type is refused with
the key's name.  `load_scenario("split-view")` reads `simulations/scenarios/split-view.toml`;
a path reads that file.  Command-line overrides (`--nodes`, `--seed`, `--degree`,
`--attackers`) are applied with `Scenario.with_overrides`.

    [topology]
    kind = "random-regular"     # random-regular | small-world | clustered | local-clusters
    degree = 8

    [network]
    latency = { distribution = "lognormal", median = 0.05, sigma = 0.5 }

    [attack]
    kind = "split-view"
    at = 60.0
"""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = [
    "ATTACKS",
    "SCENARIO_DIR",
    "TOPOLOGIES",
    "Attack",
    "Builders",
    "Churn",
    "Distribution",
    "EngineSettings",
    "Network",
    "Partition",
    "Scenario",
    "ScenarioError",
    "Topology",
    "load_scenario",
    "scenario_names",
]

SCENARIO_DIR: Final = Path(__file__).parent / "scenarios"
TOPOLOGIES: Final = ("random-regular", "small-world", "clustered", "local-clusters")
ATTACKS: Final = (
    "none",
    "split-view",
    "rewrite",
    "withholding",
    "lying-builder",
    "garbage",
    "flood",
    "eclipse",
    "sybil",
    "stolen-key",
)
# Attacks in which a builder's log is made inconsistent: every honest node connected to the
# honest majority is expected to hold verified evidence by the end.
EQUIVOCATIONS: Final = ("split-view", "rewrite", "eclipse", "sybil", "stolen-key")


class ScenarioError(ValueError):
    """A scenario file that cannot be run (the message names the key)."""


@attrs.frozen
class Distribution:
    """A non-negative random quantity (seconds): constant, uniform or log-normal."""

    distribution: str = "lognormal"
    median: float = 0.05  # lognormal
    sigma: float = 0.5  # lognormal: of the underlying normal
    low: float = 0.01  # uniform
    high: float = 0.1  # uniform
    value: float = 0.05  # constant

    def draw(self, rng: random.Random) -> float:
        if self.distribution == "constant":
            return self.value
        if self.distribution == "uniform":
            return rng.uniform(self.low, self.high)
        return self.median * math.exp(rng.gauss(0.0, self.sigma))

    def typical(self) -> float:
        if self.distribution == "constant":
            return self.value
        if self.distribution == "uniform":
            return (self.low + self.high) / 2
        return self.median


@attrs.frozen
class Topology:
    kind: str = "random-regular"
    degree: int = 8
    rewire: float = 0.1  # small-world: the chance that a ring link is rewired
    clusters: int = 8  # clustered (data centres), local-clusters (mDNS islands)
    bridges: int = 2  # links from each cluster to others (slow links / seeds between islands)


@attrs.frozen
class Network:
    latency: Distribution = Distribution()
    # Links between data centres (clustered) or islands (local-clusters).
    slow_latency: Distribution = Distribution(median=0.15, sigma=0.3)
    bandwidth: float = 12_500_000.0  # bytes per second per link and direction (100 Mbit/s)
    slow_bandwidth: float = 1_250_000.0
    # Links run over TCP: a lost segment is sent again after the retransmission timeout, so
    # loss shows as delay (each loss costs `rto`, doubling), never as a missing message.
    loss: float = 0.0
    rto: float = 0.2


@attrs.frozen
class Builders:
    count: int = 10
    entries: int = 1000  # each, over the run
    checkpoint_interval: float = 30.0
    start: float = 5.0  # the first checkpoint
    # Non-builder nodes that mirror every log (the rest witness); builders mirror each other.
    mirrors: float = 0.02
    # Builders log the same store paths (reproducible builds) with the same NAR hashes.
    shared_paths: bool = True


@attrs.frozen
class EngineSettings:
    anti_entropy_interval: float = 5.0
    relay_delay: float = 0.2
    cosign: bool = True
    request_timeout: float = 10.0


@attrs.frozen
class Partition:
    at: float = 60.0
    heal: float = 120.0
    fraction: float = 0.5  # of the nodes on one side


@attrs.frozen
class Churn:
    crash: float = 0.0  # fraction of (non-builder) nodes that crash once
    window: tuple[float, float] = (20.0, 150.0)  # when crashes and late joins happen
    downtime: tuple[float, float] = (10.0, 60.0)  # then each restarts with its store
    late_join: float = 0.0  # fraction of nodes that join only within `window`


@attrs.frozen
class Attack:
    kind: str = "none"
    at: float = 60.0  # when the attack starts (virtual seconds)
    attackers: float = 0.02  # nodes on the attacker's side, as a fraction of all nodes
    withhold: float = 0.5  # withholding: the fraction of its peers a builder skips
    lies: int = 10  # lying-builder: entries logged with a wrong NAR hash
    clients: int = 20  # lying-builder: simulated workstations deciding M of N
    threshold: int = 0  # M (0: a majority of the builders)
    heal_at: float = 150.0  # eclipse: when one honest link reaches the victim
    flood_rate: float = 2000.0  # flood: messages per second from each attacker


@attrs.frozen
class Scenario:
    name: str = "custom"
    description: str = ""
    nodes: int = 200
    seed: int = 1
    duration: float = 300.0
    topology: Topology = Topology()
    network: Network = Network()
    builders: Builders = Builders()
    engine: EngineSettings = EngineSettings()
    partitions: tuple[Partition, ...] = ()
    churn: Churn = Churn()
    attack: Attack = Attack()
    noise: bool = False  # trio driver: Noise on the in-memory links

    def with_overrides(
        self,
        *,
        nodes: int | None = None,
        seed: int | None = None,
        degree: int | None = None,
        attackers: float | None = None,
    ) -> Scenario:
        s = self
        if nodes is not None:
            s = attrs.evolve(s, nodes=nodes)
        if seed is not None:
            s = attrs.evolve(s, seed=seed)
        if degree is not None:
            s = attrs.evolve(s, topology=attrs.evolve(s.topology, degree=degree))
        if attackers is not None:
            s = attrs.evolve(s, attack=attrs.evolve(s.attack, attackers=attackers))
        s.validate()
        return s

    def validate(self) -> None:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ScenarioError(f"{key}: {why}")

        need(self.nodes >= self.builders.count + 2, "nodes", "must exceed builders.count + 1")
        need(self.nodes <= 200_000, "nodes", "at most 200000")
        need(self.duration > 0, "duration", "must be positive")
        need(self.topology.kind in TOPOLOGIES, "topology.kind", f"one of {', '.join(TOPOLOGIES)}")
        need(2 <= self.topology.degree <= 64, "topology.degree", "between 2 and 64")
        need(0 <= self.topology.rewire <= 1, "topology.rewire", "between 0 and 1")
        need(self.topology.clusters >= 1, "topology.clusters", "at least 1")
        need(self.topology.bridges >= 1, "topology.bridges", "at least 1")
        for key, d in (
            ("network.latency", self.network.latency),
            ("network.slow_latency", self.network.slow_latency),
        ):
            need(
                d.distribution in ("constant", "uniform", "lognormal"),
                f"{key}.distribution",
                "constant, uniform or lognormal",
            )
            need(min(d.median, d.low, d.high, d.value, d.sigma) >= 0, key, "negative value")
            need(d.low <= d.high, key, "low above high")
        need(self.network.bandwidth > 0, "network.bandwidth", "must be positive")
        need(self.network.slow_bandwidth > 0, "network.slow_bandwidth", "must be positive")
        need(0 <= self.network.loss < 0.5, "network.loss", "between 0 and 0.5")
        need(self.network.rto > 0, "network.rto", "must be positive")
        b = self.builders
        need(1 <= b.count <= 1000, "builders.count", "between 1 and 1000")
        need(0 <= b.entries <= 1_000_000, "builders.entries", "between 0 and 1000000")
        need(b.checkpoint_interval > 0, "builders.checkpoint_interval", "must be positive")
        need(0 <= b.mirrors <= 1, "builders.mirrors", "between 0 and 1")
        need(self.engine.anti_entropy_interval > 0, "engine.anti_entropy_interval", "positive")
        need(self.engine.relay_delay >= 0, "engine.relay_delay", "not negative")
        for i, p in enumerate(self.partitions):
            need(0 <= p.at < p.heal, f"partitions[{i}]", "needs 0 <= at < heal")
            need(0 < p.fraction < 1, f"partitions[{i}].fraction", "between 0 and 1")
        c = self.churn
        need(0 <= c.crash < 1 and 0 <= c.late_join < 1, "churn", "fractions between 0 and 1")
        need(c.window[0] <= c.window[1], "churn.window", "start after end")
        need(0 <= c.downtime[0] <= c.downtime[1], "churn.downtime", "start after end")
        a = self.attack
        need(a.kind in ATTACKS, "attack.kind", f"one of {', '.join(ATTACKS)}")
        need(0 <= a.attackers <= 0.5, "attack.attackers", "between 0 and 0.5")
        need(0 <= a.withhold <= 1, "attack.withhold", "between 0 and 1")
        need(a.lies >= 0 and a.clients >= 0, "attack", "lies and clients not negative")
        need(0 <= a.threshold <= b.count, "attack.threshold", "between 0 and builders.count")
        need(a.at < self.duration, "attack.at", "after the end of the run")
        if a.kind == "lying-builder":
            need(b.shared_paths, "builders.shared_paths", "lying-builder needs shared paths")
            need(a.lies <= b.entries, "attack.lies", "more lies than entries")

    @property
    def threshold(self) -> int:
        return self.attack.threshold or self.builders.count // 2 + 1


# -- reading TOML ------------------------------------------------------------------------------


def _build(cls: type[Any], table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: expected a table")
    fields = {f.name: f for f in attrs.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        here = f"{where}.{key}" if where else key
        field = fields.get(name)
        if field is None:
            raise ScenarioError(f"{here}: unknown key")
        default = field.default
        values[name] = _value(default, value, here, name, cls)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ScenarioError(f"{where or 'scenario'}: {exc}") from None


def _value(default: Any, value: Any, here: str, name: str, cls: type[Any]) -> Any:
    if cls is Scenario and name == "partitions":
        if not isinstance(value, list):
            raise ScenarioError(f"{here}: expected an array of tables")
        return tuple(_build(Partition, v, f"{here}[{i}]") for i, v in enumerate(value))
    if attrs.has(type(default)):
        return _build(type(default), value, here)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f"{here}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{here}: expected an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{here}: expected a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(f"{here}: expected a string")
        return value
    if isinstance(default, tuple):
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise ScenarioError(f"{here}: expected [low, high]")
        return (float(value[0]), float(value[1]))
    raise ScenarioError(f"{here}: cannot be set")  # pragma: no cover


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A scenario by name (`simulations/scenarios/NAME.toml`) or by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ScenarioError(
                f"no scenario {name_or_path!r}; known: {', '.join(scenario_names())}"
            )
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    table.setdefault("name", path.stem)
    try:
        scenario: Scenario = _build(Scenario, table, "")
        scenario.validate()
    except ScenarioError as exc:
        raise ScenarioError(f"{path.name}: {exc}") from None
    return scenario
