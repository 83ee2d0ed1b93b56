'use strict';
// Python's repr() of the values a scenario or a product can hold, so that
// the Node consumer prints the same bytes as the Python one.
//
// Value model, shared with pyjson.js: a JS string stands for a Python str,
// a bigint for an int and a number for a float. A boolean is a bool, null
// is None, an Array is a list and a Map is a dict.

// Characters that Python's str.isprintable() rejects, apart from the ASCII
// ones that reprString handles first.
// NOTE: Python and Node each use their own Unicode database. A character
// assigned in one version and not the other (Python 3.11 has Unicode 14,
// Node 20 has 15.1) is escaped by one and printed as is by the other.
const NOT_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;

function hex(code, width) {
  return code.toString(16).padStart(width, '0');
}

/** Python's repr of a str: quote choice, escapes, non-ASCII text as is. */
function reprString(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === quote || ch === '\\') {
      out += '\\' + ch;
    } else if (ch === '\t') {
      out += '\\t';
    } else if (ch === '\n') {
      out += '\\n';
    } else if (ch === '\r') {
      out += '\\r';
    } else if (code < 0x20 || code === 0x7f) {
      out += '\\x' + hex(code, 2);
    } else if (code < 0x7f) {
      out += ch;
    } else if (!NOT_PRINTABLE.test(ch)) {
      out += ch;
    } else if (code <= 0xff) {
      out += '\\x' + hex(code, 2);
    } else if (code <= 0xffff) {
      out += '\\u' + hex(code, 4);
    } else {
      out += '\\U' + hex(code, 8);
    }
  }
  return out + quote;
}

/**
 * Python's repr of a float: the shortest digits that read back as the same
 * double, in fixed notation from 1e-4 up to below 1e16, else as 1e-05 or
 * 1.5e+16.
 */
function reprFloat(value) {
  if (Number.isNaN(value)) return 'nan';
  if (value === Infinity) return 'inf';
  if (value === -Infinity) return '-inf';
  if (value === 0) return Object.is(value, -0) ? '-0.0' : '0.0';
  // Without an argument toExponential gives the shortest round-trip digits,
  // the same digits as Python's repr.
  const [mantissa, exponentText] = value.toExponential().split('e');
  const exponent = Number(exponentText);
  const sign = mantissa.startsWith('-') ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  if (exponent < -4 || exponent >= 16) {
    const rest = digits.length > 1 ? '.' + digits.slice(1) : '';
    const expSign = exponent < 0 ? '-' : '+';
    return `${sign}${digits[0]}${rest}e${expSign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (exponent < 0) {
    return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
  }
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, '0');
  const fraction = digits.slice(exponent + 1) || '0';
  return `${sign}${whole}.${fraction}`;
}

/** Python's repr of any value of the model above. */
function repr(value) {
  if (value === null) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return reprFloat(value);
  if (typeof value === 'string') return reprString(value);
  if (Array.isArray(value)) return '[' + value.map(repr).join(', ') + ']';
  if (value instanceof Map) {
    const items = [];
    for (const [key, item] of value) items.push(`${repr(key)}: ${repr(item)}`);
    return '{' + items.join(', ') + '}';
  }
  throw new TypeError(`no Python repr for ${typeof value}`);
}

/** Python's str() of an int or float, as f-strings print them. */
function str(value) {
  return typeof value === 'string' ? value : repr(value);
}

// The characters for which Python's str.isspace() is true (the same in
// Unicode 14 and 15). JS trim() strips another set (it strips U+FEFF and
// keeps 0x1c to 0x1f), so strip() is written out here.
const SPACE = new Set(
  [
    0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0,
    0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007,
    0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
  ].map((code) => String.fromCodePoint(code)),
);

/** True when Python's `text.strip()` is empty. */
function isBlank(text) {
  for (const ch of text) if (!SPACE.has(ch)) return false;
  return true;
}

/** Python's len() of a str: code points, not UTF-16 units. */
function pyLen(text) {
  let count = 0;
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i += 1;
    }
    count += 1;
  }
  return count;
}

// Python's str.isidentifier(), up to the Unicode version difference above.
const IDENTIFIER = /^[\p{XID_Start}_]\p{XID_Continue}*$/u;

function isIdentifier(text) {
  return IDENTIFIER.test(text);
}

module.exports = { repr, reprString, reprFloat, str, isBlank, pyLen, isIdentifier };
