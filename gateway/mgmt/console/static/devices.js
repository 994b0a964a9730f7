// The Devices tab: counts by status, search (identity prefix), filters (status, tag),
// sort, keyset paging (the API's cursors: page N costs what page 1 costs at a million
// devices), add one device, add many from CSV (dry-run preview with per-row errors, then
// the import), lock/unlock and delete.  Filters and the page cursor live in the URL.
import {api, busy, checkbox, confirmDialog, field, fill, fmtNumber, h, select, statusLine, table, timeEl, toast} from "./lib.js";
import {identityProblem} from "./identity.js";
import {href} from "./nav.js";
import {sample} from "./stats.js";

const STATUSES = [["", "any status"], ["online", "online"], ["provisioned", "provisioned"], ["whitelisted", "whitelisted"], ["locked", "locked"], ["reprovision", "credentials reset"]];
const SORTS = [["identity", "identity A→Z"], ["-identity", "identity Z→A"], ["-lastseen", "last seen, newest first"], ["lastseen", "last seen, oldest first"], ["-created", "created, newest first"], ["created", "created, oldest first"]];
const LIMITS = ["25", "50", "100", "250"];

export const devPath = (cid, rest = "") => `/connectors/${encodeURIComponent(cid)}/devices${rest}`;

/** Status pills of a device (also used by the device page). */
export function statusPills(d) {
  return [
    h("span", {class: `pill ${d.status}`}, d.status),
    d.locked ? h("span", {class: "pill bad"}, "locked") : null,
    d.reprovision ? h("span", {class: "pill warn"}, "credentials reset") : null,
  ];
}

export function onlineBadge(d) {
  return h("span", {class: d.online ? "online" : "offline"}, d.online ? "online" : "offline");
}

export const tagPills = (tags) => (tags.length ? h("ul", {class: "pills"}, tags.map((t) => h("li", {class: "pill tag"}, `${t.name}=${t.value}`))) : h("span", {class: "muted"}, "—"));

/** Parse CSV text (RFC 4180: quoted fields may hold commas, quotes and newlines) into rows
 * with the line each starts on, for the import preview. */
export function parseCsv(text) {
  const rows = [];
  let row = [], cell = "", quoted = false, line = 1, start = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; }
      else if (c === '"') quoted = false;
      else { if (c === "\n") line++; cell += c; }
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(cell); cell = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(cell); rows.push({line: start, cells: row}); row = []; cell = ""; line++; start = line;
    } else cell += c;
  }
  if (cell !== "" || row.length) { row.push(cell); rows.push({line: start, cells: row}); }
  return rows;
}

function addForm(ctx, after) {
  const fmt = ctx.connector.settings.identity_format;
  const ident = h("input", {name: "identity", required: true, autocomplete: "off", spellcheck: false});
  const verdict = h("small", {class: "hint", id: "add-identity-check", "aria-live": "polite"});
  ident.setAttribute("aria-describedby", "add-identity-check");
  ident.addEventListener("input", () => {
    const problem = ident.value ? identityProblem(ident.value, fmt) : null;
    verdict.textContent = ident.value ? (problem || "valid identity") : `format: ${fmt.type}${fmt.prefix ? `, prefix ${fmt.prefix}` : ""}`;
    verdict.className = `hint ${problem ? "error" : ident.value ? "ok" : ""}`;
    ident.setCustomValidity(problem || "");
  });
  ident.dispatchEvent(new Event("input"));
  const authType = select("auth", [["", "none: the device activates itself"], ["token", "pre-shared token"], ["password", "pre-shared password"], ["certificate", "pinned certificate (PEM)"]], "");
  const key = h("textarea", {name: "key", rows: 2, spellcheck: false});
  const tags = h("textarea", {name: "tags", rows: 2, placeholder: "site=north", spellcheck: false});
  const status = statusLine();
  const form = h("form", {class: "stack", id: "dev-add"},
    h("div", {class: "field"}, h("label", {for: "add-identity"}, "Identity"), Object.assign(ident, {id: "add-identity"}), verdict),
    field("Credentials", authType),
    field("Key, password or certificate", key, "tokens and passwords: at least 20 characters"),
    field("Tags, one name=value per line", tags),
    checkbox("Locked (refuse its connections until unlocked)", "locked", false),
    h("div", {class: "toolbar"}, h("button", {type: "submit"}, "Add device")),
    status);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(form.querySelector("button[type=submit]"), async () => {
      const body = {identity: ident.value.trim(), locked: form.elements.locked.checked, tags: []};
      if (authType.value) body.auth = {type: authType.value, key: key.value.trim()};
      for (const line of tags.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
        const i = line.indexOf("=");
        if (i < 1) { status.set(`tag "${line}" must look like name=value`, true); return; }
        body.tags.push({name: line.slice(0, i).trim(), value: line.slice(i + 1).trim()});
      }
      try {
        await api("POST", devPath(ctx.cid), body);
      } catch (e) { status.set(e.message, true); return; }
      status.set(`${body.identity} added`);
      toast(`device ${body.identity} added`);
      form.reset();
      ident.dispatchEvent(new Event("input"));
      await after();
    });
  });
  return form;
}

