"""The studio measured through its HTTP API: the time from "next round" (rate + draw + render)
to the new grid, and the simulated user of feedback_sim.py rating the PNGs the page gets,
beside the same user on `FeedbackSession` directly (the CLI's path), in one run.

    python -m benchmarks.studio_sim --workdir runs/dcgan_digits \
        --classifier runs/classifier_digits_32 --theme all --seeds 0,1,2 --rounds 3 \
        --per-round 64 --timing-rounds 20 --out benchmarks/results/studio_sim \
        --sessions runs/studio_sim [--screenshot docs/img/studio.png]

Writes OUT/studio_sim.json. --screenshot also drives the page in headless Chromium (the
[dev] extra's selenium and Debian's chromium): --timing-rounds clicks on "Next round" timed by
the page, then a session of the first theme, saved as the screenshot (and NAME_run.png).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from genart_jax import feedback as fb
from genart_jax import sampling
from genart_jax.classifier import load_classifier
from genart_jax.studio import Studio
from genart_jax.studio.client import StudioClient
from genart_jax.studio.server import StudioServer


def decode(urls: list[str]) -> np.ndarray:
    """The page's PNG data URLs -> images (N, H, W, C) in [-1, 1], as the user sees them."""
    px = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))))
          for u in urls]
    x = np.stack(px).astype(np.float32) / 127.5 - 1.0
    return x[..., None] if x.ndim == 3 else x


def serve(workdir: str, sdir: Path, gen, num: int, seed: int,
          directions: str | None = None) -> tuple[StudioServer, StudioClient]:
    if sdir.exists():
        shutil.rmtree(sdir)
    server = StudioServer(Studio(workdir, session_dir=sdir, generator=gen, num=num,
                                 directions=directions, session_options={"seed": seed}))
    server.start()
    return server, StudioClient.of(server)


def close(server: StudioServer) -> None:
    server.shutdown()
    server.server_close()


def check(status_body: tuple[int, dict]) -> dict:
    status, body = status_body
    if status != 200:
        raise RuntimeError(f"studio answered {status}: {body}")
    return body


def http_curve(client: StudioClient, user: fb.SimulatedUser, rounds: int) -> list[float]:
    """The simulated user through the API: round -> PNGs -> ratings -> rate, `rounds` times."""
    shares = []
    for _ in range(rounds):
        r = check(client.call("/api/round", {}))
        ratings = user.rate(decode(r["images"]))
        rec = check(client.call("/api/rate", {"round": r["round"], **ratings}))["record"]
        shares.append(rec["share"])
    return shares


def timing(client: StudioClient, rounds: int) -> dict:
    """Seconds from "next round" (rate the shown round, then fetch the new one) to the grid."""
    first_t = time.perf_counter()
    r = check(client.call("/api/round", {}))
    first = time.perf_counter() - first_t
    rng, times = np.random.default_rng(0), []
    for _ in range(rounds):
        like = sorted(rng.choice(r["num"], 3, replace=False).tolist())
        t = time.perf_counter()
        check(client.call("/api/rate", {"round": r["round"], "like": like, "dislike": []}))
        r = check(client.call("/api/round", {}))
        times.append(time.perf_counter() - t)
    slider = []
    for psi in np.linspace(0.2, 1.0, 9)[:-1]:
        t = time.perf_counter()
        check(client.call("/api/round", {"controls": {"psi": float(psi)}}))
        slider.append(time.perf_counter() - t)
    return {"num": r["num"], "first_round_s": first, "next_round_s": times,
            "next_round_median_s": float(np.median(times)),
            "next_round_max_s": float(np.max(times)),
            "truncation_slider_median_s": float(np.median(slider))}


def page_timing(url: str, rounds: int) -> list[float]:
    """Seconds from a click on "Next round" to the new grid in headless Chromium, as the page
    measures it (rate + draw + render + the browser decoding and laying out the PNGs)."""
    import tempfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_studio_browser import chromium, open_studio
    times = []
    with tempfile.TemporaryDirectory() as user_dir:
        d = chromium(user_dir)
        try:
            open_studio(d, url)
            for i in range(rounds + 1):  # one more than asked: the first is reported apart
                d.find_elements(By.CSS_SELECTOR, "#gallery .tile")[i % 16].click()
                d.find_element(By.ID, "next-round").click()
                WebDriverWait(d, 60).until(lambda d, r=i + 2: f"Round {r}" in d.find_element(
                    By.ID, "round-title").text and d.find_element(By.ID, "timing").text)
                ms = d.find_element(By.ID, "timing").get_attribute("data-ms")
                times.append(float(ms) / 1e3)
                d.execute_script("document.getElementById('timing').textContent = ''")
        finally:
            d.quit()
    return times


