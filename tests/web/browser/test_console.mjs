#!/usr/bin/env node
// End-to-end test of the web console in Debian's Chromium (playwright-core).
//   test_console.mjs fake : against sg_web_testsrv (the fake gateway), always runnable
//   test_console.mjs real : against `snapgate --web` with the bundled VMM (needs /dev/kvm)
// Takes a snapshot, sees it listed and its progress bar complete, loads it
// (confirming) and sees the serial console show the guest going back, deletes
// it, runs `info snapshots` in the HMP pane, checks the narrow layout and that
// the page logged no console errors.  Screenshots go to
// $SNAPGATE_BUILD/tests/web-output/<mode>/.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const SKIP = 77;
const mode = process.argv[2] || 'fake';
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
let server = null, context = null;
function cleanup() {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  if (!process.env.SGTEST_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);

// ---- start the server ----------------------------------------------------------
let argv;
if (mode === 'fake') {
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
  // 256 MiB of real guest RAM: a save takes long enough (~0.5 s) to watch it run;
  // with mostly-zero RAM it is over in a few milliseconds.
  argv = [bin, '--web', `127.0.0.1:${port}`, '--no-monitor', '--state-dir', path.join(tmp, 'state'),
          '--vmm', '-m', '384M', '-append', 'dirty=256M', '--'];
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
console.log(`server up: ${url.replace(/token=.*/, 'token=…')}`);

async function freePort() {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
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
const shot = (name) => page.screenshot({ path: path.join(outDir, `${name}.png`) });
const JOB_TIMEOUT = mode === 'real' ? 180000 : 30000;

const step = (s) => console.log(`- ${s}`);
try {
  step('open the page with the token');
  await page.goto(url);
  await page.waitForFunction(() => {
    const b = document.getElementById('vm-status');
    return b && (b.textContent === 'running' || b.textContent === 'paused');
  });
  check(!page.url().includes('token='), 'the token is removed from the address bar');
  const cookies = await context.cookies();
  check(cookies.some((c) => c.name === 'sg_token' && c.httpOnly), 'token cookie set, HttpOnly');
  // Let the guest print something first.
  await page.waitForFunction(() => /tick \d+/.test(document.querySelector('#serial-term .xterm-rows')?.textContent || ''),
    null, { timeout: 60000 });
  await shot('01-loaded');

  step('take a snapshot');
  const tag = `webtest-${Date.now() % 100000}`;
  const suggested = await page.inputValue('#take-tag');
  check(/^vm-\d{14}(-\d+)?$/.test(suggested), `suggested tag looks like vm-YYYYMMDDHHMMSS: ${suggested}`);
  await page.fill('#take-tag', tag);
  await page.click('#btn-take');
  await page.waitForSelector('.job[data-state="running"], .job[data-state="done"]', { timeout: 10000 });
  check(await page.isDisabled('#btn-take'), 'Take is disabled while the job runs');
  await shot('02-taking');
  await page.waitForSelector('.job[data-state="done"]', { timeout: JOB_TIMEOUT });
  const pv = await page.$eval('.job[data-state="done"] progress', (p) => p.value);
  check(pv === 100, `progress bar completes at 100, got ${pv}`);
  await page.waitForSelector(`tr[data-tag="${tag}"]`);
  const rowText = await page.$eval(`tr[data-tag="${tag}"]`, (tr) => tr.textContent);
  check(!/disk only/.test(rowText), `new snapshot is listed with RAM: ${rowText}`);
  check(/\d+(\.\d+)? (KiB|MiB|GiB)/.test(rowText), `VM size in human units: ${rowText}`);
  check(await page.$(`tr[data-tag="${tag}"] .marker`), 'the new snapshot carries the current marker');
  await page.waitForFunction(() => !document.getElementById('btn-take').disabled);
  await shot('03-taken');

  step('wait for the guest to move on, then load the snapshot with confirmation');
  const ticks = () => page.$eval('#serial-term .xterm-rows', (el) => {
    const all = [...(el.textContent || '').matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
    return all;
  });
  let before = await ticks();
  const maxAt = (a) => Math.max(0, ...a);
  const snapTick = maxAt(before);
  await page.waitForFunction((n) => {
    const all = [...(document.querySelector('#serial-term .xterm-rows').textContent || '').matchAll(/tick (\d+)/g)];
    return all.length && Math.max(...all.map((m) => Number(m[1]))) >= n + 3;
  }, snapTick, { timeout: 60000 });
  before = await ticks();
  const maxBefore = maxAt(before);
  // Cancel first: nothing must happen.
  await page.click(`tr[data-tag="${tag}"] button[data-action="load"]`);
  await page.waitForSelector('#confirm[open]');
  await shot('04-confirm-load');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#confirm:not([open])', { state: 'hidden' });
  check(!(await page.$('.job[data-state="running"]')), 'cancelled load starts no job');
  await page.click(`tr[data-tag="${tag}"] button[data-action="load"]`);
  await page.click('#confirm-ok');
  await page.waitForSelector('.job[data-state="done"]', { timeout: JOB_TIMEOUT });
  step(`serial: ticks before load reached ${maxBefore}; waiting for a lower one`);
  await page.waitForFunction((n) => {
    const rows = document.querySelector('#serial-term .xterm-rows').textContent || '';
    const all = [...rows.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
    const i = all.lastIndexOf(n);
    return (i >= 0 ? all.slice(i + 1) : all).some((v) => v < n);
  }, maxBefore, { timeout: 60000 });
  await shot('05-loaded-guest-went-back');

  step('HMP pane: info snapshots, history with the arrow keys');
  await page.fill('#hmp-line', 'info snapshots');
  await page.press('#hmp-line', 'Enter');
  await page.waitForFunction((t) => document.getElementById('hmp-out').textContent.includes(t), tag);
  await page.fill('#hmp-line', 'info status');
  await page.press('#hmp-line', 'Enter');
  await page.press('#hmp-line', 'ArrowUp');
  check(await page.inputValue('#hmp-line') === 'info status', 'ArrowUp recalls the last line');
  await page.press('#hmp-line', 'ArrowUp');
  check(await page.inputValue('#hmp-line') === 'info snapshots', 'ArrowUp again recalls the one before');
  await page.press('#hmp-line', 'ArrowDown');
  await page.press('#hmp-line', 'ArrowDown');
  check(await page.inputValue('#hmp-line') === '', 'ArrowDown back to an empty line');
  await shot('06-hmp');

  step('pause and resume');
  await page.click('#btn-stop');
  await page.waitForFunction(() => document.getElementById('vm-status').textContent === 'paused');
  await page.click('#btn-cont');
  await page.waitForFunction(() => document.getElementById('vm-status').textContent === 'running');

  step('delete the snapshot with confirmation (keyboard)');
  await page.focus(`tr[data-tag="${tag}"] button[data-action="delete"]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#confirm[open]');
  check(await page.evaluate(() => document.activeElement.id) === 'confirm-cancel', 'Cancel has the focus in the dialog');
  await page.click('#confirm-ok');
  await page.waitForSelector(`tr[data-tag="${tag}"]`, { state: 'detached', timeout: JOB_TIMEOUT });
  await page.fill('#hmp-line', 'info snapshots');
  await page.press('#hmp-line', 'Enter');
  await page.waitForTimeout(300);

  step('errors are shown clearly');
  await page.fill('#take-tag', 'has space');
  await page.click('#btn-take');
  await page.waitForSelector('#error:not([hidden])');
  await shot('07-error');
  await page.click('#error-close');

  step('narrow window');
  await page.setViewportSize({ width: 400, height: 800 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(outDir, '08-narrow.png'), fullPage: true });
  if (overflow > 1) {
    const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 8).map((e) => `${e.tagName}#${e.id}.${e.className}`).join(', '));
    fail(`no horizontal page scroll at 400 px (overflow ${overflow}px): ${wide}`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });

  const relevant = consoleErrors.filter((e) => !/favicon/.test(e));
  check(relevant.length === 0, `no console errors: ${relevant.join(' | ')}`);
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
