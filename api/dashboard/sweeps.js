/* #/sweeps (every sweep of the key, newest first) and #/sweeps/<id> (one sweep: its jobs ranked
 * by their best metric, each with its state, progress, metric and best sample grid side by side;
 * cancel or delete the whole sweep). Both poll: a sweep's jobs are many, a stream each would use
 * up the browser's connections. */

import { api } from "./api.js";
import { showBanner } from "./banner.js";
import { h, replace } from "./dom.js";
import { POLL_MS } from "./feed.js";
import { ago, int, num, shortId } from "./format.js";
import { progressBar, stateBadge } from "./widgets.js";

const GRID_N = 16; // samples in each job's grid (4x4)

/** Calls `load` now and every POLL_MS while the view is shown (a hidden tab only asks again
 * later); returns stop(). */
function poll(load) {
  let stopped = false;
  let timer = null;
  async function tick() {
    try {
      if (!document.hidden) await load(() => stopped);
    } finally {
      if (!stopped) timer = setTimeout(tick, POLL_MS);
    }
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function stateCounts(states) {
  const parts = Object.entries(states).map(([state, n]) => h("span", { class: "sweep-count" }, stateBadge(state), ` ${n}`));
  return parts.length ? parts : h("span", { class: "muted" }, "no jobs");
}

function bestText(best) {
  return best ? `${best.metric} ${num(best.value)}` : "–";
}

function pointText(point) {
  const entries = Object.entries(point);
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(" ") : "(the base)";
}

/** The list of sweeps. */
export function sweepsView() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading sweeps…"));
  const el = h("section", {},
    h("div", { class: "page-head" }, h("h1", {}, "Sweeps")),
    h("p", { class: "muted small" }, "A sweep is many jobs from one spec: POST /sweeps, or `gan sweep submit --grid seed=0,1,2 …`."),
    body);
  const stop = poll(async (stopped) => {
    try {
      const list = await api.json("/sweeps?limit=100");
      if (stopped()) return;
      replace(body, list.sweeps.length ? sweepTable(list.sweeps) : h("div", { class: "empty card" }, h("p", {}, "No sweeps yet.")));
    } catch (error) {
      if (!stopped()) replace(body, h("p", { class: "error-text" }, `Could not load sweeps: ${error.text || error.message}`));
    }
  });
  return { el, stop };
}

function sweepTable(sweeps) {
  const head = h("tr", {}, ["Sweep", "Jobs", "States", "Best", "Created"].map((t) => h("th", {}, t)));
  const rows = sweeps.map((sweep) => {
    const link = `#/sweeps/${encodeURIComponent(sweep.id)}`;
    return h("tr", { class: "job-row", "data-sweep": sweep.id, onclick: (e) => { if (!e.target.closest("a")) location.hash = link; } },
      h("td", {}, h("a", { href: link }, h("code", {}, shortId(sweep.id)))),
      h("td", { class: "num" }, int(sweep.size)),
      h("td", {}, stateCounts(sweep.states)),
      h("td", {}, bestText(sweep.best)),
      h("td", { class: "muted small", title: sweep.created_at }, ago(sweep.created_at)));
  });
  return h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, rows));
}

/** One job's best sample grid, fetched again only when the checkpoint it comes from changes. */
class GridCell {
  constructor(jobId) {
    this.jobId = jobId;
    this.key = null;
    this.url = null;
    this.img = h("img", { class: "sweep-grid", alt: `Samples of job ${jobId}`, hidden: true });
    this.note = h("div", { class: "muted small" }, "no checkpoint yet");
    this.el = h("div", { class: "sweep-grid-cell" }, this.img, this.note);
  }

  async update(job) {
    if (job.checkpoint_step === null) return;
    const best = job.best_metrics?.step ?? null;
    const key = `${job.checkpoint_step}:${best}`;
    if (key === this.key) return;
    this.key = key;
    try {
      const { url, headers } = await api.imageUrl(`/jobs/${encodeURIComponent(this.jobId)}/samples?n=${GRID_N}&seed=0`);
      if (this.url) URL.revokeObjectURL(this.url);
      this.url = url;
      this.img.src = url;
      this.img.hidden = false;
      const which = headers.get("X-Checkpoint") === "best" ? "best" : "newest";
      this.note.textContent = `${which}, step ${int(Number(headers.get("X-Checkpoint-Step")))}`;
    } catch (error) {
      this.key = null; // try again at the next poll
      this.note.textContent = error.status === 409 ? "no checkpoint yet" : `samples: ${error.text || error.message}`;
    }
  }

