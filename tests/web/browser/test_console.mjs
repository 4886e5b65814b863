#!/usr/bin/env node
// End-to-end test of the web console in Debian's Chromium (playwright-core).
//   test_console.mjs fake : against sg_web_testsrv (the fake gateway), always runnable
//   test_console.mjs real : against `snapgate --web --qmp` with the bundled VMM (needs /dev/kvm)
// Drives what an operator does: take, load and delete snapshots whose tags have
// spaces, quotes and backslashes (and one of 255 bytes of UTF-8); a load that
// fails shows its whole error in the banner; Cancel of a running save; jobs
// started elsewhere (a QMP client: human-monitor-command and a raw
// snapshot-save job) update the page and its current-snapshot marker; HMP pane
// Tab completion, wrapping and the quit confirmation; the snapshot tree
// (real: parents, NOW; fake: none, as QEMU); the page at 1280 px and 390 px;
// the token never reaching another server on another loopback port.
// Screenshots go to $SNAPGATE_BUILD/tests/web-output/<mode>/.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const SKIP = 77;
const mode = process.argv[2] || 'fake';
const real = mode === 'real';
const BUILD = process.env.SNAPGATE_BUILD || path.resolve('build');
const SRC = process.env.SNAPGATE_SRC || path.resolve('.');
const CHROMIUM = process.env.SG_CHROMIUM || '/usr/bin/chromium';
const outDir = path.join(BUILD, 'tests', 'web-output', mode);

function skip(why) { console.log(`SKIP: ${why}`); process.exit(SKIP); }
function fail(why) { console.log(`FAIL: ${why}`); cleanup(); process.exit(1); }
function check(cond, why) { if (!cond) fail(why); }

let pw;
try { pw = await import('playwright-core'); } catch {
  skip('playwright-core not installed: run `npm ci` in tests/web');
}
if (!fs.existsSync(CHROMIUM)) skip(`${CHROMIUM} not installed (Debian package chromium)`);
if (!fs.existsSync(path.join(SRC, 'web/node_modules/@xterm/xterm/lib/xterm.mjs')))
  skip('xterm.js not installed: run `npm ci` in web/');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `sgweb-${mode}-`));
fs.mkdirSync(outDir, { recursive: true });
let server = null, context = null, spy = null;
function cleanup() {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  if (spy) spy.close();
  if (!process.env.SGTEST_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// ---- start the server ----------------------------------------------------------
let argv;
const qmpSock = path.join(tmp, 'qmp.sock');
if (!real) {
  const bin = path.join(BUILD, 'tests', 'sg_web_testsrv');
  check(fs.existsSync(bin), `${bin} not built`);
  argv = [bin, '--docroot', path.join(SRC, 'web'), '--port', '0', '--demo'];
} else {
  const bin = path.join(BUILD, 'snapgate');
  if (!fs.existsSync(bin)) skip(`${bin} not built yet`);
  try { fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK); } catch {
    skip('/dev/kvm not usable');
  }
  const port = await freePort();
  // 768 MiB of real (dirty) guest RAM: a save runs long enough (a second or two)
  // to watch it and to cancel it; with mostly-zero RAM it is over in milliseconds.
  argv = [bin, '--web', `127.0.0.1:${port}`, '--no-monitor', '--qmp', `unix:${qmpSock}`,
          '--state-dir', path.join(tmp, 'state'), '--vmm', '-m', '1G', '-append', 'dirty=768M', '--'];
}
server = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmp });
const serverLog = [];
server.stderr.on('data', (d) => serverLog.push(d.toString()));
const url = await new Promise((resolve) => {
  const rl = readline.createInterface({ input: server.stdout });
  const t = setTimeout(() => fail(`no "web console:" line in 60 s; stderr: ${serverLog.join('')}`), 60000);
  rl.on('line', (line) => {
    serverLog.push(line + '\n');
    const m = /web console: (https?:\/\/\S+)/.exec(line);
    if (m) { clearTimeout(t); resolve(m[1]); }
  });
  server.on('exit', (code) => fail(`server exited ${code} before serving: ${serverLog.join('')}`));
});
const token = new URL(url).searchParams.get('token');
const origin = new URL(url).origin;
console.log(`server up: ${url.replace(/token=.*/, 'token=…')}`);

