'use strict';
// Load and validate scenario files, and render products as purchase lines,
// with the rules and messages of the Python clients (clients/scenario.py).
// The Python program is the reference: tests/test_node_consumer.py runs both
// on the same files and compares what they print.

const fs = require('node:fs');
const pyjson = require('./pyjson');
const { repr, reprString, reprFloat, str, isBlank, pyLen, isIdentifier } = require('./pyrepr');

const EXIT_INVALID_SCENARIO = 2;

// The market's default limits, as in marketplace_server/core.py. A scenario
// that breaks one fails validation here instead of failing mid-run.
const LIMITS = {
  quantity: 1000000n,
  name: 128,
  productName: 256,
  kind: 64,
  attributeKey: 64,
  stringValue: 1024,
  attributes: 64,
  priceUnits: 10n ** 15n,
};

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A malformed scenario; the message names file, JSON path and problem. */
class ScenarioError extends Error {
  constructor(file, path, problem) {
    super(`${file}: ${path}: ${problem}`);
  }
}

// The texts of Python's OSError.strerror (glibc's) for the common errors
// of reading a file.
const STRERROR = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  EMFILE: 'Too many open files',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
};

/**
 * Decode UTF-8 strictly; on an error return Python's reason for it
 * ("invalid start byte", "invalid continuation byte" or "unexpected end of
 * data") instead of the text.
 */
function decodeUtf8(bytes) {
  for (let i = 0; i < bytes.length; ) {
    const lead = bytes[i];
    let need;
    let low = 0x80;
    let high = 0xbf;
    if (lead < 0x80) {
      i += 1;
      continue;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      need = 1;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      need = 2;
      if (lead === 0xe0) low = 0xa0; // overlong
      if (lead === 0xed) high = 0x9f; // surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      need = 3;
      if (lead === 0xf0) low = 0x90; // overlong
      if (lead === 0xf4) high = 0x8f; // above U+10FFFF
    } else {
      return { reason: 'invalid start byte' };
    }
    for (let k = 1; k <= need; k += 1) {
      if (i + k >= bytes.length) return { reason: 'unexpected end of data' };
      const byte = bytes[i + k];
      const [min, max] = k === 1 ? [low, high] : [0x80, 0xbf];
      if (byte < min || byte > max) return { reason: 'invalid continuation byte' };
    }
    i += need + 1;
  }
  return { text: Buffer.from(bytes).toString('utf8') };
}

function isNumber(value) {
  return typeof value === 'bigint' || typeof value === 'number';
}

function isFinite(value) {
  return typeof value === 'bigint' || Number.isFinite(value);
}

/** Python's _describe: the JSON kind and up to 40 characters of the value. */
function describe(value) {
  let text = Array.from(pyjson.dumps(value));
  if (text.length > 40) text = [...text.slice(0, 37), '...'];
  let kind = 'number';
  if (value instanceof Map) kind = 'object';
  else if (Array.isArray(value)) kind = 'list';
  else if (typeof value === 'string') kind = 'string';
  else if (typeof value === 'boolean') kind = 'boolean';
  else if (value === null) kind = 'null';
  return `${kind} ${text.join('')}`;
}

function keyPath(key) {
  return isIdentifier(key) ? `.${key}` : `[${pyjson.dumps(key)}]`;
}

/**
 * Return the whole part and the fraction digits (no trailing zeros) of a
 * price, as in Python's Decimal(repr(value)) or Decimal(value).
 */
function decimalParts(value) {
  if (typeof value === 'bigint') return { units: value, fraction: '' };
  const [mantissa, exponentText = '0'] = reprFloat(value).split('e');
  const [whole, fraction = ''] = mantissa.split('.');
  const exponent = Number(exponentText);
  let digits = whole + fraction;
  let point = whole.length + exponent; // digits before the decimal point
  if (point < 0) {
    digits = '0'.repeat(-point) + digits;
    point = 0;
  }
  digits = digits.padEnd(point, '0');
  return {
    units: BigInt(digits.slice(0, point) || '0'),
    fraction: digits.slice(point).replace(/0+$/, ''),
  };
}

class Validator {
  constructor(file) {
    this.file = file;
  }

