// The identity-format check of docs/protocol.md §5.1, for the Settings tab's live validator
// and the add-device form.  A transcription of gateway/_pure/identity.py with the same
// messages; tests/e2e/test_console_browser.py compares the two on a table of cases.  The
// gateway checks again on every write: this copy only gives the operator early feedback.

export const IDENTITY_TYPES = ["opaque", "base10", "base16", "mac:48", "mac:48-nosep", "uuid:v4"];
export const MAX_IDENTITY_LENGTH = 128;

const HEX = /^[0-9a-fA-F]$/;
const isHex = (text) => [...text].every((c) => HEX.test(c));
// Python's repr() of a str, for the messages that quote one (no quotes inside: '...').
const repr = (text) => (text.includes("'") && !text.includes('"') ? `"${text}"` : `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`);

/** null when `identity` satisfies `fmt` ({type, prefix, options: {casing, length}}), else
 * the reason, worded as the gateway words it. */
export function identityProblem(identity, fmt) {
  const kind = fmt.type || "opaque";
  const prefix = fmt.prefix || "";
  const casing = fmt.options?.casing || "mixed";
  const length = Number(fmt.options?.length || 0);
  const n = [...identity].length; // code points, as Python counts
  if (n === 0) return "identity is empty";
  if (n > MAX_IDENTITY_LENGTH) return `identity longer than ${MAX_IDENTITY_LENGTH} characters`;
  for (const c of identity) {
    const o = c.codePointAt(0);
    if (o <= 32 || o >= 127 || "/+#".includes(c)) return "identity has a character outside printable ASCII or one of / + #";
  }
  if (prefix && !identity.startsWith(prefix)) return `identity does not start with the prefix ${repr(prefix)}`;
  const body = identity.slice(prefix.length);
  if (length && body.length !== length) return `identity must have ${length} characters after the prefix`;
  if (casing === "upper") { if (/[a-z]/.test(body)) return "identity must be upper case"; }
  else if (casing === "lower") { if (/[A-Z]/.test(body)) return "identity must be lower case"; }
  else if (casing !== "mixed") return `unknown casing ${repr(casing)}`;
  let ok;
  if (kind === "opaque") return body ? null : "identity has nothing after the prefix";
  if (kind === "base10") ok = body.length > 0 && /^[0-9]+$/.test(body);
  else if (kind === "base16") ok = body.length > 0 && isHex(body);
  else if (kind === "mac:48") ok = body.length === 17 && [...body].every((c, i) => (i % 3 === 2 ? c === ":" : HEX.test(c)));
  else if (kind === "mac:48-nosep") ok = body.length === 12 && isHex(body);
  else if (kind === "uuid:v4") {
    ok = body.length === 36
      && [...body].every((c, i) => ([8, 13, 18, 23].includes(i) ? c === "-" : HEX.test(c)))
      && body[14] === "4" && "89abAB".includes(body[19]);
  } else return `unknown identity type ${repr(kind)}`;
  return ok ? null : `identity is not a valid ${kind} value`;
}
