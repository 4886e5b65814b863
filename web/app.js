// app.js: the snapgate console page.  Status, the snapshot list, the current
// snapshot and jobs come from /qmp (query-status, query-block,
// query-named-block-nodes, query-jobs, x-snapgate-query-current-snapshot,
// x-snapgate-query-snapshot-tree and events); take/load/delete go through /hmp as savevm/loadvm/delvm with the
// tag quoted, so the browser uses the gateway's one HMP path (name
// resolution, job ids, devices) and any tag is addressed exactly.
import { Qmp } from './qmp.js';
import { Hmp, hmpError, hmpQuote, setupConsole } from './hmp.js';
import { disksOf, buildRows, treeRows, humanSize, formatDate, formatClock, defaultTag, tagProblem } from './snapshots.js';
import { startSerial } from './serial.js';
import { Jobs } from './jobs.js';

const $ = (id) => document.getElementById(id);

// The token arrives in the URL once.  It is kept in sessionStorage (per
// origin: scheme, host and port, so no other local server ever sees it; a
// cookie would be sent to every port of 127.0.0.1) and taken out of the
// address bar (and of screenshots, history, bookmarks).
const params = new URLSearchParams(location.search);
let token = params.get('token') || '';
try {
  if (token) sessionStorage.setItem('snapgate.token', token);
  else token = sessionStorage.getItem('snapgate.token') || '';
} catch { /* storage disabled: the token lives in this page only */ }
if (params.has('token')) history.replaceState(null, '', location.pathname);
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
const wsUrl = (path) => `${wsBase}${path}${token ? `?token=${encodeURIComponent(token)}` : ''}`;

const state = {
  qmp: null, hmp: null, status: null, rows: [], disks: [],
  tree: null,               // the back end's snapshot tree, null without one (QEMU)
  busy: false,              // an operation of ours is in flight
  current: null,            // {tag, how, time} from the gateway
};

function showError(msg) {
  $('error-text').textContent = msg;
  $('error').hidden = false;
}
function hideError() { $('error').hidden = true; }
$('error-close').addEventListener('click', hideError);

function setLink(text) { $('link').textContent = text; }

// ---- jobs ------------------------------------------------------------------------
const jobs = new Jobs($('jobs'), {
  cancel: async (id) => {
    try { await state.qmp.cmd('job-cancel', { id }); } catch (e) { showError(`Cancel ${id}: ${e.message}`); }
  },
  changed: () => { renderStatus(); renderSnapshots(); },
  poll: () => state.qmp ? state.qmp.cmd('query-jobs') : Promise.reject(new Error('not connected')),
});
const jobRunning = () => state.busy || jobs.active();

// ---- VM status ---------------------------------------------------------------
// QEMU's run states, as an operator reads them; a save or load in progress
// shows the job (the VM is neither running nor simply paused then).
const STATUS_LABEL = { 'save-vm': 'saving snapshot', 'restore-vm': 'loading snapshot', prelaunch: 'not started',
  'finish-migrate': 'migrating', inmigrate: 'migrating', postmigrate: 'migrated', 'io-error': 'I/O error',
  'internal-error': 'internal error', shutdown: 'shut down', 'guest-panicked': 'guest panicked' };

function renderStatus() {
  const b = $('vm-status');
  const st = state.status || 'unknown';
  const job = jobs.activeJob();
  const label = job && st !== 'running' && st !== 'paused' ? (STATUS_LABEL[st] || st)
    : job && st === 'paused' && /save|load/.test(job.type || '') ? `paused · ${job.type}` : (STATUS_LABEL[st] || st);
  b.textContent = state.status === null ? 'not connected' : label;
  b.className = `badge ${st === 'running' ? 'running' : st === 'paused' ? 'paused' : state.status === null ? '' : 'busy'}`;
  const ok = !!state.qmp && state.status !== null;
  const busy = jobRunning();
  const stop = $('btn-stop'), cont = $('btn-cont');
  stop.disabled = !ok || busy || st !== 'running';
  cont.disabled = !ok || busy || st !== 'paused';
  const why = busy ? 'not while a snapshot job runs' : '';
  stop.title = why;
  cont.title = why;
}

async function refreshStatus() {
  const s = await state.qmp.cmd('query-status');
  state.status = s.status || (s.running ? 'running' : 'paused');
  renderStatus();
}