  drop() {
    if (this.url) URL.revokeObjectURL(this.url);
  }
}

/** One sweep: `id` is its id. */
export function sweepView(id) {
  const path = `/sweeps/${encodeURIComponent(id)}`;
  const title = h("h1", {}, "Sweep ", h("code", {}, shortId(id)));
  const actions = h("div", { class: "actions" });
  const summary = h("div", { class: "summary-line" });
  const body = h("div", {}, h("p", { class: "muted" }, "Loading the sweep…"));
  const el = h("section", {},
    h("a", { class: "back", href: "#/sweeps" }, "← Sweeps"),
    h("div", { class: "page-head" }, title, actions),
    h("div", { class: "card summary" }, summary),
    body);
  const cells = new Map(); // job id → GridCell
  let gone = false;

  async function act(method, suffix) {
    try {
      await api.json(`${path}${suffix}`, { method });
      if (method === "DELETE") { gone = true; location.hash = "#/sweeps"; return; }
      await load(() => false);
    } catch (error) {
      showBanner(`Could not ${suffix ? "cancel" : "delete"} the sweep: ${error.text || error.message}`);
    }
  }
  replace(actions,
    h("button", { class: "btn", type: "button", "data-action": "cancel", onclick: () => act("POST", "/cancel") }, "Cancel sweep"),
    h("button", { class: "btn danger", type: "button", "data-action": "delete",
      onclick: () => { if (confirm(`Delete sweep ${id}, all its jobs and their files?`)) act("DELETE", ""); } }, "Delete sweep"));

  async function load(stopped) {
    if (gone) return;
    try {
      const sweep = await api.json(path);
      if (stopped()) return;
      replace(summary,
        h("strong", {}, `${sweep.size} jobs`), stateCounts(sweep.states),
        h("span", { class: "muted" }, `best: ${bestText(sweep.best)}`),
        h("span", { class: "muted small" }, `created ${ago(sweep.created_at)}`));
      replace(body, rankTable(sweep.jobs, cells));
      for (const entry of sweep.jobs) cells.get(entry.job.id).update(entry.job);
    } catch (error) {
      if (stopped()) return;
      if (error.status === 404) {
        gone = true;
        replace(el, h("div", { class: "card empty" }, h("p", {}, `Sweep ${id} was deleted.`), h("a", { class: "btn", href: "#/sweeps" }, "Back to the sweeps")));
      } else {
        replace(body, h("p", { class: "error-text" }, `Could not load the sweep: ${error.text || error.message}`));
      }
    }
  }
  const stopPolling = poll(load);
  return { el, stop() { stopPolling(); for (const cell of cells.values()) cell.drop(); } };
}

function rankTable(entries, cells) {
  const head = h("tr", {}, ["Rank", "State", "Job", "Point", "Progress", "Best metric", "Best samples"].map((t) => h("th", {}, t)));
  const rows = entries.map((entry) => {
    const job = entry.job;
    if (!cells.has(job.id)) cells.set(job.id, new GridCell(job.id));
    const link = `#/jobs/${encodeURIComponent(job.id)}`;
    return h("tr", { class: "sweep-row", "data-job": job.id, "data-rank": entry.rank ?? "" },
      h("td", { class: "num" }, entry.rank === null ? "–" : String(entry.rank)),
      h("td", {}, stateBadge(job.state)),
      h("td", {}, h("a", { href: link, class: "job-link" }, h("code", {}, shortId(job.id)))),
      h("td", {}, h("code", { class: "small" }, pointText(entry.point))),
      h("td", { class: "progress-cell" }, progressBar(job), h("div", { class: "muted small" }, `${int(job.step)} / ${int(job.total_steps)}`)),
      h("td", { class: "num metric-cell" }, entry.metric ? `${entry.metric} ${num(entry.value)}` : "–",
        entry.metric ? h("div", { class: "muted small" }, `at step ${int(job.best_metrics?.step)}`) : null),
      h("td", {}, cells.get(job.id).el));
  });
  return h("table", { class: "table sweep-table" }, h("thead", {}, head), h("tbody", {}, rows));
}
