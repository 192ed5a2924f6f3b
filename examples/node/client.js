#!/usr/bin/env node
// A ZJP/1 client in Node.js, written from docs/PROTOCOL.md alone. Same command line and
// output as the C client in examples/c (see README.md):
//
//   node client.js --requests EP --responses EP [--timeout-ms N] [--id ID | --bin-id HEX]
//                  [--meta-key K --meta-value V]... [--ping] [--json-int N | --json-str S | --nil]
//
// Exit codes: 0 ok or pong, 1 error response, 2 usage, 3 timeout, 4 unexpected ZeroMQ error.
//
// Copyright the zjobs authors. MIT license.
"use strict"

const crypto = require("node:crypto")
const zmq = require("zeromq")
const { encode, decode } = require("@msgpack/msgpack")

const EXIT = { ok: 0, errorResponse: 1, usage: 2, timeout: 3, io: 4 }
const PING_INTERVAL_MS = 10

// Ints beyond 32 bits decode as BigInt, so they print exactly; any map key is accepted.
const DECODE = { useBigInt64: true, mapKeyConverter: (k) => (typeof k === "string" || typeof k === "number" ? k : render(k)) }

class Usage extends Error {}
class Timeout extends Error {}

function usageText() {
  return (
    "usage: node client.js --requests EP --responses EP [--timeout-ms N]\n" +
    "                      [--id ID | --bin-id HEX] [--meta-key K --meta-value V]...\n" +
    "                      [--ping] [--json-int N | --json-str S | --nil]\n"
  )
}

function parseArgs(argv) {
  const o = { timeoutMs: 5000, id: null, metaKeys: [], metaValues: [], ping: false, body: null }
  let haveId = false
  let haveBody = false
  const valued = new Set([
    "--requests", "--responses", "--timeout-ms", "--id", "--bin-id",
    "--meta-key", "--meta-value", "--json-int", "--json-str",
  ])
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    let v
    if (valued.has(a)) {
      if (i + 1 >= argv.length) throw new Usage(`${a} needs a value`)
      v = argv[++i]
    }
    switch (a) {
      case "--requests": o.requests = v; break
      case "--responses": o.responses = v; break
      case "--timeout-ms":
        if (!/^[0-9]+$/.test(v) || Number(v) <= 0) throw new Usage("--timeout-ms needs a positive integer")
        o.timeoutMs = Number(v)
        break
      case "--id":
      case "--bin-id": {
        if (haveId) throw new Usage("give at most one of --id and --bin-id")
        haveId = true
        if (a === "--id") {
          const n = Buffer.byteLength(v, "utf8")
          if (n < 1 || n > 255) throw new Usage("--id must be 1 to 255 bytes")
          o.id = v
        } else {
          if (!/^([0-9a-fA-F]{2}){1,255}$/.test(v)) throw new Usage("--bin-id must be 1 to 255 bytes in hex")
          o.id = new Uint8Array(Buffer.from(v, "hex"))
        }
        break
      }
      case "--meta-key": o.metaKeys.push(v); break
      case "--meta-value": o.metaValues.push(v); break
      case "--ping": o.ping = true; break
      case "--json-int":
      case "--json-str":
      case "--nil":
        if (haveBody) throw new Usage("give at most one of --json-int, --json-str, --nil")
        haveBody = true
        if (a === "--json-int") {
          if (!/^-?[0-9]+$/.test(v)) throw new Usage(`--json-int needs an integer: ${v}`)
          const n = BigInt(v)
          if (n < -(2n ** 63n) || n > 2n ** 63n - 1n) throw new Usage(`--json-int out of range: ${v}`)
          // 32-bit ints as numbers; larger ones as BigInt, which encodes as a msgpack int64
          // (a larger JavaScript number would be encoded as a float)
          o.body = n >= -(2n ** 31n) && n < 2n ** 31n ? Number(n) : n
        } else if (a === "--json-str") {
          o.body = v
        } else {
          o.body = null
        }
        break
      default:
        throw new Usage(`unknown argument: ${a}`)
    }
  }
  if (!o.requests || !o.responses) throw new Usage("--requests and --responses are required")
  if (o.metaKeys.length !== o.metaValues.length) throw new Usage("each --meta-key needs a --meta-value")
  if (o.id === null) o.id = crypto.randomBytes(8).toString("hex")
  return o
}

// One-line rendering, the same as the C client: str as text, bin as hex:..., nil, true/false.
function render(value, quote = false) {
  if (value === null || value === undefined) return "nil"
  if (typeof value === "string") return quote ? JSON.stringify(value) : value
  if (value instanceof Uint8Array) return "hex:" + Buffer.from(value).toString("hex")
  if (typeof value === "bigint" || typeof value === "number" || typeof value === "boolean") return String(value)
  if (Array.isArray(value)) return "[" + value.map((x) => render(x, true)).join(",") + "]"
  if (typeof value === "object") {
    return "{" + Object.entries(value).map(([k, x]) => render(k, true) + ":" + render(x, true)).join(",") + "}"
  }
  return String(value)
}

