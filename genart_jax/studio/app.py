"""The studio's API without HTTP: each call re-reads the session from WORKDIR/feedback/ (so a
`genart feedback` run beside it is seen), applies the page's controls and renders PNGs. All
steering is `feedback.FeedbackSession`'s; a lock keeps two tabs from interleaving writes and a
rating names its round, so a tab rating a round another tab already rated is refused (409)
instead of being written twice."""

from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from genart_jax import feedback as fb
from genart_jax import sampling
from genart_jax.studio import controls as ctl
from genart_jax.studio import render, run_files

DEFAULT_NUM = 16
MAX_FINETUNE_STEPS = 100_000


class StudioError(ValueError):
    """A request the studio cannot serve as asked (HTTP 400 with this message)."""


class StudioConflict(StudioError):
    """A request that clashes with the session's state on disk (HTTP 409), e.g. a stale tab."""


def load_directions(folder: Path | None, latent_dim: int) -> dict[int, np.ndarray]:
    """{class: direction (D,)} from the class_K.npy files `genart directions` wrote; {} if none."""
    if folder is None or not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.glob("class_*.npy")):
        k = p.stem.removeprefix("class_")
        d = np.load(p, allow_pickle=False)
        if k.isdigit() and d.shape == (latent_dim,) and np.all(np.isfinite(d)):
            out[int(k)] = d.astype(np.float32)
    return out


class FinetuneJob:
    """`FeedbackSession.finetune` in a background thread, with its progress for the page."""

    def __init__(self, session: fb.FeedbackSession, steps: int):
        self.steps, self.done, self.state = steps, 0, "running"
        self.out: str | None = None
        self.error: str | None = None
        self.started = time.time()
        self.thread = threading.Thread(target=self._run, args=(session,), daemon=True)
        self.thread.start()

    def _progress(self, done: int, steps: int) -> None:
        self.done = done

    def _run(self, session: fb.FeedbackSession) -> None:
        try:
            self.out = str(session.finetune(self.steps, progress=self._progress))
            self.state = "done"
        except Exception as e:  # noqa: BLE001 - the page shows why; nothing was written
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            traceback.print_exc()

    def summary(self) -> dict[str, Any]:
        return {"state": self.state, "done": self.done, "steps": self.steps, "out": self.out,
                "error": self.error, "seconds": round(time.time() - self.started, 1)}


