'use strict';
// JSON as Python's json module reads and writes it.
//
// JSON.parse cannot serve: it turns 5 and 5.0 into the same number, while
// the scenario rules treat an int and a float differently (a quantity of
// 5.0 is an error, and a float price keeps its repr digits). It also moves
// integer-like keys of an object to the front, and its error messages
// differ. This parser returns the value model of pyrepr.js. An integer
// literal becomes a bigint, and a literal with a fraction or an exponent a
// number. An object becomes a Map in file order, where a repeated key keeps
// its first place and its last value. The parser accepts NaN, Infinity and
// -Infinity, and reports errors with Python's message and position, counted
// in code points.

const { reprFloat } = require('./pyrepr');

// Python 3.11 and later refuse to read integers of more digits than this.
const MAX_INT_DIGITS = 4300;
// NOTE: Python stops near a nesting depth of 1000, at a depth that varies
// with its call stack. This parser stops at a fixed depth below that.
const MAX_DEPTH = 990;

/** A JSON syntax error: Python's message and the code point offset. */
class JsonError extends Error {
  constructor(msg, pos, text) {
    super(msg);
    this.msg = msg;
    this.pos = pos;
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < pos; i += 1) {
      if (text[i] === '\n') {
        line += 1;
        lineStart = i + 1;
      }
    }
    this.lineno = line;
    this.colno = pos - lineStart + 1;
  }
}

/** A value Python reads but cannot hold, such as a 5000-digit integer. */
class JsonValueError extends Error {}

/** Nesting deeper than Python's recursion limit allows. */
class JsonDepthError extends Error {}

const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

function isDigit(ch) {
  return ch !== undefined && ch >= '0' && ch <= '9';
}

class Parser {
  constructor(text) {
    // One element per code point, so that positions match Python's.
    this.chars = Array.from(text);
    this.depth = 0;
  }

  fail(msg, pos) {
    throw new JsonError(msg, pos, this.chars);
  }

  skip(pos) {
    while (pos < this.chars.length && WHITESPACE.has(this.chars[pos])) pos += 1;
    return pos;
  }

  parse() {
    const chars = this.chars;
    if (chars[0] === '\ufeff') this.fail('Unexpected UTF-8 BOM (decode using utf-8-sig)', 0);
    const [value, end] = this.value(this.skip(0));
    const rest = this.skip(end);
    if (rest !== chars.length) this.fail('Extra data', rest);
    return value;
  }

  startsAt(pos, word) {
    return this.chars.slice(pos, pos + word.length).join('') === word;
  }

  value(pos) {
    const ch = this.chars[pos];
    if (ch === '"') return this.string(pos + 1);
    if (ch === '{') return this.nested(() => this.object(pos + 1));
    if (ch === '[') return this.nested(() => this.array(pos + 1));
    const words = [
      ['null', null],
      ['true', true],
      ['false', false],
      ['NaN', NaN],
      ['Infinity', Infinity],
      ['-Infinity', -Infinity],
    ];
    for (const [word, result] of words) {
      if (this.startsAt(pos, word)) return [result, pos + word.length];
    }
    return this.number(pos);
  }

  nested(parse) {
    this.depth += 1;
    if (this.depth > MAX_DEPTH) throw new JsonDepthError();
    try {
      return parse();
    } finally {
      this.depth -= 1;
    }
  }

  number(start) {
    const chars = this.chars;
    let pos = start;
    if (chars[pos] === '-') pos += 1;

    if (chars[pos] === '0') {
      pos += 1;
    } else if (isDigit(chars[pos])) {
      while (isDigit(chars[pos])) pos += 1;
    } else {
      this.fail('Expecting value', start);
    }

    let isFloat = false;
    if (chars[pos] === '.' && isDigit(chars[pos + 1])) {
      isFloat = true;
      pos += 2;
      while (isDigit(chars[pos])) pos += 1;
    }

    if (chars[pos] === 'e' || chars[pos] === 'E') {
      let end = pos + 1;
      if (chars[end] === '-' || chars[end] === '+') end += 1;
      if (isDigit(chars[end])) {
        while (isDigit(chars[end])) end += 1;
        isFloat = true;
        pos = end;
      }
    }

    const literal = chars.slice(start, pos).join('');
    if (isFloat) return [Number(literal), pos];
    const digits = literal.replace('-', '').length;
    if (digits > MAX_INT_DIGITS) {
      throw new JsonValueError(
        `Exceeds the limit (${MAX_INT_DIGITS} digits) for integer string conversion: ` +
          `value has ${digits} digits; use sys.set_int_max_str_digits() to increase the limit`,
      );
    }
    return [BigInt(literal), pos];
  }

