/* Following a job: its Server-Sent Events, or polling when the stream keeps failing. */

import { ApiError, FINAL, api } from "./api.js";

export const POLL_MS = 2000;

/** Follows job `id`: calls onEvent(type, data) for each event ("state", "progress",
 * "checkpoint", or "snapshot" with a whole job when polling) and onMode("live" | "polling" |
 * "ended"). Without an API key it uses EventSource; with one, fetch() reading the stream (so the
 * header can be sent). After repeated failures it polls GET /jobs/{id} every 2 s.
 *
 * A stream starts with the job's history, which may hold an earlier run's end (a resumed job):
 * the job has finished only when the stream ends after a final state. */
export class JobFeed {
  constructor(id, onEvent, onMode) {
    this.id = id;
    this.onEvent = onEvent;
    this.onMode = onMode;
    this.stopped = false;
    this.lastId = null;
    this.lastState = null;
    this.failures = 0;
    this.source = null;
    this.abort = null;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.failures = 0;
    this.lastState = null;
    if (!api.key() && "EventSource" in window) this.eventSource();
    else this.fetchStream();
  }

  stop() {
    this.stopped = true;
    this.source?.close();
    this.abort?.abort();
    clearTimeout(this.timer);
  }

  deliver(type, data, id) {
    if (id) this.lastId = id;
    if (type === "state") this.lastState = data.state;
    this.failures = 0;
    this.onEvent(type, data);
  }

  finish() {
    this.stop();
    this.onMode("ended");
  }

  eventSource() {
    const after = this.lastId ? `?after=${encodeURIComponent(this.lastId)}` : "";
    const source = new EventSource(`/jobs/${encodeURIComponent(this.id)}/events${after}`);
    this.source = source;
    source.onopen = () => this.onMode("live");
    for (const type of ["state", "progress", "checkpoint"]) {
      source.addEventListener(type, (e) => this.deliver(type, JSON.parse(e.data), e.lastEventId));
    }
    source.onerror = () => {
      if (FINAL.has(this.lastState)) { // the service ended the stream: the job has finished
        source.close();
        this.finish();
        return;
      }
      // The browser reconnects by itself (with Last-Event-ID); give up after a few failures in a
      // row, or when it has given up (an HTTP error such as 404).
      this.failures += 1;
      if (source.readyState === EventSource.CLOSED || this.failures >= 3) {
        source.close();
        if (!this.stopped) this.poll();
      }
    };
  }

  async fetchStream() {
    while (!this.stopped) {
      this.abort = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        const response = await api.request("GET", `/jobs/${encodeURIComponent(this.id)}/events`, {
          headers, signal: this.abort.signal,
        });
        this.onMode("live");
        await this.read(response.body);
        if (this.stopped) return;
        if (FINAL.has(this.lastState)) { // the service ended the stream: the job has finished
          this.finish();
          return;
        }
        // Anything else was a dropped connection: reconnect where it left off.
      } catch (error) {
        if (this.stopped) return;
        this.failures += 1;
        if (error instanceof ApiError || this.failures >= 3 || !window.ReadableStream) {
          this.poll();
          return;
        }
      }
      if (!this.stopped) await new Promise((resolve) => { this.timer = setTimeout(resolve, POLL_MS); });
    }
  }

  /** Parses text/event-stream as it arrives: fields until a blank line, then dispatch. */
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.stopped) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (event.data.length) this.deliver(event.type, JSON.parse(event.data.join("\n")), event.id);
          if (this.stopped) return;
          event = { type: "message", data: [], id: null };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          else if (field === "event") event.type = text;
          else if (field === "id") event.id = text;
        }
      }
    }
  }

  poll() {
    this.onMode("polling");
    const tick = async () => {
      if (this.stopped) return;
      try {
        const job = await api.json(`/jobs/${encodeURIComponent(this.id)}`);
        this.onEvent("snapshot", job);
        if (FINAL.has(job.state)) {
          this.finish();
          return;
        }
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          this.onEvent("gone", null);
          this.finish();
          return;
        }
      }
      this.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }
}
