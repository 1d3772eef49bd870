"""The recipe book the daemon inspects with: per product, an open engine (shared by the
recipes of one bundle), a threshold and the acquisition setup (lighting conditions in the
bundle's light order, flat-field, exposures). The config resolves the recipes and reads their
files (``afrd.config.recipes``); here their engines are opened (``open_recipes``, which
`afrd config check` runs too).

The trigger's ``product`` picks the recipe (``RecipeBook.get``); a cell without ``[[product]]``
blocks has one recipe and takes any product as a label. The pipeline pins the book a part
starts with until its inference is done, and a reload swaps the whole book: a part is imaged
and judged with the settings of one recipe of one book, and an old book's engines close only
when its last part is through. A promotion or a rollback (``RecipeBook.with_recipe``) swaps a
book in which one recipe changed and the others' engines carry over: an engine is closed when
the last book holding it closes (``_hold``/``_release`` count the books).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from afrd.acquire.lighting import LightingCondition
from afrd.acquire.sequencer import Setup
from afrd.config.cell import CellConfig
from afrd.config.recipes import RecipeSpec, recipe_specs
from afrd.daemon.systemd import Notifier
from afrd.daemon.verdict import UnknownProduct
from afrd.runtime.loader import Runtime, load_runtime


@dataclass
class Recipe:
    name: str | None  # None: the cell has no [[product]] blocks
    runtime: Runtime
    threshold: float
    setup: Setup | None  # None: the pipeline's acquire function uses its own settings
    bundle: str = ""

    @property
    def model(self) -> dict[str, str]:
        return self.runtime.model

    def describe(self) -> dict:
        """What `status` reports of a recipe."""
        out: dict = {"threshold": self.threshold, "model": self.model, "bundle": self.bundle}
        if self.setup is not None:
            out["lights"] = [c.name for c in self.setup.conditions]
            out["flatfield"] = self.setup.corrections is not None
            out["exposures"] = dict(self.setup.exposures)
        return out


# books holding each open engine (id of its Runtime): an engine two books share (a promotion
# changed one recipe, the others carried over) closes with the last of them
_holders: dict[int, int] = {}
_holders_lock = threading.Lock()


def _hold(runtimes: list[Runtime]) -> None:
    with _holders_lock:
        for rt in runtimes:
            _holders[id(rt)] = _holders.get(id(rt), 0) + 1


def _release(runtimes: list[Runtime]) -> list[Runtime]:
    """The runtimes no other book holds any more (to be closed)."""
    out = []
    with _holders_lock:
        for rt in runtimes:
            n = _holders.get(id(rt), 1) - 1
            if n <= 0:
                _holders.pop(id(rt), None)
                out.append(rt)
            else:
                _holders[id(rt)] = n
    return out


@dataclass
class RecipeBook:
    recipes: dict[str | None, Recipe]
    default: str | None  # the recipe of triggers without a product and of set_threshold
    specs: list[RecipeSpec] = field(default_factory=list)  # what the config resolved
    users: int = 0  # parts pinned to this book (guarded by _lock)
    retired: bool = False
    _closed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        _hold(self.runtimes())

    @classmethod
    def single(cls, runtime: Runtime, setup: Setup | None = None) -> RecipeBook:
        """One recipe that serves every product (a cell without [[product]] blocks)."""
        return cls({None: Recipe(None, runtime, runtime.threshold, setup)}, None)

    @property
    def products(self) -> list[str]:
        return [n for n in self.recipes if n is not None]

    def get(self, product: str | None) -> Recipe:
        """The recipe of ``product``; UnknownProduct (an ``unknown_product`` verdict) when the
        cell has [[product]] blocks and none is named so."""
        if None in self.recipes:
            return self.recipes[None]
        if product is None:
            product = self.default
        r = self.recipes.get(product)
        if r is None:
            raise UnknownProduct(
                f"product {product!r} has no [[product]] recipe in the cell config "
                f"(recipes: {self.products})"
            )
        return r

    @property
    def default_recipe(self) -> Recipe:
        return self.get(self.default)

    def runtimes(self) -> list[Runtime]:
        return list({id(r.runtime): r.runtime for r in self.recipes.values()}.values())

    def with_recipe(self, recipe: Recipe) -> RecipeBook:
        """A new book in which ``recipe`` takes the place of the one of its name (promote,
        rollback); the other recipes, their engines and thresholds, carry over as they are."""
        if recipe.name not in self.recipes:
            raise UnknownProduct(f"no recipe {recipe.name!r} to replace (have {self.products})")
        return RecipeBook({**self.recipes, recipe.name: recipe}, self.default, self.specs)

    def spec(self, name: str | None) -> RecipeSpec | None:
        """What the config resolved for recipe ``name`` (None when the book was built
        without the config, e.g. from one runtime)."""
        return next((s for s in self.specs if s.name == name), None)

    def pin(self) -> RecipeBook:
        """A part starts with this book: its engines stay open until the part ``unpin``s."""
        with self._lock:
            self.users += 1
        return self

    def unpin(self) -> None:
        with self._lock:
            self.users -= 1
            done = self.retired and self.users == 0
        if done:
            self.close()

    def retire(self) -> None:
        """A reload swapped this book out: close it now, or when its last pinned part is out."""
        with self._lock:
            self.retired = True
            done = self.users == 0
        if done:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for rt in _release(self.runtimes()):
            rt.close()


@dataclass
class OpenRecipe:
    """A recipe with its engine open: what the daemon inspects a product's parts with."""

    spec: RecipeSpec
    runtime: Runtime  # shared by the recipes of one bundle
    threshold: float
    conditions: list[LightingCondition]  # in the bundle's light order


