#!/usr/bin/env node
// A ZJP/1 processor in Node.js, written from docs/PROTOCOL.md alone.
//
//   node processor.js --requests EP --responses EP [--name NAME] [--batch-max N]
//
// It binds PULL (requests) and PUB (responses), prints one line
// "listening requests=<EP> responses=<EP> name=<NAME>" once bound, and serves until
// SIGTERM or SIGINT (exit code 0). The job: an int is squared; a map with the key
// "fail" fails with JobFailed "Error: <fail>"; anything else is echoed unchanged.
//
// It implements the batch extension (many items in one request, each answered as a
// request of its own) and advertises it in its pongs; --batch-max is the most items it
// takes in one batch (default 4096), and 0 turns the extension off: batches are then
// refused with BadRequest by the frame count, as a processor without it refuses them.
//
// Requests are checked on the raw msgpack bytes (scan() below) rather than on decoded
// JavaScript values, because a JavaScript value cannot tell an int from a float with the
// same value, turns int map keys into strings, and hides invalid UTF-8. The id and the
// meta are echoed as the exact bytes that came in, so their msgpack types survive.
//
// Copyright the zjobs authors. MIT license.
"use strict"

const crypto = require("node:crypto")
const zmq = require("zeromq")
const { encode } = require("@msgpack/msgpack")

const MAX_MESSAGE_SIZE = 16 * 1024 * 1024
const MAX_DEPTH = 512
const NIL = Buffer.from([0xc0])
const BATCH_TAG = Buffer.from("batch")
const DEFAULT_BATCH_MAX = 4096

// ------------------------------------------------------------------ msgpack scanning

class Invalid extends Error {}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

function need(buf, off, n) {
  if (off + n > buf.length) throw new Invalid("truncated msgpack")
}

function uint(buf, off, size) {
  need(buf, off, size)
  switch (size) {
    case 1: return buf.readUInt8(off)
    case 2: return buf.readUInt16BE(off)
    case 4: return buf.readUInt32BE(off)
  }
  throw new Error("bad size")
}

// Read the value that starts at `off`. Returns {kind, start, end, ...}: scalars carry
// `value` (ints as BigInt), str and bin carry `data` (their payload bytes), maps and
// arrays carry `count` and `body` (the offset of their first element). Nested values are
// validated (structure, UTF-8 of every str) but not kept.
function scan(buf, off, depth = 0) {
  if (depth > MAX_DEPTH) throw new Invalid("msgpack nested too deeply")
  need(buf, off, 1)
  const b = buf[off]
  const start = off
  const str = (len, at) => {
    need(buf, at, len)
    const data = buf.subarray(at, at + len)
    try {
      utf8.decode(data)
    } catch {
      throw new Invalid("str is not valid UTF-8")
    }
    return { kind: "str", start, end: at + len, data }
  }
  const bin = (len, at) => {
    need(buf, at, len)
    return { kind: "bin", start, end: at + len, data: buf.subarray(at, at + len) }
  }
  const ext = (len, at) => {
    need(buf, at, 1 + len)
    return { kind: "ext", start, end: at + 1 + len }
  }
  const container = (kind, count, at) => {
    let p = at
    const n = kind === "map" ? count * 2 : count
    for (let i = 0; i < n; i++) p = scan(buf, p, depth + 1).end
    return { kind, start, end: p, count, body: at }
  }
  const int = (value, end) => ({ kind: "int", start, end, value })

  if (b <= 0x7f) return int(BigInt(b), off + 1)
  if (b >= 0xe0) return int(BigInt(b - 0x100), off + 1)
  if (b >= 0x80 && b <= 0x8f) return container("map", b & 0x0f, off + 1)
  if (b >= 0x90 && b <= 0x9f) return container("array", b & 0x0f, off + 1)
  if (b >= 0xa0 && b <= 0xbf) return str(b & 0x1f, off + 1)
  switch (b) {
    case 0xc0: return { kind: "nil", start, end: off + 1, value: null }
    case 0xc2: return { kind: "bool", start, end: off + 1, value: false }
    case 0xc3: return { kind: "bool", start, end: off + 1, value: true }
    case 0xc4: return bin(uint(buf, off + 1, 1), off + 2)
    case 0xc5: return bin(uint(buf, off + 1, 2), off + 3)
    case 0xc6: return bin(uint(buf, off + 1, 4), off + 5)
    case 0xc7: return ext(uint(buf, off + 1, 1), off + 2)
    case 0xc8: return ext(uint(buf, off + 1, 2), off + 3)
    case 0xc9: return ext(uint(buf, off + 1, 4), off + 5)
    case 0xca: need(buf, off + 1, 4); return { kind: "float", start, end: off + 5 }
    case 0xcb: need(buf, off + 1, 8); return { kind: "float", start, end: off + 9 }
    case 0xcc: need(buf, off + 1, 1); return int(BigInt(buf.readUInt8(off + 1)), off + 2)
    case 0xcd: need(buf, off + 1, 2); return int(BigInt(buf.readUInt16BE(off + 1)), off + 3)
    case 0xce: need(buf, off + 1, 4); return int(BigInt(buf.readUInt32BE(off + 1)), off + 5)
    case 0xcf: need(buf, off + 1, 8); return int(buf.readBigUInt64BE(off + 1), off + 9)
    case 0xd0: need(buf, off + 1, 1); return int(BigInt(buf.readInt8(off + 1)), off + 2)
    case 0xd1: need(buf, off + 1, 2); return int(BigInt(buf.readInt16BE(off + 1)), off + 3)
    case 0xd2: need(buf, off + 1, 4); return int(BigInt(buf.readInt32BE(off + 1)), off + 5)
    case 0xd3: need(buf, off + 1, 8); return int(buf.readBigInt64BE(off + 1), off + 9)
    case 0xd4: return ext(1, off + 1)
    case 0xd5: return ext(2, off + 1)
    case 0xd6: return ext(4, off + 1)
    case 0xd7: return ext(8, off + 1)
    case 0xd8: return ext(16, off + 1)
    case 0xd9: return str(uint(buf, off + 1, 1), off + 2)
    case 0xda: return str(uint(buf, off + 1, 2), off + 3)
    case 0xdb: return str(uint(buf, off + 1, 4), off + 5)
    case 0xdc: return container("array", uint(buf, off + 1, 2), off + 3)
    case 0xdd: return container("array", uint(buf, off + 1, 4), off + 5)
    case 0xde: return container("map", uint(buf, off + 1, 2), off + 3)
    case 0xdf: return container("map", uint(buf, off + 1, 4), off + 5)
  }
  throw new Invalid(`0x${b.toString(16)} is not a msgpack type`) // 0xc1
}

