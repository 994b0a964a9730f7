// The Content tab: the connector's content store (firmware and files devices download):
// list, upload with progress (streamed to the gateway), download, delete.
import {api, busy, confirmDialog, download, field, fill, fmtBytes, h, statusLine, table, timeEl, toast, upload} from "./lib.js";

const ID_RE = /^(?!.*\.\.)[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/; // services/content.py

export async function mount(ctx) {
  const base = `/connectors/${encodeURIComponent(ctx.cid)}/content`;
  const itemPath = (id) => `${base}/${id.split("/").map(encodeURIComponent).join("/")}`;
  const list = h("div", {id: "content-table"});
  let items = [];

  async function refresh() {
    items = (await api("GET", base, undefined, {signal: ctx.signal})).items;
    fill(list, table([
      ["Id", (c) => h("strong", {}, c.id)],
      ["Type", (c) => c.type, "narrow-hide"],
      ["Size", (c) => fmtBytes(c.length), "num"],
      ["SHA-256", (c) => h("code", {title: c.sha256}, c.sha256.slice(0, 12) + "…"), "narrow-hide"],
      ["Updated", (c) => timeEl(c.updated)],
      ["Description", (c) => c.description || h("span", {class: "muted"}, "—")],
      ["Actions", (c) => h("div", {class: "row-actions"},
        h("button", {type: "button", class: "secondary small", "aria-label": `Download ${c.id}`, onclick: (ev) => busy(ev.currentTarget, () => download(itemPath(c.id), c.id.split("/").pop()))}, "Download"),
        h("button", {type: "button", class: "danger-outline small", "aria-label": `Delete ${c.id}`, onclick: (ev) => busy(ev.currentTarget, async () => {
          if (!(await confirmDialog(`Delete ${c.id}? Devices can no longer download it.`, "Delete"))) return;
          await api("DELETE", itemPath(c.id));
          toast(`${c.id} deleted`);
          await refresh();
        })}, "Delete"))],
    ], items, {empty: "no content yet", rowAttrs: (c) => ({dataset: {content: c.id}})}));
  }

  const file = h("input", {type: "file", name: "file", required: true});
  const idInput = h("input", {name: "id", required: true, autocomplete: "off", spellcheck: false});
  const desc = h("input", {name: "description", autocomplete: "off", maxlength: 1000});
  const progress = h("progress", {max: 100, value: 0, id: "upload-progress", "aria-label": "upload progress"});
  const pct = h("span", {class: "muted", id: "upload-pct"});
  const status = statusLine();
  file.addEventListener("change", () => { if (file.files[0] && !idInput.value) idInput.value = file.files[0].name.replace(/[^A-Za-z0-9._-]/g, "_"); });
  const form = h("form", {class: "stack", id: "upload"},
    h("h3", {}, "Upload"),
    field("File", file),
    field("Content id", idInput, "letters, digits, . _ - and / between parts"),
    field("Description", desc, "one line"),
    h("div", {class: "toolbar"}, h("button", {type: "submit"}, "Upload"), progress, pct),
    status);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    const id = idInput.value.trim();
    if (!f) { status.set("choose a file", true); return; }
    if (!ID_RE.test(id)) { status.set("that content id is not allowed", true); return; }
    busy(form.querySelector("button[type=submit]"), async () => {
      if (items.some((c) => c.id === id) && !(await confirmDialog(`Replace the existing ${id}?`, "Replace"))) return;
      progress.value = 0;
      const q = desc.value.trim() ? `?description=${encodeURIComponent(desc.value.trim())}` : "";
      try {
        await upload("PUT", itemPath(id) + q, f, {
          headers: {"Content-Type": f.type || "application/octet-stream"},
          onProgress: (x) => { progress.value = Math.round(x * 100); pct.textContent = `${Math.round(x * 100)} %`; },
        });
      } catch (e) { status.set(`Upload failed: ${e.message}`, true); return; }
      status.set(`${id} uploaded (${fmtBytes(f.size)})`);
      toast(`${id} uploaded`);
      form.reset();
      await refresh();
    });
  });

  fill(ctx.panel, h("h2", {class: "visually-hidden"}, "Content"), list, h("div", {class: "box"}, form));
  await refresh();
  return {refresh};
}
