// Shared pieces of the console: DOM building, formatting, the REST client (JSON, uploads
// with progress, downloads, Server-Sent Events over fetch) and small widgets.
// Every network call goes through api()/upload()/download()/sse(): the console talks to
// the gateway only through the public management API (docs/architecture.md, "Management
// REST API"), with the bearer token kept in sessionStorage for this tab.
"use strict";

export const API = "/api/v1";

// -- DOM -------------------------------------------------------------------------------

let uidCounter = 0;
export const uid = (prefix = "f") => `${prefix}-${++uidCounter}`;

/** Append children (nodes, strings, arrays, null/false skipped) to `el`. */
export function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h("a", {href, class, onclick}, ...children): an element.  Properties that exist on the
 * element and are not strings (checked, disabled, selected) are set as properties; `value`
 * is set after the children so a <select> finds its option. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "value") value = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (typeof v === "boolean" && k in el) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  if (value !== undefined) el.value = value;
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
/** An SVG element (same conventions as h()). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A labelled form control: <div class="field"><label>…</label>control<small>hint</small></div>.
 * The control gets an id (and aria-describedby for the hint) when it has none. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const parts = [h("label", {for: control.id}, label), control];
  if (hint != null) {
    const hid = uid("hint");
    control.setAttribute("aria-describedby", hid);
    parts.push(h("small", {id: hid, class: "hint"}, hint));
  }
  return h("div", {class: control.type === "checkbox" ? "field check" : "field"}, ...parts);
}

/** A checkbox with its label after it. */
export function checkbox(label, name, checked, attrs = {}) {
  const id = uid();
  return h("div", {class: "field check"},
    h("input", {type: "checkbox", id, name, checked: !!checked, ...attrs}),
    h("label", {for: id}, label));
}

/** <select> from [value, label] pairs or plain values. */
export function select(name, options, value, attrs = {}) {
  return h("select", {name, value, ...attrs},
    options.map((o) => Array.isArray(o) ? h("option", {value: o[0]}, o[1]) : h("option", {value: o}, o)));
}

/** A table: columns are [header, cell(row) -> node|string, className?]. */
export function table(columns, rows, {empty = "nothing here", caption, rowAttrs} = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map(([title, , cls]) => h("th", {scope: "col", class: cls}, title))));
  const body = h("tbody", {},
    rows.length === 0
      ? h("tr", {}, h("td", {colspan: columns.length, class: "muted"}, empty))
      : rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {}, columns.map(([, cell, cls]) => h("td", {class: cls}, cell(r))))));
  return h("div", {class: "table-wrap"}, h("table", {}, caption ? h("caption", {}, caption) : null, head, body));
}