// Exactly one msgpack value filling the whole frame.
function scanFrame(buf) {
  const node = scan(buf, 0)
  if (node.end !== buf.length) throw new Invalid("trailing bytes after the msgpack value")
  return node
}

// The entries of a scanned map whose keys are str: a Map from key text to the value's
// node. A later duplicate key replaces an earlier one; non-str keys are ignored.
function strEntries(buf, mapNode) {
  const out = new Map()
  let p = mapNode.body
  for (let i = 0; i < mapNode.count; i++) {
    const key = scan(buf, p)
    const val = scan(buf, key.end)
    if (key.kind === "str") out.set(key.data.toString("utf8"), val)
    p = val.end
  }
  return out
}

// ------------------------------------------------------------------ the job

// An already-encoded msgpack value, returned as is.
class Raw {
  constructor(bytes) {
    this.bytes = bytes
  }
}

const INT64_MIN = -(2n ** 63n)
const UINT64_MAX = 2n ** 64n - 1n

// ZJP/1 names the JobFailed answer for a value that cannot be encoded "EncodeError".
class EncodeError extends Error {
  get name() {
    return "EncodeError"
  }
}

function encodeInt(n) {
  if (n < INT64_MIN || n > UINT64_MAX) throw new EncodeError(`integer ${n} does not fit in msgpack`)
  if (n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER)) {
    return Buffer.from(encode(Number(n)))
  }
  if (n > 0n) {
    const b = Buffer.alloc(9)
    b[0] = 0xcf
    b.writeBigUInt64BE(n, 1)
    return b
  }
  const b = Buffer.alloc(9)
  b[0] = 0xd3
  b.writeBigInt64BE(n, 1)
  return b
}

// The request arrives as its scanned node plus the frame's bytes.
function job(body, node) {
  if (node.kind === "int") return encodeInt(node.value * node.value)
  if (node.kind === "map") {
    const fail = strEntries(body, node).get("fail")
    if (fail !== undefined) {
      const text = fail.kind === "str" ? fail.data.toString("utf8") : describe(body, fail)
      throw new Error(text)
    }
  }
  return new Raw(body.subarray(node.start, node.end))
}

// The msgpack header of an array of `count` values.
function arrayHeader(count) {
  if (count < 16) return Buffer.from([0x90 | count])
  if (count < 0x10000) return Buffer.from([0xdc, count >> 8, count & 0xff])
  const b = Buffer.alloc(5)
  b[0] = 0xdd
  b.writeUInt32BE(count, 1)
  return b
}

