// The Settings tab as forms (docs/protocol.md §5, §6.4): name and description; protocol and
// dev mode; identity format with a live validator; provisioning (auth method, presenter
// identity, IP whitelist); certificates (client CA upload, the connector's own server
// certificate, the key write-only); limits.  Saving sends the whole settings object
// (validated as a whole by the gateway) and reads it back.
import {api, busy, checkbox, confirmDialog, field, fill, h, select, statusLine, toast} from "./lib.js";
import {IDENTITY_TYPES, identityProblem} from "./identity.js";

const REDACTED = "<redacted>";

function pemField(label, name, value, hint) {
  const placeholder = name === "server_key" ? "-----BEGIN PRIVATE KEY-----" : "-----BEGIN CERTIFICATE-----";
  const area = h("textarea", {name, rows: 4, spellcheck: false, class: "code", placeholder}, value || "");
  const file = h("input", {type: "file", accept: ".pem,.crt,.cer,.key,text/plain", "aria-label": `Upload ${label} from a file`});
  file.addEventListener("change", async () => { if (file.files[0]) area.value = (await file.files[0].text()).trim(); });
  return h("div", {class: "pem"}, field(label, area, hint), h("div", {class: "field"}, h("span", {class: "upload-label"}, "or upload a file: "), file));
}

function validIp(text) {
  const [addr, bits, extra] = text.split("/");
  if (extra !== undefined) return false;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(addr);
  if (v4) return v4.slice(1).every((o) => Number(o) <= 255) && (bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= 32));
  return /^[0-9a-fA-F:.]+$/.test(addr) && addr.includes(":") && (bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= 128));
}

