#!/usr/bin/env node
'use strict';
// Node.js consumer: the same program as the Python marketplace-consumer
// (clients/consumer.py), with the same flags, scenario checks, retries,
// log messages and output lines. It loads the .proto at run time.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const args = require('./lib/args');
const log = require('./lib/log');
const scenarioModule = require('./lib/scenario');
const {
  CODE_NAMES,
  GaveUp,
  Stopped,
  StopSignal,
  call,
  moveAll,
  newRequestId,
  retryPolicy,
} = require('./lib/retry');

const PROG = 'marketplace-consumer-node';
const EXIT_FAILED = 1;
const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'marketplace/v1/marketplace.proto';

// Trailing metadata key the server sets on FAILED_PRECONDITION for a cart.
const REASON_KEY = 'marketplace-reason';

// A cart that was lost (the server restarted) or expired is filled again
// from the start, at most this many times before the consumer fails.
const MAX_CART_RESTARTS = 10;

// Field names as in the .proto, 64-bit integers as decimal strings (a
// Number would round them), and for a oneof the name of the field set.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

function loadService() {
  const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
  const { MarketService } = grpc.loadPackageDefinition(definition).marketplace.v1;
  return { definition, MarketService };
}

/** Python's format(x, 'g'): 6 significant digits, no trailing zeros. */
function formatG(x) {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [mantissa, exponentText] = x.toExponential(5).split('e');
  const exponent = Number(exponentText);
  const strip = (text) => (text.includes('.') ? text.replace(/\.?0+$/, '') : text);
  if (exponent < -4 || exponent >= 6) {
    const sign = exponent < 0 ? '-' : '+';
    return `${strip(mantissa)}e${sign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  return strip(x.toFixed(5 - exponent));
}

// Whole output lines, written at once so that the lines of concurrent
// consumers never interleave.
function writeLines(lines) {
  if (lines.length) process.stdout.write(lines.map((line) => line + '\n').join(''));
}

/** Return why a cart is gone for good, or null for other errors. */
function cartLostReason(error) {
  if (error.code === grpc.status.NOT_FOUND) {
    return 'is unknown to the server, which may have restarted';
  }
  if (error.code === grpc.status.FAILED_PRECONDITION && error.metadata) {
    const [reason] = error.metadata.get(REASON_KEY);
    if (reason === 'CART_EXPIRED') return 'expired, and its items went back to their shelves';
  }
  return null;
}

function isRpcError(error) {
  return error && typeof error.code === 'number' && 'details' in error && 'metadata' in error;
}

async function add(client, policy, stop, cartId, label, operation) {
  const description = `cart ${label} add ${operation.productId}`;
  const attempt = async (remaining) => {
    const request = {
      request_id: newRequestId(),
      cart_id: cartId,
      product_id: operation.productId,
      quantity: String(remaining),
    };
    const response = await call(client, 'AddToCart', request, policy, stop, description);
    return Number(response.added);
  };
  await moveAll(attempt, operation.quantity, policy, stop, description);
}

async function remove(client, policy, stop, name, cartId, label, operation) {
  const request = {
    request_id: newRequestId(),
    cart_id: cartId,
    product_id: operation.productId,
    quantity: String(operation.quantity),
  };
  const description = `cart ${label} remove ${operation.productId}`;
  const response = await call(client, 'RemoveFromCart', request, policy, stop, description);
  const missing = Number(response.missing);
  if (missing) {
    // Waiting cannot put an item into the cart, so this is not retried.
    log.warning(
      `consumer ${name}, cart ${label}: could not remove ${missing} of ` +
        `${operation.quantity} ${operation.productId}, the cart did not hold them`,
    );
  }
}

/** Create a cart, run its operations, place the order; return the lines. */
async function runCart(client, policy, stop, name, operations) {
  const created = await call(
    client,
    'CreateCart',
    { request_id: newRequestId(), consumer: name },
    policy,
    stop,
    `consumer ${name} create cart`,
  );
  const cartId = created.cart_id;
  const label = created.cart_label;

  for (const operation of operations) {
    if (operation.quantity === 0) continue;
    if (operation.kind === 'add') {
      await add(client, policy, stop, cartId, label, operation);
    } else {
      await remove(client, policy, stop, name, cartId, label, operation);
    }
  }

  const order = await call(
    client,
    'PlaceOrder',
    { request_id: newRequestId(), cart_id: cartId },
    policy,
    stop,
    `consumer ${name} place order for cart ${label}`,
  );
  const lines = [];
  for (const line of order.lines) {
    const text = `${name} bought ${scenarioModule.renderProduct(line.product)}`;
    for (let i = 0; i < Number(line.quantity); i += 1) lines.push(text);
  }
  log.info(`cart ${label} ordered: ${lines.length} items`);
  return lines;
}

/** Run every cart of consumer `name`: add, remove, place order, print. */
async function runConsumer(client, scenario, name, timeScale, retryDeadline, stop) {
  const spec = scenario.consumer(name);
  const policy = retryPolicy(spec.retryWaitTime * timeScale, retryDeadline);
  for (const operations of spec.carts) {
    let restarts = 0;
    let lines;
    for (;;) {
      try {
        lines = await runCart(client, policy, stop, name, operations);
        break;
      } catch (error) {
        const reason = isRpcError(error) ? cartLostReason(error) : null;
        if (reason === null || restarts >= MAX_CART_RESTARTS) throw error;
        restarts += 1;
        log.warning(
          `consumer ${name}: cart ${reason}; filling a new cart from the start ` +
            `(${restarts} of ${MAX_CART_RESTARTS})`,
        );
      }
    }
    writeLines(lines);
  }
}

/** Run `runOne(name)` for every name concurrently; return the exit status. */
async function runClients(names, runOne) {
  let failed = false;
  await Promise.all(
    names.map(async (name) => {
      try {
        await runOne(name);
      } catch (error) {
        if (error instanceof Stopped) return;
        failed = true;
        if (error instanceof GaveUp) {
          log.error(`${name} gave up: ${error.message}`);
        } else if (isRpcError(error)) {
          log.error(`${name} failed: ${CODE_NAMES[error.code]}: ${error.details}`);
        } else {
          log.error(`${name} failed\n${error.stack || error}`);
        }
      }
    }),
  );
  return failed ? EXIT_FAILED : 0;
}

function waitForReady(client, seconds) {
  return new Promise((resolve) => {
    client.waitForReady(Date.now() + seconds * 1000, (error) => resolve(!error));
  });
}

async function main(argv) {
  const options = args.parse(
    argv,
    PROG,
    'Run consumers of a scenario: fill and order each of their carts and print ' +
      'one line per item bought.',
  );
  log.configure(options.logLevel, PROG);

  let scenario;
  try {
    scenario = scenarioModule.load(options.scenario);
  } catch (error) {
    if (!(error instanceof scenarioModule.ScenarioError)) throw error;
    process.stderr.write(`invalid scenario: ${error.message}\n`);
    return scenarioModule.EXIT_INVALID_SCENARIO;
  }
  try {
    for (const name of options.name) scenario.consumer(name);
  } catch (error) {
    if (!(error instanceof scenarioModule.ScenarioError)) throw error;
    process.stderr.write(`invalid --name: ${error.message}\n`);
    return scenarioModule.EXIT_INVALID_SCENARIO;
  }

  const stop = new StopSignal();
  process.on('SIGINT', () => stop.set());
  process.on('SIGTERM', () => stop.set());

  const { MarketService } = loadService();
  const client = new MarketService(options.server, grpc.credentials.createInsecure());
  try {
    if (!(await waitForReady(client, options.connectTimeout))) {
      process.stderr.write(
        `cannot reach the market server at ${options.server} within ` +
          `${formatG(options.connectTimeout)} s; check that marketplace-server runs ` +
          'there and that --server is right\n',
      );
      return EXIT_FAILED;
    }
    return await runClients(options.name, (name) =>
      runConsumer(client, scenario, name, options.timeScale, options.retryDeadline, stop),
    );
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (status) => {
      process.exitCode = status;
      // Open timers or a reconnecting channel must not keep the process up.
      process.stdout.write('', () => process.exit(status));
    },
    (error) => {
      process.stderr.write(`${PROG}: ${error.stack || error}\n`);
      process.exit(EXIT_FAILED);
    },
  );
}

module.exports = { LOADER_OPTIONS, PROTO_FILE, formatG, loadService };