function importForm(ctx, after) {
  const file = h("input", {type: "file", name: "file", accept: ".csv,text/csv,text/plain"});
  const text = h("textarea", {name: "csv", rows: 5, spellcheck: false, placeholder: "ID,tag:site\n0001,north\n0002,south"});
  const allOrNothing = checkbox("All or nothing: any row error imports nothing", "all_or_nothing", true);
  const preview = h("div", {id: "csv-preview", "aria-live": "polite"});
  const importBtn = h("button", {type: "button", id: "csv-import", disabled: true}, "Import");
  file.addEventListener("change", async () => {
    if (file.files[0]) { text.value = await file.files[0].text(); preview.replaceChildren(); importBtn.disabled = true; }
  });
  text.addEventListener("input", () => { preview.replaceChildren(); importBtn.disabled = true; });
  const run = async (dryRun) => {
    const aon = allOrNothing.querySelector("input").checked;
    const report = await api("POST", devPath(ctx.cid, `/import?dry_run=${dryRun}&all_or_nothing=${aon}`), text.value, {headers: {"Content-Type": "text/csv"}});
    return {report, aon};
  };
  const previewBtn = h("button", {type: "button", class: "secondary", id: "csv-preview-btn"}, "Preview (dry run)");
  previewBtn.addEventListener("click", () => busy(previewBtn, async () => {
    if (!text.value.trim()) { fill(preview, h("p", {class: "error"}, "Choose a CSV file or paste one first.")); return; }
    let out;
    try { out = await run(true); } catch (e) { fill(preview, h("p", {class: "error", role: "alert"}, e.message)); return; }
    const {report, aon} = out;
    const byLine = new Map(report.errors.map((e) => [e.line, e]));
    const rows = parseCsv(text.value);
    const header = rows.shift()?.cells.map((x) => x.trim()) || [];
    const shown = rows.filter((r) => r.cells.some((x) => x.trim())).slice(0, 200);
    const good = report.total - report.errors.length; // rows that would be created
    const willCreate = aon && report.errors.length ? 0 : Math.max(0, good);
    fill(preview,
      h("p", {class: report.errors.length ? "error" : "ok", id: "csv-summary"},
        `${report.total} rows checked, ${report.errors.length} with errors; the import would create ${willCreate} devices`,
        aon && report.errors.length ? " (all or nothing: fix the errors or untick the box)" : "", "."),
      table([
        ["Line", (r) => String(r.line), "num"],
        ...header.map((name, i) => [name || `column ${i + 1}`, (r) => {
          const v = (r.cells[i] || "").trim();
          return v.startsWith("-----BEGIN") ? "certificate" : v;
        }]),
        ["Check", (r) => {
          const e = byLine.get(r.line);
          return e ? h("span", {class: "error"}, e.error) : h("span", {class: "ok"}, "ok");
        }],
      ], shown, {caption: "Preview of the rows", rowAttrs: (r) => ({class: byLine.has(r.line) ? "row-error" : null})}),
      rows.length > shown.length ? h("p", {class: "muted"}, `first ${shown.length} rows shown`) : null,
      report.errors.filter((e) => !shown.some((r) => r.line === e.line)).length
        ? table([["Line", (e) => String(e.line)], ["Identity", (e) => e.identity || ""], ["Error", (e) => e.error]],
          report.errors.filter((e) => !shown.some((r) => r.line === e.line)), {caption: "Other errors"})
        : null);
    importBtn.disabled = willCreate === 0;
    importBtn.textContent = `Import ${willCreate} devices`;
  }));
  importBtn.addEventListener("click", () => busy(importBtn, async () => {
    let out;
    try { out = await run(false); } catch (e) { fill(preview, h("p", {class: "error", role: "alert"}, e.message)); return; }
    fill(preview, h("p", {class: out.report.created ? "ok" : "error", id: "csv-summary"},
      `Imported: ${out.report.created} devices created, ${out.report.errors.length} rows with errors.`));
    toast(`${out.report.created} devices imported`);
    importBtn.disabled = true;
    await after();
  }));
  return h("form", {class: "stack", id: "dev-import", onsubmit: (ev) => ev.preventDefault()},
    h("p", {class: "muted"}, "Header ", h("code", {}, "ID[,Certificate][,tag:<name>…]"), ", one identity per line (docs/protocol.md §8)."),
    field("CSV file", file),
    field("…or paste the CSV", text),
    allOrNothing,
    h("div", {class: "toolbar"}, previewBtn, importBtn),
    preview);
}