  fail(path, problem) {
    throw new ScenarioError(this.file, path, problem);
  }

  object(value, path) {
    if (!(value instanceof Map)) this.fail(path, `expected an object, found ${describe(value)}`);
    return value;
  }

  list(value, path) {
    if (!Array.isArray(value)) this.fail(path, `expected a list, found ${describe(value)}`);
    return value;
  }

  key(mapping, key, path) {
    if (!mapping.has(key)) this.fail(path, `missing key ${reprString(key)}`);
    return mapping.get(key);
  }

  name(value, path, maxLength = LIMITS.name) {
    if (typeof value !== 'string' || isBlank(value)) {
      this.fail(path, `expected a non-empty string, found ${describe(value)}`);
    }
    this.length(value, path, maxLength);
    return value;
  }

  length(value, path, maxLength) {
    const length = pyLen(value);
    if (length > maxLength) {
      this.fail(path, `string is ${length} characters long; the maximum is ${maxLength}`);
    }
  }

  count(value, path) {
    if (typeof value !== 'bigint') {
      this.fail(path, `expected a whole number of items, found ${describe(value)}`);
    }
    if (value < 0n) this.fail(path, `quantity ${value} is negative; give 0 or more`);
    if (value > LIMITS.quantity) {
      this.fail(path, `quantity ${value} is too big; give at most ${LIMITS.quantity}`);
    }
    return Number(value);
  }

  seconds(value, path) {
    if (!isNumber(value)) {
      this.fail(path, `expected a number of seconds, found ${describe(value)}`);
    }
    if (!isFinite(value) || value < 0) {
      this.fail(path, `wait ${str(value)} is not a finite number of seconds >= 0`);
    }
    return Number(value);
  }

  scenario(data) {
    const root = this.object(data, '$');
    const products = this.products(this.key(root, 'products', '$'));
    const market = this.object(this.key(root, 'marketplace', '$'), '$.marketplace');
    const path = '$.marketplace.queue_size_per_producer';
    const queueSize = this.count(
      this.key(market, 'queue_size_per_producer', '$.marketplace'),
      path,
    );
    if (queueSize < 1) this.fail(path, 'shelf capacity is 0; give 1 or more');

    const producers = this.list(this.key(root, 'producers', '$'), '$.producers').map(
      (raw, index) => this.producer(raw, `$.producers[${index}]`, products),
    );
    this.unique(producers, '$.producers');

    const consumers = this.list(this.key(root, 'consumers', '$'), '$.consumers').map(
      (raw, index) => this.consumer(raw, `$.consumers[${index}]`, products),
    );
    this.unique(consumers, '$.consumers');

    const produced = new Set();
    for (const spec of producers) {
      for (const [productId, quantity] of spec.products) if (quantity) produced.add(productId);
    }
    consumers.forEach((spec, index) => {
      spec.carts.forEach((cart, cartIndex) => {
        cart.forEach((op, opIndex) => {
          if (op.kind === 'add' && op.quantity && !produced.has(op.productId)) {
            this.fail(
              `$.consumers[${index}].carts[${cartIndex}][${opIndex}].product`,
              `no producer makes product ${reprString(op.productId)}, so this add ` +
                "would wait forever; add it to a producer's products",
            );
          }
        });
      });
    });
    return new Scenario(this.file, products, producers, consumers, queueSize);
  }

  unique(specs, path) {
    const seen = new Set();
    specs.forEach((spec, index) => {
      if (seen.has(spec.name)) {
        this.fail(`${path}[${index}].name`, `duplicate name ${reprString(spec.name)}`);
      }
      seen.add(spec.name);
    });
  }

