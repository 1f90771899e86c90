/* #/workers: the training capacity: each live worker (`gan worker`), its slots, the device of
 * each and the job it trains (GET /workers), polled like the job list. */

import { api } from "./api.js";
import { h, replace } from "./dom.js";
import { POLL_MS } from "./feed.js";
import { ago, shortId } from "./format.js";

/** The view: {el, stop()}. */
export function workersView() {
  const summary = h("span", { class: "muted small", "data-field": "slots" });
  const body = h("div", { class: "job-list" }, h("p", { class: "muted" }, "Loading workers…"));
  const el = h("section", {},
    h("div", { class: "page-head" }, h("h1", {}, "Workers"), summary),
    body);

  let timer = null;
  let stopped = false;
  async function refresh() {
    try {
      if (!document.hidden) await load();
    } finally {
      if (!stopped) timer = setTimeout(refresh, POLL_MS);
    }
  }
  async function load() {
    try {
      const list = await api.json("/workers");
      if (stopped) return;
      summary.textContent = `${list.slots_busy} of ${list.slots_total} slots busy`;
      replace(body, list.workers.length ? slotTable(list.workers) : noWorkers());
    } catch (error) {
      if (!stopped) replace(body, h("p", { class: "error-text" }, `Could not load workers: ${error.text || error.message}`));
    }
  }
  refresh();
  return { el, stop() { stopped = true; clearTimeout(timer); } };
}

function noWorkers() {
  return h("div", { class: "empty card" },
    h("p", {}, "No worker is running: jobs wait in the queue until one starts."),
    h("p", { class: "muted small" }, "Start one with `gan worker` (one slot per GPU), `gan worker --gpus 0,1 --jobs-per-gpu 4`, or `gan worker --jobs 2` on the CPU."));
}

function slotTable(workers) {
  const head = h("tr", {}, ["Worker", "Slot", "Device", "Threads", "Job", "Seen"].map((t) => h("th", {}, t)));
  const rows = workers.flatMap((worker) => worker.slots.map((slot) => h("tr", { class: "slot-row", "data-slot": slot.id },
    h("td", {}, h("code", {}, worker.name)),
    h("td", { class: "num" }, String(slot.slot)),
    h("td", {}, slot.device),
    h("td", { class: "num" }, String(slot.threads)),
    h("td", {}, jobCell(slot)),
    h("td", { class: "muted small", title: slot.seen_at }, ago(slot.seen_at)))));
  return h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, rows));
}

function jobCell(slot) {
  if (slot.job_id) return h("a", { href: `#/jobs/${encodeURIComponent(slot.job_id)}`, class: "job-link" }, h("code", {}, shortId(slot.job_id)));
  if (slot.busy) return h("span", { class: "badge state-running", "data-state": "running" }, "another key's job");
  return h("span", { class: "muted" }, "idle");
}
