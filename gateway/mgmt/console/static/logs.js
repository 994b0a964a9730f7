// The Logs tab and the device page's live log: the connector's live log (events and debug
// records, docs/protocol.md §9) over Server-Sent Events, filtered by kind, identity or IP,
// with pause (records keep arriving and are shown on resume), clear and export (JSON Lines).
import {payloadText} from "./events.js";
import {field, fill, fmtTime, h, saveBlob, select, sse} from "./lib.js";

const KEEP = 2000; // records kept (and exported); older ones fall off
const RETRY_MS = 2000;

/** An event record's detail is its payload as JSON (cut at 512 characters): shown as
 * alias=value like the Events tab when it parses, as it is otherwise. */
function detailText(rec) {
  if (rec.kind !== "events") return rec.detail;
  try { return payloadText({payload: JSON.parse(rec.detail)}); } catch (_) { return rec.detail; }
}

export class LogView {
  constructor(cid, {kind = "", identity = "", ip = "", compact = false, signal} = {}) {
    this.cid = cid;
    this.filter = {kind, identity, ip};
    this.records = [];
    this.pending = [];
    this.paused = false;
    this.stopped = true;
    this.parentSignal = signal;
    this.box = h("div", {class: compact ? "log compact" : "log", role: "log", "aria-live": "off", tabindex: 0, "aria-label": "live log lines"});
    this.state = h("span", {class: "muted log-state", role: "status"});
    this.pauseBtn = h("button", {type: "button", class: "secondary small", "aria-pressed": "false", onclick: () => this.togglePause()}, "Pause");
    this.element = h("div", {class: "log-view"},
      h("div", {class: "toolbar"}, this.pauseBtn,
        h("button", {type: "button", class: "secondary small", onclick: () => this.clear()}, "Clear"),
        h("button", {type: "button", class: "secondary small", onclick: () => this.export()}, "Export"),
        this.state),
      this.box);
  }

  setState(text) { this.state.textContent = `${text} · ${this.records.length} lines`; }

  start() {
    this.stop();
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
    this.abort = null;
    clearTimeout(this.retry);
  }

  async run() {
    while (!this.stopped && !this.parentSignal?.aborted) {
      const ctl = new AbortController();
      this.abort = ctl;
      this.parentSignal?.addEventListener("abort", () => ctl.abort(), {once: true});
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(this.filter)) if (v) q.set(k, v);
      let why = "stream ended";
      try {
        this.setState(this.paused ? "paused" : "following");
        await sse(`/connectors/${encodeURIComponent(this.cid)}/logs?${q}`, {
          signal: ctl.signal,
          onEvent: (event, data) => {
            if (event === "dropped") { why = "too slow, reconnecting"; return; }
            let rec;
            try { rec = JSON.parse(data); } catch (_) { return; }
            this.add(rec);
          },
        });
      } catch (e) {
        if (e.name === "AbortError") return;
        why = e.message;
      }
      if (this.stopped) return;
      this.setState(`${why}; retrying`);
      await new Promise((resolve) => { this.retry = setTimeout(resolve, RETRY_MS); });
    }
  }

  add(rec) {
    this.records.push(rec);
    if (this.records.length > KEEP) this.records.splice(0, this.records.length - KEEP);
    if (this.paused) { this.pending.push(rec); this.setState(`paused, ${this.pending.length} new`); return; }
    this.draw([rec]);
    this.setState("following");
  }

  line(rec) {
    const parts = [
      h("span", {class: "t"}, fmtTime(rec.timestamp)),
      h("span", {class: `k ${rec.kind}`}, rec.kind),
      h("span", {class: "e"}, rec.event || ""),
      h("span", {class: "i"}, rec.identity || "-"),
      h("span", {class: "ip"}, rec.ip || ""),
      rec.reason ? h("span", {class: "r"}, rec.reason) : null,
      rec.detail ? h("span", {class: "d"}, detailText(rec)) : null,
    ];
    return h("div", {class: `line ${rec.kind}`, dataset: {event: rec.event || "", reason: rec.reason || ""}}, parts.filter(Boolean).flatMap((p) => [p, " "]));
  }

  draw(recs) {
    const atBottom = this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 30;
    this.box.append(...recs.map((r) => this.line(r)));
    while (this.box.childElementCount > KEEP) this.box.firstElementChild.remove();
    if (atBottom) this.box.scrollTop = this.box.scrollHeight;
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseBtn.textContent = this.paused ? "Resume" : "Pause";
    this.pauseBtn.setAttribute("aria-pressed", String(this.paused));
    if (!this.paused) { this.draw(this.pending); this.pending = []; }
    this.setState(this.paused ? "paused" : "following");
  }

  clear() {
    this.records = [];
    this.pending = [];
    this.box.replaceChildren();
    this.setState(this.paused ? "paused" : "following");
  }

  export() {
    const text = this.records.map((r) => JSON.stringify(r)).join("\n") + (this.records.length ? "\n" : "");
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    saveBlob(new Blob([text], {type: "application/x-ndjson"}), `logs-${this.cid}-${stamp}.jsonl`);
  }
}

export async function mount(ctx) {
  let params = ctx.params;
  const form = h("form", {class: "filters", id: "log-filter", role: "search"});
  let view = null;

  function drawForm() {
    fill(form,
      field("Records", select("kind", [["", "events and debug"], ["events", "events only"], ["debug", "debug only"]], params.get("kind") || "")),
      field("Identity", h("input", {name: "identity", value: params.get("identity") || "", autocomplete: "off"})),
      field("IP address", h("input", {name: "ip", value: params.get("ip") || "", autocomplete: "off"}), "also shows refusals before a connector is known"),
      h("div", {class: "field actions"}, h("button", {type: "submit"}, "Follow")));
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = form.elements;
    ctx.go({kind: f.kind.value, identity: f.identity.value.trim(), ip: f.ip.value.trim()});
  });
  const holder = h("div", {});
  function follow() {
    view?.stop();
    view = new LogView(ctx.cid, {kind: params.get("kind") || "", identity: params.get("identity") || "", ip: params.get("ip") || "", signal: ctx.signal});
    fill(holder, view.element);
    view.start();
  }
  drawForm();
  fill(ctx.panel, h("h2", {class: "visually-hidden"}, "Live logs"),
    h("p", {class: "muted"}, "What happens now, as it happens (not stored: the durable record is the Events tab)."),
    form, holder);
  follow();
  return {
    update: (p) => { params = p; drawForm(); follow(); },
    unmount: () => view?.stop(),
  };
}