$('btn-stop').addEventListener('click', () => vmCmd('stop'));
$('btn-cont').addEventListener('click', () => vmCmd('cont'));
async function vmCmd(cmd) {
  try { await state.qmp.cmd(cmd); await refreshStatus(); } catch (e) { showError(`${cmd}: ${e.message}`); }
}

// ---- snapshot list -------------------------------------------------------------
async function refreshSnapshots() {
  const [blk, nodes, cur, tree] = await Promise.all([
    state.qmp.cmd('query-block'),
    state.qmp.cmd('query-named-block-nodes').catch(() => []),
    state.qmp.cmd('x-snapgate-query-current-snapshot').catch(() => ({})),
    // snapgate-vmm's parents and position; QEMU has no such command: flat list.
    state.qmp.cmd('x-snapgate-query-snapshot-tree').catch(() => null),
  ]);
  state.disks = disksOf(blk, nodes);
  const w = state.disks.filter((d) => !d.ro);
  state.tree = tree && w.length && tree.node === w[0].node ? tree : null;
  state.rows = treeRows(buildRows(state.disks), state.tree);
  state.current = cur && cur.tag !== undefined ? cur : null;
  renderSnapshots();
}

function chip(text, cls, title) {
  const s = document.createElement('span');
  s.className = `tag-chip ${cls || ''}`;
  s.textContent = text;
  if (title) s.title = title;
  return s;
}

function button(text, action, label, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.dataset.action = action;
  b.setAttribute('aria-label', label);
  b.addEventListener('click', onclick);
  return b;
}

// The tree's drawing before a tag: the guide in a monospace span (not read
// out), the depth for screen readers in the row's title.
function guide(r) {
  const g = document.createElement('span');
  g.className = 'tree-guide';
  g.textContent = r.guide;
  g.setAttribute('aria-hidden', 'true');
  return g;
}

// "NOW" under the current snapshot, as Proxmox shows it: where the running
// VM stands in the tree (its next save becomes a child of that snapshot).
function nowRow(r) {
  const tr = document.createElement('tr');
  tr.className = 'now';
  tr.dataset.now = '1';
  tr.dataset.depth = r.depth;
  tr.dataset.parent = r.parent;
  const mark = document.createElement('td');
  mark.className = 'mark';
  const cell = document.createElement('td');
  cell.className = 'tag';
  cell.colSpan = 6;
  const label = document.createElement('span');
  label.className = 'now-label';
  label.textContent = 'NOW';
  const note = document.createElement('span');
  note.className = 'muted small';
  note.textContent = ' the running VM; its next snapshot goes here';
  const line = document.createElement('div');
  line.className = 'tag-line';
  const text = document.createElement('span');
  text.append(label, note);
  line.append(guide(r), text);
  cell.append(line);
  tr.append(mark, cell);
  return tr;
}