function sameId(a, b) {
  if (typeof a === "string" || typeof b === "string") return a === b
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.from(a).equals(Buffer.from(b))
  return false
}

// A message as a response, or null when it is not one (PROTOCOL.md, "Forward compatibility").
function parseResponse(frames) {
  if (frames.length !== 3) return null
  if (frames[0].length > 0 && frames[0][0] === 0x00) return null
  let header, body
  try {
    header = decode(frames[1], DECODE)
    body = decode(frames[2], DECODE)
  } catch {
    return null
  }
  if (header === null || typeof header !== "object" || Array.isArray(header) || header instanceof Uint8Array) return null
  if (header.v !== 1 || typeof header.status !== "string") return null
  return { header, body }
}

function line(r) {
  const h = r.header
  const out = [`status=${h.status}`, `id=${render(h.id)}`]
  if (h.status === "ok") {
    out.push(`cached=${h.cached === true}`, `processor=${render(h.processor)}`, `value=${render(r.body)}`)
  } else if (h.status === "error") {
    const e = h.error && typeof h.error === "object" ? h.error : {}
    out.push(`type=${render(e.type)}`, `message=${render(e.message)}`)
  } else {
    out.push(`processor=${render(h.processor)}`, `instance=${h.instance === undefined ? "" : render(h.instance)}`)
  }
  if (h.meta && typeof h.meta === "object" && !(h.meta instanceof Uint8Array)) {
    for (const [k, v] of Object.entries(h.meta)) out.push(`meta.${render(k)}=${render(v)}`)
  }
  return out.join(" ")
}

async function run(o) {
  const push = new zmq.Push({ linger: 0 })
  const sub = new zmq.Subscriber({ linger: 0 })
  try {
    // A private reply topic of 32 hex characters (PROTOCOL.md, "Reply topics").
    const topic = crypto.randomBytes(16).toString("hex")
    sub.subscribe(topic)
    sub.connect(o.responses)
    push.connect(o.requests)

    const deadline = Date.now() + o.timeoutMs
    const left = () => deadline - Date.now()

    // Sends never wait past the deadline: a PUSH whose queue is full would block.
    const send = async (header, body) => {
      push.sendTimeout = Math.max(1, left())
      try {
        await push.send([encode(header), encode(body, { useBigInt64: true })])
      } catch (err) {
        if (err.code === "EAGAIN") throw new Timeout("could not send the request")
        throw err
      }
    }
    // The next response within `ms`, or null.
    const receive = async (ms) => {
      sub.receiveTimeout = Math.max(1, ms)
      try {
        return parseResponse(await sub.receive())
      } catch (err) {
        if (err.code === "EAGAIN") return null
        throw err
      }
    }

    // Readiness: ping every ~10 ms until a pong comes back on our topic.
    let ready = false
    for (let n = 0; !ready; n++) {
      if (left() <= 0) throw new Timeout(`no pong from ${o.requests}`)
      await send({ v: 1, id: `${topic}.${n}`, reply_to: topic, ping: true }, null)
      const roundEnd = Math.min(deadline, Date.now() + PING_INTERVAL_MS)
      while (!ready && Date.now() < roundEnd) {
        const r = await receive(roundEnd - Date.now())
        if (r !== null && r.header.status === "pong") ready = true
      }
    }

    const header = { v: 1, id: o.id, reply_to: topic }
    if (o.ping) header.ping = true
    if (o.metaKeys.length > 0) {
      header.meta = Object.fromEntries(o.metaKeys.map((k, i) => [k, o.metaValues[i]]))
    }
    await send(header, o.ping ? null : o.body)

    const wanted = o.ping ? ["pong"] : ["ok", "error"]
    while (left() > 0) {
      const r = await receive(left())
      if (r === null || !wanted.includes(r.header.status) || !sameId(r.header.id, o.id)) continue
      process.stdout.write(line(r) + "\n")
      return r.header.status === "error" ? EXIT.errorResponse : EXIT.ok
    }
    throw new Timeout("no response")
  } finally {
    push.close()
    sub.close()
  }
}

async function main() {
  let o
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    process.stdout.write(usageText())
    return EXIT.ok
  }
  try {
    o = parseArgs(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof Usage)) throw err
    process.stderr.write(`client.js: ${err.message}\n${usageText()}`)
    return EXIT.usage
  }
  try {
    return await run(o)
  } catch (err) {
    if (err instanceof Timeout) {
      process.stderr.write(`client.js: timeout: ${err.message} within ${o.timeoutMs} ms\n`)
      return EXIT.timeout
    }
    if (err && err.code === "EINVAL") {
      process.stderr.write(`client.js: cannot connect: ${err.message}\n`)
      return EXIT.usage
    }
    process.stderr.write(`client.js: ${err && err.stack}\n`)
    return EXIT.io
  }
}

main().then((code) => process.exit(code))
