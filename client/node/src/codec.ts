// Codec: request frames built and answer frames read with the code flatc generates from the schema.
import * as flatbuffers from 'flatbuffers';

import { RateLimitProtocolError, WireStatus } from './errors';
import {
  Body,
  CheckRequest,
  CheckResponse,
  ErrorResponse,
  Frame,
  PingRequest,
  PingResponse,
  Source,
  Status,
} from './generated/ratelimit_generated';
import { CheckResult, DecisionSource, PingResult } from './types';
import { BufferVerifier, VerifiedTable } from './verifier';

// One answer frame from the sidecar. A CheckResponse's fields are a decision only when its
// status is Ok.
export type Reply =
  | {
      readonly kind: 'check';
      readonly id: number;
      readonly status: WireStatus;
      readonly result: CheckResult;
    }
  | { readonly kind: 'ping'; readonly id: number; readonly ping: PingResult }
  | {
      readonly kind: 'error';
      readonly id: number;
      readonly status: WireStatus;
      readonly message: string;
    };

// Field sizes of the tables read below, by slot, as declared in schema/ratelimit.fbs.
const FRAME_ID = { slot: 0, size: 8 };
const FRAME_BODY_TYPE = { slot: 1, size: 1 };
const FRAME_BODY_SLOT = 2;
const CHECK_RESPONSE_SCALAR_SIZES = [1, 1, 4, 4, 4, 4, 1]; // allowed .. source
const PING_RESPONSE = { versionSlot: 0, versionSize: 2, storeSlot: 1, readySlot: 2 };
const ERROR_RESPONSE = { statusSlot: 0, messageSlot: 1 };
// Ids this client sends stay far below 2^53; anything larger is not an answer to it.
const MAX_ID = BigInt(Number.MAX_SAFE_INTEGER);

// Builds request frames, size prefix included. Reuses one FlatBuffers builder.
// Thread-safety: none needed; one per client.
export class FrameEncoder {
  private readonly builder = new flatbuffers.Builder(1024);

  // REQUIRES: arguments already validated (key 1..512 bytes, integers within uint32).
  check(id: number, key: Uint8Array, cost: number, limit: number, windowMs: number): Buffer {
    const b = this.builder;
    b.clear();
    const keyOffset = b.createString(key);
    const body = CheckRequest.createCheckRequest(b, keyOffset, cost, limit, windowMs);
    return this.finish(id, Body.CheckRequest, body);
  }

  ping(id: number): Buffer {
    const b = this.builder;
    b.clear();
    PingRequest.startPingRequest(b);
    return this.finish(id, Body.PingRequest, PingRequest.endPingRequest(b));
  }

  private finish(id: number, type: Body, body: flatbuffers.Offset): Buffer {
    const b = this.builder;
    Frame.finishSizePrefixedFrameBuffer(b, Frame.createFrame(b, BigInt(id), type, body));
    // A copy: the builder's memory is overwritten by the next frame while this one waits.
    return Buffer.from(b.asUint8Array());
  }
}

// Reads one answer frame's payload (without size prefix). Throws RateLimitProtocolError for
// anything malformed or anything that is not an answer.
export function decodeReply(payload: Uint8Array): Reply {
  const verifier = new BufferVerifier(payload);
  const root = verifier.root();
  verifier.scalar(root, FRAME_ID.slot, FRAME_ID.size);
  verifier.scalar(root, FRAME_BODY_TYPE.slot, FRAME_BODY_TYPE.size);
  const body = verifier.tableField(root, FRAME_BODY_SLOT);

  const frame = Frame.getRootAsFrame(new flatbuffers.ByteBuffer(payload));
  const id = replyId(frame.id());
  const type = frame.bodyType();
  // A union whose type is set but whose table is absent is as unreadable as an unknown type.
  if (body === null) throw new RateLimitProtocolError(`sidecar sent a frame without a body`);
  switch (type) {
    case Body.CheckResponse:
      return readCheck(verifier, body, frame, id);
    case Body.PingResponse:
      return { kind: 'ping', id, ping: readPing(verifier, body, frame) };
    case Body.ErrorResponse: {
      verifier.scalar(body, ERROR_RESPONSE.statusSlot, 1);
      verifier.string(body, ERROR_RESPONSE.messageSlot);
      const error = frame.body(new ErrorResponse()) as ErrorResponse;
      return {
        kind: 'error',
        id,
        status: wireStatus(error.status()),
        message: error.message() ?? '',
      };
    }
    default:
      throw new RateLimitProtocolError(`sidecar sent a frame with body type ${type}`);
  }
}

function readCheck(
  verifier: BufferVerifier,
  table: VerifiedTable,
  frame: Frame,
  id: number,
): Reply & { kind: 'check' } {
  for (let slot = 0; slot < CHECK_RESPONSE_SCALAR_SIZES.length; slot++) {
    verifier.scalar(table, slot, CHECK_RESPONSE_SCALAR_SIZES[slot]!);
  }
  const r = frame.body(new CheckResponse()) as CheckResponse;
  return {
    kind: 'check',
    id,
    status: wireStatus(r.status()),
    result: {
      allowed: r.allowed(),
      limit: r.limit(),
      remaining: r.remaining(),
      retryAfterMs: r.retryAfterMs(),
      resetAfterMs: r.resetAfterMs(),
      source: decisionSource(r.source()),
    },
  };
}

function readPing(verifier: BufferVerifier, table: VerifiedTable, frame: Frame): PingResult {
  verifier.scalar(table, PING_RESPONSE.versionSlot, PING_RESPONSE.versionSize);
  verifier.string(table, PING_RESPONSE.storeSlot);
  verifier.scalar(table, PING_RESPONSE.readySlot, 1);
  const p = frame.body(new PingResponse()) as PingResponse;
  return { protocolVersion: p.protocolVersion(), store: p.store() ?? '', ready: p.ready() };
}

function replyId(id: bigint): number {
  if (id > MAX_ID) {
    throw new RateLimitProtocolError(`sidecar sent a frame with id ${id}, never sent`);
  }
  return Number(id);
}

// A Status this client does not know (from a newer sidecar) reads as StoreUnavailable, and a
// Source as fallback, the same reading as the C++ client: the schema only grows.
function wireStatus(status: Status): WireStatus {
  return (Status[status] as WireStatus | undefined) ?? 'StoreUnavailable';
}

function decisionSource(source: Source): DecisionSource {
  const name = Source[source] as string | undefined;
  return name === undefined ? 'fallback' : (name.toLowerCase() as DecisionSource);
}