export async function mount(ctx) {
  const base = `/connectors/${encodeURIComponent(ctx.cid)}`;
  const holder = h("div", {});
  fill(ctx.panel, h("h2", {class: "visually-hidden"}, "Settings"), holder);

  async function draw() {
    const [conn, s] = await Promise.all([api("GET", base, undefined, {signal: ctx.signal}), api("GET", `${base}/settings`, undefined, {signal: ctx.signal})]);
    const status = statusLine();
    status.id = "settings-status";

    // identity format + live validator
    const fmtType = select("identity_type", IDENTITY_TYPES, s.identity_format.type);
    const prefix = h("input", {name: "prefix", value: s.identity_format.prefix, autocomplete: "off", spellcheck: false});
    const casing = select("casing", ["mixed", "upper", "lower"], s.identity_format.options.casing);
    const length = h("input", {name: "length", type: "number", min: 0, max: 128, value: s.identity_format.options.length});
    const tryId = h("input", {name: "try_identity", id: "try-identity", autocomplete: "off", spellcheck: false, placeholder: "an identity to check"});
    const verdict = h("p", {class: "hint", id: "try-verdict", role: "status"});
    tryId.setAttribute("aria-describedby", "try-verdict");
    const fmtNow = () => ({type: fmtType.value, prefix: prefix.value, options: {casing: casing.value, length: Number(length.value || 0)}});
    const validate = () => {
      if (!tryId.value) { verdict.textContent = "Type an identity to check it against this format."; verdict.className = "hint"; return; }
      const problem = identityProblem(tryId.value, fmtNow());
      verdict.textContent = problem ? `✗ ${problem}` : `✓ ${tryId.value} is a valid identity`;
      verdict.className = `hint ${problem ? "error" : "ok"}`;
    };
    for (const el of [fmtType, prefix, casing, length, tryId]) el.addEventListener("input", validate);
    validate();

    const ipList = h("textarea", {name: "ip_allowed", rows: 3, spellcheck: false, class: "code", placeholder: "203.0.113.0/24"}, s.provisioning.ip_whitelisting.allowed.join("\n"));
    const ipCheck = h("small", {class: "hint", id: "ip-check", "aria-live": "polite"});
    ipList.setAttribute("aria-describedby", "ip-check");
    const ipValidate = () => {
      const bad = ipList.value.split(/\s+/).filter(Boolean).filter((x) => !validIp(x));
      ipCheck.textContent = bad.length ? `not an address or network: ${bad.join(", ")}` : "one address or CIDR network per line";
      ipCheck.className = `hint ${bad.length ? "error" : ""}`;
      return !bad.length;
    };
    ipList.addEventListener("input", ipValidate);
    ipValidate();

    const keySet = s.pki.server_key === REDACTED;
    const form = h("form", {class: "settings", id: "settings-form"},
      h("fieldset", {}, h("legend", {}, "Connector"),
        field("Name", h("input", {name: "name", value: conn.name, required: true, maxlength: 200})),
        field("Description", h("input", {name: "description", value: conn.description, maxlength: 2000}))),
      h("fieldset", {}, h("legend", {}, "Protocol"),
        field("Device protocol", select("protocol", [["onep:v1/http", "HTTP (onep:v1/http)"], ["murano:v1/mqtt", "MQTT (murano:v1/mqtt)"], ["onep", "onep"], ["mqtt", "mqtt"]], s.protocol.name),
          "informational: every connector serves both HTTP and MQTT"),
        checkbox(`Dev mode: plain HTTP at ${conn.devmode_fqdn}`, "devmode", s.protocol.devmode)),
      h("fieldset", {}, h("legend", {}, "Identity format"),
        h("div", {class: "grid4"}, field("Type", fmtType), field("Prefix", prefix), field("Letter case", casing), field("Length after the prefix", length, "0: any")),
        h("div", {class: "validator"}, field("Check an identity", tryId), verdict)),
      h("fieldset", {}, h("legend", {}, "Provisioning"),
        checkbox("Devices may provision themselves (activation, first certificate use)", "prov_enabled", s.provisioning.enabled),
        field("Authentication method", select("auth_type", [["token", "token (issued at activation)"], ["password", "password (chosen by the device)"], ["certificate", "TLS client certificate"]], s.provisioning.auth_type)),
        checkbox("Presenter identity: a device may provision an identity nobody whitelisted", "presenter_identity", s.provisioning.presenter_identity),
        checkbox("Generate identities (stored; the gateway does not generate them)", "generate_identity", s.provisioning.generate_identity),
        checkbox("Restrict provisioning to these addresses", "ip_enabled", s.provisioning.ip_whitelisting.enabled),
        h("div", {class: "field"}, h("label", {for: "ip-allowed"}, "Allowed addresses and networks"), Object.assign(ipList, {id: "ip-allowed"}), ipCheck)),
      h("fieldset", {}, h("legend", {}, "Certificates"),
        checkbox("Client certificates must chain to this CA", "pki_enabled", s.pki.enabled),
        pemField("Client CA (PEM)", "client_ca", s.pki.client_ca, "the CA that issues device certificates"),
        pemField("Server certificate chain (PEM)", "server_cert", s.pki.server_cert, "empty: the gateway's own certificate"),
        pemField("Server key (PEM)", "server_key", keySet ? "" : s.pki.server_key,
          keySet ? "a key is stored (never shown); leave empty to keep it" : "write-only: never shown again")),
      h("fieldset", {}, h("legend", {}, "Limits"),
        h("div", {class: "grid4"},
          field("Largest HTTP value (bytes)", h("input", {name: "max_payload", type: "number", min: 64, value: s.limits.max_payload})),
          field("Largest MQTT packet (bytes)", h("input", {name: "max_packet_size", type: "number", min: 64, value: s.limits.max_packet_size})))),
      h("div", {class: "toolbar sticky-actions"}, h("button", {type: "submit", id: "save-settings"}, "Save settings"),
        h("button", {type: "button", class: "secondary", onclick: (ev) => busy(ev.currentTarget, draw)}, "Discard changes"), status));

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!ipValidate()) { status.set("fix the allowed addresses first", true); return; }
      const f = form.elements;
      const text = (name) => f[name].value.trim() || null;
      const settings = {
        protocol: {name: f.protocol.value, devmode: f.devmode.checked},
        identity_format: fmtNow(),
        provisioning: {
          enabled: f.prov_enabled.checked, auth_type: f.auth_type.value,
          presenter_identity: f.presenter_identity.checked, generate_identity: f.generate_identity.checked,
          ip_whitelisting: {enabled: f.ip_enabled.checked, allowed: ipList.value.split(/\s+/).filter(Boolean)},
        },
        pki: {enabled: f.pki_enabled.checked, client_ca: text("client_ca"), server_cert: text("server_cert"),
          server_key: text("server_key") || (keySet && text("server_cert") ? REDACTED : null)},
        limits: {max_payload: Number(f.max_payload.value), max_packet_size: Number(f.max_packet_size.value)},
      };
      busy(f["save-settings"] || form.querySelector("#save-settings"), async () => {
        try {
          if (f.name.value.trim() !== conn.name || f.description.value !== conn.description) {
            await api("PATCH", base, {name: f.name.value.trim(), description: f.description.value});
          }
          await api("PATCH", `${base}/settings`, settings);
        } catch (e) { status.set(`Not saved: ${e.message}`, true); return; }
        ctx.connector = await ctx.reloadConnector();
        await draw(); // read back what the gateway stored
        $status().set("Settings saved and read back from the gateway.");
        toast("settings saved");
      });
    });

    const danger = h("section", {class: "box danger-zone", "aria-labelledby": "h-danger"},
      h("h3", {id: "h-danger"}, "Delete this connector"),
      h("p", {}, "Removes its devices, state, events and content. There is no undo."),
      h("button", {type: "button", class: "danger", onclick: (ev) => busy(ev.currentTarget, async () => {
        if (!(await confirmDialog(`Delete the connector ${conn.name} (${conn.id}) with all its devices, events and content?`, "Delete connector"))) return;
        await api("DELETE", base);
        toast(`connector ${conn.id} deleted`);
        location.hash = "#/";
        location.reload();
      })}, "Delete connector"));
    fill(holder, form, danger);
  }
  const $status = () => document.getElementById("settings-status");
  await draw();
  return {};
}
