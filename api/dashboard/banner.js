/* The banner under the top bar: one message at a time (an error, or a warning such as a missing
 * API key), until dismissed or replaced. */

import { h, replace } from "./dom.js";

export function showBanner(text, kind = "error") {
  const banner = document.getElementById("banner");
  replace(banner, h("span", {}, text), h("button", { class: "link", type: "button", onclick: hideBanner }, "Dismiss"));
  banner.className = `banner ${kind}`;
  banner.hidden = false;
}

export function hideBanner() {
  document.getElementById("banner").hidden = true;
}