def open_recipes(
    cfg: CellConfig,
    specs: list[RecipeSpec] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> list[OpenRecipe]:
    """Open one engine per distinct bundle and resolve each recipe's threshold and conditions.
    Any error closes what was opened and raises (ConfigError/BundleError naming the recipe)."""
    specs = recipe_specs(cfg) if specs is None else specs
    runtimes: dict[Path, Runtime] = {}
    out: list[OpenRecipe] = []
    e = cfg.engine
    try:
        for spec in specs:
            rt = runtimes.get(spec.bundle)
            if rt is None:
                group = [s for s in specs if s.bundle == spec.bundle]
                given = [s.threshold for s in group if s.threshold is not None]
                # the bundle's threshold is needed only for a recipe that sets none and has
                # no threshold of its own in a multi-class bundle
                thr = given[0] if len(given) == len(group) else None
                unset = [s.name for s in group if s.threshold is None]
                rt = load_runtime(
                    spec.bundle,
                    e.kind,
                    e.open_options(),
                    thr,
                    on_status,
                    spec.conditions_for,
                    products=unset if None not in unset else (),
                )
                runtimes[spec.bundle] = rt
            # the config's, else a multi-class bundle's for this product, else the bundle's
            own = rt.product_thresholds.get(spec.name, rt.threshold) if spec.name else rt.threshold
            threshold = spec.threshold if spec.threshold is not None else own
            out.append(OpenRecipe(spec, rt, float(threshold), spec.conditions_for(rt.lights)))
    except BaseException:
        for rt in runtimes.values():
            rt.close()
        raise
    return out


def load_book(cfg: CellConfig, notifier: Notifier | None = None) -> RecipeBook:
    """Every recipe of ``cfg`` opened (ConfigError/BundleError naming the recipe, nothing left
    open). ``notifier`` hears what is loading and gets more start-up time from systemd."""

    def status(text: str) -> None:
        if notifier is not None:
            notifier.extend_timeout(300)
            notifier.status(text)

    on_status: Callable[[str], None] = status
    opened = open_recipes(cfg, on_status=on_status)
    recipes = {
        o.spec.name: Recipe(
            o.spec.name,
            o.runtime,
            o.threshold,
            Setup(o.conditions, o.spec.flatfield, o.spec.exposures or {}),
            str(o.spec.bundle),
        )
        for o in opened
    }
    names = [n for n in recipes if n is not None]
    default = cfg.trigger.product if cfg.trigger.product in names else (names or [None])[0]
    return RecipeBook(recipes, default, [o.spec for o in opened])