  hex4(pos) {
    const digits = this.chars.slice(pos, pos + 4).join('');
    return /^[0-9a-fA-F]{4}$/.test(digits) ? parseInt(digits, 16) : -1;
  }

  string(begin) {
    const chars = this.chars;
    let pos = begin;
    let out = '';
    for (;;) {
      let ch = chars[pos];
      while (ch !== undefined && ch !== '"' && ch !== '\\') {
        if (ch.codePointAt(0) < 0x20) this.fail('Invalid control character at', pos);
        out += ch;
        pos += 1;
        ch = chars[pos];
      }
      if (ch === undefined) this.fail('Unterminated string starting at', begin - 1);
      if (ch === '"') return [out, pos + 1];
      // A backslash.
      pos += 1;
      const escape = chars[pos];
      if (escape === undefined) this.fail('Unterminated string starting at', begin - 1);
      if (escape !== 'u') {
        if (!Object.hasOwn(ESCAPES, escape)) this.fail('Invalid \\escape', pos - 1);
        out += ESCAPES[escape];
        pos += 1;
        continue;
      }
      // \uXXXX, and a following \uXXXX when the first is a high surrogate.
      // Python needs one more character after the digits (the closing quote
      // at least) before it reads them.
      if (pos + 5 >= chars.length) this.fail('Invalid \\uXXXX escape', pos);
      let code = this.hex4(pos + 1);
      if (code < 0) this.fail('Invalid \\uXXXX escape', pos);
      pos += 5;
      if (
        code >= 0xd800 &&
        code <= 0xdbff &&
        pos + 6 < chars.length &&
        chars[pos] === '\\' &&
        chars[pos + 1] === 'u'
      ) {
        const low = this.hex4(pos + 2);
        if (low < 0) this.fail('Invalid \\uXXXX escape', pos + 1);
        if (low >= 0xdc00 && low <= 0xdfff) {
          code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
          pos += 6;
        }
      }
      out += String.fromCodePoint(code);
    }
  }

  object(start) {
    const chars = this.chars;
    const result = new Map();
    let pos = this.skip(start);
    if (chars[pos] === '}') return [result, pos + 1];
    for (;;) {
      if (chars[pos] !== '"') {
        this.fail('Expecting property name enclosed in double quotes', pos);
      }
      const [key, afterKey] = this.string(pos + 1);
      pos = this.skip(afterKey);
      if (chars[pos] !== ':') this.fail("Expecting ':' delimiter", pos);
      pos = this.skip(pos + 1);
      const [item, afterItem] = this.item(pos);
      result.set(key, item);
      pos = this.skip(afterItem);
      if (chars[pos] === '}') return [result, pos + 1];
      if (chars[pos] !== ',') this.fail("Expecting ',' delimiter", pos);
      pos = this.skip(pos + 1);
    }
  }

  array(start) {
    const chars = this.chars;
    const result = [];
    let pos = this.skip(start);
    if (chars[pos] === ']') return [result, pos + 1];
    for (;;) {
      const [item, afterItem] = this.item(pos);
      result.push(item);
      pos = this.skip(afterItem);
      if (chars[pos] === ']') return [result, pos + 1];
      if (chars[pos] !== ',') this.fail("Expecting ',' delimiter", pos);
      pos = this.skip(pos + 1);
    }
  }

  // Parse a value inside an object or array. At the end of the text the
  // error is "Expecting value" at that position, as for any other non-value.
  item(pos) {
    if (pos >= this.chars.length) this.fail('Expecting value', pos);
    return this.value(pos);
  }
}

/** Parse JSON text as Python's json.loads does; see the header. */
function loads(text) {
  return new Parser(text).parse();
}

function dumpString(text) {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (code < 0x20) out += '\\u' + code.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

/** Python's json.dumps(value, ensure_ascii=False) with default separators. */
function dumps(value) {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return 'NaN';
    if (value === Infinity) return 'Infinity';
    if (value === -Infinity) return '-Infinity';
    return reprFloat(value);
  }
  if (typeof value === 'string') return dumpString(value);
  if (Array.isArray(value)) return '[' + value.map(dumps).join(', ') + ']';
  const items = [];
  for (const [key, item] of value) items.push(`${dumpString(key)}: ${dumps(item)}`);
  return '{' + items.join(', ') + '}';
}

module.exports = { loads, dumps, JsonError, JsonValueError, JsonDepthError };
