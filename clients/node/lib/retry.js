'use strict';
// The retry loop of the Python clients (clients/retry.py): refusals wait a
// fixed time, transport failures back off exponentially with full jitter
// and resend the same request, so its request_id lets the server apply it
// once.

const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const log = require('./log');

// Codes after which a call may not have been applied, or was rejected only
// for now; retrying with the same request id is safe.
const RETRYABLE_CODES = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
]);

const CODE_NAMES = Object.fromEntries(
  Object.entries(grpc.status).map(([name, code]) => [code, name]),
);

const MAX_TIMER_MS = 2 ** 31 - 1;

/** The client was asked to stop while it waited or retried. */
class Stopped extends Error {}

/** Transport failures lasted longer than the retry deadline. */
class GaveUp extends Error {}

/** Set by SIGINT or SIGTERM; wait() sleeps until a timeout or the stop. */
class StopSignal {
  constructor() {
    this.isSet = false;
    this.wakers = new Set();
  }

  set() {
    this.isSet = true;
    for (const wake of this.wakers) wake();
    this.wakers.clear();
  }

  /** Sleep `seconds`; resolve true when stopped first, like Event.wait. */
  wait(seconds) {
    if (this.isSet) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer;
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      // setTimeout fires at once for delays above about 24.8 days, so a
      // longer wait is slept in pieces.
      const end = performance.now() + Math.max(0, seconds * 1000);
      const arm = () => {
        const left = end - performance.now();
        if (left <= 0) {
          this.wakers.delete(wake);
          resolve(false);
          return;
        }
        timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
      };
      this.wakers.add(wake);
      arm();
    });
  }
}

/**
 * Return how a client waits after refusals and retries transport failures.
 * All times are in seconds, and the defaults are those of the Python clients.
 */
function retryPolicy(refusalWait, deadline) {
  return {
    refusalWait,
    initialBackoff: 0.05,
    maxBackoff: 2.0,
    multiplier: 2.0,
    deadline,
    callTimeout: 10.0,
  };
}

function newRequestId() {
  return crypto.randomUUID().replace(/-/g, '');
}

/** Python's format(x, '.0f'): ties round to even. */
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff === 0.5) return floor % 2 === 0 ? floor : floor + 1;
  return Math.round(x);
}

function unary(client, method, request, timeout) {
  return new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata({ waitForReady: true });
    const options = { deadline: Date.now() + timeout * 1000 };
    client[method](request, metadata, options, (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

/**
 * Make a unary call, retrying transport failures with back-off. The request
 * is sent unchanged on every attempt, and `description` names the call in
 * messages. Throws Stopped when `stop` is set, GaveUp after
 * `policy.deadline` seconds of failures, and the gRPC error for a status
 * that retrying cannot fix.
 */
async function call(client, method, request, policy, stop, description) {
  let backoff = policy.initialBackoff;
  let firstFailure = null;
  for (;;) {
    if (stop.isSet) throw new Stopped(description);
    try {
      return await unary(client, method, request, policy.callTimeout);
    } catch (error) {
      if (!RETRYABLE_CODES.has(error.code)) throw error;
      const codeName = CODE_NAMES[error.code];
      const now = performance.now() / 1000;
      if (firstFailure === null) firstFailure = now;
      if (now - firstFailure > policy.deadline) {
        throw new GaveUp(
          `${description} failed for ${roundHalfEven(policy.deadline)} s, last with ` +
            `${codeName}: ${error.details}`,
        );
      }
      const sleep = Math.random() * backoff;
      log.debug(`${description} failed with ${codeName}; retrying in ${sleep.toFixed(3)} s`);
      if (await stop.wait(sleep)) throw new Stopped(description);
      backoff = Math.min(backoff * policy.multiplier, policy.maxBackoff);
    }
  }
}

/**
 * Call `attempt(remaining)` until it has moved `quantity` items in all;
 * after an attempt that moved fewer than requested, wait
 * `policy.refusalWait` before the next one.
 */
async function moveAll(attempt, quantity, policy, stop, description) {
  let remaining = quantity;
  while (remaining > 0) {
    remaining -= await attempt(remaining);
    if (remaining > 0) {
      log.debug(
        `${description}: ${remaining} still to move; waiting ${policy.refusalWait.toFixed(3)} s`,
      );
      if (await stop.wait(policy.refusalWait)) throw new Stopped(description);
    }
  }
}

module.exports = {
  CODE_NAMES,
  GaveUp,
  Stopped,
  StopSignal,
  call,
  moveAll,
  newRequestId,
  retryPolicy,
};
