// Decodes Sparkplug B payloads with Eclipse Tahu's codec, for edgegw's
// tests: one base64 payload a line on stdin, one JSON document a line on
// stdout ({"error": "..."} when Tahu refuses the bytes). 64-bit integers
// (Long) are written as decimal strings, so nothing is lost to a double;
// a metric sent with is_null has "isNull": true.
// A line "E {json}" asks the other way: Tahu encodes the payload object
// (as its encodePayload takes it) and the answer is {"payload": base64}.
"use strict";
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const proto = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf;
const readline = require("readline");

function plain(v) {
  if (v === null || typeof v !== "object") return v;
  if (typeof v.low === "number" && typeof v.high === "number" && "unsigned" in v) {
    return require("long").fromBits(v.low, v.high, v.unsigned).toString();
  }
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (Array.isArray(v)) return v.map(plain);
  const out = {};
  for (const [k, x] of Object.entries(v)) out[k] = plain(x);
  return out;
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let out;
  if (line.startsWith("E ")) {
    try {
      out = { payload: Buffer.from(sparkplug.encodePayload(JSON.parse(line.slice(2)))).toString("base64") };
    } catch (e) {
      out = { error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(out) + "\n");
    return;
  }
  try {
    const bytes = Buffer.from(line, "base64");
    out = plain(sparkplug.decodePayload(bytes));
    // Tahu turns is_null into a null value; say it was is_null, from the
    // schema-level decoding Tahu itself uses.
    (proto.Payload.decode(bytes).metrics || []).forEach((m, i) => {
      if (m.isNull) out.metrics[i].isNull = true;
    });
  } catch (e) {
    out = { error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
});