// A second web server on another loopback port: it records every request, so
// the test can see that the console's token never reaches it.
const spyRequests = [];
spy = http.createServer((req, res) => {
  spyRequests.push({ url: req.url, headers: req.headers });
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>other server</title><img src="/pixel.png">');
});
await new Promise((r) => spy.listen(0, '127.0.0.1', r));
const spyUrl = `http://127.0.0.1:${spy.address().port}`;

// ---- a legacy QMP client (real mode): the gateway's --qmp socket ----------------
class QmpClient {
  constructor(sockPath) { this.sockPath = sockPath; this.buf = ''; this.waiters = []; this.seq = 0; this.events = []; }
  async open() {
    this.s = net.connect(this.sockPath);
    this.s.setEncoding('utf8');
    this.s.on('data', (d) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.event) { this.events.push(msg); continue; }
        if (msg.QMP) { this.greeted && this.greeted(); continue; }
        const w = this.waiters.find((x) => x.id === msg.id);
        if (w) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(msg); }
      }
    });
    await new Promise((r) => { this.greeted = r; });
    await this.cmd('qmp_capabilities');
  }
  cmd(execute, args) {
    const id = `t-${++this.seq}`;
    return new Promise((resolve) => {
      this.waiters.push({ id, resolve });
      this.s.write(JSON.stringify(args ? { execute, arguments: args, id } : { execute, id }) + '\n');
    });
  }
  close() { this.s.destroy(); }
}

// ---- the browser ---------------------------------------------------------------
context = await pw.chromium.launchPersistentContext(path.join(tmp, 'profile'), {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') consoleErrors.push(`${m.type()}: ${m.text()}`); });
page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
page.setDefaultTimeout(30000);
const shot = (name, full = false) => page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: full });
const JOB_TIMEOUT = real ? 180000 : 30000;
const step = (s) => console.log(`- ${s}`);

// Rows are found by their tag through the DOM, not a CSS selector: tags hold quotes.
const rowHandle = (tag) => page.evaluateHandle((t) => [...document.querySelectorAll('#snap-body tr')].find((tr) => tr.dataset.tag === t) || null, tag);
const hasRow = (tag) => page.evaluate((t) => [...document.querySelectorAll('#snap-body tr')].some((tr) => tr.dataset.tag === t), tag);
const waitRow = (tag, present = true, timeout = JOB_TIMEOUT) => page.waitForFunction(([t, p]) =>
  [...document.querySelectorAll('#snap-body tr')].some((tr) => tr.dataset.tag === t) === p, [tag, present], { timeout });
const currentTag = () => page.evaluate(() => {
  const tr = document.querySelector('#snap-body tr.current');
  return tr && tr.querySelector('.marker').textContent === '●' ? tr.dataset.tag : null;
});
const waitCurrent = (tag, timeout = JOB_TIMEOUT) => page.waitForFunction((t) => {
  const tr = document.querySelector('#snap-body tr.current');
  return (tr ? tr.dataset.tag : null) === t;
}, tag, { timeout });
// A CSS string for an attribute selector (locators re-resolve if a row is rebuilt).
const cssStr = (t) => `"${t.replace(/["\\]/g, (c) => `\\${c}`)}"`;
const rowLocator = (tag) => page.locator(`#snap-body tr[data-tag=${cssStr(tag)}]`);
async function clickAction(tag, action) {
  check(await hasRow(tag), `row for ${JSON.stringify(tag)} exists`);
  await rowLocator(tag).locator(`button[data-action="${action}"]`).click();
}
const noJobRunning = () => page.waitForFunction(() => !document.querySelector('.job[data-state="running"]') &&
  !document.getElementById('btn-take').disabled, null, { timeout: JOB_TIMEOUT });