  products(value) {
    const products = new Map();
    for (const [productId, rawValue] of this.object(value, '$.products')) {
      const path = '$.products' + keyPath(productId);
      if (!productId) this.fail(path, 'empty product id; give every product a non-empty id');
      this.length(productId, path, LIMITS.name);
      const raw = this.object(rawValue, path);
      const kind = this.name(
        this.key(raw, 'product_type', path),
        `${path}.product_type`,
        LIMITS.kind,
      );
      const name = this.key(raw, 'name', path);
      if (typeof name !== 'string' || !name) {
        this.fail(`${path}.name`, `expected a non-empty string, found ${describe(name)}`);
      }
      this.length(name, `${path}.name`, LIMITS.productName);
      const price = this.price(this.key(raw, 'price', path), `${path}.price`);
      const attributes = [];
      for (const [key, attribute] of raw) {
        if (key === 'product_type' || key === 'name' || key === 'price') continue;
        const attributePath = path + keyPath(key);
        if (!key) this.fail(attributePath, 'empty attribute name; give it a non-empty name');
        this.length(key, attributePath, LIMITS.attributeKey);
        attributes.push({ key, value: this.attribute(attribute, attributePath) });
      }
      if (attributes.length > LIMITS.attributes) {
        this.fail(
          path,
          `product has ${attributes.length} attributes; the maximum is ${LIMITS.attributes}`,
        );
      }
      products.set(productId, { productId, kind, name, price, attributes });
    }
    return products;
  }

  price(value, path) {
    if (!isNumber(value)) this.fail(path, `expected a number, found ${describe(value)}`);
    if (!isFinite(value) || value < 0) {
      this.fail(path, `price ${str(value)} is not a finite number >= 0`);
    }
    const { units, fraction } = decimalParts(value);
    if (units > LIMITS.priceUnits) {
      this.fail(path, `price ${str(value)} is too big; the maximum is ${LIMITS.priceUnits}`);
    }
    if (fraction.length > 9) {
      this.fail(path, `price ${str(value)} has more than 9 decimal places`);
    }
    return { units, nanos: Number(fraction.padEnd(9, '0')) };
  }

  attribute(value, path) {
    if (typeof value === 'boolean') return value;
    if (typeof value === 'bigint') {
      if (value < INT64_MIN || value > INT64_MAX) {
        this.fail(path, `integer ${value} does not fit in 64 bits`);
      }
      return value;
    }
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) this.fail(path, `number ${str(value)} is not finite`);
      return value;
    }
    if (typeof value === 'string') {
      this.length(value, path, LIMITS.stringValue);
      return value;
    }
    return this.fail(path, `expected a string, number or boolean, found ${describe(value)}`);
  }

  producer(rawValue, path, products) {
    const raw = this.object(rawValue, path);
    const name = this.name(this.key(raw, 'name', path), `${path}.name`);
    const entries = this.list(this.key(raw, 'products', path), `${path}.products`).map(
      (entryValue, index) => {
        const entryPath = `${path}.products[${index}]`;
        const entry = this.list(entryValue, entryPath);
        if (entry.length !== 3) {
          this.fail(
            entryPath,
            `expected [product id, quantity, wait], found ${entry.length} values`,
          );
        }
        return [
          this.productId(entry[0], `${entryPath}[0]`, products),
          this.count(entry[1], `${entryPath}[1]`),
          this.seconds(entry[2], `${entryPath}[2]`),
        ];
      },
    );
    const republishWaitTime = this.seconds(
      this.key(raw, 'republish_wait_time', path),
      `${path}.republish_wait_time`,
    );
    return { name, products: entries, republishWaitTime };
  }

  consumer(rawValue, path, products) {
    const raw = this.object(rawValue, path);
    const name = this.name(this.key(raw, 'name', path), `${path}.name`);
    const retryWaitTime = this.seconds(
      this.key(raw, 'retry_wait_time', path),
      `${path}.retry_wait_time`,
    );
    const carts = this.list(this.key(raw, 'carts', path), `${path}.carts`).map(
      (rawCart, cartIndex) => {
        const cartPath = `${path}.carts[${cartIndex}]`;
        return this.list(rawCart, cartPath).map((rawOpValue, opIndex) => {
          const opPath = `${cartPath}[${opIndex}]`;
          const rawOp = this.object(rawOpValue, opPath);
          const kind = this.key(rawOp, 'type', opPath);
          if (kind !== 'add' && kind !== 'remove') {
            this.fail(`${opPath}.type`, `unknown operation ${repr(kind)}; give 'add' or 'remove'`);
          }
          const productId = this.productId(
            this.key(rawOp, 'product', opPath),
            `${opPath}.product`,
            products,
          );
          const quantity = this.count(this.key(rawOp, 'quantity', opPath), `${opPath}.quantity`);
          return { kind, productId, quantity };
        });
      },
    );
    return { name, retryWaitTime, carts };
  }

  productId(value, path, products) {
    if (typeof value !== 'string') {
      this.fail(path, `expected a product id string, found ${describe(value)}`);
    }
    if (!products.has(value)) {
      this.fail(path, `unknown product id ${reprString(value)}; define it under $.products`);
    }
    return value;
  }
}

