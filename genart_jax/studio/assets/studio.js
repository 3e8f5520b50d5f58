// genart studio page: talks to the JSON API of genart_jax/studio/server.py (token on every call).
"use strict";
const TOKEN = document.querySelector('meta[name="token"]').content;
const $ = (id) => document.getElementById(id);
const S = { round: 0, num: 0, ratings: {}, state: null, strengths: {}, themes: [], busy: false,
  temperature: null };  // null: the session's temperature (an hvae's slider not moved)

async function api(path, body) {
  const opts = { headers: { "X-Studio-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function say(text) { $("message").textContent = text || ""; }

function controls() {
  const c = { psi: parseFloat($("psi").value) };
  const st = {};
  for (const [k, v] of Object.entries(S.strengths)) if (v !== 0) st[k] = v;
  if (Object.keys(st).length) c.strengths = st;
  if (S.themes.length) c.themes = S.themes;
  if (S.temperature !== null) c.temperature = S.temperature;
  return c;
}

function tile(src, i, name, rateable) {
  const t = document.createElement("div");
  t.className = "tile";
  t.tabIndex = 0;
  t.dataset.index = i;
  const img = document.createElement("img");
  img.src = src; img.alt = `sample ${i}`;
  const num = document.createElement("span");
  num.className = "num"; num.textContent = i;
  const dl = document.createElement("a");
  dl.className = "dl"; dl.href = src; dl.download = name; dl.textContent = "PNG";
  dl.title = "download at full resolution";
  dl.addEventListener("click", (e) => e.stopPropagation());
  t.append(img, num, dl);
  if (rateable) {
    t.addEventListener("click", () => cycle(i));
    t.addEventListener("keydown", (e) => key(e, i));
  }
  return t;
}

function paintRatings() {
  for (const t of $("gallery").children) {
    const r = S.ratings[t.dataset.index];
    t.classList.toggle("liked", r === "like");
    t.classList.toggle("disliked", r === "dislike");
  }
  const v = Object.values(S.ratings);
  $("counts").textContent = `${v.filter((x) => x === "like").length} liked, ` +
    `${v.filter((x) => x === "dislike").length} disliked of ${S.num}`;
}

function setRating(i, r) {
  if (r) S.ratings[i] = r; else delete S.ratings[i];
  paintRatings();
}

function cycle(i) {
  const next = { undefined: "like", like: "dislike", dislike: undefined }[S.ratings[i]];
  setRating(i, next);
}

function key(e, i) {
  const tiles = [...$("gallery").children];
  const cols = Math.max(1, Math.round($("gallery").clientWidth / tiles[0].clientWidth));
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
  if (e.key === "l") setRating(i, "like");
  else if (e.key === "d") setRating(i, "dislike");
  else if (e.key === "c") setRating(i, undefined);
  else if (e.key === " ") cycle(i);
  else if (e.key === "Enter") nextRound();
  else if (e.key in moves) tiles[Math.min(tiles.length - 1, Math.max(0, i + moves[e.key]))].focus();
  else return;
  e.preventDefault();
}

async function showRound() {
  const r = await api("/api/round", { controls: controls() });
  if (r.round !== S.round) S.ratings = {};
  S.round = r.round; S.num = r.num;
  $("round-title").textContent = `Round ${r.round}`;
  const g = $("gallery");
  g.replaceChildren(...r.images.map((src, i) => tile(src, i, `round${r.round}_sample${i}.png`, true)));
  g.dataset.round = r.round;
  paintRatings();
  $("walk-a").max = $("walk-b").max = r.num - 1;
}

async function nextRound() {
  if (S.busy) return;
  S.busy = true; say("");
  const t0 = performance.now();
  const like = [], dislike = [];
  for (const [i, r] of Object.entries(S.ratings)) (r === "like" ? like : dislike).push(+i);
  try {
    await api("/api/rate", { round: S.round, like, dislike });
    S.ratings = {};
    await showRound();
    $("timing").textContent = `new grid in ${Math.round(performance.now() - t0)} ms`;
    $("timing").dataset.ms = Math.round(performance.now() - t0);
    await refreshState();
  } catch (e) { say(e.message); } finally { S.busy = false; }
}

function sharePlot(rows) {
  const svg = $("share-plot"), W = 260, H = 120, P = 24;
  const x = (i) => P + (rows.length < 2 ? (W - 2 * P) / 2 : (i * (W - 2 * P)) / (rows.length - 1));
  const y = (v) => H - P + (P * 2 - H) * v;
  let s = `<line x1="${P}" y1="${y(0)}" x2="${W - P}" y2="${y(0)}" stroke="#999"/>` +
    `<line x1="${P}" y1="${y(0)}" x2="${P}" y2="${y(1)}" stroke="#999"/>` +
    `<text x="2" y="${y(1) + 4}" font-size="10">100%</text><text x="8" y="${y(0) + 4}" font-size="10">0%</text>`;
  if (rows.length) {
    s += `<polyline fill="none" stroke="#2e7d32" stroke-width="2" points="${rows.map((r, i) => `${x(i)},${y(r.share)}`).join(" ")}"/>`;
    rows.forEach((r, i) => {
      s += `<circle cx="${x(i)}" cy="${y(r.share)}" r="3" fill="#2e7d32"><title>round ${r.round}: ${Math.round(100 * r.share)}%</title></circle>` +
        `<text x="${x(i) - 4}" y="${H - 6}" font-size="10">${r.round}</text>`;
    });
  }
  svg.innerHTML = s;
}

async function refreshState() {
  const st = await api("/api/state");
  S.state = st;
  $("workdir").textContent = st.workdir;
  sharePlot(st.history);
  $("history").replaceChildren(...st.history.map((r) => {
    const b = document.createElement("button");
    b.textContent = `${r.round}: ${Math.round(100 * r.share)}%`;
    b.title = `round ${r.round}: ${r.liked.length} liked, ${r.disliked.length} disliked`;
    b.addEventListener("click", () => showHistory(r.round));
    return b;
  }));
  showJob(st.job);
  return st;
}

function buildControls(st) {
  if (st.temperature !== null && st.temperature !== undefined) {  // an hvae: lower groups' temperature
    $("temperature-box").hidden = false;
    const t = Array.isArray(st.temperature) ? 1 : st.temperature;
    $("temperature").value = t;
    $("temperature-value").textContent = Array.isArray(st.temperature) ? "per group" : (+t).toFixed(2);
  }
  $("ft-box").hidden = !st.finetune;
  if (st.num_classes > 0) {
    $("themes-box").hidden = false;
    $("themes").replaceChildren(...[...Array(st.num_classes).keys()].map((k) => {
      const l = document.createElement("label");
      const c = document.createElement("input");
      c.type = "checkbox"; c.value = k;
      c.addEventListener("change", () => {
        S.themes = [...$("themes").querySelectorAll("input:checked")].map((x) => +x.value);
        rerender();
      });
      l.append(c, ` ${k}`);
      l.style.display = "inline-block";
      return l;
    }));
  }
  if (st.directions.length) {
    $("directions-box").hidden = false;
    $("directions").replaceChildren(...st.directions.map((k) => {
      const l = document.createElement("label");
      const o = document.createElement("output");
      o.textContent = "0";
      const r = document.createElement("input");
      r.type = "range"; r.min = -4; r.max = 4; r.step = 0.25; r.value = 0; r.id = `dir-${k}`;
      r.addEventListener("input", () => { o.textContent = r.value; S.strengths[k] = +r.value; rerender(); });
      l.append(`class ${k} `, o, r);
      return l;
    }));
  }
}

let pending = null;
function rerender() {
  clearTimeout(pending);
  pending = setTimeout(() => showRound().catch((e) => say(e.message)), 120);
}

async function showStrip(title, promise, prefix) {
  try {
    const r = await promise;
    $("strip-title").textContent = title;
    $("strip").replaceChildren(...r.images.map((src, i) => tile(src, i, `${prefix}_${i}.png`, false)));
    $("strip-panel").hidden = false;
  } catch (e) { say(e.message); }
}

function showHistory(round) {
  api("/api/history", { round }).then((r) => {
    $("strip-title").textContent = `Round ${round} as rated: ${r.liked.length} liked, ${r.disliked.length} disliked`;
    const tiles = r.images.map((src, i) => tile(src, i, `round${round}_sample${i}.png`, false));
    tiles.forEach((t, i) => {
      t.classList.toggle("liked", r.liked.includes(i));
      t.classList.toggle("disliked", r.disliked.includes(i));
    });
    $("strip").replaceChildren(...tiles);
    $("strip-panel").hidden = false;
  }).catch((e) => say(e.message));
}

function showJob(job) {
  if (!job) return;
  $("ft-progress").hidden = false;
  $("ft-progress").max = job.steps; $("ft-progress").value = job.done;
  const s = $("ft-status");
  if (job.state === "running") s.textContent = `fine-tuning: ${job.done} / ${job.steps} steps`;
  else if (job.state === "done") s.textContent = `done in ${job.seconds} s: new workdir ${job.out} (open it with genart studio --workdir ${job.out})`;
  else s.textContent = `failed: ${job.error}`;
  s.dataset.state = job.state;
}

async function pollJob() {
  const job = await api("/api/job");
  showJob(job);
  if (job && job.state === "running") setTimeout(pollJob, 500);
}

function linePlot(title, series) {
  const W = 360, H = 180, P = 34;
  const pts = series.flatMap((s) => s.points);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (v) => P + ((v - x0) / (x1 - x0 || 1)) * (W - 2 * P);
  const sy = (v) => H - P - ((v - y0) / (y1 - y0 || 1)) * (H - 2 * P);
  const colors = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a"];
  let s = `<svg class="plot" width="${W}" height="${H}"><text x="${P}" y="14" font-size="12">${title}</text>` +
    `<text x="2" y="${P}" font-size="10">${y1.toPrecision(3)}</text><text x="2" y="${H - P}" font-size="10">${y0.toPrecision(3)}</text>` +
    `<text x="${P}" y="${H - 8}" font-size="10">step ${x0}</text><text x="${W - P - 40}" y="${H - 8}" font-size="10">${x1}</text>`;
  series.forEach((se, i) => {
    s += `<polyline fill="none" stroke="${colors[i % 4]}" stroke-width="1.5" points="${se.points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" ")}"/>` +
      `<text x="${W - P - 60}" y="${28 + 12 * i}" font-size="10" fill="${colors[i % 4]}">${se.name}</text>`;
  });
  return s + "</svg>";
}

const GROUPS = [["losses", /loss/], ["images/s", /images_per_sec/], ["D outputs", /^d_(real|fake)$/], ["gradient norms", /grad_norm/]];

async function showRun() {
  const r = await api("/api/run");
  const names = Object.keys(r.curves);
  $("curves").innerHTML = GROUPS.map(([title, re]) => {
    const series = names.filter((n) => re.test(n)).map((n) => ({ name: n, points: r.curves[n] }));
    return series.length ? linePlot(title, series) : "";
  }).join("") || "no metrics.jsonl yet";
  $("samples").replaceChildren(...r.samples.map((p) => {
    const f = document.createElement("figure");
    const img = document.createElement("img");
    img.src = `/files/${encodeURI(p)}?token=${TOKEN}`;
    const c = document.createElement("figcaption");
    c.textContent = p.replace("samples/", "");
    f.append(img, c);
    return f;
  }));
  $("checkpoints").textContent = r.checkpoints.length ? `steps ${r.checkpoints.join(", ")}` : "none";
  $("results").textContent = "";
  for (const [name, v] of Object.entries(r.results)) {
    const pre = document.createElement("pre");
    pre.textContent = `${name}\n${JSON.stringify(v, null, 1)}`;
    $("results").append(pre);
  }
  $("config").textContent = JSON.stringify(r.config, null, 1);
}

let runTimer = null;
function tab(which) {
  $("steer").hidden = which !== "steer";
  $("run").hidden = which !== "run";
  $("tab-steer").classList.toggle("active", which === "steer");
  $("tab-run").classList.toggle("active", which === "run");
  clearInterval(runTimer);
  if (which === "run") {
    showRun().catch((e) => say(e.message));
    runTimer = setInterval(() => showRun().catch(() => {}), 5000);  // follows a running trainer
  }
}

async function main() {
  $("tab-steer").addEventListener("click", () => tab("steer"));
  $("tab-run").addEventListener("click", () => tab("run"));
  $("next-round").addEventListener("click", nextRound);
  $("psi").addEventListener("input", () => { $("psi-value").textContent = (+$("psi").value).toFixed(2); rerender(); });
  $("temperature").addEventListener("input", () => {
    S.temperature = +$("temperature").value;
    $("temperature-value").textContent = S.temperature.toFixed(2);
    rerender();
  });
  $("walk-go").addEventListener("click", () => {
    const a = +$("walk-a").value, b = +$("walk-b").value, frames = +$("walk-frames").value;
    showStrip(`Walk from ${a} to ${b}`, api("/api/walk", { a, b, frames, controls: controls() }), `walk_${a}_${b}`);
  });
  $("explore-go").addEventListener("click", () => {
    const seed = +$("seed").value;
    showStrip(`Refit distribution, seed ${seed}`, api("/api/explore", { seed, controls: controls() }), `seed${seed}`);
  });
  $("strip-close").addEventListener("click", () => { $("strip-panel").hidden = true; });
  $("ft-go").addEventListener("click", async () => {
    try { showJob(await api("/api/finetune", { steps: +$("ft-steps").value })); pollJob(); }
    catch (e) { say(e.message); }
  });
  try {
    const st = await refreshState();
    buildControls(st);
    await showRound();
    if (st.job && st.job.state === "running") pollJob();
    document.body.dataset.ready = "1";
  } catch (e) { say(e.message); }
}
main();