// Rows are rebuilt only when something shown changed, so that a polled job
// does not take the keyboard focus away from a button every 200 ms.
let shownKey = '';
function renderSnapshots() {
  const busy = jobRunning() || !state.hmp;
  const key = JSON.stringify([state.rows, state.current, busy, state.disks.map((d) => [d.device, d.ro])]);
  $('btn-take').disabled = busy;
  if (key === shownKey) return;
  shownKey = key;
  const body = $('snap-body');
  const focused = document.activeElement && body.contains(document.activeElement)
    ? [document.activeElement.closest('tr').dataset.tag, document.activeElement.dataset.action] : null;
  body.replaceChildren();
  for (const r of state.rows) {
    if (r.now) { body.append(nowRow(r)); continue; }
    const tr = document.createElement('tr');
    tr.dataset.tag = r.tag;
    tr.dataset.depth = r.depth;
    if (r.parent) tr.dataset.parent = r.parent;
    const isCur = !!state.current && state.current.tag === r.tag;
    if (isCur) tr.classList.add('current');
    const td = (content, cls, label) => {
      const c = document.createElement('td');
      if (cls) c.className = cls;
      if (label) c.dataset.label = label;
      if (content instanceof Node) c.append(content); else c.textContent = content;
      tr.append(c);
      return c;
    };
    const mark = document.createElement('span');
    mark.className = 'marker';
    if (isCur) {
      const when = state.current.time ? ` at ${formatDate(state.current.time * 1000)}` : '';
      mark.textContent = '●';
      mark.title = `current: ${state.current.how}${when}`;
      mark.setAttribute('aria-label', `current snapshot (${state.current.how})`);
    }
    td(mark, 'mark');
    // Long tags wrap (three lines at most); the whole tag is in the tooltip and a
    // click on it unfolds it.
    const name = document.createElement('span');
    name.className = 'tag-text';
    name.textContent = r.tag;
    name.title = r.tag;
    name.tabIndex = 0;
    name.setAttribute('role', 'button');
    name.setAttribute('aria-expanded', 'false');
    const unfold = () => {
      const open = name.classList.toggle('open');
      name.setAttribute('aria-expanded', String(open));
    };
    name.addEventListener('click', unfold);
    name.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); unfold(); } });
    // In the tree the guide stands left of the tag, the tag wraps beside it.
    const line = document.createElement('div');
    line.className = 'tag-line';
    if (r.guide) line.append(guide(r));
    line.append(name);
    const tagCell = td(line, 'tag');
    if (isCur) tagCell.append(chip(state.current.how === 'loaded' ? 'current · loaded' : 'current · saved', 'cur'));
    if (r.partial) tagCell.append(chip('partial', 'partial', `missing on ${r.missing.join(', ')}`));
    if (r.duplicate) tagCell.append(chip('duplicate tag', 'partial', 'several snapshots carry this tag on one disk'));
    td(r.id, 'num id', 'ID');
    // VM size doubles as the with-RAM / disk-only column to keep the table narrow.
    const size = td(r.withRam ? humanSize(r.vmSize) : '', 'num size', 'VM size');
    size.title = r.withRam ? 'with RAM: the VM state is saved' : 'disk only: no VM state';
    if (!r.withRam) size.append(chip('disk only', ''));
    // Day and time wrap as wholes (never inside "2026-12-01").
    const date = document.createElement('span');
    for (const [i, part] of formatDate(r.date).split(' ').entries()) {
      const w = document.createElement('span');
      w.className = 'nowrap';
      w.textContent = part;
      date.append(...(i ? [' ', w] : [w]));
    }
    td(date, 'num date', 'Date');
    td(formatClock(r.clockNs), 'num clock', 'VM clock');
    const act = td('', 'actions');
    const load = button('Load', 'load', `Load snapshot ${r.tag}`, () => confirmThen('Load snapshot',
      `Load snapshot “${r.tag}”? The VM returns to that moment; what happened since is lost.`,
      'Load', () => runOp('loadvm', r.tag)));
    load.disabled = busy || !r.withRam || r.partial;
    load.title = !r.withRam ? 'disk-only snapshots hold no VM state' : r.partial ? 'not on every disk' : '';
    const del = button('Delete', 'delete', `Delete snapshot ${r.tag}`, () => confirmThen('Delete snapshot',
      `Delete snapshot “${r.tag}” from every disk? This cannot be undone.`,
      'Delete', () => runOp('delvm', r.tag)));
    del.disabled = busy;
    act.append(load, del);
    body.append(tr);
  }
  $('snap-empty').hidden = state.rows.length > 0;
  const w = state.disks.filter((d) => !d.ro);
  $('snap-disks').textContent = state.disks.length
    ? `Disks: ${state.disks.map((d) => `${d.device}${d.ro ? ' (read-only)' : ''}`).join(', ')}` +
      (w.length ? ` · VM state on ${w[0].device}` : '')
    : '';
  const tagInput = $('take-tag');
  if (!tagInput.dataset.edited) tagInput.value = defaultTag(new Set(state.rows.map((r) => r.tag)));
  if (focused) {
    const tr = [...body.rows].find((x) => x.dataset.tag === focused[0]);
    const el = tr && (focused[1] ? tr.querySelector(`[data-action="${focused[1]}"]`) : tr.querySelector('.tag-text'));
    if (el && !el.disabled) el.focus();
  }
}

$('take-tag').addEventListener('input', (ev) => { ev.target.dataset.edited = ev.target.value ? '1' : ''; });
$('take-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const tag = $('take-tag').value;
  const bad = tagProblem(tag);
  if (bad) { showError(bad); return; }
  const over = state.rows.some((r) => r.tag === tag);
  const go = () => { $('take-tag').dataset.edited = ''; runOp('savevm', tag); };
  if (over) confirmThen('Replace snapshot', `A snapshot “${tag}” exists. Replace it?`, 'Replace', go);
  else go();
});

// ---- confirmation dialog ----------------------------------------------------
export function confirmThen(title, text, okLabel, action) {
  const dlg = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  dlg.returnValue = '';
  dlg.onclose = () => { if (dlg.returnValue === 'ok') action(); };
  dlg.showModal();
  $('confirm-cancel').focus();   // the safe choice is the default
}