// Run the job on one value; {body} with the encoded value, or {error} with the error map.
function runJob(body, node) {
  try {
    const result = job(body, node)
    return { body: result instanceof Raw ? result.bytes : result }
  } catch (err) {
    const cls = (err && err.name) || "Error"
    const text = err && err.message !== undefined ? err.message : String(err)
    return { error: { type: "JobFailed", message: `${cls}: ${text}`, exception: cls } }
  }
}

function describe(buf, node) {
  if (node.kind === "int" || node.kind === "bool") return String(node.value)
  if (node.kind === "nil") return "None"
  return buf.subarray(node.start, node.end).toString("hex")
}

// ------------------------------------------------------------------ requests

class Processor {
  constructor(name, batchMax = DEFAULT_BATCH_MAX) {
    this.name = name
    this.batchMax = batchMax
    this.instance = crypto.randomBytes(8).toString("hex")
    this.counters = { received: 0, ok: 0, failed: 0, badRequests: 0, dropped: 0, pongs: 0, batches: 0 }
  }

  // Decide the response to one multipart message: [topic, header, body] frames, or null.
  handle(frames) {
    this.counters.received++
    let header, fields
    try {
      header = scanFrame(frames[0])
      if (header.kind !== "map") throw new Invalid("header is not a map")
      fields = strEntries(frames[0], header)
    } catch (err) {
      if (!(err instanceof Invalid)) throw err
      return this.drop(`unreadable header: ${err.message}`)
    }
    const h = frames[0]
    const get = (key) => {
      const node = fields.get(key)
      return node === undefined || node.kind === "nil" ? undefined : node
    }

    // Where the answer goes.
    const replyTo = get("reply_to")
    let topic = Buffer.alloc(0)
    if (replyTo !== undefined) {
      if (replyTo.kind !== "str" && replyTo.kind !== "bin") return this.drop("reply_to is not str or bin")
      if (replyTo.data.length > 0 && replyTo.data[0] === 0x00) return this.drop("reply_to is a reserved topic")
      topic = Buffer.from(replyTo.data)
    }

    // What the answer echoes.
    const idNode = get("id")
    const idValid =
      idNode !== undefined &&
      (idNode.kind === "str" || idNode.kind === "bin") &&
      idNode.data.length >= 1 &&
      idNode.data.length <= 255
    const id = idValid ? h.subarray(idNode.start, idNode.end) : NIL
    const metaNode = get("meta")
    const meta = metaNode !== undefined && metaNode.kind === "map" ? h.subarray(metaNode.start, metaNode.end) : null

    const reply = (status, body = NIL, error = null, cached = false, extra = []) =>
      this.response(topic, id, meta, status, body, error, cached, extra)
    const bad = (type, message) => {
      if (type === "BadRequest") this.counters.badRequests++
      else this.counters.failed++
      return reply("error", NIL, { type, message })
    }

    // A batch is 3 frames, the last the raw tag; without the extension the frame count
    // alone refuses it.
    const isBatch = this.batchMax > 0 && frames.length === 3 && BATCH_TAG.equals(frames[2])
    if (frames.length !== 2 && !isBatch) return bad("BadRequest", `expected 2 frames, got ${frames.length}`)
    const v = get("v")
    if (v === undefined || v.kind !== "int" || v.value !== 1n) return bad("UnsupportedVersion", '"v" must be the int 1')
    if (!idValid) return bad("BadRequest", '"id" must be a str or bin of 1 to 255 bytes')
    const ping = get("ping")
    if (ping !== undefined && ping.kind !== "bool") return bad("BadRequest", '"ping" must be a bool')
    const deadline = get("deadline_ms")
    if (deadline !== undefined && deadline.kind !== "int") return bad("BadRequest", '"deadline_ms" must be an int')
    if (metaNode !== undefined && meta === null) return bad("BadRequest", '"meta" must be a map')

    if (ping !== undefined && ping.value) {
      if (isBatch) return bad("BadRequest", "a batch request cannot be a ping")
      this.counters.pongs++
      const advertised = this.batchMax > 0
        ? [encode("ext"), encode(["batch"]), encode("batch_max"), encode(this.batchMax)]
        : []
      return reply("pong", NIL, null, false, advertised)
    }

    let body
    try {
      body = scanFrame(frames[1])
    } catch (err) {
      if (!(err instanceof Invalid)) throw err
      return bad("BadRequest", `body: ${err.message}`)
    }
    if (isBatch) {
      if (body.kind !== "array") return bad("BadRequest", "a batch body is an array of items")
      if (body.count < 1 || body.count > this.batchMax) {
        return bad("BadRequest", `a batch holds 1 to ${this.batchMax} items, this one ${body.count}`)
      }
    }
    if (deadline !== undefined && BigInt(Date.now()) > deadline.value) {
      return bad("DeadlineExceeded", `deadline ${deadline.value} passed`)
    }
    if (isBatch) return this.batch(frames[1], body, deadline, reply)

    let out
    try {
      const result = job(frames[1], body)
      out = result instanceof Raw ? result.bytes : result
    } catch (err) {
      this.counters.failed++
      const cls = (err && err.name) || "Error"
      const text = err && err.message !== undefined ? err.message : String(err)
      return reply("error", NIL, { type: "JobFailed", message: `${cls}: ${text}`, exception: cls })
    }
    this.counters.ok++
    return reply("ok", out)
  }

