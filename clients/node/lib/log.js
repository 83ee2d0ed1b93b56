'use strict';
// Log lines on stderr in the format of the Python clients:
// `2024-05-01 12:00:00,123 WARNING PROG: message`.

const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };

let threshold = LEVELS.WARNING;
let program = 'node';

function configure(level, prog) {
  threshold = LEVELS[level];
  program = prog;
}

function two(number) {
  return String(number).padStart(2, '0');
}

// Python's logging asctime: local time with milliseconds after a comma.
function asctime(date) {
  const day = `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}`;
  const time = `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  return `${day} ${time},${String(date.getMilliseconds()).padStart(3, '0')}`;
}

function emit(level, message) {
  if (LEVELS[level] < threshold) return;
  process.stderr.write(`${asctime(new Date())} ${level} ${program}: ${message}\n`);
}

module.exports = {
  configure,
  debug: (message) => emit('DEBUG', message),
  info: (message) => emit('INFO', message),
  warning: (message) => emit('WARNING', message),
  error: (message) => emit('ERROR', message),
};
