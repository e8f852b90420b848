// Fake sidecar: a scripted Unix-socket server, for orders and faults a real one never shows.
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';

import * as flatbuffers from 'flatbuffers';

import { FrameReader } from '../../dist/framing.js';
import {
  Body,
  CheckRequest,
  CheckResponse,
  ErrorResponse,
  Frame,
  PingResponse,
  Status,
} from '../../dist/generated/ratelimit_generated.js';
import { makeTempDir, removeTempDir } from './sidecar.mjs';

// Starts a server; `onConnection(socket, requests)` is called per connection, where `requests`
// is an async iterator of the requests read from it: { id, kind, key, cost, limit, windowMs }.
export async function startFakeSidecar(onConnection) {
  const dir = makeTempDir('rl-fake-');
  const socketPath = join(dir, 'fake.sock');
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // The client may go away at any moment; that is the point.
    onConnection(socket, requestsOf(socket));
  });
  server.listen(socketPath);
  await once(server, 'listening');
  return {
    socketPath,
    connections: () => sockets.size,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
      removeTempDir(dir);
    },
  };
}

// Leaving the iteration early leaves the socket open, unlike a socket's own async iterator.
function requestsOf(socket) {
  const reader = new FrameReader();
  const queue = [];
  let ended = false;
  let wake = () => {};
  socket.on('data', (chunk) => {
    reader.feed(chunk, (payload) => queue.push(readRequest(payload)));
    wake();
  });
  socket.on('close', () => {
    ended = true;
    wake();
  });
  return (async function* () {
    while (true) {
      while (queue.length > 0) yield queue.shift();
      if (ended) return;
      await new Promise((resolve) => (wake = resolve));
    }
  })();
}

function readRequest(payload) {
  const frame = Frame.getRootAsFrame(new flatbuffers.ByteBuffer(new Uint8Array(payload)));
  const id = frame.id();
  if (frame.bodyType() !== Body.CheckRequest) return { id, kind: Body[frame.bodyType()] };
  const check = frame.body(new CheckRequest());
  return {
    id,
    kind: 'CheckRequest',
    key: check.key(),
    cost: check.cost(),
    limit: check.limit(),
    windowMs: check.windowMs(),
  };
}

function finish(builder, id, type, body) {
  Frame.finishSizePrefixedFrameBuffer(builder, Frame.createFrame(builder, BigInt(id), type, body));
  return Buffer.from(builder.asUint8Array());
}

// A CheckResponse frame; fields default to an allowed check from memory.
export function checkResponseFrame(id, fields = {}) {
  const f = {
    allowed: true,
    status: Status.Ok,
    limit: 0,
    remaining: 0,
    retryAfterMs: 0,
    resetAfterMs: 0,
    source: 0,
    ...fields,
  };
  const b = new flatbuffers.Builder(64);
  CheckResponse.startCheckResponse(b);
  CheckResponse.addAllowed(b, f.allowed);
  CheckResponse.addStatus(b, f.status);
  CheckResponse.addLimit(b, f.limit);
  CheckResponse.addRemaining(b, f.remaining);
  CheckResponse.addRetryAfterMs(b, f.retryAfterMs);
  CheckResponse.addResetAfterMs(b, f.resetAfterMs);
  CheckResponse.addSource(b, f.source);
  return finish(b, id, Body.CheckResponse, CheckResponse.endCheckResponse(b));
}

export function pingResponseFrame(id) {
  const b = new flatbuffers.Builder(64);
  const store = b.createString('fake');
  return finish(b, id, Body.PingResponse, PingResponse.createPingResponse(b, 1, store, true));
}

export function errorResponseFrame(id, status, message) {
  const b = new flatbuffers.Builder(64);
  const text = b.createString(message);
  return finish(b, id, Body.ErrorResponse, ErrorResponse.createErrorResponse(b, status, text));
}

// A length prefix for `length` bytes, followed by `body`.
export function rawFrame(length, body = Buffer.alloc(0)) {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32LE(length);
  return Buffer.concat([prefix, body]);
}
