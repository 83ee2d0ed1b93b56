'use strict';
// The command line of the Python clients (clients/common.py), parsed the
// way Python's argparse parses it: --flag VALUE or --flag=VALUE, unique
// prefixes of flags, usage errors with exit status 2.

const { reprString, reprFloat } = require('./pyrepr');

const LOG_LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR'];

const OPTIONS = [
  {
    flag: '--server',
    dest: 'server',
    metavar: 'SERVER',
    default: '127.0.0.1:50051',
    help: 'HOST:PORT of the market server ([::1]:PORT for IPv6)',
  },
  { flag: '--scenario', dest: 'scenario', metavar: 'SCENARIO', required: true, help: 'scenario JSON file' },
  {
    flag: '--name',
    dest: 'name',
    metavar: 'NAME',
    required: true,
    append: true,
    help:
      'which client of the scenario to run; repeat it to run several clients ' +
      'concurrently in this process',
  },
  {
    flag: '--time-scale',
    dest: 'timeScale',
    metavar: 'TIME_SCALE',
    type: 'float',
    default: 1.0,
    help: 'factor applied to every wait of the scenario (0.1 runs 10 times faster)',
  },
  {
    flag: '--connect-timeout',
    dest: 'connectTimeout',
    metavar: 'CONNECT_TIMEOUT',
    type: 'float',
    default: 30.0,
    help: 'seconds to wait for the server to accept connections at start',
  },
  {
    flag: '--retry-deadline',
    dest: 'retryDeadline',
    metavar: 'RETRY_DEADLINE',
    type: 'float',
    default: 60.0,
    help: 'seconds of failed calls after which a client gives up',
  },
  {
    flag: '--log-level',
    dest: 'logLevel',
    metavar: '{' + LOG_LEVELS.join(',') + '}',
    choices: LOG_LEVELS,
    default: 'WARNING',
    help: 'lowest level logged to stderr',
  },
];

class UsageError extends Error {}

// Python's float(): decimal or exponent notation with optional underscores
// between digits, inf, infinity and nan in any case, surrounding blanks.
const DIGITS = '\\d(?:_?\\d)*';
const FLOAT = new RegExp(
  `^\\s*([+-]?)(?:((?:${DIGITS}(?:\\.(?:${DIGITS})?)?|\\.${DIGITS})(?:[eE][+-]?${DIGITS})?)` +
    '|(inf|infinity)|(nan))\\s*$',
  'i',
);

function parseFloatLikePython(text) {
  const match = FLOAT.exec(text);
  if (!match) return undefined;
  const sign = match[1] === '-' ? -1 : 1;
  if (match[3]) return sign * Infinity;
  if (match[4]) return NaN;
  return sign * Number(match[2].replace(/_/g, ''));
}

// argparse takes a value that starts with '-' only when it looks like a
// negative number.
const NEGATIVE_NUMBER = /^-\d+$|^-\d*\.\d+$/;

const WIDTH = 78;
const HELP_COLUMN = 24;

// Break `text` into lines of at most `width` characters, the first one
// after `first`, the others after `indent`.
function wrap(words, first, indent, width = WIDTH) {
  const lines = [];
  let line = first;
  let empty = true;
  for (const word of words) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent + word;
    } else {
      line += (empty ? '' : ' ') + word;
    }
    empty = false;
  }
  lines.push(line);
  return lines.join('\n');
}

function usage(prog) {
  const parts = ['[-h]'];
  for (const option of OPTIONS) {
    const text = `${option.flag} ${option.metavar}`;
    parts.push(option.required ? text : `[${text}]`);
  }
  const first = `usage: ${prog} `;
  return wrap(parts, first, ' '.repeat(first.length));
}