// -- formatting -------------------------------------------------------------------------

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** µs since the epoch -> "2024-05-01 12:34:56" in local time ("" for null). */
export function fmtTime(us) {
  if (us == null || us === 0) return "";
  const d = new Date(us / 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** µs since the epoch -> "5 s ago" / "3 min ago" / a date. */
export function fmtAgo(us) {
  if (!us) return "never";
  const s = Math.round((Date.now() - us / 1000) / 1000);
  if (s < 0) return fmtTime(us);
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return fmtTime(us);
}

/** A <time> element with the exact time as its title. */
export function timeEl(us, ago = false) {
  if (!us) return h("span", {class: "muted"}, "—");
  return h("time", {datetime: new Date(us / 1000).toISOString(), title: fmtTime(us)}, ago ? fmtAgo(us) : fmtTime(us));
}

export function fmtBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtNumber(v) {
  if (v == null || Number.isNaN(v)) return "—";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return String(Math.round(v * 100) / 100);
}

/** datetime-local input value <-> µs. */
export const localToUs = (text) => text ? new Date(text).getTime() * 1000 : null;
export function usToLocal(us) {
  if (!us) return "";
  const d = new Date(us / 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// -- notifications ------------------------------------------------------------------------

export function toast(message, bad = false) {
  const t = $("#toast");
  t.textContent = message;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 4000);
}

/** A modal confirmation (<dialog>): resolves true when the operator confirms. */
export function confirmDialog(message, okLabel = "Confirm") {
  return new Promise((resolve) => {
    const ok = h("button", {type: "submit", class: "danger", value: "ok"}, okLabel);
    const dlg = h("dialog", {class: "confirm", "aria-labelledby": "confirm-text"},
      h("form", {method: "dialog"},
        h("p", {id: "confirm-text"}, message),
        h("div", {class: "toolbar end"},
          h("button", {type: "submit", class: "secondary", value: "cancel"}, "Cancel"), ok)));
    dlg.addEventListener("close", () => { resolve(dlg.returnValue === "ok"); dlg.remove(); });
    document.body.append(dlg);
    dlg.showModal();
    ok.focus();
  });
}

// -- the REST client ----------------------------------------------------------------------

export const session = {
  token: sessionStorage.getItem("gwToken") || "",
  onUnauthorized: () => {},
};

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = message;
    this.body = body;
  }
}

async function failure(res) {
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  return new ApiError(res.status, body?.error || String(res.status), body?.message || res.statusText, body);
}

/** Call the management API.  JSON bodies are encoded; strings and Blobs go as they are.
 * Resolves with the decoded JSON (null for 204), or the Response with {raw: true}.
 * Rejects with ApiError; a 401 also signs the console out. */
export async function api(method, path, body, {headers = {}, raw = false, signal} = {}) {
  const init = {method, headers: {Authorization: `Bearer ${session.token}`, ...headers}, signal};
  if (body !== undefined) {
    if (body instanceof Blob || typeof body === "string" || body instanceof FormData) init.body = body;
    else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  }
  const res = await fetch(API + path, init);
  if (res.status === 401) { session.onUnauthorized(); throw await failure(res); }
  if (!res.ok) throw await failure(res);
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

/** Upload a Blob with XMLHttpRequest (fetch cannot report upload progress).
 * onProgress(fraction) is called as bytes leave. */
export function upload(method, path, blob, {headers = {}, onProgress} = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, API + path);
    xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable && onProgress) onProgress(ev.loaded / ev.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* empty */ }
      if (xhr.status >= 200 && xhr.status < 300) { onProgress?.(1); resolve(body); return; }
      if (xhr.status === 401) session.onUnauthorized();
      reject(new ApiError(xhr.status, body?.error || String(xhr.status), body?.message || xhr.statusText, body));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload failed (connection lost)", null));
    xhr.send(blob);
  });
}

/** Save a download: the token must travel in a header, so fetch a Blob and hand it to an
 * <a download> element. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", {href: url, download: filename, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function download(path, filename) {
  const res = await api("GET", path, undefined, {raw: true});
  saveBlob(await res.blob(), filename);
}

/** Read a Server-Sent Events stream with fetch (EventSource cannot send the token).
 * Calls onEvent(event, data) for each message until the stream ends or `signal` aborts. */
export async function sse(path, {signal, onEvent}) {
  const res = await fetch(API + path, {
    headers: {Authorization: `Bearer ${session.token}`, Accept: "text/event-stream"},
    signal,
  });
  if (res.status === 401) { session.onUnauthorized(); throw await failure(res); }
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

/** Read a File as text. */
export const readText = (file) => file.text();

/** Run an async action for a button: disabled while it runs, errors as a toast. */
export async function busy(button, fn) {
  if (button) button.disabled = true;
  try { return await fn(); }
  catch (e) { toast(e.message, true); return undefined; }
  finally { if (button) button.disabled = false; }
}

/** A status line (role=status) that views update with the outcome of an action. */
export function statusLine() {
  const el = h("p", {class: "status", role: "status"});
  el.set = (text, bad = false) => { el.textContent = text; el.classList.toggle("error", bad); };
  return el;
}