export async function mount(ctx) {
  const {cid} = ctx;
  let params = ctx.params;
  const stack = []; // cursors of the pages before this one (this visit only)
  const counts = h("p", {class: "counts", id: "dev-counts", "aria-live": "polite"});
  const results = h("div", {id: "dev-table"});
  const pager = h("div", {class: "toolbar pager"});
  const filter = h("form", {class: "filters", id: "dev-filter", role: "search"});

  function drawFilter() {
    fill(filter,
      field("Identity prefix", h("input", {name: "q", type: "search", value: params.get("q") || "", autocomplete: "off"})),
      field("Status", select("status", STATUSES, params.get("status") || "")),
      field("Tag (name:value)", h("input", {name: "tag", value: params.get("tag") || "", placeholder: "site:north", autocomplete: "off"})),
      field("Sort", select("sort", SORTS, params.get("sort") || "identity")),
      field("Per page", select("limit", LIMITS, params.get("limit") || "50")),
      h("div", {class: "field actions"}, h("button", {type: "submit"}, "Search"),
        h("a", {class: "button secondary", href: href(["c", cid, "devices"])}, "Clear")));
  }
  filter.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = filter.elements;
    stack.length = 0;
    ctx.go({q: f.q.value.trim(), status: f.status.value, tag: f.tag.value.trim(), sort: f.sort.value === "identity" ? "" : f.sort.value, limit: f.limit.value === "50" ? "" : f.limit.value});
  });

  async function act(d, what) {
    const id = encodeURIComponent(d.identity);
    if (what === "delete") {
      if (!(await confirmDialog(`Delete device ${d.identity}? Its state goes too; its events stay in the log.`, "Delete"))) return;
      await api("DELETE", devPath(cid, `/${id}`));
      toast(`${d.identity} deleted`);
    } else {
      await api("PATCH", devPath(cid, `/${id}`), {locked: what === "lock"});
      toast(`${d.identity} ${what}ed`);
    }
    await refresh();
  }

  async function refresh() {
    const q = new URLSearchParams({limit: params.get("limit") || "50"});
    for (const k of ["q", "status", "sort", "cursor"]) if (params.get(k)) q.set(k, params.get(k));
    if (params.get("tag")) q.append("tag", params.get("tag"));
    const [page, st] = await Promise.all([
      api("GET", devPath(cid, `?${q}`), undefined, {signal: ctx.signal}),
      sample(cid).catch(() => null),
    ]);
    if (st) {
      const d = st.devices;
      const link = (status, n, label) => h("a", {href: href(["c", cid, "devices"], status ? {status} : null), "data-count": status || "total"}, `${fmtNumber(n)} ${label}`);
      fill(counts, link("", d.total, "devices"), " · ", link("online", d.online, "online"), " · ", link("provisioned", d.provisioned, "provisioned"),
        " · ", link("whitelisted", d.whitelisted, "whitelisted"), " · ", link("locked", d.locked, "locked"));
    }
    fill(results, table([
      ["Identity", (d) => h("a", {href: href(["c", cid, "devices", d.identity]), class: "identity"}, d.identity)],
      ["Status", statusPills],
      ["Connection", onlineBadge],
      ["Last IP", (d) => d.lastip || h("span", {class: "muted"}, "—"), "narrow-hide"],
      ["Last seen", (d) => timeEl(d.lastseen, true)],
      ["Tags", (d) => tagPills(d.tags)],
      ["Actions", (d) => h("div", {class: "row-actions"},
        h("button", {type: "button", class: "secondary small", "aria-label": `${d.locked ? "Unlock" : "Lock"} ${d.identity}`, onclick: (ev) => busy(ev.currentTarget, () => act(d, d.locked ? "unlock" : "lock"))}, d.locked ? "Unlock" : "Lock"),
        h("button", {type: "button", class: "danger-outline small", "aria-label": `Delete ${d.identity}`, onclick: (ev) => busy(ev.currentTarget, () => act(d, "delete"))}, "Delete"))],
    ], page.items, {empty: params.toString() ? "no devices match" : "no devices yet", rowAttrs: (d) => ({dataset: {identity: d.identity}})}));
    const cursor = params.get("cursor");
    fill(pager,
      h("button", {type: "button", class: "secondary", disabled: !cursor, onclick: () => { stack.length = 0; const p = new URLSearchParams(params); p.delete("cursor"); ctx.go(p); }}, "First page"),
      h("button", {type: "button", class: "secondary", id: "dev-prev", disabled: !cursor, onclick: () => {
        const p = new URLSearchParams(params);
        const prev = stack.pop();
        if (prev) p.set("cursor", prev); else p.delete("cursor");
        ctx.go(p);
      }}, "Previous"),
      h("button", {type: "button", class: "secondary", id: "dev-next", disabled: !page.next, onclick: () => {
        stack.push(cursor || "");
        const p = new URLSearchParams(params);
        p.set("cursor", page.next);
        ctx.go(p);
      }}, "Next"),
      h("span", {class: "muted"}, `${page.items.length} on this page${page.next ? ", more after" : ""}`));
  }

  drawFilter();
  fill(ctx.panel,
    h("h2", {class: "visually-hidden"}, "Devices"),
    counts,
    filter,
    h("div", {class: "add-row"},
      h("details", {class: "box", id: "add-one"}, h("summary", {}, "Add a device"), addForm(ctx, refresh)),
      h("details", {class: "box", id: "add-many"}, h("summary", {}, "Add many from CSV"), importForm(ctx, refresh))),
    results,
    pager);
  await refresh();
  return {
    refresh,
    update: async (p) => { params = p; drawFilter(); await refresh(); },
  };
}