function help(prog, description) {
  const lines = [usage(prog), '', wrap(description.split(' '), '', ''), '', 'options:'];
  const entries = [['-h, --help', 'show this help message and exit']];
  for (const option of OPTIONS) {
    let text = option.help;
    if (option.default !== undefined) {
      const defaultText =
        typeof option.default === 'number' ? reprFloat(option.default) : option.default;
      text += ` (default: ${defaultText})`;
    }
    entries.push([`${option.flag} ${option.metavar}`, text]);
  }
  const indent = ' '.repeat(HELP_COLUMN);
  for (const [invocation, text] of entries) {
    const start = `  ${invocation}`;
    if (start.length <= HELP_COLUMN - 2) {
      lines.push(wrap(text.split(' '), start.padEnd(HELP_COLUMN), indent));
    } else {
      lines.push(start, wrap(text.split(' '), indent, indent));
    }
  }
  return lines.join('\n') + '\n';
}

function convert(option, text) {
  if (option.type === 'float') {
    const value = parseFloatLikePython(text);
    if (value === undefined) {
      throw new UsageError(`argument ${option.flag}: invalid float value: ${reprString(text)}`);
    }
    return value;
  }
  if (option.choices && !option.choices.includes(text)) {
    const choices = option.choices.map(reprString).join(', ');
    throw new UsageError(
      `argument ${option.flag}: invalid choice: ${reprString(text)} (choose from ${choices})`,
    );
  }
  return text;
}

function findOption(flag) {
  const exact = OPTIONS.find((option) => option.flag === flag);
  if (exact) return exact;
  const matches = OPTIONS.filter((option) => option.flag.startsWith(flag));
  if (matches.length > 1) {
    const names = matches.map((option) => option.flag).join(', ');
    throw new UsageError(`ambiguous option: ${flag} could match ${names}`);
  }
  return matches[0];
}

function parseOrThrow(argv, prog, description) {
  const args = {};
  for (const option of OPTIONS) args[option.dest] = option.append ? undefined : option.default;
  const unknown = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '-h' || (arg.length > 2 && '--help'.startsWith(arg))) {
      process.stdout.write(help(prog, description));
      process.exit(0);
    }
    if (!arg.startsWith('--') || arg === '--') {
      unknown.push(arg);
      continue;
    }
    const equals = arg.indexOf('=');
    const flag = equals < 0 ? arg : arg.slice(0, equals);
    const option = findOption(flag);
    if (!option) {
      unknown.push(arg);
      continue;
    }
    let text;
    if (equals >= 0) {
      text = arg.slice(equals + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('-') && !NEGATIVE_NUMBER.test(next))) {
        throw new UsageError(`argument ${option.flag}: expected one argument`);
      }
      text = next;
      i += 1;
    }
    const value = convert(option, text);
    if (option.append) {
      args[option.dest] = [...(args[option.dest] || []), value];
    } else {
      args[option.dest] = value;
    }
  }
  const missing = OPTIONS.filter((option) => option.required && args[option.dest] === undefined);
  if (missing.length) {
    const flags = missing.map((option) => option.flag).join(', ');
    throw new UsageError(`the following arguments are required: ${flags}`);
  }
  if (unknown.length) throw new UsageError(`unrecognized arguments: ${unknown.join(' ')}`);
  if (!(args.timeScale >= 0 && args.timeScale !== Infinity)) {
    throw new UsageError(
      `--time-scale ${reprFloat(args.timeScale)} is invalid; give a number >= 0`,
    );
  }
  if (!(args.connectTimeout > 0)) {
    throw new UsageError(`--connect-timeout ${reprFloat(args.connectTimeout)} must be above 0`);
  }
  if (!(args.retryDeadline > 0)) {
    throw new UsageError(`--retry-deadline ${reprFloat(args.retryDeadline)} must be above 0`);
  }
  return args;
}

/**
 * Parse the consumer's command line; on a usage error print the usage and
 * the error to stderr and exit with status 2, as argparse does.
 */
function parse(argv, prog, description) {
  try {
    return parseOrThrow(argv, prog, description);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${usage(prog)}\n${prog}: error: ${error.message}\n`);
    process.exit(2);
  }
}

module.exports = { parse, parseFloatLikePython };