  // Every item of a batch through the job, each as a request of its own; one response.
  batch(buf, arrayNode, deadline, reply) {
    this.counters.batches++
    this.counters.received += arrayNode.count - 1
    const bodies = []
    const errors = []
    let p = arrayNode.body
    for (let i = 0; i < arrayNode.count; i++) {
      const item = scan(buf, p)
      p = item.end
      let out
      if (deadline !== undefined && BigInt(Date.now()) > deadline.value) {
        out = { error: { type: "DeadlineExceeded", message: `deadline ${deadline.value} passed before item ${i}` } }
      } else {
        out = runJob(buf, item)
      }
      if (out.error !== undefined) {
        this.counters.failed++
        errors.push([i, out.error])
        bodies.push(NIL)
      } else {
        this.counters.ok++
        bodies.push(Buffer.from(out.body))
      }
    }
    const extra = errors.length > 0 ? [encode("errors"), encode(errors)] : []
    return reply("batch", Buffer.concat([arrayHeader(bodies.length), ...bodies]), null, false, extra)
  }

  drop(reason) {
    this.counters.dropped++
    process.stderr.write(`warning: dropped a request: ${reason}\n`)
    return null
  }

  // `extra`: further key and value encodings, appended to the header in pairs.
  response(topic, id, meta, status, body, error, cached, extra = []) {
    const parts = [
      encode("v"), encode(1),
      encode("id"), id,
      encode("status"), encode(status),
      encode("cached"), encode(cached),
      encode("processor"), encode(this.name),
      encode("instance"), encode(this.instance),
    ]
    let count = 6
    if (error !== null) {
      parts.push(encode("error"), encode(error))
      count++
    }
    if (meta !== null) {
      parts.push(encode("meta"), meta)
      count++
    }
    parts.push(...extra)
    count += extra.length / 2
    const header = Buffer.concat([Buffer.from([0x80 | count]), ...parts.map((p) => Buffer.from(p))])
    return [topic, header, body]
  }
}

// ------------------------------------------------------------------ main

function parseArgs(argv) {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const opts = { name: "node", batchMax: String(DEFAULT_BATCH_MAX) }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const key = { "--requests": "requests", "--responses": "responses", "--name": "name", "--batch-max": "batchMax" }[a]
    if (key === undefined || i + 1 >= argv.length) usage(`bad argument: ${a}`)
    opts[key] = argv[++i]
  }
  if (!opts.requests || !opts.responses) usage("--requests and --responses are required")
  if (!/^[0-9]+$/.test(opts.batchMax)) usage("--batch-max takes a count (0: no batches)")
  opts.batchMax = Number(opts.batchMax)
  return opts
}

const USAGE = "usage: node processor.js --requests EP --responses EP [--name NAME] [--batch-max N]\n"

function usage(msg) {
  process.stderr.write(`processor.js: ${msg}\n${USAGE}`)
  process.exit(2)
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const pull = new zmq.Pull({ maxMessageSize: MAX_MESSAGE_SIZE, linger: 0 })
  const pub = new zmq.Publisher({ linger: 100 })
  try {
    await pull.bind(opts.requests)
    await pub.bind(opts.responses)
  } catch (err) {
    process.stderr.write(`processor.js: cannot bind: ${err.message}\n`)
    process.exit(1)
  }
  const proc = new Processor(opts.name, opts.batchMax)
  process.stdout.write(`listening requests=${pull.lastEndpoint} responses=${pub.lastEndpoint} name=${opts.name}\n`)

  let stopping = false
  const stop = () => {
    if (stopping) return
    stopping = true
    pull.close()
    pub.close()
    process.exit(0)
  }
  process.on("SIGTERM", stop)
  process.on("SIGINT", stop)

  while (!stopping) {
    let frames
    try {
      frames = await pull.receive()
    } catch (err) {
      if (stopping) break
      throw err
    }
    let answer = null
    try {
      answer = proc.handle(frames)
    } catch (err) {
      // never stop serving because of what came in
      process.stderr.write(`error: ${err && err.stack}\n`)
    }
    if (answer !== null) await pub.send(answer)
  }
}

main().catch((err) => {
  process.stderr.write(`processor.js: ${err && err.stack}\n`)
  process.exit(1)
})
