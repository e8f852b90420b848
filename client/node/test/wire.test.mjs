// Framing and codec without sockets: frames cut anywhere, garbage refused, headers formatted.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as flatbuffers from 'flatbuffers';

import { FrameEncoder, decodeReply } from '../dist/codec.js';
import { FrameReader, MAX_FRAME_BYTES } from '../dist/framing.js';
import { Body, Frame } from '../dist/generated/ratelimit_generated.js';
import {
  policyItem,
  rateLimitField,
  rateLimitPolicyField,
  retryAfterSeconds,
} from '../dist/headers.js';
import { RateLimitProtocolError, RATELIMIT_HEADERS_DRAFT } from '../dist/index.js';
import {
  checkResponseFrame,
  errorResponseFrame,
  pingResponseFrame,
  rawFrame,
} from './helpers/fake_sidecar.mjs';

// Everything `reader` hands out for `chunks`, as copies.
function feedAll(reader, chunks) {
  const frames = [];
  for (const chunk of chunks) reader.feed(chunk, (payload) => frames.push(Buffer.from(payload)));
  return frames;
}

describe('FrameReader', () => {
  const stream = Buffer.concat([
    checkResponseFrame(1, { limit: 10 }),
    pingResponseFrame(2),
    checkResponseFrame(3, { limit: 30, remaining: 7 }),
  ]);
  const whole = feedAll(new FrameReader(), [stream]);

  test('hands out every frame of a chunk holding several', () => {
    assert.equal(whole.length, 3);
    assert.deepEqual(
      whole.map((payload) => decodeReply(payload).id),
      [1, 2, 3],
    );
  });

  test('gives the same frames for the stream cut at every offset, and byte by byte', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const frames = feedAll(new FrameReader(), [stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(frames, whole, `cut at ${cut}`);
    }
    const bytes = [...stream].map((byte) => Buffer.from([byte]));
    assert.deepEqual(feedAll(new FrameReader(), bytes), whole);
  });

  test('refuses a length of 0 and one above the cap, even before the payload arrives', () => {
    for (const length of [0, MAX_FRAME_BYTES + 1, 0xffffffff]) {
      assert.throws(() => feedAll(new FrameReader(), [rawFrame(length)]), RateLimitProtocolError);
      // The same when the prefix itself comes in pieces.
      const prefix = rawFrame(length);
      assert.throws(
        () => feedAll(new FrameReader(), [prefix.subarray(0, 1), prefix.subarray(1)]),
        RateLimitProtocolError,
      );
    }
    assert.doesNotThrow(() => feedAll(new FrameReader(), [rawFrame(MAX_FRAME_BYTES)]));
  });
});

describe('decodeReply', () => {
  test('reads a CheckResponse, a PingResponse and an ErrorResponse', () => {
    const check = decodeReply(
      checkResponseFrame(7, {
        allowed: false,
        limit: 5,
        remaining: 1,
        retryAfterMs: 9,
        resetAfterMs: 11,
        source: 2,
      }).subarray(4),
    );
    assert.deepEqual(check, {
      kind: 'check',
      id: 7,
      status: 'Ok',
      result: {
        allowed: false,
        limit: 5,
        remaining: 1,
        retryAfterMs: 9,
        resetAfterMs: 11,
        source: 'database',
      },
    });
    assert.deepEqual(decodeReply(pingResponseFrame(8).subarray(4)), {
      kind: 'ping',
      id: 8,
      ping: { protocolVersion: 1, store: 'fake', ready: true },
    });
    assert.deepEqual(decodeReply(errorResponseFrame(0, 4, 'too many').subarray(4)), {
      kind: 'error',
      id: 0,
      status: 'Overloaded',
      message: 'too many',
    });
  });

  test('reads statuses and sources of a newer schema as the C++ client does', () => {
    const reply = decodeReply(checkResponseFrame(1, { status: 200, source: 99 }).subarray(4));
    assert.equal(reply.status, 'StoreUnavailable');
    assert.equal(reply.result.source, 'fallback');
  });

  test('refuses every truncation of a valid answer', () => {
    for (const frame of [
      checkResponseFrame(3, { limit: 1 }),
      errorResponseFrame(3, 1, 'message'),
    ]) {
      const payload = frame.subarray(4);
      for (let length = 0; length < payload.length; length++) {
        assert.throws(
          () => decodeReply(payload.subarray(0, length)),
          RateLimitProtocolError,
          `length ${length}`,
        );
      }
    }
  });

  test('random garbage: RateLimitProtocolError or a well-formed reply, never a crash', () => {
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 0xff;
    for (let i = 0; i < 5000; i++) {
      const payload = Buffer.from(Array.from({ length: 1 + (i % 64) }, random));
      try {
        const reply = decodeReply(payload);
        assert.ok(['check', 'ping', 'error'].includes(reply.kind));
      } catch (error) {
        assert.ok(error instanceof RateLimitProtocolError, String(error));
      }
    }
  });

  test('refuses a request, a frame without body and an unknown body type', () => {
    const encoder = new FrameEncoder();
    assert.throws(() => decodeReply(encoder.ping(1).subarray(4)), /body type 3/);
    assert.throws(
      () => decodeReply(encoder.check(1, Buffer.from('k'), 1, 0, 0).subarray(4)),
      /body type 1/,
    );
    // A body type with no body table.
    const builder = new flatbuffers.Builder(64);
    builder.finish(Frame.createFrame(builder, 1n, Body.CheckResponse, 0));
    assert.throws(() => decodeReply(builder.asUint8Array()), /without a body/);
    // A frame whose body offset points outside the buffer.
    const bad = Buffer.from(checkResponseFrame(1).subarray(4));
    bad.writeUInt32LE(0x7fffffff, 0);
    assert.throws(() => decodeReply(bad), RateLimitProtocolError);
  });
});

describe('FrameEncoder', () => {
  test('writes size-prefixed frames a reader reads back', () => {
    const encoder = new FrameEncoder();
    const first = encoder.check(1, Buffer.from('key'), 0, 10, 1000);
    const second = encoder.ping(2); // Reuses the builder: the first frame must be unaffected.
    assert.equal(first.readUInt32LE(0), first.length - 4);
    assert.equal(second.readUInt32LE(0), second.length - 4);
    assert.deepEqual(feedAll(new FrameReader(), [Buffer.concat([first, second])]).length, 2);
  });
});

describe('RateLimit header fields', () => {
  test(`follow ${RATELIMIT_HEADERS_DRAFT}`, () => {
    assert.equal(RATELIMIT_HEADERS_DRAFT, 'draft-ietf-httpapi-ratelimit-headers-08');
    const item = policyItem('default');
    assert.equal(rateLimitPolicyField(item, 100, 60_000), '"default";q=100;w=60');
    assert.equal(rateLimitPolicyField(item, 100, 1_500), '"default";q=100;w=2');
    assert.equal(rateLimitPolicyField(item, 100, 0), '"default";q=100');
    assert.equal(rateLimitField(item, 42, 30), '"default";r=42;t=30');
    assert.equal(policyItem('a "b" \\c'), '"a \\"b\\" \\\\c"');
    assert.throws(() => policyItem('caf\u00e9'), TypeError);
  });

  test('Retry-After is whole seconds, rounded up, at least 1', () => {
    assert.deepEqual([0, 1, 999, 1000, 1001, 59_999].map(retryAfterSeconds), [1, 1, 1, 1, 2, 60]);
  });
});
