// The Resources tab: the connector's resource definitions (docs/protocol.md §4.1) — list,
// define, edit and delete.
import {api, busy, checkbox, confirmDialog, field, fill, h, select, statusLine, table, toast} from "./lib.js";

export async function mount(ctx) {
  const base = `/connectors/${encodeURIComponent(ctx.cid)}/resources`;
  const list = h("div", {id: "res-table"});
  const formBox = h("div", {id: "res-form"});

  function drawForm(r) {
    const editing = !!r;
    r = r || {alias: "", format: "string", unit: "", allowed: [], settable: false, sync: true, initial: null};
    const status = statusLine();
    const form = h("form", {class: "stack", id: "addres"},
      h("h3", {}, editing ? `Edit ${r.alias}` : "Define a resource"),
      field("Alias", h("input", {name: "alias", value: r.alias, required: true, readonly: editing, autocomplete: "off", spellcheck: false}),
        editing ? "an alias cannot change" : "1-64 characters, no . $ / + # or spaces"),
      field("Format", select("format", ["string", "number", "boolean"], r.format)),
      field("Unit", h("input", {name: "unit", value: r.unit, autocomplete: "off"})),
      field("Allowed values", h("input", {name: "allowed", value: r.allowed.join(", "), autocomplete: "off"}), "comma-separated; empty: any value of the format"),
      checkbox("Settable from the cloud", "settable", r.settable),
      checkbox("Sync: a set value stays pending until the device acknowledges it", "sync", r.sync),
      field("Initial set value", h("input", {name: "initial", value: r.initial ?? "", autocomplete: "off"}), "given to every new device (settable resources)"),
      h("div", {class: "toolbar"}, h("button", {type: "submit"}, editing ? "Save resource" : "Add resource"),
        editing ? h("button", {type: "button", class: "secondary", onclick: () => drawForm(null)}, "Cancel") : null),
      status);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = form.elements;
      const allowed = f.allowed.value.split(",").map((x) => x.trim()).filter(Boolean)
        .map((x) => (f.format.value === "number" && Number.isFinite(Number(x)) ? Number(x) : x));
      const body = {format: f.format.value, unit: f.unit.value, allowed, settable: f.settable.checked, sync: f.sync.checked, initial: f.initial.value === "" ? null : f.initial.value};
      busy(form.querySelector("button[type=submit]"), async () => {
        try {
          if (editing) await api("PATCH", `${base}/${encodeURIComponent(r.alias)}`, body);
          else await api("POST", base, {alias: f.alias.value.trim(), ...body});
        } catch (e) { status.set(e.message, true); return; }
        toast(editing ? `${r.alias} saved` : `${f.alias.value.trim()} defined`);
        drawForm(null);
        await refresh();
      });
    });
    fill(formBox, form);
    if (editing) form.elements.format.focus();
  }

  async function refresh() {
    const items = (await api("GET", base, undefined, {signal: ctx.signal})).items;
    fill(list, table([
      ["Alias", (r) => h("strong", {}, r.alias)],
      ["Format", (r) => r.format + (r.unit ? ` (${r.unit})` : "")],
      ["Settable", (r) => (r.settable ? (r.sync ? "yes, sync" : "yes") : "no")],
      ["Allowed", (r) => (r.allowed.length ? r.allowed.join(", ") : h("span", {class: "muted"}, "any"))],
      ["Initial", (r) => (r.initial == null ? h("span", {class: "muted"}, "—") : h("code", {class: "value"}, r.initial))],
      ["Actions", (r) => h("div", {class: "row-actions"},
        h("button", {type: "button", class: "secondary small", "aria-label": `Edit ${r.alias}`, onclick: () => drawForm(r)}, "Edit"),
        h("button", {type: "button", class: "danger-outline small", "aria-label": `Delete ${r.alias}`, onclick: (ev) => busy(ev.currentTarget, async () => {
          if (!(await confirmDialog(`Delete the resource ${r.alias}? Every device's value of it goes too.`, "Delete"))) return;
          await api("DELETE", `${base}/${encodeURIComponent(r.alias)}`);
          toast(`${r.alias} deleted`);
          await refresh();
        })}, "Delete"))],
    ], items, {empty: "no resources defined", rowAttrs: (r) => ({dataset: {alias: r.alias}})}));
  }

  fill(ctx.panel, h("h2", {class: "visually-hidden"}, "Resources"), list, h("div", {class: "box"}, formBox));
  drawForm(null);
  await refresh();
  return {};
}
