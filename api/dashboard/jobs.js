/* #/jobs: the job list, newest first, with a filter by state (the states the API names). */

import { api, jobStates } from "./api.js";
import { h, replace } from "./dom.js";
import { POLL_MS } from "./feed.js";
import { ago, int, shortId } from "./format.js";
import { bestFid, eta, progressBar, stateBadge } from "./widgets.js";

/** The view: {el, stop()}; `params` is the fragment's query (?state=). */
export function jobsView(params) {
  const state = params.get("state") || "";
  const filters = h("div", { class: "filters", role: "tablist" }, filterChips([], state));
  const body = h("div", { class: "job-list" }, h("p", { class: "muted" }, "Loading jobs…"));
  const updated = h("span", { class: "muted small" });
  const el = h("section", {},
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("a", { class: "btn primary", href: "#/new" }, "New job")),
    h("div", { class: "toolbar" }, filters, updated),
    body);

  let timer = null;
  let stopped = false;
  jobStates().then((states) => { if (!stopped) replace(filters, filterChips(states, state)); });
  async function refresh() {
    try {
      if (!document.hidden) await load(); // a hidden tab only asks again later
    } finally {
      // A list stays current by polling (a stream per job would use up the browser's connections).
      if (!stopped) timer = setTimeout(refresh, POLL_MS);
    }
  }
  async function load() {
    try {
      const query = state ? `?state=${encodeURIComponent(state)}&limit=100` : "?limit=100";
      const list = await api.json(`/jobs${query}`);
      if (stopped) return;
      replace(body,
        list.jobs.length ? jobTable(list.jobs) : emptyList(state),
        list.next_cursor ? h("p", { class: "muted small" }, "The newest 100 jobs; `gan jobs --limit N` lists more.") : null);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (!stopped) replace(body, h("p", { class: "error-text" }, `Could not load jobs: ${error.text || error.message}`));
    }
  }
  refresh();
  return { el, stop() { stopped = true; clearTimeout(timer); } };
}

/** "all", then a chip per state; the one of `state` is active. */
function filterChips(states, state) {
  return ["", ...states].map((name) => h("a", {
    href: name ? `#/jobs?state=${name}` : "#/jobs",
    class: `chip${name === state ? " active" : ""}`,
    role: "tab",
  }, name || "all"));
}

function emptyList(state) {
  return h("div", { class: "empty card" },
    h("p", {}, state ? `No ${state} jobs.` : "No jobs yet."),
    h("a", { class: "btn primary", href: "#/new" }, "Submit a training job"));
}

function jobTable(jobs) {
  const head = h("tr", {}, ["State", "Job", "Progress", "Images/s", "Best FID", "Warnings", "Created"].map((t) => h("th", {}, t)));
  const rows = jobs.map((job) => {
    const link = `#/jobs/${encodeURIComponent(job.id)}`;
    return h("tr", { class: "job-row", "data-job": job.id, onclick: (e) => { if (!e.target.closest("a")) location.hash = link; } },
      h("td", {}, stateBadge(job.state)),
      h("td", {},
        h("a", { href: link, class: "job-link" }, h("code", {}, shortId(job.id))),
        h("div", { class: "muted small" }, `${job.preset} · ${job.config.dataset} · ${job.config.arch}`)),
      h("td", { class: "progress-cell" },
        progressBar(job),
        h("div", { class: "muted small" }, `${int(job.step)} / ${int(job.total_steps)}`, job.state === "running" || job.state === "queued" || job.state === "cancelling" ? ` · ${eta(job)}` : "")),
      h("td", { class: "num" }, job.images_per_sec === null ? "–" : int(job.images_per_sec)),
      h("td", { class: "num" }, bestFid(job)),
      h("td", {}, job.warnings.length
        ? h("span", { class: "badge warn", title: job.warnings.map((w) => `${w.code} at step ${w.step}`).join("\n") }, `${job.warnings.length} ⚠`)
        : h("span", { class: "muted" }, "–")),
      h("td", { class: "muted small", title: job.created_at }, ago(job.created_at)));
  });
  return h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, rows));
}