class Scenario {
  constructor(file, products, producers, consumers, queueSize) {
    Object.assign(this, { file, products, producers, consumers, queueSize });
  }

  producer(name) {
    return this.find(this.producers, name, 'producer');
  }

  consumer(name) {
    return this.find(this.consumers, name, 'consumer');
  }

  find(specs, name, role) {
    const spec = specs.find((candidate) => candidate.name === name);
    if (spec) return spec;
    const names = specs.map((candidate) => reprString(candidate.name)).join(', ') || 'none';
    throw new ScenarioError(
      this.file,
      `$.${role}s`,
      `no ${role} named ${reprString(name)}; it has: ${names}`,
    );
  }
}

/** Read and validate a scenario file, throwing ScenarioError on any fault. */
function load(file) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    const reason = STRERROR[error.code] || error.code || error.message;
    throw new ScenarioError(file, '$', `cannot read file: ${reason}`);
  }
  const decoded = decodeUtf8(bytes);
  if (decoded.reason) throw new ScenarioError(file, '$', `file is not UTF-8: ${decoded.reason}`);
  // Python reads text files with universal newlines.
  const text = decoded.text.replace(/\r\n?/g, '\n');
  let data;
  try {
    data = pyjson.loads(text);
  } catch (error) {
    if (error instanceof pyjson.JsonError) {
      throw new ScenarioError(
        file,
        '$',
        `malformed JSON at line ${error.lineno} column ${error.colno}: ${error.msg}`,
      );
    }
    if (error instanceof pyjson.JsonDepthError) {
      throw new ScenarioError(file, '$', 'JSON is nested too deeply to parse');
    }
    if (error instanceof pyjson.JsonValueError) {
      throw new ScenarioError(file, '$', `invalid JSON value: ${error.message}`);
    }
    throw error;
  }
  return new Validator(file).scenario(data);
}

/** Render a price from Money units and nanos: 9 for whole amounts, else 9.5. */
function renderMoney(money) {
  const nanosPerUnit = 1000000000n;
  let total = BigInt(money.units || 0) * nanosPerUnit + BigInt(money.nanos || 0);
  const sign = total < 0n ? '-' : '';
  if (total < 0n) total = -total;
  const fraction = (total % nanosPerUnit).toString().padStart(9, '0').replace(/0+$/, '');
  return `${sign}${total / nanosPerUnit}${fraction ? '.' + fraction : ''}`;
}

/** Render an attribute value as Python's repr does. */
function renderAttribute(attribute) {
  switch (attribute.value) {
    case 'string_value':
      return reprString(attribute.string_value);
    case 'int_value':
      return BigInt(attribute.int_value).toString();
    case 'float_value':
      return reprFloat(attribute.float_value);
    case 'bool_value':
      return attribute.bool_value ? 'True' : 'False';
    default:
      throw new Error(`attribute ${attribute.key} has no value`);
  }
}

/**
 * Render a product decoded by @grpc/proto-loader (keepCase, longs as
 * strings, oneofs) as `Kind(name='...', price=..., other=...)`.
 */
function renderProduct(product) {
  const fields = [
    `name=${reprString(product.name)}`,
    `price=${renderMoney(product.price || {})}`,
  ];
  for (const attribute of product.attributes || []) {
    fields.push(`${attribute.key}=${renderAttribute(attribute)}`);
  }
  return `${product.kind}(${fields.join(', ')})`;
}

module.exports = {
  EXIT_INVALID_SCENARIO,
  ScenarioError,
  load,
  renderMoney,
  renderProduct,
};
