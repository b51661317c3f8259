'use strict';
/*
 * wscat.js -- runs the `wscat` CLI of tests/e2e/node_modules as a user
 * would (wscat.test.js over ws://, tls.test.js over wss://).
 */
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const WSCAT = path.join(__dirname, '..', 'node_modules', '.bin', 'wscat');

function shq(s) {
  return `'${String(s).replace(/'/g, "'\\''")}'`;
}

/* Runs wscat under script(1) -- it prints nothing without a TTY --,
 * bounded by `timeoutMs`; returns {code, text (cleaned), msgs (the JSON
 * lines)}. */
function runWscat(args, timeoutMs = 30000) {
  assert.ok(fs.existsSync(WSCAT), `${WSCAT} missing: run npm install in tests/e2e`);
  const cmd = [WSCAT, ...args].map(shq).join(' ');
  return new Promise((resolve, reject) => {
    const p = spawn('script', ['-qc', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d.toString(); });
    p.stderr.on('data', (d) => { out += d.toString(); });
    const timer = setTimeout(() => {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      reject(new Error(`wscat did not finish within ${timeoutMs} ms; output so far:\n${out}`));
    }, timeoutMs);
    p.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on('exit', (code) => {
      clearTimeout(timer);
      // eslint-disable-next-line no-control-regex
      const text = out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
      const msgs = [];
      for (let line of text.split(/\r\n|\r|\n/)) {
        line = line.replace(/^[>\s]+/, '').trim();
        if (!line.startsWith('{')) continue;
        try {
          msgs.push(JSON.parse(line));
        } catch {
          /* not a whole JSON line */
        }
      }
      resolve({ code, text, msgs });
    });
  });
}

module.exports = { WSCAT, runWscat, shq };
