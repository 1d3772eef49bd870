"""The control commands of a model's life on the line: ``shadow_start``, ``shadow_stop``,
``shadow_status``, ``promote``, ``rollback`` (a mixin of `afrd.daemon.service.Service`, as
``afrd.daemon.commands`` is), and what the output thread does for them after each published
part (``_watch``: the drift watch, the shadow run).

Opening an engine takes seconds to minutes, so ``shadow_start``, ``promote`` and ``rollback``
run on the reload thread under the reload lock (one at a time, never beside a reload) and the
control socket answers when they are done, as it does for ``reload``. A promotion or a
rollback swaps a book in which only the product's recipe changed (``RecipeBook.with_recipe``)
between two parts, as a reload swaps a whole book: every part is judged by one model, named in
its result. A shadow run's candidate runs in a process of its own (``afrd.runtime.isolated``);
a promotion opens it here, from the kept copy, before the swap. The replaced model is kept (``afrd.daemon.models_kept``) for ``rollback``; with
``"persist": true`` the config file's bundle and threshold follow (``afrd.config.persist``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from afrd.acquire.sequencer import Setup
from afrd.config.cell import load_config
from afrd.daemon.drift import DriftBook
from afrd.daemon.interfaces.control import CommandError, check_name, clip
from afrd.daemon.models_kept import KeptModels, kept_entry
from afrd.daemon.recipes import Recipe
from afrd.daemon.shadow import ShadowRun
from afrd.daemon.verdict import Job, UnknownProduct
from afrd.errors import AfrdError, ConfigError
from afrd.runtime.isolated import IsolatedRuntime, open_isolated
from afrd.runtime.loader import Runtime, load_runtime

log = logging.getLogger("afrd.daemon")


class ModelCommands:
    """What the control socket can do with models; the Service's attributes it uses are
    those of ``afrd.daemon.commands.ControlCommands``, plus ``shadow`` and ``drift``."""

    shadow: ShadowRun | None
    last_shadow: dict | None
    drift: DriftBook
    cfg: Any
    config_path: Path
    pipeline: Any
    publisher: Any
    recorder: Any
    interfaces: Any
    _reloads: Any
    _reload_lock: Any

    # ------------------------------------------------------------------ per part
    def _watch(self, job: Job, msg: dict) -> None:
        """After ``msg`` is published (the output thread): the drift watch, then the shadow
        run, which records the part itself once the candidate judged it."""
        if job.verdict == "error" or job.recipe is None or job.score is None:
            return
        self.drift.add(self._product_key(job.recipe), job.recipe, job.score, job.threshold)
        rec = self.recorder
        record = rec is not None and job.imageset is not None and rec.wants(job.verdict)
        run = self.shadow
        if run is not None and run.recipe == job.recipe.name and job.imageset is not None:
            if run.offer(job, msg, record):
                return
        if record:
            rec.put(job.imageset, msg)

    def _publish_shadow(self, msg: dict) -> None:
        """The shadow run's thread: ``shadow.<cell>`` on ZeroMQ, ``<root>/shadow`` on MQTT."""
        self.publisher.shadow(msg)
        self.interfaces.shadow(msg)

    def _product_key(self, recipe: Recipe) -> str:
        """How status, metrics and the history name a recipe: its product, or the cell's
        trigger product for a cell without [[product]] recipes."""
        return recipe.name if recipe.name is not None else self.cfg.trigger.product

    def _recipe(self, req: dict, cmd: str) -> Recipe:
        product = req.get("product")
        if product is not None:
            check_name(product, "product")
        try:
            return self.pipeline.book.get(product)
        except UnknownProduct as exc:
            raise CommandError(f"{cmd}: {clip(str(exc))}") from None

    def _persist_flag(self, req: dict, cmd: str) -> bool:
        v = req.get("persist", False)
        if not isinstance(v, bool):
            raise CommandError(f"{cmd}: persist must be true or false, got {clip(repr(v), 80)}")
        return v

    # ------------------------------------------------------------------ shadow
    def _cmd_shadow_start(self, req: dict) -> Future:
        bundle = req.get("bundle")
        if not isinstance(bundle, str) or not bundle or len(bundle) > 4096:
            raise CommandError("shadow_start: bundle must be the candidate bundle's directory")
        recipe = self._recipe(req, "shadow_start")
        if self.shadow is not None:
            raise CommandError(
                f"shadow_start: candidate {self.shadow.model['name']} already shadows product "
                f"{self.shadow.product!r}; stop it first (afrd ctl shadow stop)"
            )
        return self._reloads.submit(self._shadow_open, Path(bundle), recipe.name)

    def _shadow_open(self, path: Path, name: str | None) -> dict:
        with self._reload_lock:
            if self.shadow is not None:
                raise CommandError("shadow_start: another shadow run started meanwhile")
            recipe = self.pipeline.book.get(name)
            rt = self._open_candidate(path, recipe)
            threshold = rt.product_thresholds.get(name, rt.threshold) if name else rt.threshold
            rec = self.recorder
            self.shadow = ShadowRun(
                self.cfg.cell,
                self._product_key(recipe),
                rt,
                float(threshold),
                str(path),
                self._publish_shadow,
                name,
                self.cfg.models.shadow_queue,
                rec.put if rec is not None else None,
                rec.root if rec is not None else None,
            )
            log.info(
                "shadow: candidate %s (%s) judges product %r beside %s, threshold %g",
                *(rt.model_name, path, self.shadow.product, recipe.runtime.model_name, threshold),
            )
            return self.shadow.summary()

    def _open(self, path: Path, recipe: Recipe, threshold: float | None, cmd: str) -> Runtime:
        """A bundle's engine for ``recipe``'s product, opened as the recipe's was; its lights
        must be among those the recipe images."""
        e = self.cfg.engine
        products = (recipe.name,) if recipe.name else ()
        check = self._lights_check(path, recipe)
        try:
            return load_runtime(path, e.kind, e.open_options(), threshold, None, check, products)
        except AfrdError as exc:
            raise CommandError(f"{cmd}: {clip(str(exc), 1000)}") from None

    def _open_candidate(self, path: Path, recipe: Recipe) -> IsolatedRuntime:
        """As ``_open``, the engine in a process of its own at the lowest CPU priority."""
        e = self.cfg.engine
        products = (recipe.name,) if recipe.name else ()
        try:
            rt = open_isolated(path, e.kind, e.open_options(), None, products)
        except AfrdError as exc:
            raise CommandError(f"shadow_start: {clip(str(exc), 1000)}") from None
        try:
            self._lights_check(path, recipe)(rt.lights)
        except ConfigError as exc:
            rt.close()
            raise CommandError(f"shadow_start: {clip(str(exc), 1000)}") from None
        return rt

    def _lights_check(self, path: Path, recipe: Recipe) -> Callable[[tuple[str, ...]], None]:
        imaged = [c.name for c in recipe.setup.conditions] if recipe.setup else None

        def check(lights: tuple[str, ...]) -> None:
            missing = [n for n in lights if imaged is not None and n not in imaged]
            if missing:
                raise ConfigError(
                    f"bundle {path} needs lights {missing} that product "
                    f"{self._product_key(recipe)!r} is not imaged under (it is under {imaged})"
                )

        return check

    def _cmd_shadow_stop(self, _req: dict) -> dict:
        run = self.shadow
        if run is None:
            raise CommandError("shadow_stop: no shadow run (afrd ctl shadow start --bundle DIR)")
        self.shadow = None
        run.stop()
        self.last_shadow = run.report()
        log.info("shadow: candidate %s stopped: %s", run.model["name"], run.summary())
        return self.last_shadow

    def _cmd_shadow_status(self, _req: dict) -> dict:
        run = self.shadow
        if run is not None:
            return run.report()
        return self.last_shadow or {"active": False}

    # ------------------------------------------------------------------ promote, rollback
    def _cmd_promote(self, req: dict) -> Future:
        persist = self._persist_flag(req, "promote")
        if self.shadow is None:
            raise CommandError(
                "promote: no candidate to promote: start one with `afrd ctl shadow start "
                "--bundle DIR` and compare it first"
            )
        return self._reloads.submit(self._promote, persist)

    def _promote(self, persist: bool) -> dict:
        with self._reload_lock:
            run = self.shadow
            if run is None:
                raise CommandError("promote: the shadow run was stopped meanwhile")
            book = self.pipeline.book
            old = book.get(run.recipe)
            kept = KeptModels(self.cfg.models)
            key = self._product_key(old)
            previous = kept.copy(old.bundle, old.runtime.model_name, old.runtime.model_sha256)
            bundle = kept.copy(run.bundle, run.model["name"], run.model["sha256"])
            rt = self._open(bundle, old, run.threshold, "promote")  # here: it judges live parts
            if rt.model_sha256 != run.model["sha256"]:
                rt.close()
                raise CommandError(
                    f"promote: {run.bundle} holds model {rt.model_sha256[:12]} now, the "
                    f"candidate compared was {run.model['sha256'][:12]}; not promoted"
                )
            new = self._recipe_with(old, rt, run.threshold, bundle)
            kept.push(key, kept_entry(previous, old.bundle, old.model, old.threshold))
            self.shadow = None  # what failed before this left the run going and nothing changed
            run.stop()
            self.last_shadow = {**run.report(), "active": False}
            self.pipeline.swap_book(book.with_recipe(new))
            log.info(
                "promoted %s for product %r (threshold %g); %s kept for rollback",
                *(new.runtime.model_name, key, new.threshold, old.runtime.model_name),
            )
            out = {"product": key, "model": new.model, "threshold": new.threshold}
            out.update(bundle=str(bundle), previous=old.model)
            return {**out, **self._after_change(kept, new, persist)}

    def _cmd_rollback(self, req: dict) -> Future:
        persist = self._persist_flag(req, "rollback")
        recipe = self._recipe(req, "rollback")
        key = self._product_key(recipe)
        if not KeptModels(self.cfg.models).stack(key):
            raise CommandError(
                f"rollback: no earlier model kept for product {key!r} in {self.cfg.models.dir} "
                "(a promotion keeps the model it replaces)"
            )
        return self._reloads.submit(self._rollback, recipe.name, persist)

    def _rollback(self, name: str | None, persist: bool) -> dict:
        with self._reload_lock:
            book = self.pipeline.book
            old = book.get(name)
            key = self._product_key(old)
            kept = KeptModels(self.cfg.models)
            stack = kept.stack(key)
            while stack and stack[-1].sha256 == old.runtime.model_sha256:
                kept.pop(key)  # what runs already (a promotion not persisted, then a restart)
                stack.pop()
            if not stack:
                self._prune(kept)
                raise CommandError(
                    f"rollback: no earlier model kept for product {key!r}: it runs "
                    f"{old.runtime.model_name}, the last one kept"
                )
            entry = stack[-1]
            rt = self._open(Path(entry.bundle), old, entry.threshold, "rollback")
            if rt.model_sha256 != entry.sha256:
                rt.close()
                raise CommandError(
                    f"rollback: {entry.bundle} holds model {rt.model_sha256[:12]}, the history "
                    f"says {entry.sha256[:12]}; not rolled back"
                )
            new = self._recipe_with(old, rt, entry.threshold, Path(entry.bundle))
            self.pipeline.swap_book(book.with_recipe(new))
            kept.pop(key)
            log.info(
                "rolled back product %r from %s to %s (threshold %g)",
                *(key, old.runtime.model_name, rt.model_name, entry.threshold),
            )
            out = {"product": key, "model": new.model, "threshold": new.threshold}
            out.update(bundle=entry.bundle, previous=old.model)
            return {**out, **self._after_change(kept, new, persist)}

    def _recipe_with(self, old: Recipe, rt: Runtime, threshold: float, bundle: Path) -> Recipe:
        """``old``'s recipe judged by ``rt``: the same product settings, its conditions in the
        new bundle's light order."""
        setup = old.setup
        spec = self.pipeline.book.spec(old.name)
        if setup is not None and spec is not None:
            try:
                conditions = spec.conditions_for(rt.lights)
            except ConfigError as exc:
                raise CommandError(clip(str(exc), 1000)) from None
            setup = Setup(conditions, setup.corrections, setup.exposures)
        return Recipe(old.name, rt, float(threshold), setup, str(bundle))

    def _after_change(self, kept: KeptModels, new: Recipe, persist: bool) -> dict:
        """Persist when asked, then drop the kept bundles nothing names any more."""
        out: dict[str, Any] = {"persisted": False}
        if persist:
            from afrd.config.persist import persist_model

            try:
                path = persist_model(self.config_path, Path(new.bundle), new.threshold, new.name)
                out.update(persisted=True, config=str(path))
            except AfrdError as exc:
                log.warning("model changed but not saved to the config: %s", exc)
                out["persist_error"] = clip(str(exc), 1000)
        self._prune(kept)
        return out

    def _prune(self, kept: KeptModels) -> None:
        """Drop the kept bundles nothing names: no history entry, no running recipe, no
        bundle path of the config file."""
        in_use = {Path(r.bundle) for r in self.pipeline.book.recipes.values()}
        try:
            cfg = load_config(self.config_path)
            in_use |= {cfg.bundle.path, *(p.bundle for p in cfg.product if p.bundle)}
        except AfrdError:
            return  # what the file names is unknown: delete nothing
        for gone in kept.prune(in_use):
            log.info("models: %s no longer kept", gone)