def screenshot(url: str, path: Path) -> None:
    """The page in headless Chromium after a few clicks and a walk, saved as PNG."""
    import tempfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_studio_browser import chromium, open_studio
    with tempfile.TemporaryDirectory() as user_dir:
        d = chromium(user_dir)
        try:
            d.set_window_size(1400, 1000)
            open_studio(d, url)
            tiles = d.find_elements(By.CSS_SELECTOR, "#gallery .tile")
            for i in (0, 3, 5):
                tiles[i].click()
            for i in (1, 6):
                tiles[i].click()
                tiles[i].click()
            d.find_element(By.ID, "walk-b").clear()
            d.find_element(By.ID, "walk-b").send_keys("5")
            d.find_element(By.ID, "walk-go").click()
            WebDriverWait(d, 120).until(
                lambda d: d.find_element(By.ID, "strip-panel").is_displayed())
            d.execute_script("window.scrollTo(0, 0)")
            path.parent.mkdir(parents=True, exist_ok=True)
            d.save_screenshot(str(path))
            d.find_element(By.ID, "tab-run").click()  # the run page, beside it
            WebDriverWait(d, 60).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#curves svg"))
            time.sleep(1)
            d.save_screenshot(str(path.with_name(path.stem + "_run.png")))
        finally:
            d.quit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--theme", default="all")
    p.add_argument("--seeds", default="0")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=64)
    p.add_argument("--timing-num", type=int, default=16)
    p.add_argument("--timing-rounds", type=int, default=20)
    p.add_argument("--directions", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--sessions", required=True)
    p.add_argument("--screenshot", default=None)
    args = p.parse_args(argv)

    judge = load_classifier(args.classifier)
    k = judge.meta["num_classes"]
    themes = list(range(k)) if args.theme == "all" else sampling.parse_themes(args.theme, k)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    gen = fb.CheckpointGenerator(args.workdir)
    sessions = Path(args.sessions)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = {"command": "python -m benchmarks.studio_sim " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "checkpoint_step": gen.step, "uptime_before": uptime, "cpus": os.cpu_count(),
               "machine": "2 cores shared with six other engineers' test runs"}

    server, client = serve(args.workdir, sessions / "timing", gen, args.timing_num, 0,
                           args.directions)
    results["timing"] = timing(client, args.timing_rounds)
    close(server)
    t = results["timing"]
    print(f"{t['num']} samples: first round {t['first_round_s']:.2f} s (compile), next round "
          f"median {t['next_round_median_s'] * 1e3:.0f} ms, max {t['next_round_max_s'] * 1e3:.0f}"
          f" ms, truncation slider median {t['truncation_slider_median_s'] * 1e3:.0f} ms",
          flush=True)

    runs = []
    for theme in themes:
        for seed in seeds:
            user = fb.SimulatedUser(judge, theme)
            server, client = serve(args.workdir, sessions / f"http_{theme}_{seed}", gen,
                                   args.per_round, seed)
            http = http_curve(client, user, args.rounds)
            close(server)
            sdir = sessions / f"direct_{theme}_{seed}"
            if sdir.exists():
                shutil.rmtree(sdir)
            direct = fb.simulate(fb.FeedbackSession(args.workdir, session_dir=sdir,
                                                    generator=gen, seed=seed),
                                 user, args.rounds, args.per_round)
            runs.append({"theme": theme, "seed": seed, "http": http, "direct": direct})
            print(f"theme {theme} seed {seed}: page " + " -> ".join(f"{s:.0%}" for s in http)
                  + "; direct " + " -> ".join(f"{s:.0%}" for s in direct), flush=True)
    results["runs"] = runs
    for key in ("http", "direct"):
        results[f"{key}_mean_curve"] = np.mean([r[key] for r in runs], axis=0).tolist()
    results["uptime_after"] = subprocess.run(["uptime"], capture_output=True,
                                             text=True).stdout.strip()
    print("mean curve: page " + " -> ".join(f"{s:.1%}" for s in results["http_mean_curve"])
          + "; direct " + " -> ".join(f"{s:.1%}" for s in results["direct_mean_curve"]))
    if args.screenshot:
        server, _ = serve(args.workdir, sessions / "page_timing", gen, args.timing_num, 0,
                          args.directions)
        page = page_timing(server.url, args.timing_rounds)
        close(server)
        results["page_next_round_s"] = page
        results["page_next_round_median_s"] = float(np.median(page[1:]))
        print(f"in Chromium: next round median {np.median(page[1:]) * 1e3:.0f} ms, max "
              f"{np.max(page[1:]) * 1e3:.0f} ms (first {page[0] * 1e3:.0f} ms)", flush=True)
        server, client = serve(args.workdir, sessions / "screenshot", gen, 16, 0,
                               args.directions)
        http_curve(client, fb.SimulatedUser(judge, themes[0]), 2)  # a history to show
        screenshot(server.url, Path(args.screenshot))
        close(server)
        results["screenshot"] = args.screenshot
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "studio_sim.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'studio_sim.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