class Studio:
    """One workdir's session, served to any number of tabs."""

    def __init__(self, workdir: str | Path, *, session_dir: str | Path | None = None,
                 generator: fb.Generator | None = None, directions: str | Path | None = None,
                 num: int = DEFAULT_NUM, session_options: dict[str, Any] | None = None):
        self.workdir = Path(workdir)
        self.session_dir = Path(session_dir) if session_dir else self.workdir / "feedback"
        self.options = {k: v for k, v in (session_options or {}).items() if v is not None}
        self.lock = threading.RLock()
        self.num = ctl.whole(num, "--num", 1, ctl.MAX_SAMPLES)
        first = fb.FeedbackSession(self.workdir, session_dir=self.session_dir,
                                   generator=generator, **self.options)
        self.gen = first.generator  # loaded once; every request's session reuses it
        cfg = getattr(self.gen, "cfg", None)
        self.num_classes = int(cfg.model.num_classes) if cfg is not None else 0
        latents = getattr(self.gen, "latents", None)  # the family's hook (a checkpoint's)
        self.temperature = shown_temperature(getattr(latents, "temperature", None))
        self.distillable = bool(getattr(latents, "distillable", False))
        folder = Path(directions) if directions else self.workdir / "directions"
        self.directions = load_directions(folder, self.gen.latent_dim)
        self.job: FinetuneJob | None = None

    # --- sessions and controls

    def session(self) -> fb.FeedbackSession:
        """The session as it is on disk now (a CLI or another tab may have moved it)."""
        return fb.FeedbackSession(self.workdir, session_dir=self.session_dir,
                                  generator=self.gen, **self.options)

    def controls(self, data: Any) -> ctl.Controls:
        return ctl.parse_controls(data, self.num_classes, self.directions,
                                  has_temperature=self.temperature is not None)

    def _images(self, z: np.ndarray, controls: ctl.Controls, centre: np.ndarray) -> np.ndarray:
        zz = ctl.apply_latents(z, controls, centre, self.directions)
        labels = ctl.labels_for(len(zz), controls, self.num_classes) if controls.themes else None
        return render.generate(self.gen, zz, labels, controls.temperature)

    # --- the API

    def state(self) -> dict[str, Any]:
        """What the page needs to lay itself out: the round, the history's liked shares, the
        model's themes, directions and temperature (an hvae's session temperature; None: the
        model has none), whether it can be fine-tuned, the session settings and the fine-tune
        job."""
        with self.lock:
            s = self.session()
            pending = s.pending()
            return {"workdir": str(self.workdir), "session_dir": str(s.dir),
                    "round": s.round, "pending": pending is not None,
                    "num": len(pending) if pending is not None else self._next_num(s),
                    "history": [history_row(r) for r in s.history],
                    "num_classes": self.num_classes, "directions": sorted(self.directions),
                    "latent_dim": self.gen.latent_dim, "temperature": self.temperature,
                    "finetune": self.distillable, "settings": s.settings,
                    "distribution": s.distribution.summary(), "job": self.job_state()}

    def _next_num(self, s: fb.FeedbackSession) -> int:
        return s.history[-1]["num"] if s.history else self.num

    def current_round(self, controls: Any = None) -> dict[str, Any]:
        """The pending round's images (drawn now, as `genart feedback` does, if not yet)."""
        c = self.controls(controls)
        with self.lock:
            s = self.session()
            s.draw(None if s.pending() is not None else self._next_num(s))
            z = s.pending()
            images = s.images if c.is_identity else self._images(z, c, s.distribution.mean)
            return {"round": s.round, "num": len(z), "images": render.data_urls(images),
                    "grid": s.path(s.round, ".png").name}

    def rate(self, data: Any) -> dict[str, Any]:
        """Record {"round": R, "like": [...], "dislike": [...]} for the pending round R."""
        if not isinstance(data, dict) or set(data) - {"round", "like", "dislike"}:
            raise StudioError('a rating is {"round": R, "like": [...], "dislike": [...]}')
        want = ctl.whole(data.get("round"), "round", 1, 10**6)
        like, dislike = data.get("like", []), data.get("dislike", [])
        if not isinstance(like, list) or not isinstance(dislike, list):
            raise StudioError("like and dislike are lists of sample numbers")
        with self.lock:
            s = self.session()
            if want != s.round or s.pending() is None:
                drawn = "" if s.pending() is not None else ", not drawn yet"
                raise StudioConflict(f"round {want} is not the round to rate (the session is at "
                                     f"round {s.round}{drawn}); another tab or `genart "
                                     f"feedback` moved it: reload")
            record = s.rate(like, dislike)
            return {"record": history_row(record), "round": s.round,
                    "distribution": s.distribution.summary()}

    def history_round(self, data: Any) -> dict[str, Any]:
        """A rated round's images as they were shown, with its ratings."""
        if not isinstance(data, dict):
            raise StudioError('ask for a rated round as {"round": R}')
        with self.lock:
            s = self.session()
            if not s.history:
                raise StudioError("no round has been rated yet")
            r = ctl.whole(data.get("round"), "round", 1, len(s.history))
            rec = s.history[r - 1]
            z = np.load(s.dir / rec["latents"], allow_pickle=False)
        return {**history_row(rec), "images": render.data_urls(render.generate(self.gen, z))}

    def explore(self, data: Any) -> dict[str, Any]:
        """`num` samples of the current refit distribution drawn with `seed` (the seed control),
        through the controls: what the next rounds look like, without rating anything."""
        data = data if isinstance(data, dict) else {}
        seed = ctl.whole(data.get("seed", 0), "seed", 0, ctl.SEED_LIMIT)
        num = ctl.whole(data.get("num", self.num), "num", 1, ctl.MAX_SAMPLES)
        c = self.controls(data.get("controls"))
        with self.lock:
            dist = self.session().distribution
        z = dist.sample(seed, num)
        return {"seed": seed, "images": render.data_urls(self._images(z, c, dist.mean))}

    def walk(self, data: Any) -> dict[str, Any]:
        """A slerp strip of `frames` images between samples a and b of the pending round."""
        if not isinstance(data, dict):
            raise StudioError('a walk is {"a": i, "b": j, "frames": T}')
        frames = ctl.whole(data.get("frames", 8), "frames", 2, ctl.MAX_FRAMES)
        c = self.controls(data.get("controls"))
        with self.lock:
            s = self.session()
            z = s.pending()
            if z is None:
                raise StudioError("draw a round first: the walk joins two of its samples")
            a = ctl.whole(data.get("a"), "sample a", 0, len(z) - 1)
            b = ctl.whole(data.get("b"), "sample b", 0, len(z) - 1)
            centre = s.distribution.mean
        t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
        path = np.asarray(sampling.slerp(z[a], z[b], t), np.float32)
        return {"a": a, "b": b, "images": render.data_urls(self._images(path, c, centre))}

    def finetune(self, data: Any) -> dict[str, Any]:
        """Start the distillation of the refit distribution in the background."""
        data = data if isinstance(data, dict) else {}
        steps = ctl.whole(data.get("steps", 200), "steps", 1, MAX_FINETUNE_STEPS)
        with self.lock:
            if self.job is not None and self.job.state == "running":
                raise StudioConflict("a fine-tune is running already; wait for it")
            s = self.session()
            if not self.distillable and isinstance(self.gen, fb.CheckpointGenerator):
                s.check_finetune()  # an hvae's: refused whatever was rated
            if not s.history or not len(s.liked_latents()[0]):
                raise StudioError("nothing liked yet: rate at least one round with likes first")
            out = s.dir / f"finetuned-round{len(s.history)}"
            if out.exists():
                raise StudioConflict(f"{out} exists already; rate another round first")
            if not isinstance(self.gen, fb.CheckpointGenerator):
                raise StudioError("fine-tuning needs the session's workdir checkpoint")
            s.check_finetune()
            self.job = FinetuneJob(s, steps)
            return self.job_state()

    def job_state(self) -> dict[str, Any] | None:
        return self.job.summary() if self.job else None

    def run(self) -> dict[str, Any]:
        """The run at a glance (run_files.overview)."""
        return run_files.overview(self.workdir)


def shown_temperature(t: Any) -> float | list[float] | None:
    """A model's default temperature for the page: one number, or one per latent group."""
    if t is None:
        return None
    t = np.atleast_1d(np.asarray(t, np.float64))
    return float(t[0]) if np.all(t == t[0]) else [float(v) for v in t]


def history_row(rec: dict[str, Any]) -> dict[str, Any]:
    """A history record as the page shows it: ratings and the liked share."""
    return {"round": rec["round"], "num": rec["num"], "liked": rec["liked"],
            "disliked": rec["disliked"], "share": len(rec["liked"]) / max(1, rec["num"]),
            "grid": rec.get("grid")}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_json_default).encode()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON: {type(o).__name__}")
