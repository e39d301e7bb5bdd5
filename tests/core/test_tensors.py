"""ember.tensors: the one tensor walker keeps every container's type, and the
helpers built on it (batch moves, CPU copies, precision casts, export samples,
Module.all_gather) keep theirs too."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict, namedtuple
from typing import Any

import torch

from ember.export import _at_least_two, _batch_shapes, _to_device
from ember.plugins.precision.true_precision import TruePrecision
from ember.tensors import apply_to_tensors, move_to_device, to_cpu
from ember.testing import TinyModule

Pair = namedtuple("Pair", "x y")  # noqa: PYI024


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: torch.Tensor
    label: str
    derived: int = dataclasses.field(init=False, default=7)


@dataclasses.dataclass
class WithTo:
    x: torch.Tensor
    moved_by_itself: bool = False

    def to(self, device: Any) -> WithTo:
        return WithTo(self.x.to(device), moved_by_itself=True)


class Items(list):
    pass


def nested() -> dict[str, Any]:
    counts: defaultdict[str, list[Any]] = defaultdict(list)
    counts["a"].append(torch.ones(1, 1))
    return {
        "pair": Pair(torch.ones(1, 2), torch.arange(2)),
        "frozen": Frozen(torch.ones(1, 3), "img"),
        "ordered": OrderedDict(b=torch.zeros(1), a=[torch.ones(1), "s"]),
        "counts": counts,
        "items": Items([torch.ones(1, 4), 3]),
        "tag": "keep",
        "n": 5,
    }


def test_types_are_kept_and_every_tensor_is_visited() -> None:
    seen: list[tuple[int, ...]] = []

    def double(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return t * 2

    out = apply_to_tensors(nested(), double)
    assert len(seen) == 7
    assert type(out["pair"]) is Pair and torch.equal(out["pair"].x, torch.full((1, 2), 2.0))
    assert type(out["frozen"]) is Frozen and out["frozen"].label == "img" and out["frozen"].derived == 7
    assert torch.equal(out["frozen"].x, torch.full((1, 3), 2.0))
    assert type(out["ordered"]) is OrderedDict and list(out["ordered"]) == ["b", "a"] and out["ordered"]["a"][1] == "s"
    assert type(out["counts"]) is defaultdict and out["counts"].default_factory is list
    assert type(out["items"]) is Items and out["items"][1] == 3
    assert out["tag"] == "keep" and out["n"] == 5


def test_other_leaves_and_is_leaf() -> None:
    out = apply_to_tensors([torch.ones(1), 2, "s"], lambda t: t, other=lambda o: ("leaf", o))
    assert out[1:] == [("leaf", 2), ("leaf", "s")]
    kept = WithTo(torch.ones(1))
    assert apply_to_tensors([kept], lambda t: t + 1, is_leaf=lambda o: isinstance(o, WithTo))[0] is kept


def test_move_to_device_and_to_cpu() -> None:
    moved = move_to_device({"batch": WithTo(torch.ones(1)), "rest": nested()}, torch.device("cpu"))
    assert moved["batch"].moved_by_itself  # an object's own ``to`` wins over walking its fields
    assert type(moved["rest"]["frozen"]) is Frozen and type(moved["rest"]["counts"]) is defaultdict
    grad = torch.ones(2, requires_grad=True) * 3
    out = to_cpu({"loss": grad, "pair": Pair(grad, 1)})
    assert not out["loss"].requires_grad and type(out["pair"]) is Pair


def test_precision_casts_inside_every_container() -> None:
    out = TruePrecision(torch.float64, "64-true").convert_input(nested())
    assert type(out["frozen"]) is Frozen and out["frozen"].x.dtype == torch.float64
    assert type(out["counts"]) is defaultdict and out["counts"]["a"][0].dtype == torch.float64
    assert out["pair"].x.dtype == torch.float64 and out["pair"].y.dtype == torch.int64


def test_export_samples_keep_their_containers() -> None:
    sample = Pair(torch.ones(1, 2), {"mask": torch.ones(1, 2, dtype=torch.bool)})
    two = _at_least_two(sample)
    assert type(two) is Pair and two.x.shape == (2, 2) and two.y["mask"].shape == (2, 2)
    assert type(_to_device(sample, torch.device("cpu"))) is Pair
    assert _batch_shapes((torch.ones(3, 2), 4, torch.tensor(1.0)), "B") == ({0: "B"}, None, None)


def test_module_all_gather_walks_numbers_and_containers() -> None:
    module = TinyModule()
    out = module.all_gather({"loss": torch.tensor(0.5), "pair": Pair(1.5, torch.ones(2)), "name": "x"})
    assert type(out["pair"]) is Pair and torch.equal(out["pair"].x, torch.tensor(1.5)) and out["name"] == "x"
