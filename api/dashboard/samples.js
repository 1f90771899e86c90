/* The sample grid of a job page: images drawn by the service from a chosen checkpoint. */

import { api } from "./api.js";
import { h } from "./dom.js";
import { int } from "./format.js";

/** The sample grid of a chosen checkpoint: a slider over the checkpoints on disk, a play button
 * (watch the digits form), and for a conditional model a row per class. */
export function sampleViewer(path, container) {
  let job = null;
  let options = [];
  let index = -1;
  let follow = true; // stay on the newest checkpoint as new ones arrive
  let playing = null;
  let loadToken = 0;
  let refreshing = null;
  let stopped = false;
  const cache = new Map(); // query → object URL
  const img = h("img", { class: "grid-img", alt: "Sample grid", id: "sample-grid" });
  const caption = h("div", { class: "muted small" });
  const slider = h("input", { type: "range", min: 0, max: 0, step: 1, value: 0, class: "slider", "aria-label": "checkpoint", disabled: true });
  const stepLabel = h("strong", { class: "slider-label" }, "–");
  const play = h("button", { class: "btn small", type: "button", disabled: true }, "▶ Play");
  const rows = h("input", { type: "checkbox", checked: true });
  const rowsLabel = h("label", { class: "check", hidden: true }, rows, " a row per class");
  const ema = h("input", { type: "checkbox", checked: true });
  const emaLabel = h("label", { class: "check", hidden: true }, ema, " EMA generator");
  const placeholder = h("div", { class: "grid-placeholder muted" }, "No checkpoint yet: samples appear after the first one.");
  const hint = h("p", { class: "muted small" });
  container.append(
    h("div", { class: "section-head" }, h("h2", {}, "Samples"), h("div", { class: "controls" }, rowsLabel, emaLabel)),
    h("div", { class: "samples-body" },
      h("div", { class: "grid-frame" }, placeholder, img),
      h("div", { class: "slider-box" },
        h("div", { class: "slider-line" }, play, slider, stepLabel),
        caption, hint)));
  img.hidden = true;

  slider.addEventListener("input", () => {
    index = Number(slider.value);
    follow = index === options.length - 1;
    show();
  });
  play.addEventListener("click", () => (playing ? stopPlaying() : startPlaying()));
  rows.addEventListener("change", show);
  ema.addEventListener("change", show);

  function conditional() {
    return job && job.config.conditional && job.config.conditional !== "none";
  }

  async function refresh(newJob) {
    job = newJob;
    rowsLabel.hidden = !conditional();
    emaLabel.hidden = !(job.config.ema_decay > 0);
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const listing = await api.json(`${path}/checkpoints`);
        if (stopped) return;
        const steps = listing.checkpoints.filter((c) => c.name !== "best");
        const best = listing.checkpoints.find((c) => c.name === "best");
        const bestStep = best ? best.step : null;
        options = steps.map((c) => ({ name: c.name, step: c.step, best: c.step === bestStep }));
        if (best && !steps.some((c) => c.step === best.step)) {
          options.push({ name: "best", step: best.step, best: true });
          options.sort((a, b) => a.step - b.step);
        }
        const previous = options[index];
        if (follow || index < 0) index = options.length - 1;
        else index = Math.max(0, options.findIndex((o) => previous && o.step === previous.step));
        slider.max = Math.max(0, options.length - 1);
        slider.value = index;
        slider.disabled = options.length < 2;
        play.disabled = options.length < 2;
        hint.textContent = options.length
          ? `${options.length} checkpoint${options.length === 1 ? "" : "s"} on disk (a run keeps its newest keep_checkpoints = ${job.config.keep_checkpoints}, plus its best).`
          : "";
        await show();
      } catch (_) { /* retried at the next checkpoint event */ } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  async function show() {
    const option = options[index];
    if (!option) {
      placeholder.hidden = false;
      img.hidden = true;
      stepLabel.textContent = "–";
      return;
    }
    stepLabel.textContent = `step ${int(option.step)}${option.best ? " ★ best" : ""}`;
    const perClass = conditional() && rows.checked;
    const query = `?checkpoint=${encodeURIComponent(option.name)}&seed=0${perClass ? "&label=rows&nrow=10" : "&n=64"}${ema.checked ? "" : "&ema=false"}`;
    const key = `${query}@${option.step}`;
    const token = ++loadToken;
    try {
      let url = cache.get(key);
      if (!url) {
        url = (await api.imageUrl(`${path}/samples${query}`)).url;
        if (stopped) { URL.revokeObjectURL(url); return; }
        cache.set(key, url);
        if (cache.size > 60) {
          const [oldest, oldUrl] = cache.entries().next().value;
          cache.delete(oldest);
          URL.revokeObjectURL(oldUrl);
        }
      }
      if (token !== loadToken) return; // a newer choice won
      await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = url; });
      img.hidden = false;
      placeholder.hidden = true;
      caption.textContent = perClass
        ? `One row per class, the same latent down each column (seed 0), from the checkpoint at step ${int(option.step)}.`
        : `64 samples (seed 0) from the checkpoint at step ${int(option.step)}: the same noise at every step, so you see the digits form.`;
    } catch (error) {
      if (token === loadToken) caption.textContent = `Could not draw samples: ${error.text || error.message}`;
    }
  }

  function startPlaying() {
    play.textContent = "❚❚ Pause";
    if (index >= options.length - 1) index = -1;
    const next = async () => {
      if (!playing) return;
      index += 1;
      if (index >= options.length) { stopPlaying(); return; }
      slider.value = index;
      follow = index === options.length - 1;
      await show();
      playing = setTimeout(next, 700);
    };
    playing = setTimeout(next, 0);
  }

  function stopPlaying() {
    clearTimeout(playing);
    playing = null;
    play.textContent = "▶ Play";
  }

  return {
    refresh,
    newestStep: () => (options.length ? Math.max(...options.map((o) => o.step)) : null),
    stop() {
      stopped = true;
      stopPlaying();
      for (const url of cache.values()) URL.revokeObjectURL(url);
      cache.clear();
    },
  };
}