async function take(tag) {
  await page.fill('#take-tag', tag);
  await page.click('#btn-take');
  await waitRow(tag);
  await noJobRunning();
}
async function confirmOk() {
  await page.waitForSelector('#confirm[open]');
  await page.click('#confirm-ok');
}
const errorText = () => page.evaluate(() => (document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent));

// Tags an operator may really type: spaces, both quotes, a backslash.
const stamp = Date.now() % 100000;
const tagA = `web test "${stamp}" it's a\\b`;
const tagB = `second tag ${stamp}`;
// 255 bytes of UTF-8: 127 two-byte characters and one more byte.
const tagLong = `${'ü'.repeat(127)}x`;
check(Buffer.byteLength(tagLong) === 255, 'the long tag is 255 bytes');

try {
  step('open the page with the token; the token leaves the address bar and is no cookie');
  await page.goto(url);
  await page.waitForFunction(() => ['running', 'paused'].includes(document.getElementById('vm-status').textContent));
  check(!page.url().includes('token='), 'the token is removed from the address bar');
  const cookies = await context.cookies();
  check(!cookies.some((c) => c.value.includes(token)), `no cookie carries the token: ${JSON.stringify(cookies)}`);
  check(await page.evaluate(() => sessionStorage.getItem('snapgate.token')) === token, 'the token is in sessionStorage');
  await page.waitForFunction(() => /tick \d+/.test(document.querySelector('#serial-term .xterm-rows')?.textContent || ''),
    null, { timeout: 60000 });
  await shot('01-loaded');

  step('a reload without the token in the URL still connects (sessionStorage)');
  await page.reload();
  await page.waitForFunction(() => ['running', 'paused'].includes(document.getElementById('vm-status').textContent));

  step('another server on another loopback port never sees the token');
  const other = await context.newPage();
  await other.goto(`${spyUrl}/`);
  await other.goto(`${spyUrl}/second?x=1`);
  await other.waitForTimeout(200);
  await other.close();
  check(spyRequests.length >= 2, `the other server was reached (${spyRequests.length} requests)`);
  for (const r of spyRequests) {
    const all = `${r.url} ${JSON.stringify(r.headers)}`;
    check(!all.includes(token), `request to the other port carries the token: ${all}`);
    check(!/sg_token/.test(r.headers.cookie || ''), `no sg_token cookie sent to the other port: ${r.headers.cookie}`);
  }

  step('take a snapshot whose tag has spaces, quotes and a backslash');
  const suggested = await page.inputValue('#take-tag');
  check(/^vm-\d{14}(-\d+)?$/.test(suggested), `suggested tag looks like vm-YYYYMMDDHHMMSS: ${suggested}`);
  await page.fill('#take-tag', tagA);
  await page.click('#btn-take');
  await page.waitForSelector('.job[data-state="running"], .job[data-state="done"]', { timeout: 10000 });
  check(await page.isDisabled('#btn-take'), 'Take is disabled while the job runs');
  await shot('02-taking');
  await page.waitForSelector('.job[data-state="done"]', { timeout: JOB_TIMEOUT });
  const pv = await page.$eval('.job[data-state="done"] progress', (p) => p.value);
  check(pv === 100, `progress bar completes at 100, got ${pv}`);
  const doneLabel = await page.$eval('.job[data-state="done"] .job-state', (e) => e.textContent);
  check(/completed/.test(doneLabel), `the finished bar says completed: ${doneLabel}`);
  await waitRow(tagA);
  const rowText = await (await rowHandle(tagA)).evaluate((tr) => tr.textContent);
  check(!/disk only/.test(rowText), `new snapshot is listed with RAM: ${rowText}`);
  check(/\d+(\.\d+)? (KiB|MiB|GiB)/.test(rowText), `VM size in human units: ${rowText}`);
  await waitCurrent(tagA);
  await noJobRunning();
  await shot('03-taken');

  step('take a second one; the current marker moves to it');
  await take(tagB);
  await waitCurrent(tagB);

  step('load the first with confirmation (Escape first: nothing happens)');
  // The serial terminal is read from its whole buffer (scrollback included, what
  // an operator scrolls back to), not from the rows on screen, and only its
  // complete lines: the cursor's line may hold half a number ("tick 25" of 254).
  // snapgate-vmm resumes the guest at once on a load and its job concludes only
  // when the rest of RAM is in (seconds under CPU load), so the ticks go back
  // long before the current marker moves, and may pass the old count again.
  await page.evaluate(() => {
    // The "tick N" values of the terminal's complete lines from buffer line `from` on.
    window.sgTestTicks = (from = 0) => {
      const b = window.sgSerial.buffer.active, out = [];
      for (let i = Math.max(0, from); i < b.baseY + b.cursorY; i++) {
        const m = /\btick (\d+)\s*$/.exec(b.getLine(i)?.translateToString(true) || '');
        if (m) out.push(Number(m[1]));
      }
      return out;
    };
  });
  const lastTick = () => page.evaluate(() => window.sgTestTicks().pop() || 0);
  await page.waitForFunction((n) => (window.sgTestTicks().pop() || 0) >= n + 3, await lastTick(), { timeout: 60000 });
  await clickAction(tagA, 'load');
  await page.waitForSelector('#confirm[open]');
  await shot('04-confirm-load');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#confirm:not([open])', { state: 'hidden' });
  check(!(await page.$('.job[data-state="running"]')), 'cancelled load starts no job');
  await clickAction(tagA, 'load');
  await page.waitForSelector('#confirm[open]');
  // Everything the terminal shows from here on is after the load's OK; the
  // marker follows its line as the buffer scrolls.
  await page.evaluate(() => { window.sgTestLoadMark = window.sgSerial.registerMarker(0); });
  const tickAtLoad = await lastTick();
  await page.click('#confirm-ok');
  await page.waitForSelector('.job[data-state="done"]', { timeout: JOB_TIMEOUT });
  await waitCurrent(tagA);
  check(await errorText() === '', `no error after a good load: ${await errorText()}`);
  if (real) {
    step(`serial: tick ${tickAtLoad} when the load was confirmed; waiting for a lower one`);
    const back = await page.waitForFunction((n) => {
      const mark = window.sgTestLoadMark;
      if (mark.isDisposed) return 'gone';   // out of the 5000-line scrollback
      return window.sgTestTicks(mark.line).find((v) => v < n) ?? false;
    }, tickAtLoad, { timeout: 60000 }).then((h) => h.jsonValue(), async () =>
      `none in 60 s; ticks since the load's OK: ${await page.evaluate(() => window.sgTestTicks(window.sgTestLoadMark.line).slice(-40).join(' '))}`);
    check(typeof back === 'number', `no tick below ${tickAtLoad} in the terminal after the load: ${back === 'gone' ? 'its lines left the scrollback' : back}`);
    step(`serial: back to tick ${back}`);
    await page.evaluate(() => window.sgTestLoadMark.dispose());
  }
  await noJobRunning();
  await shot('05-loaded');

  step('a load that fails is shown in full in the banner and moves no marker');
  // Another operator deletes the snapshot while this one's confirmation is open.
  await take(`doomed ${stamp}`);
  await waitCurrent(`doomed ${stamp}`);
  await clickAction(`doomed ${stamp}`, 'load');
  await page.waitForSelector('#confirm[open]');
  // Delete it behind the dialog's back through a second /hmp connection.
  await page.evaluate(async ([u, line]) => {
    const ws = new WebSocket(u, 'hmp');
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
    const reply = await new Promise((res) => { ws.onmessage = (ev) => res(ev.data); ws.send(line); });
    ws.close();
    return reply;
  }, [`${origin.replace('http', 'ws')}/hmp?token=${token}`, `delvm "doomed ${stamp}"`]);
  await page.click('#confirm-ok');
  await page.waitForSelector('#error:not([hidden])', { timeout: JOB_TIMEOUT });
  let err = await errorText();
  check(/does not exist|not found|no snapshot/i.test(err) && err.includes(`doomed ${stamp}`), `banner names the failure and the tag: ${err}`);
  await noJobRunning();
  check(await currentTag() === null, `a deleted current snapshot leaves no marker (got ${await currentTag()})`);
  await shot('06-failed-load');
  await page.click('#error-close');
  if (!real) {
    step('a load job that aborts: its whole error in the banner, marker unchanged');
    await clickAction('fails to load', 'load');
    await confirmOk();
    await page.waitForSelector('#error:not([hidden])', { timeout: JOB_TIMEOUT });
    err = await errorText();
    check(err.includes('must not be cut'), `the whole error text is shown: ${err}`);
    const box = await page.$eval('#error-text', (e) => ({ sw: e.scrollWidth, cw: e.clientWidth }));
    check(box.sw <= box.cw + 1, `the error wraps instead of being cut: ${JSON.stringify(box)}`);
    await page.waitForSelector('.job[data-state="failed"]');
    const flabel = await page.$eval('.job[data-state="failed"] .job-state', (e) => e.textContent);
    check(/^failed: Device 'drive1'/.test(flabel), `the failed bar names the cause: ${flabel}`);
    check(await currentTag() !== 'fails to load', 'a failed load is not marked current');
    await shot('06b-aborted-load');
    await page.click('#error-close');
  }

  step('cancel a running save: Resume disabled and no "paused" badge meanwhile');
  const curBeforeCancel = await currentTag();
  await page.fill('#take-tag', `cancelled ${stamp}`);
  await page.click('#btn-take');
  // Seen and clicked inside the page, as soon as the bar has a Cancel button:
  // a real save lasts about a second.  The VM may stay "running" meanwhile
  // (snapgate-vmm saves live); it must never say "paused".
  const during = await page.evaluate(() => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const look = () => {
      const b = document.querySelector('.job[data-state="running"] .job-cancel:not([disabled])');
      const badge = document.getElementById('vm-status').textContent;
      if (b && badge !== '') {
        const seen = { badge, cont: document.getElementById('btn-cont').disabled,
                       stop: document.getElementById('btn-stop').disabled };
        b.click();
        resolve(seen);
      } else if (performance.now() - t0 > 20000) {
        reject(new Error('no running save with a Cancel button within 20 s'));
      } else {
        requestAnimationFrame(look);
      }
    };
    look();
  }));
  check(during.cont && during.stop, `Pause and Resume are disabled during a save: ${JSON.stringify(during)}`);
  check(during.badge !== 'paused', `the badge does not say "paused" during a save: ${during.badge}`);
  await shot('07-cancelling');
  await page.waitForSelector('.job[data-state="cancelled"]', { timeout: JOB_TIMEOUT });
  await noJobRunning();
  check(await errorText() === '', `a cancel is no error: ${await errorText()}`);
  check(!(await hasRow(`cancelled ${stamp}`)), 'the cancelled snapshot is not listed');
  check(await currentTag() === curBeforeCancel, `a cancelled save moves no marker (${await currentTag()})`);
  const status = await page.textContent('#vm-status');
  check(status === 'running', `the VM runs again after the cancel: ${status}`);
  await shot('08-cancelled');

  if (real) {
    step('jobs started by a QMP client update the page (bars end, marker moves)');
    const q = new QmpClient(qmpSock);
    await q.open();
    const hmc = q.cmd('human-monitor-command', { 'command-line': `savevm "from qmp ${stamp}"` });
    await page.waitForSelector('.job[data-state="running"]', { timeout: 10000 });
    const r = await hmc;
    check(r.return === '' || (typeof r.return === 'string' && !/Error/.test(r.return)), `human-monitor-command savevm: ${JSON.stringify(r)}`);
    await waitRow(`from qmp ${stamp}`);
    await waitCurrent(`from qmp ${stamp}`);
    await page.waitForFunction(() => !document.querySelector('.job[data-state="running"]'), null, { timeout: 10000 });
    const label = await page.$eval('.job .job-state', (e) => e.textContent);
    check(/completed/.test(label), `the bar of a job started elsewhere ends: ${label}`);
    // A raw QMP job with explicit devices, as libvirt would send it.
    const sv = await q.cmd('snapshot-save', { 'job-id': 'ext-save-1', tag: `raw qmp ${stamp}`, vmstate: 'disk0', devices: ['disk0'] });
    check(sv.return !== undefined, `snapshot-save: ${JSON.stringify(sv)}`);
    await waitCurrent(`raw qmp ${stamp}`);
    await page.waitForFunction(() => !document.querySelector('.job[data-state="running"]'), null, { timeout: 10000 });
    await q.cmd('job-dismiss', { id: 'ext-save-1' });
    const cur = await q.cmd('x-snapgate-query-current-snapshot');
    check(cur.return && cur.return.tag === `raw qmp ${stamp}` && cur.return.how === 'saved', `x-snapgate-query-current-snapshot: ${JSON.stringify(cur)}`);
    q.close();
    const persisted = JSON.parse(fs.readFileSync(path.join(tmp, 'state', 'current-snapshot.json'), 'utf8'));
    check(persisted.tag === `raw qmp ${stamp}`, `current snapshot persisted in the state dir: ${JSON.stringify(persisted)}`);
    await shot('09-jobs-from-qmp');
  }

  step('HMP pane: Tab completes as the terminal does; long lines wrap; quit asks first');
  await page.fill('#hmp-line', 'inf');
  await page.press('#hmp-line', 'Tab');
  await page.waitForFunction(() => document.getElementById('hmp-line').value === 'info ');
  await page.fill('#hmp-line', 'loadvm "sec');
  await page.press('#hmp-line', 'Tab');
  await page.waitForFunction((t) => document.getElementById('hmp-line').value === `loadvm "${t}" `, tagB);
  await page.fill('#hmp-line', '');
  await take(tagLong);
  await page.fill('#hmp-line', 'info snapshots');
  await page.press('#hmp-line', 'Enter');
  await page.waitForFunction((t) => document.getElementById('hmp-out').textContent.includes(t), tagLong);
  const hmpBox = await page.$eval('#hmp-out', (e) => ({ sw: e.scrollWidth, cw: e.clientWidth }));
  check(hmpBox.sw <= hmpBox.cw + 1, `HMP output wraps, never needs a sideways scroll: ${JSON.stringify(hmpBox)}`);
  await page.fill('#hmp-line', 'info status');
  await page.press('#hmp-line', 'Enter');
  await page.press('#hmp-line', 'ArrowUp');
  check(await page.inputValue('#hmp-line') === 'info status', 'ArrowUp recalls the last line');
  await page.press('#hmp-line', 'ArrowUp');
  check(await page.inputValue('#hmp-line') === 'info snapshots', 'ArrowUp again recalls the one before');
  await page.press('#hmp-line', 'ArrowDown');
  await page.press('#hmp-line', 'ArrowDown');
  check(await page.inputValue('#hmp-line') === '', 'ArrowDown back to an empty line');
  await page.fill('#hmp-line', 'quit');
  await page.press('#hmp-line', 'Enter');
  await page.waitForSelector('#confirm[open]');
  const qtext = await page.textContent('#confirm-text');
  check(/stops the virtual machine/.test(qtext), `quit asks first: ${qtext}`);
  await shot('10-quit-confirm');
  await page.click('#confirm-cancel');
  await page.waitForTimeout(300);
  check(!(await page.textContent('#hmp-out')).includes('(snapgate) quit'), 'a cancelled quit is not sent');
  check(await page.textContent('#vm-status') === 'running', 'the VM still runs after a cancelled quit');

  step(real ? 'the snapshot tree: children indented under their parent, NOW under the current one'
            : 'no snapshot tree from this back end (as QEMU 7.2): a flat list, no NOW');
  const tree = () => page.evaluate(() => [...document.querySelectorAll('#snap-body tr')].map((tr) => ({
    tag: tr.dataset.tag || null, now: tr.dataset.now === '1', depth: Number(tr.dataset.depth || 0),
    parent: tr.dataset.parent || null, id: tr.querySelector('td.id')?.textContent || null,
    guide: tr.querySelector('.tree-guide')?.textContent || '',
    guideLeft: tr.querySelector('.tree-guide')?.getBoundingClientRect().left ?? null,
    tagLeft: tr.querySelector('.tag-text, .now-label')?.getBoundingClientRect().left ?? null })));
  await page.waitForFunction((t) => document.querySelector('#snap-body tr.current')?.dataset.tag === t, tagLong);
  let t = await tree();
  const row = (tag) => t.find((x) => x.tag === tag);
  const nows = t.filter((x) => x.now);
  if (real) {
    // A, then B saved from A; A loaded; "from qmp" saved after the deleted "doomed"
    // (no parent left: a root), "raw qmp" from it, the long tag from that.
    const A = row(tagA), B = row(tagB), Q = row(`from qmp ${stamp}`), R = row(`raw qmp ${stamp}`), L = row(tagLong);
    check(A && B && Q && R && L, `every snapshot listed: ${JSON.stringify(t.map((x) => x.tag))}`);
    check(A.depth === 0 && A.guide === '', `the first snapshot is a root: ${JSON.stringify(A)}`);
    check(B.parent === A.id && B.depth === 1 && /^[├└]─ $/.test(B.guide), `B is drawn as A's child: ${JSON.stringify(B)}`);
    check(t.indexOf(B) > t.indexOf(A), 'the child comes after its parent');
    check(B.tagLeft > A.tagLeft + 8, `the child's tag is indented (${A.tagLeft} -> ${B.tagLeft})`);
    check(Q.depth === 0 && !Q.parent, `a save whose parent was deleted is a root: ${JSON.stringify(Q)}`);
    check(R.parent === Q.id && R.depth === 1, `raw qmp under from qmp: ${JSON.stringify(R)}`);
    check(L.parent === R.id && L.depth === 2 && /^ {3}└─ $/.test(L.guide), `the long tag two levels down: ${JSON.stringify(L)}`);
    check(nows.length === 1, `one NOW row: ${nows.length}`);
    const N = nows[0];
    check(N.parent === L.id && N.depth === 3 && t.indexOf(N) === t.indexOf(L) + 1 && /└─ $/.test(N.guide),
      `NOW is the last child of the current snapshot: ${JSON.stringify(N)}`);
    check(N.guideLeft !== null && N.tagLeft > L.tagLeft, `NOW is drawn right of its parent's tag (${L.tagLeft} -> ${N.tagLeft})`);
  } else {
    check(nows.length === 0, `no NOW without a tree: ${JSON.stringify(nows)}`);
    check(t.every((x) => x.depth === 0 && x.guide === ''), `a flat list without a tree: ${JSON.stringify(t)}`);
  }

  step('pause and resume');
  await page.click('#btn-stop');
  await page.waitForFunction(() => document.getElementById('vm-status').textContent === 'paused');
  check(!(await page.isDisabled('#btn-cont')), 'Resume is enabled when paused');
  await page.click('#btn-cont');
  await page.waitForFunction(() => document.getElementById('vm-status').textContent === 'running');

  step('1280 px with a 255-byte tag: ID, size, date and actions stay in view');
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.waitForTimeout(300);
  const inView = async (width) => page.evaluate(([t, w]) => {
    const tr = [...document.querySelectorAll('#snap-body tr')].find((x) => x.dataset.tag === t);
    const card = document.querySelector('.card.snapshots').getBoundingClientRect();
    const out = [];
    for (const sel of ['td.id', 'td.size', 'td.date', 'button[data-action="load"]', 'button[data-action="delete"]']) {
      const r = tr.querySelector(sel).getBoundingClientRect();
      if (r.width === 0 || r.right > Math.min(card.right, w) + 1 || r.left < card.left - 1) out.push(`${sel} ${Math.round(r.left)}-${Math.round(r.right)}`);
    }
    const tagEl = tr.querySelector('.tag-text');
    return { out, title: tagEl.title === t, overflow: document.documentElement.scrollWidth - w };
  }, [tagLong, width]);
  let v = await inView(1280);
  check(v.out.length === 0, `cells pushed out of view at 1280 px: ${v.out.join(', ')}`);
  check(v.title, 'the full tag is in the tooltip');
  check(v.overflow <= 1, `no horizontal page scroll at 1280 px (${v.overflow}px)`);
  await shot('11-wide-1280', true);

  step('390 px (phone): every action at hand, no sideways scroll');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(400);
  v = await inView(390);
  check(v.out.length === 0, `cells out of view at 390 px: ${v.out.join(', ')}`);
  check(v.overflow <= 1, `no horizontal page scroll at 390 px (${v.overflow}px)`);
  if (real) {
    t = await tree();
    const L = t.find((x) => x.tag === tagLong), N = t.find((x) => x.now);
    check(N && N.tagLeft > L.tagLeft, `NOW still indented under the current snapshot at 390 px: ${JSON.stringify([L, N])}`);
  }
  await page.screenshot({ path: path.join(outDir, '12-phone-390.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  step('delete the snapshots with confirmation (keyboard for the first)');
  await rowLocator(tagA).locator('button[data-action="delete"]').focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('#confirm[open]');
  check(await page.evaluate(() => document.activeElement.id) === 'confirm-cancel', 'Cancel has the focus in the dialog');
  await page.click('#confirm-ok');
  await waitRow(tagA, false);
  await noJobRunning();
  for (const t of [tagB, tagLong]) {
    await clickAction(t, 'delete');
    await confirmOk();
    await waitRow(t, false);
    await noJobRunning();
  }
  check(await errorText() === '', `deletes raised no error: ${await errorText()}`);

  step('a tag of more than 255 bytes is refused up front');
  await page.fill('#take-tag', `${tagLong}y`);
  await page.click('#btn-take');
  await page.waitForSelector('#error:not([hidden])');
  check(/256 bytes/.test(await errorText()), `the banner gives the byte count: ${await errorText()}`);
  await page.click('#error-close');

  const relevant = consoleErrors.filter((e) => !/favicon/.test(e));
  check(relevant.length === 0, `no console errors: ${relevant.join(' | ')}`);

  step('without the token: the page and the serial pane name the missing token');
  const bare = await context.newPage();
  await bare.goto(`${origin}/`);
  await bare.waitForSelector('#error:not([hidden])');
  check(/token/.test(await bare.textContent('#error-text')), 'the banner names the missing token');
  await bare.waitForSelector('#serial-note:not([hidden])');
  const note = await bare.textContent('#serial-note');
  check(/token/.test(note) && !/bundled VMM/.test(note), `the serial pane names the token: ${note}`);
  await bare.screenshot({ path: path.join(outDir, '13-no-token.png') });
  await bare.close();

  console.log(`screenshots in ${outDir}`);
  console.log(`web_browser_${mode}: all checks passed`);
} catch (e) {
  await shot('zz-failure').catch(() => {});
  fail(`${e.message}\nconsole: ${consoleErrors.join(' | ')}\nserver: ${serverLog.join('').slice(-2000)}`);
} finally {
  await context.close().catch(() => {});
}
server.kill('SIGTERM');
process.exit(0);