// ---- operations ---------------------------------------------------------------
const VERB = { savevm: 'Take', loadvm: 'Load', delvm: 'Delete' };

async function runOp(cmd, tag) {
  if (jobRunning()) return;
  state.busy = true;
  hideError();
  jobs.clearFinished();
  jobs.expect(cmd, tag);
  renderStatus();
  renderSnapshots();
  // The tag is quoted: a bare word would be cut at its first space.
  const line = `${cmd} ${hmpQuote(tag)}`;
  try {
    const reply = await state.hmp.exec(line);
    const err = hmpError(reply);
    if (err && !jobs.wasCancelled(cmd)) showError(`${VERB[cmd]} snapshot “${tag}” failed:\n${err}`);
    if (!err && reply.trim()) consolePane.append(`(${cmd} “${tag}”) ${reply.endsWith('\n') ? reply : reply + '\n'}`);
    jobs.lineDone(cmd, !err, err);
  } catch (e) {
    showError(`${VERB[cmd]} snapshot “${tag}” failed:\n${e.message}`);
    jobs.lineDone(cmd, false, e.message);
  } finally {
    state.busy = false;
    await Promise.allSettled([jobs.refresh(), refreshSnapshots(), refreshStatus()]);
    renderStatus();
    renderSnapshots();
  }
}

// ---- events and connections -------------------------------------------------
let refreshQueued = null;
function onEvent(ev) {
  if (ev.event === 'STOP' || ev.event === 'RESUME') {
    refreshStatus().catch(() => {});
  } else if (ev.event === 'JOB_STATUS_CHANGE') {
    jobs.event(ev.data || {});
    refreshStatus().catch(() => {});
    // Snapshots made by other clients (the terminal monitor, scripts) show up
    // too, and with them the gateway's current snapshot.
    const st = ev.data && ev.data.status;
    if (st === 'concluded' || st === 'null' || st === 'created') {
      clearTimeout(refreshQueued);
      refreshQueued = setTimeout(() => refreshSnapshots().catch(() => {}), 100);
    }
  } else if (ev.event === 'SHUTDOWN') { setLink('guest shut down'); }
}

const consolePane = setupConsole(
  () => state.hmp || { exec: () => Promise.reject(new Error('monitor not connected')) },
  () => state.qmp,
  { out: $('hmp-out'), form: $('hmp-form'), input: $('hmp-line') },
  confirmThen);

const NO_TOKEN = 'No token: open the address that snapgate printed at start ' +
  '("web console: http://…/?token=…"); this page was opened without it.';

let reconnectDelay = 1000;
async function connect() {
  if (!token) {
    setLink('no token');
    showError(NO_TOKEN);
    return;
  }
  setLink('connecting…');
  const qmp = new Qmp(wsUrl('/qmp'));
  const hmp = new Hmp(wsUrl('/hmp'));
  try {
    const greeting = await qmp.open();
    await hmp.open();
    state.qmp = qmp;
    state.hmp = hmp;
    qmp.onEvent = onEvent;
    const lost = () => {
      if (state.qmp !== qmp) return;
      state.qmp = null; state.hmp = null; state.status = null;
      renderStatus(); renderSnapshots();
      qmp.close(); hmp.close();
      setLink('disconnected, retrying…');
      setTimeout(connect, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 15000);
    };
    qmp.onClose = lost;
    hmp.onClose = (ev) => {
      if (ev.code === 1008) showError(`The monitor connection was closed: ${ev.reason || 'policy violation'}`);
      lost();
    };
    reconnectDelay = 1000;
    const v = greeting.version && greeting.version.qemu;
    setLink(v ? `connected · back end ${v.major}.${v.minor}.${v.micro} ${greeting.version.package || ''}` : 'connected');
    await Promise.all([refreshStatus(), refreshSnapshots(), jobs.refresh()]);
    renderStatus();
  } catch (e) {
    qmp.close();
    hmp.close();
    setLink('not connected');
    showError(`Cannot reach the console (${e.message}). Open the URL that snapgate printed ` +
      '("web console: …/?token=…"): the token may be wrong (each start makes a new one), or the gateway has stopped.');
    setTimeout(connect, Math.max(reconnectDelay, 5000));
    reconnectDelay = Math.min(reconnectDelay * 2, 15000);
  }
}

renderStatus();
renderSnapshots();
window.sgSerial = startSerial(wsUrl('/serial'), $('serial-term'), $('serial-note'), !!token);
connect();
