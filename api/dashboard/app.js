/* The GAN service's dashboard: plain JavaScript modules, no build step, no third-party code.
 *
 * Views are hash routes: #/jobs (the job list, ?state= filter; jobs.js), #/jobs/<id> (one job:
 * progress, charts, samples, spec, actions; job.js), #/new (the submit form; form.js),
 * #/sweeps, #/sweeps/<id> (sweeps, and one sweep's jobs ranked with their samples; sweeps.js)
 * and #/workers (the workers, their slots and what each trains; workers.js).
 * Everything comes from the API (api.js), which the page calls like any other client; a job page
 * follows its job through the job's Server-Sent Events, or by polling (feed.js). Text from the
 * API is only ever inserted as text nodes, never as HTML (dom.js).
 *
 * This module starts it all: the API key form in the top bar, and the router. */

import { api, statesKnown } from "./api.js";
import { hideBanner } from "./banner.js";
import { replace } from "./dom.js";
import { newJobView } from "./form.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { sweepsView, sweepView } from "./sweeps.js";
import { workersView } from "./workers.js";

function setUpKeyForm() {
  const form = document.getElementById("keyform");
  const input = document.getElementById("apikey");
  input.value = api.key();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    api.setKey(input.value.trim());
    hideBanner();
    route(); // reload the view with the new key
  });
}

let current = null; // the view shown: {el, stop()}

function route() {
  current?.stop();
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [pathPart, query = ""] = hash.split("?");
  const parts = pathPart.split("/").filter(Boolean);
  let nav = "jobs";
  if (parts[0] === "jobs" && parts[1]) {
    current = jobView(decodeURIComponent(parts[1]));
  } else if (parts[0] === "sweeps") {
    current = parts[1] ? sweepView(decodeURIComponent(parts[1])) : sweepsView();
    nav = "sweeps";
  } else if (parts[0] === "new") {
    current = newJobView();
    nav = "new";
  } else if (parts[0] === "workers") {
    current = workersView();
    nav = "workers";
  } else {
    current = jobsView(new URLSearchParams(query));
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  replace(document.getElementById("app"), current.el);
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", route);
// Modules run once the document is parsed, before DOMContentLoaded.
document.addEventListener("DOMContentLoaded", () => {
  setUpKeyForm();
  statesKnown.then(route);
});
